//! The guest agent through its protocol: natively (process isolation, on a Unix socket)
//! and in the lab inside a berth-vmm microVM (over vsock), the same scenarios.

use berth_container::spec::docker_default;
use berth_e2e::{built_binary, busybox_rootfs, guest_kernel, repo_root, Lab, TempDir};
use berth_protocol::client::{Client, Endpoint};
use berth_protocol::{
    Channel, ContainerSpec, ErrorKind, ExecSpec, Request, Response, RootfsSpec, StreamKind,
};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An agent to talk to, and the layer path it sees for the busybox root.
struct Agent {
    ep: Endpoint,
    layer: String,
    child: Child,
    _dir: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn native_agent() -> Agent {
    let dir = TempDir::new("agent-native").unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs).unwrap();
    let sock = dir.path().join("agent.sock");
    let child = Command::new(built_binary("berth-agent"))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .spawn()
        .unwrap();
    let ep = Endpoint::Unix(sock);
    let mut c = ep.wait_ready(Duration::from_secs(10)).unwrap();
    // The host's agent leaves the host's disks alone: a read-ahead is refused, and nothing
    // is mounted or created.
    let target = dir.path().join("never");
    let r = c
        .call(&Request::MountStorage {
            source: "/dev/vda".into(),
            fstype: "erofs".into(),
            target: target.display().to_string(),
            read_only: true,
            read_ahead_kb: Some(16),
            dax: false,
        })
        .unwrap();
    assert!(
        matches!(&r, Response::Error { message, .. } if message.contains("read_ahead_kb is for the agent in a microVM")),
        "{r:?}"
    );
    // So is DAX (for a microVM's virtio-pmem devices).
    let r = c
        .call(&Request::MountStorage {
            source: "/dev/pmem0".into(),
            fstype: "erofs".into(),
            target: target.display().to_string(),
            read_only: true,
            read_ahead_kb: None,
            dax: true,
        })
        .unwrap();
    assert!(
        matches!(&r, Response::Error { message, .. } if message.contains("dax is for the agent in a microVM")),
        "{r:?}"
    );
    assert!(!target.exists());
    Agent {
        ep,
        layer: rootfs.display().to_string(),
        child,
        _dir: dir,
    }
}

/// Inside the lab: a microVM whose PID 1 is the agent, the busybox root on a read-only
/// ext4 disk.
fn vm_agent() -> Agent {
    let dir = TempDir::new("agent-vm").unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs).unwrap();
    let img = dir.path().join("rootfs.ext4");
    let ok = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&rootfs)
        .arg(&img)
        .arg("64M")
        .status()
        .unwrap();
    assert!(ok.success(), "mke2fs");
    // Sockets can't live on the lab's 9p root share: use the lab's own /tmp.
    let sock_dir = PathBuf::from(format!("/tmp/berth-agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&sock_dir).unwrap();
    let sock = sock_dir.join("vm.sock");
    let control = sock_dir.join("vm.ctl");
    let (kernel, _) = guest_kernel().unwrap();
    let initrd = repo_root().join("target/berth/agent-initramfs.cpio");
    assert!(
        initrd.is_file(),
        "{} missing: run scripts/build-agent",
        initrd.display()
    );
    let child = Command::new(built_binary("berth-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args([
            "--memory",
            "512",
            "--vcpus",
            "2",
            "--cmdline",
            "quiet",
            "--console",
        ])
        .arg(format!("file:{}", dir.path().join("console.log").display()))
        .arg("--disk")
        .arg(format!("{},ro", img.display()))
        .arg("--vsock")
        .arg(format!("3,{}", sock.display()))
        .arg("--control")
        .arg(&control)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let ep = Endpoint::Vsock(sock, berth_protocol::AGENT_VSOCK_PORT);
    eprintln!("vm_agent: monitor started, waiting for the agent");
    let mut c = ep.wait_ready(Duration::from_secs(180)).unwrap();
    eprintln!("vm_agent: the agent answered");
    let r = c
        .call(&Request::MountStorage {
            source: "/dev/vda".into(),
            fstype: "ext4".into(),
            target: "/run/berth/layers/busybox".into(),
            read_only: true,
            read_ahead_kb: Some(16),
            dax: false,
        })
        .unwrap();
    assert_eq!(r, Response::Ok);
    // A read-ahead for something that is not a block device is refused, naming it.
    let r = c
        .call(&Request::MountStorage {
            source: "tmpfs".into(),
            fstype: "tmpfs".into(),
            target: "/run/berth/layers/none".into(),
            read_only: true,
            read_ahead_kb: Some(16),
            dax: false,
        })
        .unwrap();
    assert!(
        matches!(&r, Response::Error { message, .. } if message.contains("read_ahead_kb for tmpfs: not a block device")),
        "{r:?}"
    );
    Agent {
        ep,
        layer: "/run/berth/layers/busybox".into(),
        child,
        _dir: dir,
    }
}

struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

fn stream(ep: &Endpoint, id: &str, exec_id: Option<&str>, kind: StreamKind) -> UnixStream {
    ep.open(Channel::Stdio {
        container: id.into(),
        exec_id: exec_id.map(str::to_owned),
        stream: kind,
    })
    .unwrap()
}

fn collect(s: UnixStream) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut s = s;
        let _ = s.read_to_string(&mut out);
        out
    })
}

