//! The container runtime natively, as root, with a busybox-static root: what a user of
//! `docker run` would check.

use berth_container::{reaper, spec, Config, Container, Error, Streams};
use berth_e2e::{busybox_rootfs, repo_root};
use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, MountBuilder,
};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

fn rootfs() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let dir = repo_root().join(format!(
            "target/e2e-tmp/busybox-rootfs-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        busybox_rootfs(&dir).unwrap();
        dir
    })
}

fn state_dir() -> PathBuf {
    repo_root().join(format!("target/e2e-tmp/state-{}", std::process::id()))
}

fn config(id: &str, args: &[&str]) -> Config {
    let mut s = spec::docker_default(args.iter().map(|a| a.to_string()).collect());
    s.set_hostname(Some("berth-test".into()));
    Config {
        id: format!("{id}-{}", std::process::id()),
        spec: s,
        layers: vec![rootfs().to_path_buf()],
        writable: None,
        state_dir: state_dir(),
        cgroup_root: "/sys/fs/cgroup".into(),
        open_stdin: false,
        inherit_stdio: false,
        seccomp: true,
        device_filter: true,
    }
}

struct Ran {
    status: i32,
    stdout: String,
    stderr: String,
}

fn reader(f: std::fs::File) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut f = f;
        let _ = f.read_to_string(&mut s);
        s
    })
}

/// Creates, starts, waits and destroys; `during` runs while the container is up.
fn run_with(cfg: &Config, during: impl FnOnce(&Container, Option<std::fs::File>)) -> Ran {
    let (mut c, streams) = Container::create(cfg).expect("create");
    let Streams::Pipes {
        stdin,
        stdout,
        stderr,
    } = streams
    else {
        panic!("pipes expected")
    };
    let (o, e) = (reader(stdout), reader(stderr));
    c.start().expect("start");
    during(&c, stdin);
    let status = reaper::wait(c.pid);
    let cgroups = c.cgroup_paths();
    let dir = c.dir().to_path_buf();
    c.destroy();
    for p in cgroups {
        assert!(!p.exists(), "cgroup {} left behind", p.display());
    }
    assert!(!dir.exists(), "state {} left behind", dir.display());
    Ran {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

fn run(cfg: &Config) -> Ran {
    run_with(cfg, |_, _| {})
}

#[test]
fn the_workload_is_pid_1_with_its_own_hostname() {
    let r = run(&config(
        "pid1",
        &[
            "sh",
            "-c",
            "echo pid=$$; hostname; cat /proc/1/cmdline | tr '\\0' ' '",
        ],
    ));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "pid=1\nberth-test\nsh -c echo pid=$$; hostname; cat /proc/1/cmdline | tr '\\0' ' ' "
    );
}

#[test]
fn mounts_and_ipc_objects_made_inside_are_invisible_outside() {
    // Mounting needs CAP_SYS_ADMIN and no seccomp filter (docker run --privileged).
    let mut cfg = config(
        "isolation",
        &["sh", "-c", "mount -t tmpfs -o size=12345k berthtest /mnt && touch /dev/mqueue/berth-q && ls /dev/mqueue && grep -c berthtest /proc/mounts"],
    );
    cfg.seccomp = false;
    let all: std::collections::HashSet<oci_spec::runtime::Capability> =
        serde_json::from_str(r#"["CAP_SYS_ADMIN","CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER"]"#)
            .unwrap();
    let p = cfg.spec.process_mut().as_mut().unwrap();
    let mut caps = p.capabilities().clone().unwrap();
    caps.set_bounding(Some(all.clone()));
    caps.set_effective(Some(all.clone()));
    caps.set_permitted(Some(all.clone()));
    caps.set_inheritable(Some(all));
    p.set_capabilities(Some(caps));
    let r = run(&cfg);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "berth-q\n1\n");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains("berthtest"),
        "the container's mount leaked to the host"
    );
    // The host's IPC namespace has no such message queue.
    let name = std::ffi::CString::new("/berth-q").unwrap();
    // SAFETY: mq_open with a valid name and no O_CREAT.
    let q = unsafe { libc::mq_open(name.as_ptr(), libc::O_RDONLY) };
    let err = std::io::Error::last_os_error().raw_os_error();
    if q >= 0 {
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::mq_close(q) };
    }
    assert!(
        q < 0 && err == Some(libc::ENOENT),
        "the container's message queue is visible on the host"
    );
}

