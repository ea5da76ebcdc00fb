//! The jail: how a monitor started as root confines itself before its guest runs.
//!
//! Like Firecracker's jailer, but in berth-vmm itself, so that everything the guest needs
//! from the host is opened while the monitor still can, and nothing after:
//!
//! 1. [`prepare`] (as root, first thing): close every inherited descriptor but 0-2, join
//!    the cgroup berthd made for this microVM (memory, CPU and pids limits), create the
//!    jail directory (empty).
//! 2. [`fork_monitor`]: a new PID namespace; the monitor proper is its PID 1, and the
//!    process berthd started stays outside as a waiter that passes SIGTERM/SIGINT/SIGHUP
//!    on and exits with the monitor's status. The monitor dies with the waiter
//!    (`PR_SET_PDEATHSIG`), so killing the process berthd knows kills both.
//! 3. The monitor builds the VM as usual: `/dev/kvm`, the kernel, initramfs, disks, taps,
//!    vsock and control sockets, console and vhost-user connections are all opened now.
//! 4. [`enter`] (monitor and waiter alike): new mount, IPC, UTS and network namespaces
//!    (the taps are already open; the host's network is gone), the jail directory
//!    bind-mounted read-only, `nosuid,nodev,noexec` and made the root by `pivot_root`
//!    (the host's tree is detached), rlimits, the jail's uid and gid with no
//!    supplementary groups, every capability dropped (bounding, ambient, inheritable,
//!    permitted, effective), `no_new_privs`, not dumpable.
//! 5. Each thread then installs its seccomp filter ([`crate::seccomp`]).
//!
//! The jail directory holds nothing: the monitor never opens a path once the guest runs
//! (a guest's vsock connection to `<uds>_<port>` finds no such socket in the jail and is
//! refused). Its sockets stay where they were bound, outside the jail, and whoever
//! started the monitor removes them with its directory.

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Errors confining the monitor; each names the step.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A step failed.
    #[error("jail: {0}: {1}")]
    Step(String, std::io::Error),
    /// The monitor is not root, so it cannot confine itself.
    #[error("jail: berth-vmm must start as root to jail itself (it drops to uid {0} at once)")]
    NotRoot(u32),
    /// The jail directory holds files.
    #[error("jail: {0} is not empty: it becomes the monitor's whole filesystem")]
    NotEmpty(String),
}

fn step(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.into();
    move |e| JailError::Step(what, e)
}

/// Where and as whom the monitor is jailed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// The directory that becomes the monitor's root (created if missing; must be empty).
    pub dir: PathBuf,
    /// The monitor's uid: one of its own, no other process's.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
    /// `cgroup.procs` files the monitor writes its PID to before it allocates anything
    /// (one for cgroup v2, one per controller for v1).
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

impl JailConfig {
    /// Checks what can be checked before starting.
    pub fn validate(&self) -> Result<(), String> {
        if !self.dir.is_absolute() {
            return Err(format!(
                "{}: the jail directory must be absolute",
                self.dir.display()
            ));
        }
        if self.uid == 0 || self.gid == 0 {
            return Err("the jail's uid and gid must not be root's (0)".into());
        }
        if self.uid == u32::MAX || self.gid == u32::MAX {
            return Err("uid and gid 4294967295 mean \"no change\" to the kernel".into());
        }
        if let Some(c) = self
            .cgroups
            .iter()
            .find(|c| c.file_name().and_then(|n| n.to_str()) != Some("cgroup.procs"))
        {
            return Err(format!(
                "{}: a cgroup is given by its cgroup.procs file",
                c.display()
            ));
        }
        Ok(())
    }
}

/// The monitor's resource limits in the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimits {
    /// RLIMIT_NOFILE.
    pub files: u64,
    /// RLIMIT_AS, bytes.
    pub address_space: u64,
    /// RLIMIT_NPROC (threads count, per uid: the jail's uid is this microVM's alone).
    pub processes: u64,
    /// RLIMIT_FSIZE, bytes: the console log, and the writable disks' own sizes.
    pub file_size: u64,
}

