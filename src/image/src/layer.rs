//! Applying an image layer (a tar stream, gzip'd or not) onto a directory: regular
//! files, directories, symlinks, hard links, devices; whiteouts (`.wh.NAME`) and opaque
//! directories (`.wh..wh..opq`). Paths are resolved inside the root the way a chroot
//! would resolve them (symlinks included), so no entry can write outside it; absolute
//! paths and `..` in entry names, and absurd headers, are refused.

use crate::digest::{Digest, Hasher};
use flate2::read::GzDecoder;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Largest single file accepted in a layer.
pub const MAX_ENTRY_SIZE: u64 = 64 << 30;
/// Longest entry path accepted.
pub const MAX_PATH: usize = 4096;
/// Symlinks followed while resolving one path.
const MAX_SYMLINKS: usize = 40;

/// Errors applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The layer is malformed or hostile; nothing outside the root was touched.
    #[error("invalid layer: {0}")]
    Invalid(String),
    /// The image unpacks to more than the cap allows (berthd's `max-image-size`).
    #[error("{0}")]
    TooLarge(String),
    /// Unpacking would leave less free space than berthd keeps (its `min-free-space`).
    #[error("{0}")]
    NoSpace(String),
    /// A filesystem error.
    #[error("applying layer entry {path}: {err}")]
    Io {
        /// The entry.
        path: String,
        /// Why.
        err: io::Error,
    },
}

/// What unpacking an image may use: a cap on its files' bytes, and free space to leave on
/// the filesystem it is written to. Charged before each file is written, so a refused
/// layer has written nothing past the cap.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    /// The most bytes of file content an image may unpack to.
    pub max_bytes: Option<u64>,
    /// Bytes to leave free on the filesystem.
    pub min_free: u64,
    /// Bytes charged so far.
    pub used: u64,
}

