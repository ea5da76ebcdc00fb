//! Starting the container's process and exec'ing into it.
//!
//! `create`: fork → (child) join the cgroup, unshare the namespaces → fork again, so the
//! workload is PID 1 of its new PID namespace → (grandchild) build the root, hostname,
//! rlimits, then report "ready" and wait for `start`; then drop privileges (user,
//! capabilities, no_new_privs, seccomp) and exec. The grandchild reports setup and exec
//! errors over a close-on-exec pipe: EOF after "ready" means the exec succeeded.

use crate::cgroups::Cgroup;
use crate::rootfs::{self, Plan};
use crate::security::{self, CapSets};
use crate::{reaper, syscall, Error};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What the process runs as and with.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// argv; argv[0] is looked up in PATH when it has no '/'.
    pub args: Vec<String>,
    /// Environment, KEY=VALUE.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: PathBuf,
    /// Docker-style user ("name", "uid", "name:group"); None: root.
    pub user: Option<String>,
    /// Capabilities.
    pub caps: CapSets,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Install Docker's default seccomp profile.
    pub seccomp: bool,
    /// (resource, soft, hard).
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    /// Written to /proc/self/oom_score_adj before the exec.
    pub oom_score_adj: Option<i32>,
    /// Supplementary groups added (Docker's `GroupAdd`): names from the container's
    /// /etc/group, or numbers.
    pub group_add: Vec<String>,
    /// `--init`: PID 1 is a minimal init that forwards signals and reaps ([`crate::init`]),
    /// with the workload as its child.
    pub init: bool,
}

/// The child's ends of its standard streams. With a terminal all three are the pty slave.
pub struct ChildStdio {
    /// Standard input.
    pub stdin: OwnedFd,
    /// Standard output.
    pub stdout: OwnedFd,
    /// Standard error.
    pub stderr: OwnedFd,
    /// The streams are a terminal: make it the controlling terminal.
    pub tty: bool,
}

/// Namespaces to create (or join, for the network).
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    /// unshare(2) flags.
    pub flags: libc::c_int,
    /// A network namespace to join instead of creating one.
    pub net_path: Option<PathBuf>,
}

/// A created container process, waiting for `start`.
pub struct Created {
    /// PID (in the agent's namespace) of the container's PID 1.
    pub pid: i32,
    sync: File,
    go: File,
}

fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn fork() -> std::io::Result<libc::pid_t> {
    // SAFETY: glibc's fork is safe to call from a multi-threaded program; the child only
    // runs code written for it (see `child_*`), and ends with exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        reaper::spawned();
    }
    Ok(pid)
}

/// Ends a forked child without running any of the parent's destructors.
fn exit_child(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no process state that could be shared.
    unsafe { libc::_exit(code) }
}

/// Reports a child error on the sync pipe and exits with `code`.
fn child_fail(sync: &mut File, code: i32, msg: &str) -> ! {
    let _ = writeln!(sync, "E{code} {msg}");
    exit_child(code)
}

/// Runs `f` in the forked child; any panic becomes an error exit.
fn in_child(sync: &mut File, f: impl FnOnce(&mut File) -> Result<(), (i32, String)>) -> ! {
    let mut s = sync.try_clone().unwrap_or_else(|_| exit_child(1));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut s))) {
        Ok(Ok(())) => exit_child(0),
        Ok(Err((code, msg))) => child_fail(sync, code, &msg),
        Err(_) => child_fail(sync, 1, "internal error in the container setup"),
    }
}

/// Reads the child's report: Ok(true) on "ready", Ok(false) on EOF, Err on an error line.
fn read_report(sync: &mut File) -> Result<bool, (i32, String)> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match sync.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                if b[0] == b'\n' {
                    break;
                }
                line.push(b[0]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((1, format!("reading the container's setup report: {e}"))),
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    if line.is_empty() {
        return Ok(false);
    }
    if line == "R" {
        return Ok(true);
    }
    let (code, msg) = line
        .strip_prefix('E')
        .and_then(|l| l.split_once(' '))
        .unwrap_or(("1", &line));
    Err((code.parse().unwrap_or(1), msg.to_owned()))
}

fn report_to_error(code: i32, msg: String) -> Error {
    match code {
        127 => Error::ExecNotFound(msg),
        126 => Error::ExecPermission(msg),
        _ => Error::Setup(msg),
    }
}

