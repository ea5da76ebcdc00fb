//! The narrow interface between the runtime and the kernel's mount-namespace calls, so
//! that rootfs setup is testable without root ([`Recorder`] in tests).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Kernel calls the rootfs setup makes.
pub trait Syscall {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// umount2(2).
    fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    /// Makes the mount at `target` and every mount below it read-only
    /// (mount_setattr(2) with AT_RECURSIVE, Linux 5.12).
    fn readonly_recursive(&self, target: &Path) -> io::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// mkdir -p.
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates an empty file (a bind-mount target) if missing.
    fn touch(&self, path: &Path) -> io::Result<()>;
    /// mknod(2), with the permission bits of `mode` exactly (not through the umask).
    fn mknod(&self, path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()>;
    /// lchown(2).
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// symlink(2).
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// What is at `path`, without following a final symlink.
    fn kind(&self, path: &Path) -> Option<FileKind>;
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (file, device, socket).
    Other,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cstr_s(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The real kernel.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(cstr_s).transpose()?;
        let fstype = fstype.map(cstr_s).transpose()?;
        let data = data.map(cstr_s).transpose()?;
        let target = cstr(target)?;
        let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: every pointer is either null or a NUL-terminated string that outlives
        // the call.
        check(unsafe {
            libc::mount(
                p(&source),
                target.as_ptr(),
                p(&fstype),
                flags,
                p(&data) as *const libc::c_void,
            )
        })
    }
    fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let t = cstr(target)?;
        // SAFETY: `t` is a valid NUL-terminated path.
        check(unsafe { libc::umount2(t.as_ptr(), flags) })
    }
    fn readonly_recursive(&self, target: &Path) -> io::Result<()> {
        /// `struct mount_attr` (include/uapi/linux/mount.h).
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        const MOUNT_ATTR_RDONLY: u64 = 0x1;
        const AT_RECURSIVE: libc::c_uint = 0x8000;
        let t = cstr(target)?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: a NUL-terminated path and a mount_attr of the size passed, both
        // outliving the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                t.as_ptr(),
                AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        let (n, o) = (cstr(new_root)?, cstr(put_old)?);
        // SAFETY: both are valid NUL-terminated paths.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) } as libc::c_int)
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }
    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        if path.symlink_metadata().is_ok() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(|_| ())
    }
    fn mknod(&self, path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        let p = cstr(path)?;
        // SAFETY: `p` is a valid NUL-terminated path.
        check(unsafe { libc::mknod(p.as_ptr(), mode, dev) })?;
        // SAFETY: as above; chmod reads only the path.
        check(unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) })
    }
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes.
        check(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) })
    }
    fn kind(&self, path: &Path) -> Option<FileKind> {
        let m = path.symlink_metadata().ok()?;
        Some(if m.file_type().is_symlink() {
            FileKind::Symlink
        } else if m.is_dir() {
            FileKind::Dir
        } else {
            FileKind::Other
        })
    }
}

/// Records calls instead of making them, for tests.
#[cfg(test)]
pub mod recorder {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// A fake kernel: paths it "has", and the calls it got.
    #[derive(Default)]
    pub struct Recorder {
        pub calls: RefCell<Vec<String>>,
        pub files: RefCell<HashMap<PathBuf, FileKind>>,
    }

    impl Recorder {
        pub fn with(files: &[(&str, FileKind)]) -> Recorder {
            let r = Recorder::default();
            for (p, k) in files {
                r.files.borrow_mut().insert(PathBuf::from(p), *k);
            }
            r
        }
        fn log(&self, s: String) {
            self.calls.borrow_mut().push(s);
        }
        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Syscall for Recorder {
        fn mount(
            &self,
            source: Option<&str>,
            target: &Path,
            fstype: Option<&str>,
            flags: libc::c_ulong,
            data: Option<&str>,
        ) -> io::Result<()> {
            self.log(format!(
                "mount {} {} {} {flags:#x} {}",
                source.unwrap_or("-"),
                target.display(),
                fstype.unwrap_or("-"),
                data.unwrap_or("-")
            ));
            Ok(())
        }
        fn umount(&self, target: &Path, _flags: libc::c_int) -> io::Result<()> {
            self.log(format!("umount {}", target.display()));
            Ok(())
        }
        fn readonly_recursive(&self, target: &Path) -> io::Result<()> {
            self.log(format!("readonly_recursive {}", target.display()));
            Ok(())
        }
        fn pivot_root(&self, n: &Path, o: &Path) -> io::Result<()> {
            self.log(format!("pivot_root {} {}", n.display(), o.display()));
            Ok(())
        }
        fn chdir(&self, p: &Path) -> io::Result<()> {
            self.log(format!("chdir {}", p.display()));
            Ok(())
        }
        fn mkdir_all(&self, p: &Path) -> io::Result<()> {
            self.log(format!("mkdir_all {}", p.display()));
            self.files.borrow_mut().insert(p.to_owned(), FileKind::Dir);
            Ok(())
        }
        fn touch(&self, p: &Path) -> io::Result<()> {
            self.files
                .borrow_mut()
                .entry(p.to_owned())
                .or_insert(FileKind::Other);
            Ok(())
        }
        fn mknod(&self, p: &Path, _m: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
            self.log(format!(
                "mknod {} {}:{}",
                p.display(),
                libc::major(dev),
                libc::minor(dev)
            ));
            Ok(())
        }
        fn lchown(&self, p: &Path, uid: u32, gid: u32) -> io::Result<()> {
            self.log(format!("lchown {} {uid}:{gid}", p.display()));
            Ok(())
        }
        fn symlink(&self, t: &Path, l: &Path) -> io::Result<()> {
            self.log(format!("symlink {} -> {}", l.display(), t.display()));
            Ok(())
        }
        fn sethostname(&self, n: &str) -> io::Result<()> {
            self.log(format!("sethostname {n}"));
            Ok(())
        }
        fn kind(&self, p: &Path) -> Option<FileKind> {
            self.files.borrow().get(p).copied()
        }
    }
}