#[test]
fn a_memory_hog_is_killed_with_137() {
    let mut cfg = config("memhog", &["awk", "BEGIN { s = \"x\"; while (1) s = s s }"]);
    let res = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cfg.spec
        .linux_mut()
        .as_mut()
        .unwrap()
        .set_resources(Some(res));
    let r = run(&cfg);
    assert_eq!(r.status, 137, "{}", r.stderr);
}

#[test]
fn a_pids_limit_holds_against_a_fork_loop() {
    let mut cfg = config(
        "forkloop",
        // The inner shell forks until it can't (a failed fork ends it); the outer one survives.
        &[
            "sh",
            "-c",
            "sh -c 'while true; do sleep 3 & done' 2>/dev/null; echo loop-done; sleep 2",
        ],
    );
    let res = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
        .build()
        .unwrap();
    cfg.spec
        .linux_mut()
        .as_mut()
        .unwrap()
        .set_resources(Some(res));
    let mut seen = 0;
    let r = run_with(&cfg, |c, _| {
        std::thread::sleep(Duration::from_millis(800));
        seen = c.pids().len();
    });
    assert!(seen <= 10, "{seen} processes ran under pids.max=10");
    assert!(
        seen >= 5,
        "the fork loop should get some processes: {seen} {}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("loop-done"),
        "the shell survives its failed forks: {}",
        r.stderr
    );
}

#[test]
fn exec_sees_the_same_root_and_pid_namespace() {
    let cfg = config("exec", &["sh", "-c", "echo ready > /tmp/marker; sleep 30"]);
    let (mut c, streams) = Container::create(&cfg).unwrap();
    let _keep = streams;
    c.start().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut p = spec::docker_default(vec![]).process().clone().unwrap();
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "cat /tmp/marker; cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname".into(),
    ]));
    let (pid, s) = c.exec(&p, false).unwrap();
    let Streams::Pipes { stdout, stderr, .. } = s else {
        panic!()
    };
    let (out, err) = (reader(stdout), reader(stderr));
    assert_eq!(reaper::wait(pid), 0);
    // busybox sh execs its last command: PID 1 is now `sleep 30`.
    assert_eq!(
        out.join().unwrap(),
        "ready\nsleep 30 \nberth-test\n",
        "{}",
        err.join().unwrap()
    );
    let pids = c.pids();
    assert!(pids.contains(&c.pid));
    c.signal(libc::SIGKILL, false).unwrap();
    assert_eq!(reaper::wait(c.pid), 137);
    c.destroy();
}

#[test]
fn a_tty_works_end_to_end() {
    let mut cfg = config("tty", &["sh"]);
    cfg.spec
        .process_mut()
        .as_mut()
        .unwrap()
        .set_terminal(Some(true));
    let (mut c, streams) = Container::create(&cfg).unwrap();
    let Streams::Tty(master) = streams else {
        panic!("tty expected")
    };
    c.start().unwrap();
    berth_container::tty::resize(&master, 30, 100).unwrap();
    let mut m = std::fs::File::from(master);
    m.write_all(b"tty; stty size; echo done-$((6*7)); exit 5\n")
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = m.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&out).contains("done-42") {
            break;
        }
    }
    let status = reaper::wait(c.pid);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("/dev/pts/0") || text.contains("/dev/console"),
        "{text}"
    );
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("done-42"), "{text}");
    assert_eq!(status, 5);
    c.destroy();
}

#[test]
fn stdin_eof_reaches_the_workload() {
    let mut cfg = config("stdin", &["sh", "-c", "cat; echo after-eof"]);
    cfg.open_stdin = true;
    let r = run_with(&cfg, |_, stdin| {
        let mut w = stdin.expect("stdin pipe");
        w.write_all(b"hello through stdin\n").unwrap();
    });
    assert_eq!(r.status, 0);
    assert_eq!(r.stdout, "hello through stdin\nafter-eof\n");
}

#[test]
fn sigterm_and_sigkill_are_delivered_and_reported() {
    let cfg = config(
        "sigterm",
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done",
        ],
    );
    let r = run_with(&cfg, |c, _| {
        std::thread::sleep(Duration::from_millis(300));
        c.signal(libc::SIGTERM, false).unwrap();
    });
    assert_eq!((r.status, r.stdout.as_str()), (3, "got-term\n"));
    let cfg = config("sigkill", &["sleep", "100"]);
    let r = run_with(&cfg, |c, _| c.signal(libc::SIGKILL, false).unwrap());
    assert_eq!(r.status, 137);
}