impl Budget {
    fn charge(&mut self, root: &Path, size: u64, shown: &str) -> Result<(), LayerError> {
        self.used = self.used.saturating_add(size);
        if let Some(max) = self.max_bytes {
            if self.used > max {
                return Err(LayerError::TooLarge(format!(
                    "the image unpacks to more than {max} bytes (at {shown}), over the max-image-size cap"
                )));
            }
        }
        if self.min_free > 0 {
            if let Some(free) = free_bytes(root) {
                if free < size.saturating_add(self.min_free) {
                    return Err(LayerError::NoSpace(format!(
                        "unpacking {shown} ({size} bytes) would leave less than {} bytes free on {} (min-free-space)",
                        self.min_free,
                        root.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Bytes available to unprivileged writers on the filesystem of `p` (root may dig into
/// the reserve; berthd does not count on it).
fn free_bytes(p: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs reads a NUL-terminated path and writes the struct passed, which is
    // zeroed and lives here.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// What a layer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Entries written.
    pub entries: u64,
    /// Paths removed by whiteouts.
    pub whiteouts: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: Option<Digest>,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Cleans an entry name: relative, its `.` and `..` resolved, never above the root.
fn clean(name: &Path) -> Result<PathBuf, LayerError> {
    let shown = name.display().to_string();
    if name.as_os_str().len() > MAX_PATH {
        return Err(LayerError::Invalid(format!(
            "entry path longer than {MAX_PATH} bytes"
        )));
    }
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir => {
                return Err(LayerError::Invalid(format!("absolute path {shown:?}")))
            }
            // Resolved as written (`x/./../y` is `y`); only a name that climbs above the
            // root is refused.
            Component::ParentDir => {
                if !out.pop() {
                    return Err(LayerError::Invalid(format!(
                        "path {shown:?} climbs out of the root with \"..\""
                    )));
                }
            }
            Component::Prefix(_) => {
                return Err(LayerError::Invalid(format!(
                    "path {shown:?} is not a tar name"
                )))
            }
        }
    }
    Ok(out)
}

/// Resolves `rel` inside `root` as if `root` were `/`: symlinks are followed but can never
/// lead outside it.
pub fn resolve_in_root(root: &Path, rel: &Path) -> Result<PathBuf, LayerError> {
    let mut todo: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            // Only a symlink's target can say ".." (entry names can't); one that climbs
            // above the root is hostile, not a chroot-style no-op.
            if cur.pop().is_none() {
                return Err(LayerError::Invalid(format!(
                    "a symlink on the way to {} leads outside the root",
                    rel.display()
                )));
            }
            continue;
        }
        let mut p = root.to_path_buf();
        p.extend(&cur);
        p.push(&c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(LayerError::Invalid(format!(
                        "too many levels of symlinks at {}",
                        rel.display()
                    )));
                }
                let target = fs::read_link(&p).map_err(|err| LayerError::Io {
                    path: rel.display().to_string(),
                    err,
                })?;
                if target.is_absolute() {
                    cur.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => todo.push(n.to_owned()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => cur.push(c),
        }
    }
    let mut p = root.to_path_buf();
    p.extend(&cur);
    Ok(p)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies the layer read from `r` onto `root`. The compression (none, gzip or zstd) is
/// read from the stream's first bytes. The returned [`Applied::diff_id`] is the digest of
/// the uncompressed tar, which an image config lists for each layer.
pub fn apply(root: &Path, r: impl Read) -> Result<Applied, LayerError> {
    apply_within(root, r, &mut Budget::default())
}

/// [`apply`], charging each file to `budget`.
pub fn apply_within(root: &Path, r: impl Read, budget: &mut Budget) -> Result<Applied, LayerError> {
    let mut tar = decompress(r)?;
    let mut hr = HashRead {
        inner: &mut tar,
        hasher: Hasher::default(),
    };
    let mut done = apply_tar(root, &mut hr, budget)?;
    // The tar's end-of-archive padding is part of the diff ID too.
    io::copy(&mut hr, &mut io::sink()).map_err(|err| LayerError::Io {
        path: "(layer)".into(),
        err,
    })?;
    done.diff_id = Some(hr.hasher.finish());
    Ok(done)
}

/// Applies a layer within `budget` and checks its uncompressed digest against the
/// config's diff ID.
pub fn apply_verified(
    root: &Path,
    r: impl Read,
    diff_id: &Digest,
    budget: &mut Budget,
) -> Result<Applied, LayerError> {
    let done = apply_within(root, r, budget)?;
    match &done.diff_id {
        Some(d) if d == diff_id => Ok(done),
        other => Err(LayerError::Invalid(format!(
            "layer content hashes to {}, but the image config says {diff_id}",
            other.as_ref().map(|d| d.to_string()).unwrap_or_default()
        ))),
    }
}

/// The uncompressed tar stream of a layer blob (plain, gzip or zstd, told by magic).
pub fn decompress<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let head = r.fill_buf().map_err(|err| LayerError::Io {
        path: "(layer)".into(),
        err,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(GzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let z = ruzstd::decoding::StreamingDecoder::new(r)
            .map_err(|e| LayerError::Invalid(format!("corrupt zstd stream: {e}")))?;
        Ok(Box::new(z))
    } else {
        Ok(Box::new(r))
    }
}

struct HashRead<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn apply_tar(root: &Path, r: impl Read, budget: &mut Budget) -> Result<Applied, LayerError> {
    let am_root = unsafe_free_geteuid() == 0;
    let mut ar = tar::Archive::new(berth_protocol::targuard::TarGuard::new(r));
    let mut done = Applied::default();
    let entries = ar.entries().map_err(|err| LayerError::Io {
        path: "(layer)".into(),
        err,
    })?;
    for e in entries {
        let mut e = e.map_err(|err| LayerError::Invalid(format!("corrupt tar stream: {err}")))?;
        let raw = e
            .path()
            .map_err(|err| LayerError::Invalid(format!("bad entry name: {err}")))?
            .into_owned();
        let name = clean(&raw)?;
        let shown = name.display().to_string();
        let io = |err| LayerError::Io {
            path: shown.clone(),
            err,
        };
        // The entry's size: a PAX `size` record's over the header's.
        let size = e.size();
        if size > MAX_ENTRY_SIZE {
            return Err(LayerError::Invalid(format!(
                "{shown}: entry of {size} bytes is too large"
            )));
        }
        let Some(file_name) = name.file_name().map(|f| f.to_owned()) else {
            continue;
        };
        let parent = resolve_in_root(root, name.parent().unwrap_or(Path::new("")))?;
        let fname = file_name.as_bytes();
        if let Some(hidden) = fname.strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                if let Ok(rd) = fs::read_dir(&parent) {
                    for child in rd.flatten() {
                        remove_any(&child.path()).map_err(io)?;
                        done.whiteouts += 1;
                    }
                }
            } else {
                remove_any(&parent.join(std::ffi::OsStr::from_bytes(hidden))).map_err(io)?;
                done.whiteouts += 1;
            }
            continue;
        }
        fs::create_dir_all(&parent).map_err(io)?;
        let dest = parent.join(&file_name);
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        let kind = e.header().entry_type();
        use std::os::unix::fs::PermissionsExt;
        match kind {
            tar::EntryType::Directory => {
                if fs::symlink_metadata(&dest)
                    .map(|m| !m.is_dir())
                    .unwrap_or(false)
                {
                    remove_any(&dest).map_err(io)?;
                }
                fs::create_dir_all(&dest).map_err(io)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(io)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                budget.charge(root, size, &shown)?;
                remove_any(&dest).map_err(io)?;
                let mut f = fs::File::create(&dest).map_err(io)?;
                let n = io::copy(&mut (&mut e).take(size), &mut f).map_err(io)?;
                done.bytes += n;
                if n != size {
                    return Err(LayerError::Invalid(format!(
                        "{shown}: truncated ({n} of {size} bytes)"
                    )));
                }
            }
            tar::EntryType::Symlink => {
                let target = e.link_name().map_err(io)?.ok_or_else(|| {
                    LayerError::Invalid(format!("{shown}: symlink without a target"))
                })?;
                remove_any(&dest).map_err(io)?;
                std::os::unix::fs::symlink(&*target, &dest).map_err(io)?;
            }
            tar::EntryType::Link => {
                let target = e.link_name().map_err(io)?.ok_or_else(|| {
                    LayerError::Invalid(format!("{shown}: hard link without a target"))
                })?;
                let t = clean(&target)?;
                let src = resolve_in_root(root, t.parent().unwrap_or(Path::new("")))?
                    .join(t.file_name().unwrap_or_default());
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(LayerError::Invalid(format!(
                            "{shown}: hard link to {} which is not a file in the layer",
                            t.display()
                        )))
                    }
                }
                remove_any(&dest).map_err(io)?;
                fs::hard_link(&src, &dest).map_err(io)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let t = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let dev = libc::makedev(
                    e.header().device_major().ok().flatten().unwrap_or(0),
                    e.header().device_minor().ok().flatten().unwrap_or(0),
                );
                remove_any(&dest).map_err(io)?;
                let c = std::ffi::CString::new(dest.as_os_str().as_bytes())
                    .map_err(|_| LayerError::Invalid(format!("{shown}: NUL in path")))?;
                // SAFETY: a NUL-terminated path; mknod reads nothing else.
                if unsafe { libc::mknod(c.as_ptr(), t | mode as libc::mode_t, dev) } < 0 {
                    return Err(io(io::Error::last_os_error()));
                }
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => {
                return Err(LayerError::Invalid(format!(
                    "{shown}: unsupported entry type {other:?}"
                )))
            }
        }
        if am_root && kind != tar::EntryType::Link {
            let (uid, gid) = (e.header().uid().unwrap_or(0), e.header().gid().unwrap_or(0));
            std::os::unix::fs::lchown(&dest, Some(uid as u32), Some(gid as u32)).map_err(io)?;
        }
        // The mode last: a chown clears setuid and setgid, and mknod's mode went through
        // the umask.
        if !matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        done.entries += 1;
    }
    Ok(done)
}

fn unsafe_free_geteuid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-layer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("root")).unwrap();
        d
    }

    /// A tar with raw entries (names are written verbatim, so hostile names can be made).
    fn tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            if !link.is_empty() {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

    #[test]
    fn files_dirs_links_and_whiteouts() {
        let d = dir("ok");
        let root = d.join("root");
        apply(
            &root,
            &tar(&[
                ("etc/", D, b"", ""),
                ("etc/a", F, b"one", ""),
                ("etc/b", F, b"two", ""),
                ("link", S, b"", "etc/a"),
                ("hard", H, b"", "etc/a"),
                ("old/x", F, b"x", ""),
            ])[..],
        )
        .unwrap();
        assert_eq!(fs::read(root.join("link")).unwrap(), b"one");
        assert_eq!(fs::read(root.join("hard")).unwrap(), b"one");
        let r = apply(
            &root,
            &tar(&[
                ("etc/.wh.b", F, b"", ""),
                ("old/.wh..wh..opq", F, b"", ""),
                ("old/y", F, b"y", ""),
            ])[..],
        )
        .unwrap();
        assert!(!root.join("etc/b").exists());
        assert!(!root.join("old/x").exists() && root.join("old/y").exists());
        assert_eq!(r.whiteouts, 2);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn setuid_setgid_sticky_bits_and_device_nodes_survive_unpacking() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let d = dir("modes");
        let root = d.join("root");
        let mut b = tar::Builder::new(Vec::new());
        type Entry<'a> = (&'a str, tar::EntryType, u32, u64, u64, Option<(u32, u32)>);
        let entries: &[Entry] = &[
            ("bin/", D, 0o755, 0, 0, None),
            ("bin/su", F, 0o4755, 0, 0, None),
            ("bin/ping", F, 0o4711, 1000, 1000, None),
            ("bin/wall", F, 0o2755, 0, 5, None),
            ("tmp/", D, 0o1777, 0, 0, None),
            ("dev/null", tar::EntryType::Char, 0o666, 0, 0, Some((1, 3))),
            (
                "dev/loop0",
                tar::EntryType::Block,
                0o660,
                0,
                6,
                Some((7, 0)),
            ),
        ];
        for (name, kind, mode, uid, gid, dev) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_uid(*uid);
            h.set_gid(*gid);
            let data: &[u8] = if *kind == F { b"#!/bin/sh\n" } else { b"" };
            h.set_size(data.len() as u64);
            if let Some((maj, min)) = dev {
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
            }
            b.append_data(&mut h, name, data).unwrap();
        }
        // `x/./../y` is `y`: harmless, so accepted.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..8].copy_from_slice(b"x/./../y");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"y"[..]).unwrap();
        apply(&root, &b.into_inner().unwrap()[..]).unwrap();
        let m = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
        let mode = |p: &str| m(p).permissions().mode() & 0o7777;
        assert_eq!(mode("bin/su"), 0o4755);
        assert_eq!(mode("bin/ping"), 0o4711);
        assert_eq!(mode("bin/wall"), 0o2755);
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("dev/null"), 0o666);
        assert_eq!(mode("dev/loop0"), 0o660);
        assert!(m("dev/null").file_type().is_char_device());
        assert!(m("dev/loop0").file_type().is_block_device());
        assert_eq!(m("dev/null").rdev(), libc::makedev(1, 3));
        if unsafe_free_geteuid() == 0 {
            assert_eq!((m("bin/ping").uid(), m("bin/ping").gid()), (1000, 1000));
            assert_eq!(m("bin/wall").gid(), 5);
        }
        assert_eq!(fs::read(root.join("y")).unwrap(), b"y");
        assert!(!root.join("x").exists());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_budget_refuses_a_file_before_writing_it() {
        let d = dir("budget");
        let root = d.join("root");
        let t = tar(&[("small", F, b"12345", ""), ("big", F, &[0u8; 4096], "")]);
        let mut b = Budget {
            max_bytes: Some(1000),
            ..Default::default()
        };
        let e = apply_within(&root, &t[..], &mut b).unwrap_err();
        assert!(matches!(e, LayerError::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("max-image-size"), "{e}");
        assert!(root.join("small").exists() && !root.join("big").exists());
        let mut b = Budget {
            min_free: u64::MAX / 2,
            ..Default::default()
        };
        let e = apply_within(&root, &t[..], &mut b).unwrap_err();
        assert!(matches!(e, LayerError::NoSpace(_)), "{e}");
        assert!(e.to_string().contains("min-free-space"), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn gzip_layers_are_read() {
        use std::io::Write;
        let d = dir("gz");
        let plain = tar(&[("f", F, b"zipped", "")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let r = apply(&d.join("root"), &gz.finish().unwrap()[..]).unwrap();
        assert_eq!(fs::read(d.join("root/f")).unwrap(), b"zipped");
        assert_eq!(
            r.diff_id,
            Some(Digest::of(&plain)),
            "diff ID is the uncompressed tar's"
        );
        assert!(apply_verified(
            &d.join("root"),
            &plain[..],
            &Digest::of(b"other"),
            &mut Budget::default()
        )
        .is_err());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn zstd_layers_are_read_and_corrupt_ones_refused() {
        let d = dir("zst");
        let plain = tar(&[("z", F, b"zstd'd", "")]);
        let z = ruzstd::encoding::compress_to_vec(
            &plain[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let r = apply_verified(
            &d.join("root"),
            &z[..],
            &Digest::of(&plain),
            &mut Budget::default(),
        )
        .unwrap();
        assert_eq!(fs::read(d.join("root/z")).unwrap(), b"zstd'd");
        assert_eq!(r.entries, 1);
        let e = apply(&d.join("root"), &[0x28u8, 0xb5, 0x2f, 0xfd, 0, 0][..]).unwrap_err();
        assert!(e.to_string().contains("invalid layer"), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn hostile_layers_write_nothing_outside_the_root() {
        let d = dir("evil");
        let root = d.join("root");
        let cases: Vec<Vec<u8>> = vec![
            tar(&[("../escaped", F, b"x", "")]),
            tar(&[("/abs-escaped", F, b"x", "")]),
            tar(&[("a/../../escaped", F, b"x", "")]),
            tar(&[("h", H, b"", "../../etc/passwd")]),
            tar(&[("h2", H, b"", "nonexistent")]),
        ];
        for t in &cases {
            assert!(apply(&root, &t[..]).is_err());
        }
        // A relative symlink climbing above the root, then a write through it: refused.
        let e = apply(
            &root,
            &tar(&[("out", S, b"", "../../.."), ("out/escaped", F, b"x", "")])[..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("leads outside the root"), "{e}");
        // An absolute one resolves inside the root, as in a chroot.
        apply(
            &root,
            &tar(&[("abs", S, b"", "/"), ("abs/escaped2", F, b"y", "")])[..],
        )
        .unwrap();
        assert!(!d.join("escaped").exists() && !Path::new("/escaped2").exists());
        assert_eq!(fs::read(root.join("escaped2")).unwrap(), b"y");
        // A symlink loop is an error, not a hang.
        assert!(apply(
            &root,
            &tar(&[
                ("l1", S, b"", "l2"),
                ("l2", S, b"", "l1"),
                ("l1/x", F, b"", "")
            ])[..]
        )
        .is_err());
        assert!(!d.join("escaped").exists());
        fs::remove_dir_all(d).unwrap();
    }
}
