//! One container: its cgroup, state directory, process and streams.

use crate::cgroups::{Cgroup, Limits, Usage};
use crate::process::{self, ChildStdio, Created, ProcessConfig};
use crate::rootfs::Plan;
use crate::{spec, tty, Error};
use oci_spec::runtime::Spec;
use std::fs::File;
use std::os::unix::io::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// How to create a container.
#[derive(Debug, Clone)]
pub struct Config {
    /// Container ID (a cgroup and directory name).
    pub id: String,
    /// The OCI spec (the root's path is ignored: the layers below are the root).
    pub spec: Spec,
    /// Read-only layers, topmost first.
    pub layers: Vec<PathBuf>,
    /// Directory for the writable layer; None for a tmpfs.
    pub writable: Option<PathBuf>,
    /// Where per-container state lives (`<state_dir>/<id>/`).
    pub state_dir: PathBuf,
    /// The cgroup filesystem root (normally /sys/fs/cgroup).
    pub cgroup_root: PathBuf,
    /// Give the process a stdin pipe (ignored with a terminal, which is always stdin).
    pub open_stdin: bool,
    /// Give the process this process's own stdin, stdout and stderr (like `runc run`).
    pub inherit_stdio: bool,
    /// Install Docker's default seccomp profile.
    pub seccomp: bool,
    /// Docker's default device allow-list in the container's cgroup (unless privileged).
    /// The host's agent sets it; a microVM's agent leaves it off: the guest's devices are
    /// its own, behind the VM boundary, and its kernel has no cgroup BPF.
    pub device_filter: bool,
}

/// The OCI annotation that carries Docker's `GroupAdd` (comma-separated group names or
/// numbers, resolved in the container's /etc/group): OCI's `additionalGids` holds
/// numbers only.
pub const GROUP_ADD_ANNOTATION: &str = "org.berth.group-add";

/// The OCI annotation that asks for `--init` (Docker's `HostConfig.Init`): "true" makes
/// the container's PID 1 berth's minimal init ([`crate::init`]) with the workload as its
/// child. Docker puts `docker-init` into process.args instead; berth needs no binary in
/// the container's root.
pub const INIT_ANNOTATION: &str = "org.berth.init";

/// The OCI annotation for Docker's `Privileged`: "true" gives the container every
/// device of the agent's own /dev (the host's, or the guest's in a microVM). The rest of
/// what privileged means (capabilities, seccomp, system paths) is in the spec itself.
pub const PRIVILEGED_ANNOTATION: &str = "org.berth.privileged";

/// Whether a spec's annotation `key` is "true".
fn annotation_set(spec: &Spec, key: &str) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

/// Whether a spec is privileged.
pub fn privileged(spec: &Spec) -> bool {
    annotation_set(spec, PRIVILEGED_ANNOTATION)
}

/// Whether a spec asks for an init.
pub fn wants_init(spec: &Spec) -> bool {
    annotation_set(spec, INIT_ANNOTATION)
}