/// The outcome of [`double_fork`].
struct Forked {
    /// Exit status of the intermediate child.
    first: i32,
    /// PID of the grandchild, if it was forked.
    pid: Option<i32>,
    /// The grandchild's report pipe.
    sync: File,
}

/// fork → `enter` in the child (cgroup, namespaces) → fork again → `run` in the
/// grandchild, which is PID 1 of a new PID namespace (or inside a joined one). The
/// intermediate child reports the grandchild's PID and exits.
fn double_fork(
    enter: impl FnOnce() -> Result<(), (i32, String)>,
    run: impl FnOnce(&mut File) -> Result<(), (i32, String)>,
) -> Result<Forked, Error> {
    let (sync_r, mut sync_w) = pipe().map_err(Error::io("pipe"))?;
    let (mut pid_r, mut pid_w) = pipe().map_err(Error::io("pipe"))?;
    let pid = fork().map_err(Error::io("fork"))?;
    if pid == 0 {
        drop(sync_r);
        drop(pid_r);
        in_child(&mut sync_w, |s| {
            enter()?;
            let inner = fork().map_err(|e| (1, format!("fork: {e}")))?;
            if inner == 0 {
                let mut sync = s.try_clone().map_err(|e| (1, e.to_string()))?;
                in_child(&mut sync, run);
            }
            pid_w
                .write_all(&inner.to_le_bytes())
                .map_err(|e| (1, e.to_string()))
        });
    }
    drop(sync_w);
    drop(pid_w);
    crate::step("fork: forked");
    let first = reaper::wait(pid);
    crate::step("fork: intermediate reaped");
    let mut b = [0u8; 4];
    let inner = pid_r.read_exact(&mut b).ok().map(|_| i32::from_le_bytes(b));
    Ok(Forked {
        first,
        pid: inner,
        sync: sync_r,
    })
}

fn last_os_error(what: &str) -> (i32, String) {
    (1, format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Creates the container's process. On error, nothing is left running.
pub fn create(
    plan: &Plan,
    ns: &Namespaces,
    hostname: Option<&str>,
    cgroup: &Cgroup,
    process: &ProcessConfig,
    stdio: ChildStdio,
) -> Result<Created, Error> {
    reaper::start();
    rootfs::validate(plan).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let (mut go_r, go_w) = pipe().map_err(Error::io("pipe"))?;
    let net = match &ns.net_path {
        Some(p) => {
            Some(File::open(p).map_err(Error::io(format!("network namespace {}", p.display())))?)
        }
        None => None,
    };
    let enter = || {
        cgroup.join_self().map_err(|e| (1, e.to_string()))?;
        if let Some(n) = &net {
            // SAFETY: setns on an open namespace fd.
            if unsafe { libc::setns(n.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                return Err(last_os_error("joining the network namespace"));
            }
        }
        // SAFETY: unshare takes flags only.
        if unsafe { libc::unshare(ns.flags) } < 0 {
            return Err(last_os_error("creating namespaces"));
        }
        Ok(())
    };
    let run =
        move |sync: &mut File| container_init(plan, ns, hostname, process, &stdio, sync, &mut go_r);
    let mut f = double_fork(enter, run)?;
    let report = read_report(&mut f.sync);
    crate::step("create: ready");
    match (report, f.pid) {
        (Ok(true), Some(pid)) => Ok(Created {
            pid,
            sync: f.sync,
            go: go_w,
        }),
        (result, pid) => {
            if let Some(p) = pid {
                // SAFETY: kill takes a pid and a signal.
                unsafe { libc::kill(p, libc::SIGKILL) };
                reaper::wait(p);
            }
            Err(match result {
                Err((code, msg)) => report_to_error(code, msg),
                _ => Error::Setup(format!(
                    "the container process exited during setup (status {})",
                    f.first
                )),
            })
        }
    }
}

impl Created {
    /// Lets the process exec. An exec failure (not found: 127, not executable: 126) is
    /// returned; the process then exits with that status.
    pub fn start(mut self) -> Result<i32, Error> {
        self.go
            .write_all(b"g")
            .map_err(Error::io("starting the container process"))?;
        drop(self.go);
        crate::step("start: go sent");
        let report = read_report(&mut self.sync);
        crate::step("start: exec'd");
        match report {
            Ok(_) => Ok(self.pid),
            Err((code, msg)) => Err(report_to_error(code, msg)),
        }
    }
}

/// Runs another process in the namespaces and cgroup of the container whose PID 1 is
/// `init`. Returns its PID once it has exec'd.
pub fn exec_in(
    init: i32,
    cgroup: &Cgroup,
    process: &ProcessConfig,
    stdio: ChildStdio,
) -> Result<i32, Error> {
    reaper::start();
    // Open the namespaces first: /proc changes meaning once we're inside.
    let mut nsfds = Vec::new();
    for (name, flag) in [
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let p = format!("/proc/{init}/ns/{name}");
        let f = File::open(&p)
            .map_err(|e| Error::Setup(format!("the container is not running ({p}: {e})")))?;
        nsfds.push((f, flag));
    }
    let enter = || {
        cgroup.join_self().map_err(|e| (1, e.to_string()))?;
        for (f, flag) in &nsfds {
            // SAFETY: setns on an open namespace fd of the right type.
            if unsafe { libc::setns(f.as_raw_fd(), *flag) } < 0 {
                return Err(last_os_error("joining the container's namespaces"));
            }
        }
        Ok(())
    };
    let run = move |sync: &mut File| {
        setup_stdio(&stdio)?;
        finish_and_exec(process, sync)
    };
    let mut f = double_fork(enter, run)?;
    match (read_report(&mut f.sync), f.pid) {
        (Ok(_), Some(p)) => Ok(p),
        (Err((code, msg)), _) => Err(report_to_error(code, msg)),
        (Ok(_), None) => Err(Error::Setup(format!("exec failed (status {})", f.first))),
    }
}

fn setup_stdio(stdio: &ChildStdio) -> Result<(), (i32, String)> {
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };
    for (fd, target) in [(&stdio.stdin, 0), (&stdio.stdout, 1), (&stdio.stderr, 2)] {
        // SAFETY: dup2 of an open fd onto 0..2.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err((
                1,
                format!("setting up stdio: {}", std::io::Error::last_os_error()),
            ));
        }
    }
    if stdio.tty {
        // SAFETY: TIOCSCTTY on fd 0, our new session's terminal.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err((
                1,
                format!(
                    "setting the controlling terminal: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
    }
    Ok(())
}

