//! The container-filesystem side of `docker cp`, `export`, `diff` and the archive API, run
//! as a child process of its own (`berthd __archive ROOT OP ...` on the host; the guest
//! agent's `berth-agent __archive ...` for a microVM's running container) that first
//! chroots into the container's root: every path a tar names, and every symlink met on
//! the way, resolves inside that root, so nothing lands outside the container's root and
//! nothing of the host is read, in either direction. (A chroot is what dockerd's
//! chrootarchive does too; threads make it unsafe inside berthd itself.)
//!
//! Ops: `stat PATH` (the path's stat as Docker's JSON on stdout; exit 2 if missing),
//! `get PATH` (a tar of it on stdout), `put DIR` (a tar from stdin unpacked into DIR,
//! owners kept), `export` (a tar of the whole root on stdout), `changes UPPER LOWER` (an
//! overlay's writable layer against its image, one `KIND PATH` line each, without entering
//! a root). Where: [`Root`], its first argument.

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

/// Where the helper works: given to it as JSON (its first argument).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Root {
    /// A running container: its init's PID. The helper joins its mount namespace, takes
    /// a private copy, and unmounts the kernel's filesystems there (/proc, /sys, /dev's
    /// ptys...): nothing reaches the host through their magic links, and they are not
    /// copied.
    #[serde(default)]
    pub live_pid: Option<i32>,
    /// Otherwise: a directory to enter, after mounting `overlay` (options) there and the
    /// binds on it, in a private mount namespace that ends with the helper.
    #[serde(default)]
    pub dir: String,
    /// The overlay's options (lowerdir=..., and upperdir/workdir for a writable one).
    #[serde(default)]
    pub overlay: Option<String>,
    /// Mount it read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Binds on it: (host source, destination in the root, read-only).
    #[serde(default)]
    pub binds: Vec<(String, String, bool)>,
}

fn sys(r: libc::c_int, what: &str) -> Result<(), String> {
    if r != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn cstr(s: &str) -> Result<std::ffi::CString, String> {
    std::ffi::CString::new(s).map_err(|_| format!("NUL in {s:?}"))
}

/// A private mount namespace: nothing mounted here is seen elsewhere or outlives us.
fn private_mounts() -> Result<(), String> {
    // SAFETY: unshare and mount with valid arguments; single-threaded process.
    sys(unsafe { libc::unshare(libc::CLONE_NEWNS) }, "unshare")?;
    sys(
        // SAFETY: as above; a null source and type for a propagation change.
        unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        },
        "making mounts private",
    )
}

/// Whether `rel` (inside `root`) goes through no symlink.
fn no_symlinks(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    for c in Path::new(rel).components() {
        if let std::path::Component::Normal(n) = c {
            p.push(n);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => return false,
                _ => {}
            }
        }
    }
    true
}

fn enter(r: &Root) -> Result<(), String> {
    if let Some(pid) = r.live_pid {
        use std::os::unix::fs::MetadataExt as _;
        let ns = format!("/proc/{pid}/ns/mnt");
        let theirs = std::fs::metadata(&ns).map_err(|e| format!("{ns}: {e}"))?;
        let ours = std::fs::metadata("/proc/self/ns/mnt").map_err(|e| e.to_string())?;
        if theirs.ino() == ours.ino() && theirs.dev() == ours.dev() {
            // Not a container's (its PID was reused): never the host's root.
            return Err("the container is not running".into());
        }
        let f = std::fs::File::open(&ns).map_err(|e| format!("{ns}: {e}"))?;
        use std::os::fd::AsRawFd;
        sys(
            // SAFETY: setns on an open mount-namespace fd; single-threaded process.
            unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNS) },
            "joining the container's mounts",
        )?;
        private_mounts()?;
        // The kernel's filesystems, deepest first.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut kernel: Vec<String> = info
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let fstype = right.split_whitespace().next()?;
                let point = left.split_whitespace().nth(4)?;
                matches!(
                    fstype,
                    "proc"
                        | "sysfs"
                        | "devpts"
                        | "mqueue"
                        | "cgroup"
                        | "cgroup2"
                        | "debugfs"
                        | "securityfs"
                        | "tracefs"
                        | "bpf"
                )
                .then(|| point.to_owned())
            })
            .collect();
        kernel.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in kernel {
            let c = cstr(&p)?;
            // SAFETY: umount2 on a NUL-terminated path in our private namespace.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        // setns left us at the container's root.
        // SAFETY: chdir and chroot on NUL-terminated paths.
        sys(unsafe { libc::chdir(c"/".as_ptr()) }, "chdir")?;
        return Ok(());
    }
    let dir = cstr(&r.dir)?;
    if r.overlay.is_some() || !r.binds.is_empty() {
        private_mounts()?;
    }
    if r.overlay.is_some() {
        // The overlay's mount point (in a guest, where nothing made it beforehand).
        std::fs::create_dir_all(&r.dir).map_err(|e| format!("{}: {e}", r.dir))?;
    }
    if let Some(o) = &r.overlay {
        let data = cstr(o)?;
        let flags = if r.read_only { libc::MS_RDONLY } else { 0 };
        sys(
            // SAFETY: mount with NUL-terminated strings valid for the call.
            unsafe {
                libc::mount(
                    c"overlay".as_ptr(),
                    dir.as_ptr(),
                    c"overlay".as_ptr(),
                    flags,
                    data.as_ptr().cast(),
                )
            },
            "mounting the container's filesystem",
        )?;
    }
    // Binds in depth order, each on a destination that goes through no symlink.
    let mut binds = r.binds.clone();
    binds.sort_by_key(|b| Path::new(&b.1).components().count());
    for (src, dst, ro) in &binds {
        if !no_symlinks(Path::new(&r.dir), dst) {
            return Err(format!("mount destination {dst} goes through a symlink"));
        }
        let target = Path::new(&r.dir).join(dst.trim_start_matches('/'));
        if !target.exists() {
            // Where the image has nothing yet, the mount point is made as the runtime
            // makes it (in a writable view only; a read-only one skips it).
            if r.read_only || std::fs::create_dir_all(&target).is_err() {
                continue;
            }
        }
        let (s, t) = (cstr(src)?, cstr(&target.display().to_string())?);
        sys(
            // SAFETY: bind mount with NUL-terminated paths.
            unsafe {
                libc::mount(
                    s.as_ptr(),
                    t.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            },
            &format!("binding {dst}"),
        )?;
        if *ro || r.read_only {
            sys(
                // SAFETY: as above, a read-only remount of the bind.
                unsafe {
                    libc::mount(
                        std::ptr::null(),
                        t.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    )
                },
                &format!("making {dst} read-only"),
            )?;
        }
    }
    sys(
        // SAFETY: chroot and chdir on NUL-terminated paths; this process is single-threaded
        // and holds no descriptor outside the new root but stdio.
        unsafe { libc::chroot(dir.as_ptr()) },
        "entering the container's root",
    )?;
    // SAFETY: chdir on a NUL-terminated path.
    sys(unsafe { libc::chdir(c"/".as_ptr()) }, "chdir")
}