/// The groups a spec's annotation adds.
pub fn group_add(spec: &Spec) -> Vec<String> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(GROUP_ADD_ANNOTATION))
        .map(|g| {
            g.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The agent's ends of a process's streams.
pub enum Streams {
    /// The process shares the caller's own standard streams.
    Inherited,
    /// A terminal: read and write the master.
    Tty(OwnedFd),
    /// Pipes.
    Pipes {
        /// Write end of stdin, if the process has one.
        stdin: Option<File>,
        /// Read end of stdout.
        stdout: File,
        /// Read end of stderr.
        stderr: File,
    },
}

fn pipe() -> Result<(File, File), Error> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(Error::io("pipe")(std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created and are owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Makes the streams for a process; returns (agent side, child side, tty path).
pub fn make_streams(
    tty: bool,
    open_stdin: bool,
) -> Result<(Streams, ChildStdio, Option<PathBuf>), Error> {
    if tty {
        let p = tty::open().map_err(Error::io("opening a pty"))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(Error::io("dup"));
        let child = ChildStdio {
            stdin: dup(&p.slave)?,
            stdout: dup(&p.slave)?,
            stderr: p.slave,
            tty: true,
        };
        return Ok((Streams::Tty(p.master), child, Some(p.path)));
    }
    let (stdin_r, stdin_w) = if open_stdin {
        let (r, w) = pipe()?;
        (OwnedFd::from(r), Some(w))
    } else {
        (
            OwnedFd::from(File::open("/dev/null").map_err(Error::io("/dev/null"))?),
            None,
        )
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok((
        Streams::Pipes {
            stdin: stdin_w,
            stdout: out_r,
            stderr: err_r,
        },
        ChildStdio {
            stdin: stdin_r,
            stdout: out_w.into(),
            stderr: err_w.into(),
            tty: false,
        },
        None,
    ))
}

/// A container.
pub struct Container {
    /// Its ID.
    pub id: String,
    /// PID of its process (PID 1 inside), as this process sees it.
    pub pid: i32,
    cgroup: Cgroup,
    dir: PathBuf,
    created: Option<Created>,
    seccomp: bool,
    /// `GroupAdd`, which exec'd processes get too (as in Docker).
    group_add: Vec<String>,
    /// Privileged: exec'd processes' capabilities are limited to the agent's too.
    privileged: bool,
}

impl Container {
    /// Creates the container: namespaces, root, cgroup. Its process waits for
    /// [`Container::start`]. On error nothing is left behind.
    pub fn create(cfg: &Config) -> Result<(Container, Streams), Error> {
        let process = cfg
            .spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::InvalidSpec("process: missing".into()))?;
        let group_add = group_add(&cfg.spec);
        let mut pc = spec::process_config(process, cfg.seccomp)?;
        pc.group_add = group_add.clone();
        pc.init = wants_init(&cfg.spec);
        let privileged = privileged(&cfg.spec);
        if privileged {
            // "Every capability" is every one this agent has to give (a host whose
            // root lacks some cannot pass them on).
            pc.caps.limit_to(crate::security::CapSets::own_bounding());
        }
        let ns = spec::namespaces(&cfg.spec)?;
        let limits = Limits::from_oci(
            cfg.spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref()),
        )
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
        let tty = process.terminal().unwrap_or(false);
        let dir = cfg.state_dir.join(&cfg.id);
        if dir.exists() {
            return Err(Error::AlreadyExists(cfg.id.clone()));
        }
        let plan = Plan {
            rootfs: dir.join("rootfs"),
            layers: cfg.layers.clone(),
            writable: cfg.writable.clone(),
            scratch: dir.join("rw"),
            mounts: cfg.spec.mounts().clone().unwrap_or_default(),
            masked: cfg
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.masked_paths().clone())
                .unwrap_or_default(),
            readonly: cfg
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.readonly_paths().clone())
                .unwrap_or_default(),
            readonly_root: cfg
                .spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            cwd: Some(pc.cwd.clone()),
            console: None,
            devices: if privileged {
                crate::rootfs::host_devices(Path::new("/dev"))
            } else {
                spec_devices(&cfg.spec)?
            },
        };
        crate::rootfs::validate(&plan).map_err(|e| Error::InvalidSpec(e.to_string()))?;
        crate::step("create: cgroup");
        let cgroup = Cgroup::create(&cfg.cgroup_root, &cfg.id, &limits)
            .map_err(|e| Error::Cgroup(e.to_string()))?;
        if cfg.device_filter && !privileged {
            let mut rules = crate::devices::DOCKER_DEFAULT.to_vec();
            rules.extend(spec_device_rules(&cfg.spec).inspect_err(|_| cgroup.destroy())?);
            if let Err(e) = cgroup.restrict_devices(&rules) {
                cgroup.destroy();
                return Err(Error::Cgroup(e.to_string()));
            }
        }
        let cleanup = |e: Error| {
            cgroup.destroy();
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        std::fs::create_dir_all(plan.rootfs.as_path())
            .and_then(|_| std::fs::create_dir_all(&plan.scratch))
            .map_err(|e| cleanup(Error::io(format!("creating {}", dir.display()))(e)))?;
        let (streams, child, tty_path) = if cfg.inherit_stdio && !tty {
            let dup = |fd: i32| {
                // SAFETY: fds 0-2 are open for the life of the process; the dup is owned.
                let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
                if d < 0 {
                    return Err(Error::io("dup")(std::io::Error::last_os_error()));
                }
                // SAFETY: `d` was just created and is owned here.
                Ok(unsafe { OwnedFd::from_raw_fd(d) })
            };
            let child = ChildStdio {
                stdin: dup(0).map_err(cleanup)?,
                stdout: dup(1).map_err(cleanup)?,
                stderr: dup(2).map_err(cleanup)?,
                tty: false,
            };
            (Streams::Inherited, child, None)
        } else {
            make_streams(tty, cfg.open_stdin).map_err(cleanup)?
        };
        let plan = Plan {
            console: tty_path,
            ..plan
        };
        let hostname = cfg.spec.hostname().clone();
        crate::step("create: fork");
        let created = process::create(&plan, &ns, hostname.as_deref(), &cgroup, &pc, child)
            .map_err(cleanup)?;
        Ok((
            Container {
                id: cfg.id.clone(),
                pid: created.pid,
                cgroup,
                dir,
                created: Some(created),
                seccomp: cfg.seccomp,
                group_add,
                privileged,
            },
            streams,
        ))
    }

    /// Runs the process. An exec failure is returned (the process exits 126 or 127).
    pub fn start(&mut self) -> Result<(), Error> {
        let c = self.created.take().ok_or_else(|| {
            Error::Conflict(format!("container {} has already been started", self.id))
        })?;
        c.start().map(|_| ())
    }

    /// Runs another process inside; returns its PID and streams.
    pub fn exec(
        &self,
        process: &oci_spec::runtime::Process,
        open_stdin: bool,
    ) -> Result<(i32, Streams), Error> {
        if self.created.is_some() {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                self.id
            )));
        }
        let mut pc: ProcessConfig = spec::process_config(process, self.seccomp)?;
        pc.group_add = self.group_add.clone();
        if self.privileged {
            pc.caps.limit_to(crate::security::CapSets::own_bounding());
        }
        let (streams, child, _) = make_streams(process.terminal().unwrap_or(false), open_stdin)?;
        let pid = process::exec_in(self.pid, &self.cgroup, &pc, child)?;
        Ok((pid, streams))
    }

    /// Sends `sig` to the process (or, with `all`, to every process in the container).
    pub fn signal(&self, sig: i32, all: bool) -> Result<(), Error> {
        let mut pids = if all { self.cgroup.pids() } else { vec![] };
        // The cgroup unreadable (no cgroup mounts in this mount namespace): the main
        // process at least.
        if pids.is_empty() {
            pids.push(self.pid);
        }
        for pid in pids {
            // SAFETY: kill takes a pid and a signal number.
            if unsafe { libc::kill(pid, sig) } < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINVAL) {
                    return Err(Error::InvalidSpec(format!("invalid signal {sig}")));
                }
            }
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer killed a process of the container.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.oom_kills() > 0
    }

    /// Freezes every process in the container (`docker pause`), or thaws them.
    pub fn freeze(&self, frozen: bool) -> Result<(), Error> {
        self.cgroup
            .freeze(frozen)
            .map_err(|e| Error::Cgroup(e.to_string()))
    }

    /// Changes the container's resource limits (`docker update`).
    pub fn update(&self, r: &oci_spec::runtime::LinuxResources) -> Result<(), Error> {
        let l = Limits::from_oci(Some(r)).map_err(|e| Error::InvalidSpec(e.to_string()))?;
        self.cgroup
            .update(&l)
            .map_err(|e| Error::Cgroup(e.to_string()))
    }

    /// The processes in the container.
    pub fn pids(&self) -> Vec<i32> {
        self.cgroup.pids()
    }

    /// Resource usage.
    pub fn usage(&self) -> Usage {
        self.cgroup.usage()
    }

    /// The cgroup's directories (for tests and diagnostics).
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.cgroup.paths()
    }

    /// The container's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills everything left and removes the cgroup and state. Call after the process
    /// has exited (or to abandon a created one).
    pub fn destroy(mut self) {
        if self.created.take().is_some() || !self.cgroup.pids().is_empty() {
            let _ = self.signal(libc::SIGKILL, true);
            // SAFETY: kill takes a pid and a signal number.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            crate::reaper::wait_timeout(self.pid, Some(std::time::Duration::from_secs(5)));
        }
        self.cgroup.destroy();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A device path's name under /dev (`/dev/x/y` is `x/y`), if it is one: no `.` or `..`.
pub fn under_dev(p: &Path) -> Option<&Path> {
    p.strip_prefix("/dev").ok().filter(|r| {
        !r.as_os_str().is_empty()
            && r.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
    })
}

/// The spec's `linux.devices`: nodes to make under the container's /dev (`--device`).
fn spec_devices(spec: &oci_spec::runtime::Spec) -> Result<Vec<crate::rootfs::Device>, Error> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    list.iter()
        .map(|d| {
            let rel = under_dev(d.path()).ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "linux.devices: {} is not a name under /dev",
                    d.path().display()
                ))
            })?;
            let kind = match d.typ() {
                T::C | T::U => libc::S_IFCHR,
                T::B => libc::S_IFBLK,
                other => {
                    return Err(Error::InvalidSpec(format!(
                        "linux.devices: {}: type {other:?} is not a character or block device",
                        d.path().display()
                    )))
                }
            };
            Ok(crate::rootfs::Device {
                path: rel.to_path_buf(),
                mode: kind | (d.file_mode().unwrap_or(0o660) & 0o777),
                rdev: libc::makedev(d.major() as u32, d.minor() as u32),
                owner: match (d.uid(), d.gid()) {
                    (None, None) | (Some(0), Some(0)) | (Some(0), None) | (None, Some(0)) => None,
                    (u, g) => Some((u.unwrap_or(0), g.unwrap_or(0))),
                },
            })
        })
        .collect()
}