/// PID 1 of the container, before exec.
fn container_init(
    plan: &Plan,
    ns: &Namespaces,
    hostname: Option<&str>,
    process: &ProcessConfig,
    stdio: &ChildStdio,
    sync: &mut File,
    go: &mut File,
) -> Result<(), (i32, String)> {
    setup_stdio(stdio)?;
    let sys = syscall::Linux;
    rootfs::setup(&sys, plan).map_err(|e| (1, e.to_string()))?;
    if let Some(h) = hostname {
        use crate::syscall::Syscall;
        sys.sethostname(h)
            .map_err(|e| (1, format!("setting the hostname: {e}")))?;
    }
    if ns.flags & libc::CLONE_NEWNET != 0 && ns.net_path.is_none() {
        loopback_up();
    }
    sync.write_all(b"R\n").map_err(|e| (1, e.to_string()))?;
    let mut b = [0u8; 1];
    if go.read(&mut b).unwrap_or(0) == 0 {
        exit_child(0); // the container was deleted before it started
    }
    finish_and_exec(process, sync)
}

/// Brings up `lo` in a fresh network namespace.
fn loopback_up() {
    // SAFETY: a plain datagram socket used only for the interface ioctls below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return;
    }
    // SAFETY: ifreq is plain data; the name is NUL-terminated within IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[..2].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char]);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which is valid.
    unsafe {
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(s);
    }
}