/// Room for the console log in a file.
const CONSOLE_MAX: u64 = 64 << 20;

impl Rlimits {
    /// The limits for a VM: its memory and a GiB for the monitor (thread stacks and
    /// allocator arenas are address space, mostly never touched), its vCPU threads and
    /// the two processes, descriptors for many host connections.
    pub fn for_vm(config: &crate::config::VmConfig) -> Rlimits {
        let disks = config
            .disks
            .iter()
            .filter(|d| !d.read_only)
            .filter_map(|d| std::fs::metadata(&d.path).ok().map(|m| m.len()))
            .max()
            .unwrap_or(0);
        // Read-only images are mapped whole, beside guest RAM.
        let images: u64 = config
            .pmem
            .iter()
            .filter_map(|p| std::fs::metadata(&p.path).ok().map(|m| m.len()))
            .sum();
        Rlimits {
            files: 2048,
            address_space: ((config.memory_mib + 1024) << 20) + images,
            processes: u64::from(config.vcpus) + 4,
            // A snapshot's memory file is as large as guest RAM.
            file_size: disks.max(CONSOLE_MAX).max(if config.snapshot_to.is_some() {
                config.memory_mib << 20
            } else {
                0
            }),
        }
    }

    /// Just enough for the waiter.
    fn waiter() -> Rlimits {
        Rlimits {
            files: 16,
            address_space: 256 << 20,
            processes: 64,
            file_size: 1 << 20,
        }
    }
}

fn last_error(what: impl Into<String>) -> JailError {
    JailError::Step(what.into(), std::io::Error::last_os_error())
}

fn check(rc: libc::c_int, what: impl Into<String>) -> Result<(), JailError> {
    if rc < 0 {
        Err(last_error(what))
    } else {
        Ok(())
    }
}

fn cstr(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        JailError::Step(
            format!("{}", p.display()),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

/// Step 1, as root before anything else: descriptors, cgroup, directory.
pub fn prepare(j: &JailConfig) -> Result<(), JailError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(JailError::NotRoot(j.uid));
    }
    // Nothing berthd (or anyone) left open reaches the jail.
    // SAFETY: close_range on numbers only; 0-2 stay.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc < 0 {
        return Err(last_error("closing inherited descriptors"));
    }
    let pid = std::process::id().to_string();
    for c in &j.cgroups {
        std::fs::write(c, &pid).map_err(step(format!("joining the cgroup {}", c.display())))?;
    }
    match std::fs::create_dir(&j.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut entries =
                std::fs::read_dir(&j.dir).map_err(step(format!("{}", j.dir.display())))?;
            if entries.next().is_some() {
                return Err(JailError::NotEmpty(j.dir.display().to_string()));
            }
        }
        Err(e) => return Err(JailError::Step(format!("creating {}", j.dir.display()), e)),
    }
    Ok(())
}

/// In the monitor: the read end of a pipe whose write end only the waiter holds (its
/// closing tells the monitor the waiter is gone); -1 elsewhere.
static WAITER_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Makes the calling monitor die with the waiter (again: a change of credentials clears
/// the parent-death signal), and exits at once if the waiter is already gone.
fn die_with_waiter() {
    let fd = WAITER_PIPE.load(std::sync::atomic::Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    // SAFETY: prctl with an integer signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) };
    if p.revents & libc::POLLHUP != 0 {
        // SAFETY: exiting at once: nobody waits for this monitor any more.
        unsafe { libc::_exit(1) };
    }
}

/// The signals the waiter passes on to the monitor.
const FORWARDED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the numbers are valid signals.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
    }
    set
}

