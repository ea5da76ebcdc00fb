//! The container's root: an overlay of read-only layers and a writable upper, the spec's
//! mounts (/proc, /sys, /dev and friends, binds), device nodes, pivot_root, and Docker's
//! masked and read-only paths. Runs inside the container's new mount namespace.

use crate::syscall::{FileKind, Syscall};
use oci_spec::runtime::Mount;
use std::path::{Component, Path, PathBuf};

/// Errors setting up the root.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Invalid input, found before anything was mounted.
    #[error("{0}")]
    Invalid(String),
    /// A kernel call failed.
    #[error("{what}: {err}")]
    Sys {
        /// What was being done.
        what: String,
        /// Why it failed.
        err: std::io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RootfsError {
    let what = what.into();
    move |err| RootfsError::Sys { what, err }
}

/// Everything the root setup needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the overlay is mounted (an empty directory).
    pub rootfs: PathBuf,
    /// Read-only lower layers, topmost first.
    pub layers: Vec<PathBuf>,
    /// Directory holding the writable layer (`upper/`, `work/`); None: `scratch` gets a tmpfs.
    pub writable: Option<PathBuf>,
    /// A directory for the tmpfs upper layer when `writable` is None.
    pub scratch: PathBuf,
    /// The spec's mounts, in order.
    pub mounts: Vec<Mount>,
    /// Paths hidden from the container.
    pub masked: Vec<String>,
    /// Paths made read-only.
    pub readonly: Vec<String>,
    /// Make the root itself read-only.
    pub readonly_root: bool,
    /// The process's working directory, created (root's, 0755) when the image lacks it,
    /// as Docker does, before the root is made read-only.
    pub cwd: Option<PathBuf>,
    /// The terminal to bind at /dev/console, if the process has one.
    pub console: Option<PathBuf>,
    /// More device nodes for /dev (a privileged container gets every device of the
    /// agent's own /dev: the host's, or the guest's in a microVM).
    pub devices: Vec<Device>,
}

/// A device node to create under /dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its path under /dev.
    pub path: PathBuf,
    /// Type and permission bits (`S_IFCHR` or `S_IFBLK`).
    pub mode: libc::mode_t,
    /// Its device number.
    pub rdev: libc::dev_t,
    /// Its owner and group, when they are not root's.
    pub owner: Option<(u32, u32)>,
}

/// The device nodes of a fresh /dev: (name, major, minor).
const DEV_NODES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The links of a fresh /dev: (name, target).
const DEV_LINKS: [(&str, &str); 6] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

/// Whether a fresh /dev has `rel` anyway (its nodes, links and console).
fn in_fresh_dev(rel: &Path) -> bool {
    rel == Path::new("console")
        || DEV_NODES.iter().any(|(n, ..)| rel == Path::new(n))
        || DEV_LINKS.iter().any(|(n, _)| rel == Path::new(n))
}

/// Every character and block device under `dev` (normally /dev), as Docker's privileged
/// mode copies them: symlinks and the pts, shm, mqueue and fd trees left out, and the
/// nodes a fresh /dev has anyway.
pub fn host_devices(dev: &Path) -> Vec<Device> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Device>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(rel) = p.strip_prefix(root) else {
                continue;
            };
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = m.file_type();
            if ft.is_dir() {
                if !matches!(rel.to_str(), Some("pts" | "shm" | "mqueue" | "fd")) {
                    walk(root, &p, out);
                }
            } else if (ft.is_char_device() || ft.is_block_device()) && !in_fresh_dev(rel) {
                out.push(Device {
                    path: rel.to_path_buf(),
                    mode: m.mode(),
                    rdev: m.rdev(),
                    owner: Some((m.uid(), m.gid())).filter(|o| *o != (0, 0)),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(dev, dev, &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Joins a container path onto the root without letting `..` climb out.
pub fn join(root: &Path, inner: &Path) -> Result<PathBuf, RootfsError> {
    let mut p = root.to_path_buf();
    for c in inner.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => p.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RootfsError::Invalid(format!(
                    "mount destination {} must not contain \"..\"",
                    inner.display()
                )))
            }
        }
    }
    Ok(p)
}