fn spec_for(a: &Agent, args: &[&str]) -> ContainerSpec {
    let mut oci = docker_default(args.iter().map(|s| s.to_string()).collect());
    oci.set_hostname(Some("agent-test".into()));
    ContainerSpec {
        oci,
        rootfs: RootfsSpec {
            layers: vec![a.layer.clone()],
            writable: None,
        },
        open_stdin: false,
        log_path: None,
        log_max_size: 0,
        log_max_files: 0,
        seccomp_unconfined: false,
        log_base: 0,
        etc_files: vec![],
    }
}

fn create(_a: &Agent, c: &mut Client, id: &str, spec: ContainerSpec) {
    let r = c
        .call(&Request::Create {
            id: id.into(),
            spec: Box::new(spec),
        })
        .unwrap();
    assert!(matches!(r, Response::Created { .. }), "create {id}: {r:?}");
}

/// Runs a container to completion; `during` runs after start.
fn run(a: &Agent, id: &str, spec: ContainerSpec, during: impl FnOnce(&mut Client)) -> Out {
    let mut c = Client::connect(&a.ep).unwrap();
    create(a, &mut c, id, spec);
    let out = collect(stream(&a.ep, id, None, StreamKind::Stdout));
    let err = collect(stream(&a.ep, id, None, StreamKind::Stderr));
    assert_eq!(
        c.call(&Request::Start { id: id.into() }).unwrap(),
        Response::Ok
    );
    during(&mut c);
    let Response::Exited { status, .. } = c
        .call(&Request::Wait {
            id: id.into(),
            exec_id: None,
        })
        .unwrap()
    else {
        panic!("wait")
    };
    assert_eq!(
        c.call(&Request::Delete {
            id: id.into(),
            force: false
        })
        .unwrap(),
        Response::Ok
    );
    Out {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn scenarios(a: &Agent) {
    eprintln!("scenarios: start");
    // PID 1 and the hostname.
    let o = run(
        a,
        "pid1",
        spec_for(a, &["sh", "-c", "echo pid=$$; hostname"]),
        |_| {},
    );
    assert_eq!(
        (o.status, o.stdout.as_str()),
        (0, "pid=1\nagent-test\n"),
        "{}",
        o.stderr
    );

    // A memory limit: the hog dies with 137.
    let mut s = spec_for(a, &["awk", "BEGIN { s = \"x\"; while (1) s = s s }"]);
    s.oci.linux_mut().as_mut().unwrap().set_resources(Some(
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(32i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    ));
    assert_eq!(run(a, "memhog", s, |_| {}).status, 137);

    // A pids limit holds against a fork loop.
    let mut s = spec_for(
        a,
        &[
            "sh",
            "-c",
            "sh -c 'while true; do sleep 3 & done' 2>/dev/null; echo loop-done; sleep 2",
        ],
    );
    s.oci.linux_mut().as_mut().unwrap().set_resources(Some(
        LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
            .build()
            .unwrap(),
    ));
    let mut seen = 0;
    let o = run(a, "forkloop", s, |c| {
        std::thread::sleep(Duration::from_millis(1000));
        if let Response::Processes { pids } = c
            .call(&Request::ListProcesses {
                id: "forkloop".into(),
            })
            .unwrap()
        {
            seen = pids.len();
        }
    });
    assert!(
        (5..=10).contains(&seen),
        "{seen} processes under pids.max=10"
    );
    assert!(o.stdout.contains("loop-done"));

    // Exec sees the same root and PID namespace.
    let mut c = Client::connect(&a.ep).unwrap();
    create(
        a,
        &mut c,
        "exec",
        spec_for(a, &["sh", "-c", "echo ready > /tmp/marker; exec sleep 60"]),
    );
    assert_eq!(
        c.call(&Request::Start { id: "exec".into() }).unwrap(),
        Response::Ok
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut p = docker_default(vec![]).process().clone().unwrap();
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "cat /tmp/marker; cat /proc/1/cmdline | tr '\\0' ' '".into(),
    ]));
    let r = c
        .call(&Request::Exec {
            id: "exec".into(),
            exec_id: "e1".into(),
            spec: Box::new(ExecSpec {
                process: p,
                open_stdin: false,
                archive: None,
            }),
        })
        .unwrap();
    assert_eq!(r, Response::Ok);
    let r = c
        .call(&Request::StartExec {
            id: "exec".into(),
            exec_id: "e1".into(),
        })
        .unwrap();
    assert!(matches!(r, Response::Created { .. }), "{r:?}");
    let out = collect(stream(&a.ep, "exec", Some("e1"), StreamKind::Stdout));
    assert_eq!(
        c.call(&Request::Wait {
            id: "exec".into(),
            exec_id: Some("e1".into())
        })
        .unwrap(),
        Response::Exited {
            status: 0,
            oom_killed: false
        }
    );
    assert_eq!(out.join().unwrap(), "ready\nsleep 60 ");

    // SIGKILL is delivered and reported.
    assert_eq!(
        c.call(&Request::Signal {
            id: "exec".into(),
            exec_id: None,
            signal: 9,
            all: false
        })
        .unwrap(),
        Response::Ok
    );
    assert_eq!(
        c.call(&Request::Wait {
            id: "exec".into(),
            exec_id: None
        })
        .unwrap(),
        Response::Exited {
            status: 137,
            oom_killed: false
        }
    );
    assert_eq!(
        c.call(&Request::Delete {
            id: "exec".into(),
            force: false
        })
        .unwrap(),
        Response::Ok
    );

    // SIGTERM reaches a workload that handles it.
    let o = run(
        a,
        "term",
        spec_for(
            a,
            &[
                "sh",
                "-c",
                "trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done",
            ],
        ),
        |c| {
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(
                c.call(&Request::Signal {
                    id: "term".into(),
                    exec_id: None,
                    signal: 15,
                    all: false
                })
                .unwrap(),
                Response::Ok
            );
        },
    );
    assert_eq!((o.status, o.stdout.as_str()), (3, "got-term\n"));

    // stdin EOF reaches the workload.
    let mut s = spec_for(a, &["sh", "-c", "cat; echo after-eof"]);
    s.open_stdin = true;
    let mut c = Client::connect(&a.ep).unwrap();
    create(a, &mut c, "stdin", s);
    let out = collect(stream(&a.ep, "stdin", None, StreamKind::Stdout));
    let mut stdin = stream(&a.ep, "stdin", None, StreamKind::Stdin);
    assert_eq!(
        c.call(&Request::Start { id: "stdin".into() }).unwrap(),
        Response::Ok
    );
    stdin.write_all(b"through stdin\n").unwrap();
    stdin.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        c.call(&Request::Wait {
            id: "stdin".into(),
            exec_id: None
        })
        .unwrap(),
        Response::Exited {
            status: 0,
            oom_killed: false
        }
    );
    assert_eq!(out.join().unwrap(), "through stdin\nafter-eof\n");
    c.call(&Request::Delete {
        id: "stdin".into(),
        force: false,
    })
    .unwrap();

    // A shell through a TTY.
    let mut s = spec_for(a, &["sh"]);
    s.oci
        .process_mut()
        .as_mut()
        .unwrap()
        .set_terminal(Some(true));
    create(a, &mut c, "tty", s);
    let mut pty = stream(&a.ep, "tty", None, StreamKind::Pty);
    assert_eq!(
        c.call(&Request::Start { id: "tty".into() }).unwrap(),
        Response::Ok
    );
    assert_eq!(
        c.call(&Request::ResizeTty {
            id: "tty".into(),
            exec_id: None,
            rows: 40,
            cols: 120
        })
        .unwrap(),
        Response::Ok
    );
    pty.write_all(b"tty; stty size; echo tty-$((6*7)); exit 4\n")
        .unwrap();
    let mut text = String::new();
    let _ = pty.read_to_string(&mut text);
    assert!(text.contains("40 120") && text.contains("tty-42"), "{text}");
    assert_eq!(
        c.call(&Request::Wait {
            id: "tty".into(),
            exec_id: None
        })
        .unwrap(),
        Response::Exited {
            status: 4,
            oom_killed: false
        }
    );
    c.call(&Request::Delete {
        id: "tty".into(),
        force: false,
    })
    .unwrap();

    // Missing and non-executable commands: Docker's wording, 127 and 126.
    for (id, cmd, kind, msg, status) in [
        (
            "e127",
            "nosuchcmd",
            ErrorKind::ExecNotFound,
            "exec: \"nosuchcmd\": executable file not found in $PATH",
            127,
        ),
        (
            "e126",
            "/not-executable",
            ErrorKind::ExecPermission,
            "exec: \"/not-executable\": permission denied",
            126,
        ),
    ] {
        create(a, &mut c, id, spec_for(a, &[cmd]));
        let r = c.call(&Request::Start { id: id.into() }).unwrap();
        assert_eq!(
            r,
            Response::Error {
                kind,
                message: msg.into(),
                exit_status: Some(status),
            }
        );
        assert_eq!(
            c.call(&Request::Wait {
                id: id.into(),
                exec_id: None
            })
            .unwrap(),
            Response::Exited {
                status,
                oom_killed: false
            }
        );
        c.call(&Request::Delete {
            id: id.into(),
            force: false,
        })
        .unwrap();
    }

    // Bad requests get errors and the agent keeps serving.
    assert!(matches!(
        c.call(&Request::Start {
            id: "nosuch".into()
        })
        .unwrap(),
        Response::Error {
            kind: ErrorKind::NotFound,
            ..
        }
    ));
    let mut bad = spec_for(a, &["true"]);
    bad.rootfs.layers = vec!["/nonexistent-layer".into()];
    let r = c
        .call(&Request::Create {
            id: "bad".into(),
            spec: Box::new(bad),
        })
        .unwrap();
    assert!(
        matches!(&r, Response::Error { kind: ErrorKind::InvalidArgument, message, .. } if message.contains("/nonexistent-layer")),
        "{r:?}"
    );
    let r = c
        .call(&Request::Create {
            id: "../evil".into(),
            spec: Box::new(spec_for(a, &["true"])),
        })
        .unwrap();
    assert!(matches!(
        r,
        Response::Error {
            kind: ErrorKind::InvalidArgument,
            ..
        }
    ));
    let o = run(a, "still-alive", spec_for(a, &["echo", "ok"]), |_| {});
    assert_eq!(o.stdout, "ok\n");
}