/// The spec's allow rules for the device controller (`--device`'s permissions), on top
/// of Docker's default list. Only allow rules for character or block devices are taken:
/// the default list already denies everything else.
fn spec_device_rules(spec: &oci_spec::runtime::Spec) -> Result<Vec<crate::devices::Rule>, Error> {
    use crate::devices::{Kind, Rule, MKNOD, READ, WRITE};
    use oci_spec::runtime::LinuxDeviceType as T;
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for r in list {
        if !r.allow() {
            continue;
        }
        let kind = match r.typ() {
            Some(T::C) | Some(T::U) => Kind::Char,
            Some(T::B) => Kind::Block,
            other => {
                return Err(Error::InvalidSpec(format!(
                "linux.resources.devices: allowing type {other:?} is not supported (only c and b)"
            )))
            }
        };
        let mut access = 0;
        for ch in r.access().clone().unwrap_or_else(|| "rwm".into()).chars() {
            access |= match ch {
                'r' => READ,
                'w' => WRITE,
                'm' => MKNOD,
                _ => {
                    return Err(Error::InvalidSpec(format!(
                        "linux.resources.devices: bad access {ch:?}"
                    )))
                }
            };
        }
        out.push(Rule {
            kind,
            major: r.major().map(|m| m as u32),
            minor: r.minor().map(|m| m as u32),
            access,
        });
    }
    Ok(out)
}
