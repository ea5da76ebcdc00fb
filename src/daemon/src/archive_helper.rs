//! The container-filesystem side of `docker cp`, `export` and the archive API, run by
//! berthd as a child process of its own (`berthd __archive ROOT OP ...`) that first
//! chroots into the container's root: every path a tar names, and every symlink met on
//! the way, resolves inside that root, so nothing lands outside the container's root and
//! nothing of the host is read, in either direction. (A chroot is what dockerd's
//! chrootarchive does too; threads make it unsafe inside berthd itself.)
//!
//! Ops: `stat PATH` (the path's stat as Docker's JSON on stdout; exit 2 if missing),
//! `get PATH` (a tar of it on stdout), `put DIR OWNERS` (a tar from stdin unpacked into
//! DIR; OWNERS 1 keeps the archive's owners, 0 makes root own everything), `export` (a
//! tar of the whole root on stdout).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Go's os.FileMode bits for a Unix mode (what Docker's path stat carries).
pub fn go_mode(m: u32) -> u32 {
    let mut g = m & 0o777;
    match m & libc::S_IFMT {
        libc::S_IFDIR => g |= 1 << 31,
        libc::S_IFLNK => g |= 1 << 27,
        libc::S_IFIFO => g |= 1 << 25,
        libc::S_IFSOCK => g |= 1 << 24,
        libc::S_IFBLK => g |= 1 << 26,
        libc::S_IFCHR => g |= (1 << 26) | (1 << 21),
        _ => {}
    }
    if m & libc::S_ISUID != 0 {
        g |= 1 << 23;
    }
    if m & libc::S_ISGID != 0 {
        g |= 1 << 22;
    }
    if m & libc::S_ISVTX != 0 {
        g |= 1 << 20;
    }
    g
}

/// The name a path's archive is rooted at: its last component ("." for `DIR/.`).
pub fn archive_name(path: &str) -> String {
    if path.ends_with("/.") || path == "." {
        return ".".into();
    }
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

fn fail(m: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("{m}");
    code
}

/// Runs the helper (after `__archive`); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let (Some(root), Some(op)) = (args.first(), args.get(1)) else {
        return fail("usage: berthd __archive ROOT stat|get|put|export ...", 64);
    };
    let Ok(croot) = std::ffi::CString::new(root.as_str()) else {
        return fail("bad root", 64);
    };
    // SAFETY: chroot and chdir on NUL-terminated paths; this process is single-threaded
    // here and holds no descriptor outside the new root but stdio.
    if unsafe { libc::chroot(croot.as_ptr()) } != 0 || unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return fail(
            format!("entering {root}: {}", std::io::Error::last_os_error()),
            1,
        );
    }
    let path = args.get(2).cloned().unwrap_or_default();
    match op.as_str() {
        "stat" => stat(&path),
        "get" => get(&path),
        "put" => put(&path, args.get(3).is_some_and(|o| o == "1")),
        "export" => export(),
        _ => fail(format!("unknown op {op}"), 64),
    }
}

fn stat(path: &str) -> i32 {
    let p = Path::new(path);
    let m = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fail("no such file", 2),
        Err(e) => return fail(e, 1),
    };
    let link = if m.file_type().is_symlink() {
        std::fs::read_link(p)
            .map(|t| t.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mtime = chrono_like(m.mtime());
    let v = serde_json::json!({
        "name": archive_name(path),
        "size": m.len(),
        "mode": go_mode(m.mode()),
        "mtime": mtime,
        "linkTarget": link,
    });
    println!("{v}");
    0
}

/// RFC 3339 (UTC) of a Unix time.
fn chrono_like(secs: i64) -> String {
    berth_protocol::time::rfc3339(secs, None)
}

fn builder<W: Write>(w: W) -> tar::Builder<W> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    b
}

/// Appends `p` (inside the root) as `name`, recursing into directories; sockets are
/// skipped (a tar can't hold them).
fn append<W: Write>(b: &mut tar::Builder<W>, p: &Path, name: &Path) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(p)?;
    let t = m.file_type();
    if m.mode() & libc::S_IFMT == libc::S_IFSOCK {
        return Ok(());
    }
    if t.is_dir() {
        b.append_path_with_name(p, name)?;
        let mut entries: Vec<_> = std::fs::read_dir(p)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            append(b, &e.path(), &name.join(e.file_name()))?;
        }
        Ok(())
    } else {
        b.append_path_with_name(p, name)
    }
}

fn get(path: &str) -> i32 {
    let p = PathBuf::from(path);
    if std::fs::symlink_metadata(&p).is_err() {
        return fail("no such file", 2);
    }
    let out = std::io::stdout().lock();
    let mut b = builder(std::io::BufWriter::new(out));
    let r = append(&mut b, &p, Path::new(&archive_name(path)))
        .and_then(|_| b.into_inner())
        .and_then(|mut w| w.flush());
    match r {
        Ok(()) => 0,
        Err(e) => fail(format!("archiving {path}: {e}"), 1),
    }
}

fn put(dir: &str, owners: bool) -> i32 {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return fail(format!("extraction point is not a directory: {dir}"), 3),
        Err(_) => return fail("no such file", 2),
    }
    let mut a = tar::Archive::new(std::io::stdin().lock());
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(owners);
    a.set_overwrite(true);
    a.set_unpack_xattrs(false);
    match a.unpack(dir) {
        Ok(()) => 0,
        Err(e) => fail(format!("extracting into {dir}: {e}"), 1),
    }
}

fn export() -> i32 {
    let out = std::io::stdout().lock();
    let mut b = builder(std::io::BufWriter::new(out));
    let mut entries: Vec<_> = match std::fs::read_dir("/") {
        Ok(rd) => rd.flatten().collect(),
        Err(e) => return fail(e, 1),
    };
    entries.sort_by_key(|e| e.file_name());
    let r = entries
        .iter()
        .try_for_each(|e| append(&mut b, &e.path(), Path::new(&e.file_name())))
        .and_then(|_| b.into_inner())
        .and_then(|mut w| w.flush());
    match r {
        Ok(()) => 0,
        Err(e) => fail(format!("exporting: {e}"), 1),
    }
}

/// Whether a mode is a directory's (for a stat's callers).
pub fn is_dir_mode(go: u32) -> bool {
    go & (1 << 31) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_names_are_dockers() {
        assert_eq!(go_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_mode(libc::S_IFREG | 0o644), 0o644);
        assert_eq!(go_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(
            go_mode(libc::S_IFREG | libc::S_ISUID | 0o755),
            (1 << 23) | 0o755
        );
        assert!(is_dir_mode(go_mode(libc::S_IFDIR)));
        assert_eq!(archive_name("/etc/passwd"), "passwd");
        assert_eq!(archive_name("/etc/"), "etc");
        assert_eq!(archive_name("/etc/."), ".");
        assert_eq!(archive_name("/"), ".");
    }
}