/// Mount flags and the rest of the options (filesystem data) of an option list.
pub fn parse_options(options: &[String]) -> (libc::c_ulong, Vec<String>, bool) {
    let mut flags = 0;
    let mut data = Vec::new();
    let mut bind = false;
    for o in options {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "noatime" => flags |= libc::MS_NOATIME,
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= libc::MS_REC
            }
            // Options that undo an earlier one: Docker's `--tmpfs /x:exec` after its
            // default noexec.
            "suid" => flags &= !libc::MS_NOSUID,
            "dev" => flags &= !libc::MS_NODEV,
            "exec" => flags &= !libc::MS_NOEXEC,
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "async"
            | "atime" | "norelatime" => {}
            other => data.push(other.to_owned()),
        }
    }
    (flags, data, bind)
}

/// Checks what can be checked before forking: layers and bind sources exist, destinations
/// are clean.
pub fn validate(plan: &Plan) -> Result<(), RootfsError> {
    if plan.layers.is_empty() {
        return Err(RootfsError::Invalid("the root has no layers".into()));
    }
    for l in &plan.layers {
        let s = l.display().to_string();
        if s.contains(':') || s.contains(',') {
            return Err(RootfsError::Invalid(format!(
                "layer path {s} must not contain ':' or ','"
            )));
        }
        if !l.is_dir() {
            return Err(RootfsError::Invalid(format!(
                "rootfs layer {s} is not a directory"
            )));
        }
    }
    if let Some(w) = &plan.writable {
        if !w.is_dir() {
            return Err(RootfsError::Invalid(format!(
                "writable layer {} is not a directory",
                w.display()
            )));
        }
    }
    for m in &plan.mounts {
        join(Path::new("/"), m.destination())?;
        if !m.destination().is_absolute() {
            return Err(RootfsError::Invalid(format!(
                "mount destination {} is not absolute",
                m.destination().display()
            )));
        }
        let (_, _, bind) = parse_options(m.options().as_deref().unwrap_or_default());
        if bind || m.typ().as_deref() == Some("bind") {
            let src = m.source().clone().unwrap_or_default();
            if !src.exists() {
                return Err(RootfsError::Invalid(format!(
                    "bind mount source {} does not exist",
                    src.display()
                )));
            }
        }
    }
    Ok(())
}

/// Refuses to mount over a symlink (it could point outside the root).
fn no_symlinks(sys: &dyn Syscall, root: &Path, dest: &Path) -> Result<(), RootfsError> {
    let mut p = root.to_path_buf();
    for c in dest.strip_prefix(root).unwrap_or(dest).components() {
        p.push(c);
        if sys.kind(&p) == Some(FileKind::Symlink) {
            return Err(RootfsError::Invalid(format!(
                "mount destination {} is a symlink in the image",
                p.strip_prefix(root).unwrap_or(&p).display()
            )));
        }
    }
    Ok(())
}