/// Finds the executable the way Docker (runc) does, with its wording.
fn resolve_exe(arg0: &str, env: &[String]) -> Result<PathBuf, (i32, String)> {
    if arg0.contains('/') {
        let p = Path::new(arg0);
        return match p.metadata() {
            Ok(m) if m.is_dir() => Err((126, format!("exec: \"{arg0}\": is a directory"))),
            Ok(_) => Ok(p.to_owned()),
            Err(_) => Err((
                127,
                format!("exec: \"{arg0}\": stat {arg0}: no such file or directory"),
            )),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let p = Path::new(if dir.is_empty() { "." } else { dir }).join(arg0);
        if let Ok(m) = p.metadata() {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err((
        127,
        format!("exec: \"{arg0}\": executable file not found in $PATH"),
    ))
}

/// Drops privileges and execs. Never returns on success.
fn finish_and_exec(process: &ProcessConfig, sync: &mut File) -> Result<(), (i32, String)> {
    // The caller may block signals (the agent does); the workload starts with none blocked.
    // SAFETY: an empty, initialized set; the old mask is not wanted.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    let fail = |what: &str, e: std::io::Error| (1, format!("{what}: {e}"));
    for (res, soft, hard) in &process.rlimits {
        let l = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: setrlimit reads `l`.
        if unsafe { libc::setrlimit(*res, &l) } < 0 {
            return Err(fail(
                &format!("setrlimit (resource {res}, {soft}/{hard})"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    if let Some(adj) = process.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| fail("writing oom_score_adj", e))?;
    }
    let mut env = process.env.clone();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = match &process.user {
        Some(u) if !u.is_empty() => {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            Some(crate::user::resolve(u, &passwd, &group).map_err(|e| (1, e))?)
        }
        _ => None,
    };
    let mut added = Vec::new();
    for g in &process.group_add {
        let gid = crate::user::group_id(g, &group).map_err(|e| (1, e))?;
        if !added.contains(&gid) {
            added.push(gid);
        }
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!(
            "HOME={}",
            user.as_ref().map(|u| u.home.as_str()).unwrap_or("/root")
        ));
    }
    std::env::set_current_dir(&process.cwd).map_err(|e| {
        (
            1,
            format!(
                "chdir to cwd (\"{}\") set in config.json failed: {e}",
                process.cwd.display()
            ),
        )
    })?;
    let args = process
        .args
        .first()
        .ok_or((1, "no command given".to_string()))?;
    let exe = resolve_exe(args, &env)?;
    let exe_c = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| (1, "NUL in the command".to_string()))?;
    let argv: Vec<CString> = process
        .args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| (1, "NUL in an argument".to_string()))?;
    let envp: Vec<CString> = env
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| (1, "NUL in the environment".to_string()))?;

    security::drop_bounding(&process.caps).map_err(|e| fail("capabilities", e))?;
    if let Some(u) = &user {
        let mut groups = u.groups.clone();
        groups.extend(added.iter().filter(|g| !u.groups.contains(g)));
        // SAFETY: integer arguments, and a pointer/length pair for setgroups.
        unsafe {
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0
                || libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setresgid(u.gid, u.gid, u.gid) < 0
                || libc::setresuid(u.uid, u.uid, u.uid) < 0
            {
                return Err(fail("switching user", std::io::Error::last_os_error()));
            }
        }
    } else {
        // SAFETY: a pointer/length pair for setgroups (an empty list is fine).
        if unsafe { libc::setgroups(added.len(), added.as_ptr()) } < 0 {
            return Err(fail("setgroups", std::io::Error::last_os_error()));
        }
    }
    security::apply_caps(&process.caps).map_err(|e| fail("capabilities", e))?;
    if process.no_new_privs {
        security::no_new_privs().map_err(|e| fail("no_new_privs", e))?;
    }
    // Everything but stdio and the report pipe closes on exec.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds >= 3.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) };
    if process.seccomp {
        security::apply_docker_seccomp().map_err(|e| fail("seccomp", e))?;
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    if process.init {
        let set = crate::init::block_signals();
        // SAFETY: fork in the single-threaded setup child; the parent only runs the init
        // loop (async-signal-safe calls) and the child execs below.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(fail("fork (--init)", std::io::Error::last_os_error()));
        }
        if child > 0 {
            crate::init::close_from(3);
            crate::init::supervise(child, &set);
        }
        // SAFETY: isatty takes an fd.
        crate::init::prepare_child(unsafe { libc::isatty(0) } == 1);
    }
    // SAFETY: NUL-terminated strings in NULL-terminated arrays, all alive across the call.
    unsafe { libc::execve(exe_c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let shown = &process.args[0];
    let _ = sync;
    Err(match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            (126, format!("exec: \"{shown}\": permission denied"))
        }
        Some(libc::ENOENT) => (127, format!("exec: \"{shown}\": no such file or directory")),
        Some(libc::ENOEXEC) => (126, format!("exec: \"{shown}\": exec format error")),
        _ => (126, format!("exec: \"{shown}\": {e}")),
    })
}