/// Step 2: returns in the monitor (PID 1 of a new PID namespace). The calling process
/// becomes the waiter, enters the jail itself and never returns.
pub fn fork_monitor(j: &JailConfig, mode: crate::seccomp::Mode) -> Result<(), JailError> {
    let waited = sigset(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD]);
    // SAFETY: `waited` is initialised; blocked here so none is lost before the waiter
    // waits for them (the monitor blocks the first three itself, for its signalfd).
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &waited, std::ptr::null_mut()) };
    check(rc, "blocking signals")?;
    // SAFETY: unshare with a namespace flag; only this process's future children move.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWPID) };
    check(rc, "a new PID namespace")?;
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    let rc = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
    check(rc, "a pipe")?;
    // SAFETY: the process is single-threaded here (nothing has started a thread yet),
    // so the child may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_error("fork"));
    }
    if pid == 0 {
        // SAFETY: closing our copy of the write end: the waiter holds the only one.
        unsafe { libc::close(pipe[1]) };
        // The waiter may have gone before the parent-death signal was set: then its end
        // is closed. (Checked again after the jail's change of credentials.)
        WAITER_PIPE.store(pipe[0], std::sync::atomic::Ordering::SeqCst);
        die_with_waiter();
        let chld = sigset(&[libc::SIGCHLD]);
        // SAFETY: `chld` is initialised.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &chld, std::ptr::null_mut()) };
        return Ok(());
    }
    // SAFETY: closing our copy of the read end; the write end stays open while we live.
    unsafe { libc::close(pipe[0]) };
    if let Err(e) = enter(j, Rlimits::waiter()) {
        eprintln!("berth-vmm: {e}");
        // SAFETY: kill of our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    } else if let Err(e) = crate::seccomp::install(
        crate::seccomp::Thread::Waiter,
        "waiter",
        mode,
        crate::seccomp::Options::default(),
    ) {
        eprintln!("berth-vmm: {e}");
        // SAFETY: kill of our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_for(pid, &waited)
}

/// The waiter's loop: passes signals on, exits as the monitor did.
fn wait_for(pid: libc::pid_t, set: &libc::sigset_t) -> ! {
    loop {
        // SAFETY: siginfo_t is plain data, written by the kernel.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is initialised and blocked; `info` is writable.
        let sig = unsafe { libc::sigtimedwait(set, &mut info, std::ptr::null()) };
        if FORWARDED.contains(&sig) {
            // SAFETY: kill of our own child with the signal we got.
            unsafe { libc::kill(pid, sig) };
            continue;
        }
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is writable.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            // SAFETY: exiting; nothing to flush.
            unsafe { libc::_exit(code) };
        }
        if r < 0 {
            // SAFETY: as above: the child is gone and cannot be waited for.
            unsafe { libc::_exit(1) };
        }
    }
}