/// Sets up the root in the current (new, private) mount namespace and enters it.
pub fn setup(sys: &dyn Syscall, plan: &Plan) -> Result<(), RootfsError> {
    // Nothing we do here may propagate back to the host.
    sys.mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(sys_err("making / private"))?;

    // The overlay root.
    let (upper, work) = match &plan.writable {
        Some(w) => (w.join("upper"), w.join("work")),
        None => {
            sys.mount(
                Some("tmpfs"),
                &plan.scratch,
                Some("tmpfs"),
                0,
                Some("mode=0755"),
            )
            .map_err(sys_err(format!(
                "mounting the writable tmpfs at {}",
                plan.scratch.display()
            )))?;
            (plan.scratch.join("upper"), plan.scratch.join("work"))
        }
    };
    sys.mkdir_all(&upper)
        .map_err(sys_err(format!("creating {}", upper.display())))?;
    sys.mkdir_all(&work)
        .map_err(sys_err(format!("creating {}", work.display())))?;
    let lower: Vec<String> = plan
        .layers
        .iter()
        .map(|l| l.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    sys.mount(
        Some("overlay"),
        &plan.rootfs,
        Some("overlay"),
        0,
        Some(&data),
    )
    .map_err(sys_err("mounting the overlay root"))?;

    // The spec's mounts.
    let mut dev_is_tmpfs = false;
    for m in &plan.mounts {
        let dest = join(&plan.rootfs, m.destination())?;
        no_symlinks(sys, &plan.rootfs, &dest)?;
        let (flags, data, bind) = parse_options(m.options().as_deref().unwrap_or_default());
        let typ = m.typ().clone().unwrap_or_default();
        let shown = m.destination().display().to_string();
        if bind || typ == "bind" {
            let src = m.source().clone().unwrap_or_default();
            if src.is_dir() {
                sys.mkdir_all(&dest)
            } else {
                sys.touch(&dest)
            }
            .map_err(sys_err(format!("creating mount point {shown}")))?;
            let s = src.display().to_string();
            sys.mount(
                Some(&s),
                &dest,
                None,
                libc::MS_BIND | (flags & libc::MS_REC),
                None,
            )
            .map_err(sys_err(format!("bind mounting {s} at {shown}")))?;
            let remount = flags & !libc::MS_REC;
            if remount != 0 {
                sys.mount(
                    None,
                    &dest,
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | remount,
                    None,
                )
                .map_err(sys_err(format!("remounting {shown}")))?;
            }
            // A read-only recursive bind is read-only all the way down: its submounts
            // too (otherwise they would stay writable under a `:ro` volume).
            if flags & libc::MS_RDONLY != 0 && flags & libc::MS_REC != 0 {
                sys.readonly_recursive(&dest).map_err(sys_err(format!(
                    "making {shown} read-only with its submounts (mount_setattr, Linux 5.12)"
                )))?;
            }
        } else if typ == "cgroup" || typ == "cgroup2" {
            // The container's view of cgroups: cgroup2 where the host runs it; on a v1
            // host the hierarchies are not exposed (an empty read-only tmpfs).
            sys.mkdir_all(&dest)
                .map_err(sys_err(format!("creating mount point {shown}")))?;
            let flags = flags | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let r = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                sys.mount(Some("cgroup2"), &dest, Some("cgroup2"), flags, None)
            } else {
                let ro = flags | libc::MS_RDONLY;
                sys.mount(
                    Some("tmpfs"),
                    &dest,
                    Some("tmpfs"),
                    ro,
                    Some("mode=0555,size=4k"),
                )
            };
            r.map_err(sys_err(format!("mounting cgroups at {shown}")))?;
        } else {
            sys.mkdir_all(&dest)
                .map_err(sys_err(format!("creating mount point {shown}")))?;
            let src = m
                .source()
                .as_ref()
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| typ.clone());
            let data = data.join(",");
            let data = (!data.is_empty()).then_some(data.as_str());
            sys.mount(Some(&src), &dest, Some(&typ), flags, data)
                .map_err(sys_err(format!("mounting {typ} at {shown}")))?;
            if m.destination() == Path::new("/dev") && typ == "tmpfs" {
                dev_is_tmpfs = true;
            }
        }
    }
    if dev_is_tmpfs {
        populate_dev(sys, &plan.rootfs.join("dev"), plan.console.as_deref())?;
        for d in &plan.devices {
            let p = join(&plan.rootfs.join("dev"), &d.path)?;
            if let Some(parent) = p.parent() {
                sys.mkdir_all(parent)
                    .map_err(sys_err(format!("creating {}", parent.display())))?;
            }
            sys.mknod(&p, d.mode, d.rdev)
                .map_err(sys_err(format!("creating /dev/{}", d.path.display())))?;
            if let Some((uid, gid)) = d.owner {
                sys.lchown(&p, uid, gid)
                    .map_err(sys_err(format!("chowning /dev/{}", d.path.display())))?;
            }
        }
    }

    // Enter it: pivot_root(".", ".") stacks the old root under the new one; detach it.
    sys.chdir(&plan.rootfs)
        .map_err(sys_err("entering the root"))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(sys_err("pivot_root"))?;
    sys.umount(Path::new("."), libc::MNT_DETACH)
        .map_err(sys_err("detaching the old root"))?;
    sys.chdir(Path::new("/")).map_err(sys_err("chdir /"))?;
    if let Some(cwd) = &plan.cwd {
        if sys.kind(cwd).is_none() {
            sys.mkdir_all(cwd).map_err(sys_err(format!(
                "creating the working directory {}",
                cwd.display()
            )))?;
        }
    }

    for p in &plan.masked {
        let path = Path::new(p);
        match sys.kind(path) {
            Some(FileKind::Dir) => {
                sys.mount(Some("tmpfs"), path, Some("tmpfs"), libc::MS_RDONLY, None)
            }
            Some(FileKind::Other) => sys.mount(Some("/dev/null"), path, None, libc::MS_BIND, None),
            _ => Ok(()),
        }
        .map_err(sys_err(format!("masking {p}")))?;
    }
    for p in &plan.readonly {
        let path = Path::new(p);
        if sys.kind(path).is_none() {
            continue;
        }
        sys.mount(Some(p), path, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(sys_err(format!("making {p} read-only")))?;
        sys.mount(
            None,
            path,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
            None,
        )
        .map_err(sys_err(format!("making {p} read-only")))?;
    }
    if plan.readonly_root {
        sys.mount(
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )
        .map_err(sys_err("making the root read-only"))?;
    }
    Ok(())
}

