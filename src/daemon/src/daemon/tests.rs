//! The daemon core against the fake sandbox: state transitions, failed starts, re-adoption
//! after a restart, persistence and the error-to-status mapping, with no process started.

use super::*;
use crate::router::status_of;
use crate::sandbox::fake::{eventually, FakeSandbox};
use berth_protocol::ErrorKind;
use hyper::StatusCode;

/// Process isolation (the fake backend stands in for both modes).
fn process() -> Isolation {
    "process".parse().unwrap()
}

struct World {
    root: PathBuf,
    fake: Arc<FakeSandbox>,
    rt: tokio::runtime::Runtime,
}

impl World {
    fn new(name: &str) -> World {
        let root = std::env::temp_dir().join(format!("berthd-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        World {
            root,
            fake: Arc::new(FakeSandbox::default()),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn daemon(&self) -> Arc<Daemon> {
        let opts = Opts {
            data_root: self.root.join("data"),
            exec_root: self.root.join("run"),
            agent: PathBuf::from("/nonexistent/agent"),
            vmm: PathBuf::from("/nonexistent/vmm"),
            vmm_jail: None,
            vmm_debug: false,
            vm_snapshots: true,
            kernel: None,
            agent_initrd: None,
            virtiofsd: None,
            default_isolation: process(),
            insecure_registries: vec![],
            net: crate::network::NetOpts {
                enabled: false,
                ..Default::default()
            },
            image_limits: Default::default(),
            tenants: None,
        };
        let images = Arc::new(ImageStore::open(&opts.data_root.join("image")).unwrap());
        let fake: Arc<dyn Sandbox> = self.fake.clone();
        let sandboxes = Sandboxes::with(fake.clone(), fake, process());
        Daemon::with_sandboxes(opts, images, sandboxes, self.rt.handle().clone()).unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in self.fake.containers.lock().unwrap().values() {
            c.exit(0);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn container(d: &Daemon, name: &str) -> Arc<Ctr> {
    let id = new_id();
    let rec = Record {
        id: id.clone(),
        name: name.into(),
        created: now_rfc3339(),
        image: "img".into(),
        image_id: format!("sha256:{}", "0".repeat(64)),
        args: vec!["true".into()],
        env: vec![],
        cwd: String::new(),
        user: String::new(),
        hostname: "h".into(),
        tty: false,
        open_stdin: false,
        console_size: None,
        isolation: process(),
        auto_remove: false,
        memory: 0,
        nano_cpus: 0,
        pids_limit: 0,
        stop_signal: "SIGTERM".into(),
        stop_timeout: 10,
        labels: Default::default(),
        log_rotation: Default::default(),
        net: Default::default(),
        mounts: Vec::new(),
        confinement: Default::default(),
        restart_policy: Default::default(),
        healthcheck: None,
        paused: false,
        oom_killed: false,
        log_none: false,
        sandbox_sized: (0, 0),
        restart_count: 0,
        stopped_by_hand: false,
        restarting: false,
        config: Default::default(),
        host_config: Default::default(),
        state: State::default(),
        tenant: None,
    };
    std::fs::create_dir_all(d.dir(&id)).unwrap();
    d.save(&rec).unwrap();
    d.insert(rec)
}

fn on_disk(d: &Daemon, id: &str) -> Record {
    serde_json::from_slice(&std::fs::read(d.dir(id).join("config.v2.json")).unwrap()).unwrap()
}

#[test]
fn start_run_exit_is_recorded_and_persisted() {
    let w = World::new("exit");
    let d = w.daemon();
    let c = container(&d, "a");
    d.start(&c).unwrap();
    assert_eq!(*c.phase.borrow(), Phase::Running);
    assert_eq!(c.record().state.pid(), 4242);
    assert_eq!(on_disk(&d, &c.id).state.status(), "running");
    assert!(
        matches!(d.start(&c), Err(Error::NotModified)),
        "304 when running"
    );
    w.fake.container(&c.id).exit(3);
    eventually("the exit is recorded", || {
        *c.phase.borrow() == Phase::Exited(3)
    });
    let disk = on_disk(&d, &c.id);
    assert_eq!((disk.state.status(), disk.state.exit_code()), ("exited", 3));
    eventually("the sandbox is released", || {
        *w.fake.container(&c.id).shut_down.lock().unwrap()
    });
}

#[test]
fn a_failed_start_keeps_its_status_and_reason_and_maps_to_400() {
    let w = World::new("fail");
    let d = w.daemon();
    w.fake.script.lock().unwrap().start_error = Some((
        ErrorKind::ExecNotFound,
        "exec: \"nope\": executable file not found in $PATH".into(),
        Some(127),
    ));
    let c = container(&d, "b");
    let e = d.start(&c).unwrap_err();
    assert_eq!(status_of(&e), StatusCode::BAD_REQUEST);
    assert_eq!(e.exit_status(), 127);
    let r = on_disk(&d, &c.id);
    assert_eq!(
        (r.state.status(), r.state.exit_code()),
        ("created", 127),
        "never started: still created, with Docker's 127"
    );
    assert!(r.state.error().contains("executable file not found"));
    assert!(
        *w.fake.container(&c.id).shut_down.lock().unwrap(),
        "the sandbox was released at once"
    );
    assert!(!d.run_dir(&c.id).exists(), "nothing left in the exec root");
}

#[test]
fn a_sandbox_that_cannot_boot_says_why_and_leaves_nothing() {
    let w = World::new("boot");
    let d = w.daemon();
    w.fake.script.lock().unwrap().boot_error =
        Some("the microVM exited (exit status: 1) before it answered: not enough memory".into());
    let c = container(&d, "c");
    let e = d.start(&c).unwrap_err();
    assert_eq!(status_of(&e), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(e.to_string().contains("not enough memory"), "{e}");
    assert_eq!(c.record().state.exit_code(), 255);
    assert!(!d.run_dir(&c.id).exists());
}

#[test]
fn a_restarted_daemon_re_adopts_running_containers_and_marks_lost_ones() {
    let w = World::new("adopt");
    let (kept, lost) = {
        let d = w.daemon();
        let kept = container(&d, "kept");
        let lost = container(&d, "lost");
        d.start(&kept).unwrap();
        d.start(&lost).unwrap();
        (kept.id.clone(), lost.id.clone())
        // The old daemon is dropped here; its supervisors keep blocking in Wait, as a
        // killed berthd's would not, but the new daemon doesn't depend on them.
    };
    // The lost container's agent goes away while berthd is down.
    std::fs::remove_file(w.root.join("run/c").join(&lost[..12]).join("agent.sock")).unwrap();
    let d = w.daemon();
    let k = d.find(&kept).unwrap();
    assert_eq!(*k.phase.borrow(), Phase::Running, "re-adopted");
    let l = d.find(&lost).unwrap();
    assert_eq!(*l.phase.borrow(), Phase::Exited(255));
    assert!(l.record().state.error().contains("gone"));
    w.fake.container(&kept).exit(7);
    eventually("the re-adopted container's exit is recorded", || {
        *k.phase.borrow() == Phase::Exited(7)
    });
    assert_eq!(on_disk(&d, &kept).state.exit_code(), 7);
}

#[test]
fn stop_signals_then_waits_for_the_exit() {
    let w = World::new("stop");
    let d = w.daemon();
    let c = container(&d, "s");
    d.start(&c).unwrap();
    let rt = &w.rt;
    rt.block_on(d.stop(c.clone(), Some(5), None)).unwrap();
    assert_eq!(
        *w.fake.container(&c.id).signals.lock().unwrap(),
        [libc::SIGTERM]
    );
    assert_eq!(c.record().state.exit_code(), 128 + libc::SIGTERM as i64);
    assert!(matches!(
        rt.block_on(d.stop(c.clone(), Some(5), None)),
        Err(Error::NotModified)
    ));
    rt.block_on(d.remove(c.clone(), false, false)).unwrap();
    assert!(d.find(&c.id).is_err() && !d.dir(&c.id).exists());
}

#[test]
fn a_record_that_cannot_be_saved_is_an_error_and_changes_nothing() {
    let w = World::new("save");
    let d = w.daemon();
    let c = container(&d, "xx");
    std::fs::remove_dir_all(d.dir(&c.id)).unwrap();
    let e = d.rename(&c, "yy").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert_eq!(status_of(&e), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(c.record().name, "xx", "the record in memory is unchanged");
}

#[test]
fn every_error_class_has_its_status() {
    for (e, s) in [
        (Error::InvalidParameter("x".into()), 400),
        (Error::NotFound("x".into()), 404),
        (Error::Conflict("x".into()), 409),
        (Error::NotImplemented("x".into()), 501),
        (Error::NotModified, 304),
        (Error::Sandbox("x".into()), 500),
        (
            Error::Start {
                message: "x".into(),
                exit_status: 126,
                user_error: true,
            },
            400,
        ),
        (
            Error::Image(berth_image::ImageError::NotFound("x".into())),
            404,
        ),
    ] {
        assert_eq!(status_of(&e).as_u16(), s, "{e:?}");
    }
}