fn start_error(cfg: &Config) -> (Error, Vec<PathBuf>) {
    let (mut c, _s) = Container::create(cfg).unwrap();
    let err = c.start().unwrap_err();
    let st = reaper::wait(c.pid);
    assert_eq!(Some(st), err.exit_status(), "{err}");
    let paths = c.cgroup_paths();
    c.destroy();
    (err, paths)
}

#[test]
fn missing_and_non_executable_commands_give_127_and_126_with_dockers_wording() {
    let (e, _) = start_error(&config("e127", &["nosuchcmd"]));
    assert_eq!(
        e.to_string(),
        "exec: \"nosuchcmd\": executable file not found in $PATH"
    );
    assert_eq!(e.exit_status(), Some(127));
    let (e, _) = start_error(&config("e126", &["/not-executable"]));
    assert_eq!(
        e.to_string(),
        "exec: \"/not-executable\": permission denied"
    );
    assert_eq!(e.exit_status(), Some(126));
}

#[test]
fn the_default_seccomp_profile_and_capabilities_apply() {
    let r = run(&config("seccomp", &["sh", "-c", "unshare -m true; echo unshare=$?; grep CapBnd /proc/self/status; grep NoNewPrivs /proc/self/status; grep Seccomp: /proc/self/status"]));
    assert!(r.stdout.contains("unshare=1"), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("CapBnd:\t00000000a80425fb"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("NoNewPrivs:\t1"));
    assert!(r.stdout.contains("Seccomp:\t2"));
}

#[test]
fn users_are_resolved_in_the_image() {
    let mut cfg = config("user", &["id"]);
    cfg.spec
        .process_mut()
        .as_mut()
        .unwrap()
        .user_mut()
        .set_username(Some("www".into()));
    let r = run(&cfg);
    assert_eq!(r.stdout.trim(), "uid=33(www) gid=33(www) groups=29(audio)");
}

fn assert_nothing_left(cfg: &Config) {
    let dir = cfg.state_dir.join(&cfg.id);
    assert!(!dir.exists(), "{} left behind", dir.display());
    // (No child processes here: the runtime's reaper would collect their statuses.)
    fn find(dir: &Path, name: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            if e.file_type().ok()?.is_dir() {
                if e.file_name() == name {
                    return Some(e.path());
                }
                if let Some(p) = find(&e.path(), name) {
                    return Some(p);
                }
            }
        }
        None
    }
    for ctrl in ["memory", "pids", "cpuacct", "unified"] {
        let left = find(Path::new(&format!("/sys/fs/cgroup/{ctrl}")), &cfg.id);
        assert!(left.is_none(), "cgroup left: {left:?}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&cfg.id), "mount left behind");
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    // An unknown user.
    let mut cfg = config("baduser", &["id"]);
    cfg.spec
        .process_mut()
        .as_mut()
        .unwrap()
        .user_mut()
        .set_username(Some("ghost".into()));
    let (mut c, _s) = Container::create(&cfg).unwrap();
    let e = c.start().unwrap_err().to_string();
    assert_eq!(
        e,
        "unable to find user ghost: no matching entries in passwd file"
    );
    reaper::wait(c.pid);
    c.destroy();
    assert_nothing_left(&cfg);

    // A bind mount whose source does not exist.
    let mut cfg = config("badmount", &["true"]);
    let m = MountBuilder::default()
        .destination("/data")
        .typ("bind")
        .source("/nonexistent/berth-src")
        .options(vec!["rbind".to_string()])
        .build()
        .unwrap();
    cfg.spec.mounts_mut().as_mut().unwrap().push(m);
    let e = Container::create(&cfg).err().unwrap().to_string();
    assert!(
        e.contains("bind mount source /nonexistent/berth-src does not exist"),
        "{e}"
    );
    assert_nothing_left(&cfg);

    // A root that is not a directory.
    let mut cfg = config("badroot", &["true"]);
    cfg.layers = vec![rootfs().join("etc/passwd")];
    let e = Container::create(&cfg).err().unwrap().to_string();
    assert!(e.contains("is not a directory"), "{e}");
    assert_nothing_left(&cfg);

    // An invalid spec field.
    let mut cfg = config("badspec", &["true"]);
    cfg.spec
        .process_mut()
        .as_mut()
        .unwrap()
        .set_cwd("relative/dir".into());
    let e = Container::create(&cfg).err().unwrap().to_string();
    assert!(e.contains("process.cwd"), "{e}");
    assert_nothing_left(&cfg);
}