/// Runs the helper (after `__archive`); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let (Some(root), Some(op)) = (args.first(), args.get(1)) else {
        return fail(
            "usage: __archive ROOT-JSON stat|get|put|export|changes ...",
            64,
        );
    };
    if op == "changes" {
        let (Some(upper), Some(lower)) = (args.get(2), args.get(3)) else {
            return fail("usage: __archive ROOT-JSON changes UPPER LOWER", 64);
        };
        let mut out = std::io::stdout().lock();
        for (kind, path) in changes(Path::new(upper), Path::new(lower)) {
            let _ = writeln!(out, "{} {path}", kind as u8);
        }
        return 0;
    }
    let root: Root = match serde_json::from_str(root) {
        Ok(r) => r,
        Err(e) => return fail(format!("bad root: {e}"), 64),
    };
    if let Err(e) = enter(&root) {
        return fail(e, 1);
    }
    let path = args.get(2).cloned().unwrap_or_default();
    match op.as_str() {
        "stat" => stat(&path),
        "get" => get(&path),
        "put" => put(&path),
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

/// Unpacks a tar from stdin into `dir`, keeping the archive's owners and modes (as
/// dockerd without `-a`).
fn put(dir: &str) -> i32 {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return fail(format!("extraction point is not a directory: {dir}"), 3),
        Err(_) => return fail("no such file", 2),
    }
    let mut a = tar::Archive::new(berth_protocol::targuard::TarGuard::new(
        std::io::stdin().lock(),
    ));
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
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

/// How a path differs from the image (Docker's `ChangeType` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Changed.
    Modified = 0,
    /// Added.
    Added = 1,
    /// Deleted (a whiteout).
    Deleted = 2,
}

impl Change {
    /// From its number.
    pub fn from_u8(n: u8) -> Option<Change> {
        match n {
            0 => Some(Change::Modified),
            1 => Some(Change::Added),
            2 => Some(Change::Deleted),
            _ => None,
        }
    }
}

/// An overlay's writable layer `upper` against its image `lower`: each path the layer
/// holds, as added, changed or deleted (a whiteout), sorted by path.
pub fn changes(upper: &Path, lower: &Path) -> Vec<(Change, String)> {
    let mut out = Vec::new();
    if upper.is_dir() {
        walk_changes(upper, lower, Path::new("/"), &mut out);
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn walk_changes(upper: &Path, lower: &Path, rel: &Path, out: &mut Vec<(Change, String)>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(rd) = std::fs::read_dir(upper.join(rel.strip_prefix("/").unwrap_or(rel))) else {
        return;
    };
    for e in rd.flatten() {
        let path = rel.join(e.file_name());
        let Ok(m) = e.metadata() else { continue };
        let shown = path.display().to_string();
        // A whiteout (0/0 character device): deleted from the image.
        if m.file_type().is_char_device() && m.rdev() == 0 {
            out.push((Change::Deleted, shown));
            continue;
        }
        let in_lower =
            std::fs::symlink_metadata(lower.join(path.strip_prefix("/").unwrap_or(&path))).is_ok();
        out.push((
            if in_lower {
                Change::Modified
            } else {
                Change::Added
            },
            shown,
        ));
        if m.is_dir() {
            walk_changes(upper, lower, &path, out);
        }
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

    #[test]
    fn changes_are_added_changed_and_deleted_against_the_image() {
        let t = std::env::temp_dir().join(format!("berth-changes-{}", std::process::id()));
        let (upper, lower) = (t.join("upper"), t.join("lower"));
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/passwd"), "old").unwrap();
        std::fs::write(upper.join("etc/passwd"), "new").unwrap();
        std::fs::write(upper.join("etc/added"), "x").unwrap();
        let got = changes(&upper, &lower);
        assert_eq!(
            got,
            vec![
                (Change::Modified, "/etc".to_owned()),
                (Change::Added, "/etc/added".to_owned()),
                (Change::Modified, "/etc/passwd".to_owned()),
            ]
        );
        assert!(changes(&t.join("none"), &lower).is_empty());
        std::fs::remove_dir_all(&t).unwrap();
    }
}