/// Step 4, in a process that has opened all it needs and runs one thread.
pub fn enter(j: &JailConfig, limits: Rlimits) -> Result<(), JailError> {
    // The capabilities this kernel knows, read while /proc is still there.
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    crate::vm::trace("jail: enter");
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET;
    // SAFETY: unshare with namespace flags; the process is single-threaded.
    let rc = unsafe { libc::unshare(flags) };
    check(rc, "new mount, IPC, UTS and network namespaces")?;
    crate::vm::trace("jail: namespaces");
    let dir = cstr(&j.dir)?;
    let root = c"/";
    let none = std::ptr::null();
    // SAFETY: mount(2) with valid C strings or null where the kernel allows it.
    unsafe {
        check(
            libc::mount(
                none,
                root.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none as _,
            ),
            "making the mounts private",
        )?;
        check(
            libc::mount(dir.as_ptr(), dir.as_ptr(), none, libc::MS_BIND, none as _),
            format!("binding {}", j.dir.display()),
        )?;
        check(
            libc::mount(
                none,
                dir.as_ptr(),
                none,
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                none as _,
            ),
            format!("making {} read-only", j.dir.display()),
        )?;
        check(
            libc::chdir(dir.as_ptr()),
            format!("entering {}", j.dir.display()),
        )?;
        // pivot_root(".", "."): the old root ends up on top of the new one, and is
        // detached at once.
        let dot = c".";
        check(
            libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int,
            "pivot_root",
        )?;
        check(
            libc::umount2(dot.as_ptr(), libc::MNT_DETACH),
            "detaching the host's tree",
        )?;
        check(libc::chdir(root.as_ptr()), "chdir /")?;
        let host = b"berth-vmm";
        libc::sethostname(host.as_ptr() as *const libc::c_char, host.len());
    }
    crate::vm::trace("jail: pivot_root");
    set_rlimits(limits)?;
    // SAFETY: ignoring SIGXFSZ so that a write past RLIMIT_FSIZE fails with EFBIG
    // instead of killing the monitor.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    drop_privileges(j, last_cap)?;
    crate::vm::trace("jail: privileges dropped");
    // The new credentials cleared the parent-death signal.
    die_with_waiter();
    let fd = WAITER_PIPE.swap(-1, std::sync::atomic::Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: closing the monitor's own pipe end, no longer needed.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

fn set_rlimits(l: Rlimits) -> Result<(), JailError> {
    for (res, v, name) in [
        (libc::RLIMIT_NOFILE, l.files, "RLIMIT_NOFILE"),
        (libc::RLIMIT_AS, l.address_space, "RLIMIT_AS"),
        (libc::RLIMIT_NPROC, l.processes, "RLIMIT_NPROC"),
        (libc::RLIMIT_FSIZE, l.file_size, "RLIMIT_FSIZE"),
        (libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
        (libc::RLIMIT_MEMLOCK, 0, "RLIMIT_MEMLOCK"),
    ] {
        let r = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: `r` is a valid rlimit.
        check(unsafe { libc::setrlimit(res, &r) }, name)?;
    }
    Ok(())
}

fn drop_privileges(j: &JailConfig, last_cap: u32) -> Result<(), JailError> {
    // SAFETY: prctl/setgroups/setres[ug]id/capset with plain integers or valid pointers.
    unsafe {
        for cap in 0..=last_cap {
            check(
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0),
                format!("dropping capability {cap} from the bounding set"),
            )?;
        }
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "clearing ambient capabilities",
        )?;
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(
            libc::setresgid(j.gid, j.gid, j.gid),
            format!("setresgid {}", j.gid),
        )?;
        check(
            libc::setresuid(j.uid, j.uid, j.uid),
            format!("setresuid {}", j.uid),
        )?;
        // Leaving root cleared permitted and effective; clear inheritable too.
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let d = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check(
            libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) as libc::c_int,
            "capset",
        )?;
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "no_new_privs",
        )?;
        check(
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0),
            "not dumpable",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JailConfig {
        JailConfig {
            dir: "/run/berth/c/x/jail".into(),
            uid: 900_000_000,
            gid: 900_000_000,
            cgroups: vec!["/sys/fs/cgroup/berth/x/cgroup.procs".into()],
        }
    }

    #[test]
    fn a_jail_never_runs_as_root_or_in_a_relative_directory() {
        assert_eq!(cfg().validate(), Ok(()));
        let mut c = cfg();
        c.uid = 0;
        assert!(c.validate().unwrap_err().contains("root"));
        let mut c = cfg();
        c.dir = "jail".into();
        assert!(c.validate().unwrap_err().contains("absolute"));
        let mut c = cfg();
        c.cgroups = vec!["/sys/fs/cgroup/berth/x".into()];
        assert!(c.validate().unwrap_err().contains("cgroup.procs"));
    }

    #[test]
    fn limits_follow_the_vm() {
        let c = crate::config::VmConfig {
            vcpus: 2,
            memory_mib: 256,
            ..Default::default()
        };
        let l = Rlimits::for_vm(&c);
        assert_eq!(l.address_space, (256 + 1024) << 20);
        assert_eq!(l.processes, 6);
        assert_eq!(l.file_size, CONSOLE_MAX);
    }
}