fn sys_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RootfsError {
    sys(what)
}

/// Device nodes and links of a fresh /dev (a tmpfs), as Docker creates them.
fn populate_dev(sys: &dyn Syscall, dev: &Path, console: Option<&Path>) -> Result<(), RootfsError> {
    for (name, major, minor) in DEV_NODES {
        let p = dev.join(name);
        sys.mknod(&p, libc::S_IFCHR | 0o666, libc::makedev(major, minor))
            .map_err(sys_err(format!("creating /dev/{name}")))?;
    }
    for (link, target) in DEV_LINKS {
        sys.symlink(Path::new(target), &dev.join(link))
            .map_err(sys_err(format!("creating /dev/{link}")))?;
    }
    if let Some(tty) = console {
        let c = dev.join("console");
        sys.touch(&c).map_err(sys_err("creating /dev/console"))?;
        let t = tty.display().to_string();
        sys.mount(Some(&t), &c, None, libc::MS_BIND, None)
            .map_err(sys_err("binding the terminal at /dev/console"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::recorder::Recorder;
    use oci_spec::runtime::MountBuilder;

    fn plan(mounts: Vec<Mount>) -> Plan {
        Plan {
            rootfs: "/run/c/rootfs".into(),
            layers: vec!["/img/l2".into(), "/img/l1".into()],
            writable: None,
            scratch: "/run/c/rw".into(),
            mounts,
            masked: vec![
                "/proc/kcore".into(),
                "/proc/acpi".into(),
                "/nonexistent".into(),
            ],
            readonly: vec!["/proc/sys".into()],
            readonly_root: false,
            cwd: Some("/srv/app".into()),
            console: Some("/dev/pts/3".into()),
            devices: vec![],
        }
    }

    #[test]
    fn a_privileged_dev_gets_the_agents_devices() {
        // /dev itself: the defaults and the pts tree are left out.
        let devs = host_devices(Path::new("/dev"));
        assert!(devs.iter().all(|d| !d.path.starts_with("pts")));
        assert!(!devs
            .iter()
            .any(|d| d.path == Path::new("null") || d.path == Path::new("ptmx")));
        let sys = Recorder::with(&[]);
        let p = Plan {
            devices: vec![Device {
                path: "dri/card0".into(),
                mode: libc::S_IFCHR | 0o660,
                rdev: libc::makedev(226, 0),
                owner: Some((0, 44)),
            }],
            ..plan(vec![m("/dev", "tmpfs", "tmpfs", &["mode=755"])])
        };
        setup(&sys, &p).unwrap();
        let calls = sys.calls();
        assert!(
            calls.contains(&"mknod /run/c/rootfs/dev/dri/card0 226:0".to_string())
                && calls.contains(&"lchown /run/c/rootfs/dev/dri/card0 0:44".to_string()),
            "{calls:?}"
        );
        // `..` in a device path is refused.
        let p = Plan {
            devices: vec![Device {
                path: "../../etc/x".into(),
                mode: libc::S_IFCHR,
                rdev: 0,
                owner: None,
            }],
            ..plan(vec![m("/dev", "tmpfs", "tmpfs", &["mode=755"])])
        };
        assert!(setup(&Recorder::with(&[]), &p).is_err());
    }

    fn m(dest: &str, typ: &str, src: &str, opts: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(src)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn the_root_is_an_overlay_entered_with_pivot_root() {
        let sys = Recorder::with(&[
            ("/proc/kcore", FileKind::Other),
            ("/proc/acpi", FileKind::Dir),
            ("/proc/sys", FileKind::Dir),
        ]);
        let p = plan(vec![
            m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            m(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
        ]);
        let p = Plan {
            readonly_root: true,
            ..p
        };
        setup(&sys, &p).unwrap();
        let calls = sys.calls();
        let pos = |prefix: &str| {
            calls
                .iter()
                .position(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {calls:#?}"))
        };
        assert!(calls[0].starts_with("mount - / - 0x44000"), "{}", calls[0]);
        assert!(calls.contains(&"mount overlay /run/c/rootfs overlay 0x0 lowerdir=/img/l2:/img/l1,upperdir=/run/c/rw/upper,workdir=/run/c/rw/work".to_string()), "{calls:#?}");
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount tmpfs /run/c/rootfs/dev tmpfs")
                && c.ends_with("mode=755,size=65536k")));
        assert!(pos("mknod /run/c/rootfs/dev/null 1:3") < pos("pivot_root . ."));
        assert!(pos("mount proc /run/c/rootfs/proc proc") < pos("pivot_root"));
        assert!(
            calls.contains(&"mount /dev/pts/3 /run/c/rootfs/dev/console - 0x1000 -".to_string())
        );
        // After pivot_root: masked and read-only paths.
        assert!(pos("mount /dev/null /proc/kcore") > pos("pivot_root"));
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount tmpfs /proc/acpi tmpfs 0x1")));
        assert!(!calls.iter().any(|c| c.contains("/nonexistent")));
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("mount - /proc/sys - 0x5021")),
            "{calls:#?}"
        );
        // The missing working directory is made in the container's root, before the
        // root is made read-only.
        assert!(pos("mkdir_all /srv/app") > pos("pivot_root"));
        assert!(pos("mkdir_all /srv/app") < pos("mount - / - 0x1021"));
    }

    #[test]
    fn read_only_recursive_binds_are_read_only_below_too() {
        let sys = Recorder::with(&[]);
        let src = std::env::temp_dir().display().to_string();
        setup(
            &sys,
            &plan(vec![
                m("/ro", "bind", &src, &["rbind", "ro"]),
                m("/rw", "bind", &src, &["rbind"]),
            ]),
        )
        .unwrap();
        let calls = sys.calls();
        assert!(
            calls.contains(&"readonly_recursive /run/c/rootfs/ro".to_string()),
            "{calls:#?}"
        );
        assert!(!calls
            .iter()
            .any(|c| c.ends_with("/rootfs/rw") && c.starts_with("readonly")));
    }

    #[test]
    fn dot_dot_and_symlinked_destinations_are_refused() {
        assert!(join(Path::new("/r"), Path::new("/a/../../etc")).is_err());
        assert_eq!(
            join(Path::new("/r"), Path::new("/a/./b")).unwrap(),
            PathBuf::from("/r/a/b")
        );
        let sys = Recorder::with(&[("/run/c/rootfs/data", FileKind::Symlink)]);
        let e = setup(&sys, &plan(vec![m("/data/x", "tmpfs", "tmpfs", &[])]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symlink"), "{e}");
    }

    #[test]
    fn validation_names_missing_sources_and_layers() {
        let mut p = plan(vec![m("/data", "bind", "/nonexistent/src", &["rbind"])]);
        p.layers = vec![std::env::temp_dir()];
        let e = validate(&p).unwrap_err().to_string();
        assert_eq!(e, "bind mount source /nonexistent/src does not exist");
        p.mounts.clear();
        p.layers = vec!["/etc/hostname".into()];
        assert!(validate(&p)
            .unwrap_err()
            .to_string()
            .contains("is not a directory"));
        p.layers = vec![];
        assert!(validate(&p).is_err());
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (f, d, b) = parse_options(&[
            "ro".into(),
            "rbind".into(),
            "mode=755".into(),
            "nosuid".into(),
        ]);
        assert_eq!(f, libc::MS_RDONLY | libc::MS_REC | libc::MS_NOSUID);
        assert_eq!(d, vec!["mode=755"]);
        assert!(b);
        // A later option undoes an earlier one (Docker's tmpfs defaults, then the user's).
        let (f, _, _) = parse_options(&["noexec".into(), "nosuid".into(), "exec".into()]);
        assert_eq!(f, libc::MS_NOSUID);
    }
}