#[test]
fn agent_scenarios_with_process_isolation() {
    let a = native_agent();
    scenarios(&a);
    // Shutdown stops the agent and removes its socket.
    let mut c = Client::connect(&a.ep).unwrap();
    assert_eq!(c.call(&Request::Shutdown).unwrap(), Response::Ok);
    let Endpoint::Unix(sock) = &a.ep else {
        unreachable!()
    };
    for _ in 0..100 {
        if !sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sock.exists(), "the agent's socket is removed at shutdown");
}

#[test]
fn agent_scenarios_in_a_microvm() {
    if std::env::var_os("BERTH_IN_LAB").is_none() {
        // Run this very test inside the lab.
        let exe = std::env::current_exe().unwrap();
        let out = Lab::new()
            .timeout(Duration::from_secs(900))
            .run(&[
                exe.to_str().unwrap(),
                "--exact",
                "agent_scenarios_in_a_microvm",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .unwrap();
        eprintln!("{}\n{}", out.stdout, out.stderr);
        assert_eq!(out.status, 0, "the microVM scenarios failed in the lab");
        assert!(
            out.stdout.contains("test result: ok. 1 passed"),
            "the inner test did not run"
        );
        return;
    }
    let mut a = vm_agent();
    scenarios(&a);
    let mut c = Client::connect(&a.ep).unwrap();
    assert_eq!(c.call(&Request::Shutdown).unwrap(), Response::Ok);
    drop(c);
    let status = a.child.wait().unwrap();
    assert!(
        status.success(),
        "the monitor ends cleanly when the agent shuts down: {status:?}"
    );
}
