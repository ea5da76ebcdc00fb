//! A fake sandbox for the daemon's unit tests: no process is started. Each "boot" serves
//! the real agent protocol from a thread on the container's socket, and the test decides
//! what the container does (its output, how its start fails, when it exits).

use super::{Booted, Isolation, Sandbox, SandboxSpec};
use crate::errors::{Error, Result};
use berth_protocol::client::{Client, Endpoint};
use berth_protocol::{
    read_frame, write_frame, Channel, ErrorKind, Hello, HelloOk, Request, Response, RootfsSpec,
    Stats, VERSION,
};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the fake container does.
#[derive(Default, Clone)]
pub struct Script {
    /// Its start fails with this (kind, message, exit status).
    pub start_error: Option<(ErrorKind, String, Option<i32>)>,
    /// Its boot fails with this message.
    pub boot_error: Option<String>,
}

/// One fake agent's container.
#[derive(Default)]
pub struct FakeContainer {
    exit: Mutex<Option<i32>>,
    cv: Condvar,
    /// Signals received.
    pub signals: Mutex<Vec<i32>>,
    /// Whether the agent was told to shut down.
    pub shut_down: Mutex<bool>,
}

impl FakeContainer {
    /// Makes the container's process exit with `status`.
    pub fn exit(&self, status: i32) {
        *self.exit.lock().unwrap() = Some(status);
        self.cv.notify_all();
    }

    fn wait(&self) -> i32 {
        let mut g = self.exit.lock().unwrap();
        loop {
            if let Some(s) = *g {
                return s;
            }
            g = self.cv.wait(g).unwrap();
        }
    }
}

/// The fake backend.
#[derive(Default)]
pub struct FakeSandbox {
    /// What the next containers do.
    pub script: Mutex<Script>,
    /// The containers booted, by ID.
    pub containers: Mutex<HashMap<String, Arc<FakeContainer>>>,
}

impl FakeSandbox {
    /// A booted container.
    pub fn container(&self, id: &str) -> Arc<FakeContainer> {
        self.containers.lock().unwrap()[id].clone()
    }
}

fn serve(l: UnixListener, sock: PathBuf, c: Arc<FakeContainer>, script: Script) {
    for conn in l.incoming() {
        let Ok(mut conn) = conn else { return };
        let (c, script, sock) = (c.clone(), script.clone(), sock.clone());
        std::thread::spawn(move || {
            let Ok(hello) = read_frame::<Hello>(&mut conn) else {
                return;
            };
            let ok = HelloOk {
                version: VERSION,
                agent: "fake".into(),
            };
            if write_frame(&mut conn, &ok).is_err() {
                return;
            }
            if let Channel::Stdio { .. } = hello.channel {
                // No output; the stream ends when the process does.
                c.wait();
                let _ = conn.flush();
                return;
            }
            while let Ok(req) = read_frame::<Request>(&mut conn) {
                let reply = match req {
                    Request::Create { .. } => Response::Created { pid: 4242 },
                    Request::Start { .. } => match &script.start_error {
                        Some((kind, message, exit_status)) => {
                            c.exit(exit_status.unwrap_or(255));
                            Response::Error {
                                kind: *kind,
                                message: message.clone(),
                                exit_status: *exit_status,
                            }
                        }
                        None => Response::Ok,
                    },
                    Request::Wait { .. } => Response::Exited {
                        status: c.wait(),
                        oom_killed: false,
                    },
                    Request::Signal { signal, .. } => {
                        c.signals.lock().unwrap().push(signal);
                        if signal == libc::SIGKILL || signal == libc::SIGTERM {
                            c.exit(128 + signal);
                        }
                        Response::Ok
                    }
                    Request::Stats { .. } => Response::Stats(Stats::default()),
                    Request::ListProcesses { .. } => Response::Processes { pids: vec![4242] },
                    Request::Shutdown => {
                        *c.shut_down.lock().unwrap() = true;
                        let _ = std::fs::remove_file(&sock);
                        Response::Ok
                    }
                    _ => Response::Ok,
                };
                if write_frame(&mut conn, &reply).is_err() {
                    return;
                }
            }
        });
    }
}

impl Sandbox for FakeSandbox {
    fn isolation(&self) -> Isolation {
        Isolation::Process
    }

    fn check_host(&self) -> Result<()> {
        Ok(())
    }

    fn boot(&self, spec: &SandboxSpec) -> Result<Booted> {
        let script = self.script.lock().unwrap().clone();
        if let Some(m) = &script.boot_error {
            return Err(Error::Sandbox(m.clone()));
        }
        let sock = spec.run_dir.join("agent.sock");
        let l = UnixListener::bind(&sock).map_err(Error::io("fake agent socket"))?;
        let c = Arc::new(FakeContainer::default());
        self.containers
            .lock()
            .unwrap()
            .insert(spec.id.clone(), c.clone());
        std::thread::spawn(move || serve(l, sock, c, script));
        let client = Client::connect(&self.endpoint(&spec.run_dir))?;
        Ok(Booted {
            rootfs: RootfsSpec {
                layers: vec!["/nonexistent".into()],
                writable: None,
            },
            agent_log: spec.log_path.display().to_string(),
            client,
        })
    }

    fn endpoint(&self, run_dir: &Path) -> Endpoint {
        Endpoint::Unix(run_dir.join("agent.sock"))
    }

    fn copies_logs(&self) -> bool {
        false
    }

    fn command_of(&self, pid: i32) -> String {
        format!("fake-{pid}")
    }

    fn writable_layer(&self, _dir: &Path) -> Option<PathBuf> {
        None
    }
}

/// Waits up to 10 s for `f` to hold.
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
