//! The daemon's state: containers (records on disk, one agent per container), images (the
//! berth-image store), execs and events.
//!
//! Every container gets its own agent process, detached from berthd (its own session): a
//! `berth-agent --listen unix:...` for process isolation, or a `berth-vmm` whose guest
//! agent listens on vsock for a microVM. The agent runs the workload and, for process
//! isolation, writes its logs; berthd only talks to it. So containers keep running when
//! berthd stops or crashes, and a restarted berthd reads the records back and reconnects
//! to each agent (`Daemon::adopt`).

use crate::http::ApiError;
use berth_image::ImageStore;
use berth_protocol::client::{Client, Endpoint};
use berth_protocol::{ContainerSpec, ErrorKind, Request, Response, RootfsSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};

/// How a container is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Its own microVM (berth-vmm and the guest agent).
    Vm,
    /// Namespaces and cgroups on the host (the agent on the host).
    Process,
}

/// Paths and defaults.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Persistent state.
    pub data_root: PathBuf,
    /// Runtime state (sockets).
    pub exec_root: PathBuf,
    /// The agent binary.
    pub agent: PathBuf,
    /// The monitor binary.
    pub vmm: PathBuf,
    /// Guest kernel for microVMs.
    pub kernel: Option<PathBuf>,
    /// The agent's initramfs for microVMs.
    pub agent_initrd: Option<PathBuf>,
    /// Isolation when a container doesn't ask.
    pub default_isolation: Isolation,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
}

/// A container's lifecycle, as waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created, never started (or starting).
    Created,
    /// Running.
    Running,
    /// Exited with a status.
    Exited(i64),
    /// Removed (after exiting with a status).
    Removed(i64),
}

/// The container's state as `inspect` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// created, running, exited, dead, removing.
    pub status: String,
    /// Running now.
    pub running: bool,
    /// PID as the agent sees it.
    pub pid: i64,
    /// Last exit status.
    pub exit_code: i64,
    /// Why it failed to start, if it did.
    pub error: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
}

/// What berthd keeps of a container, in `<data-root>/containers/<id>/config.v2.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    /// Without the leading '/'.
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID.
    pub image_id: String,
    /// The program and its arguments.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User.
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// A TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub open_stdin: bool,
    /// How it is isolated.
    pub isolation: Isolation,
    /// Remove when it exits.
    pub auto_remove: bool,
    /// Memory limit, bytes (0: none).
    pub memory: i64,
    /// CPUs in 1e-9 units (0: none).
    pub nano_cpus: i64,
    /// Pids limit (0: none).
    pub pids_limit: i64,
    /// Stop signal name or number.
    pub stop_signal: String,
    /// Seconds between the stop signal and SIGKILL.
    pub stop_timeout: i64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The Config object as created (for inspect).
    pub config: serde_json::Value,
    /// The HostConfig object as created (for inspect).
    pub host_config: serde_json::Value,
    /// State.
    pub state: State,
}

/// A waiter for a container's start, so that attachers see output from the first byte.
pub struct PendingAttach {
    /// Told the agent's endpoint once the container exists there.
    pub ready: oneshot::Sender<Endpoint>,
    /// Answers once its streams are connected.
    pub ack: oneshot::Receiver<()>,
}

/// One container.
pub struct Ctr {
    /// ID.
    pub id: String,
    /// The record.
    pub rec: Mutex<Record>,
    /// Phase changes.
    pub phase: watch::Sender<Phase>,
    /// Attachers waiting for the start.
    pub pending: Mutex<Vec<PendingAttach>>,
    /// Serialises start, stop and remove.
    pub op: tokio::sync::Mutex<()>,
}

/// An exec.
#[derive(Debug, Clone)]
pub struct ExecRec {
    /// Exec ID.
    pub id: String,
    /// Container ID.
    pub container: String,
    /// Command.
    pub cmd: Vec<String>,
    /// TTY.
    pub tty: bool,
    /// stdin attached.
    pub stdin: bool,
    /// stdout attached.
    pub stdout: bool,
    /// stderr attached.
    pub stderr: bool,
    /// Env.
    pub env: Vec<String>,
    /// Working dir.
    pub cwd: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Running.
    pub running: bool,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// PID.
    pub pid: i64,
}

/// The daemon.
pub struct Daemon {
    /// Options.
    pub opts: Opts,
    /// Images.
    pub images: Arc<ImageStore>,
    /// Containers by ID.
    pub containers: Mutex<BTreeMap<String, Arc<Ctr>>>,
    /// Execs by ID.
    pub execs: Mutex<HashMap<String, ExecRec>>,
    /// Events (`/events`).
    pub events: broadcast::Sender<serde_json::Value>,
}

/// A random 64-hex ID.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Now, RFC 3339 with nanoseconds.
pub use berth_protocol::time::now_rfc3339;

/// Seconds since the epoch of an RFC 3339 time (0 if unparsable).
pub fn unix_of(t: &str) -> i64 {
    let p = |a: usize, b: usize| t.get(a..b).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(m), Some(d), Some(h), Some(mi), Some(s)) =
        (p(0, 4), p(5, 7), p(8, 10), p(11, 13), p(14, 16), p(17, 19))
    else {
        return 0;
    };
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86400 + h * 3600 + mi * 60 + s
}

fn signal_number(s: &str) -> Option<i32> {
    let n = s.trim().trim_start_matches("SIG").to_ascii_uppercase();
    if let Ok(v) = n.parse::<i32>() {
        return (1..=64).contains(&v).then_some(v);
    }
    Some(match n.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => return None,
    })
}

/// Parses a signal (`SIGTERM`, `TERM`, `15`) or answers 400.
pub fn parse_signal(s: &str) -> Result<i32, ApiError> {
    signal_number(s).ok_or_else(|| ApiError::bad(format!("Invalid signal: {s}")))
}

impl Ctr {
    /// A copy of the record.
    pub fn record(&self) -> Record {
        self.rec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Daemon {
    /// Opens the data root and re-adopts every container found there.
    pub fn open(opts: Opts) -> Result<Arc<Daemon>, String> {
        for d in [opts.data_root.join("containers"), opts.exec_root.join("c")] {
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let images = ImageStore::open(&opts.data_root.join("image")).map_err(|e| e.to_string())?;
        let (events, _) = broadcast::channel(256);
        let d = Arc::new(Daemon {
            opts,
            images: Arc::new(images),
            containers: Mutex::new(BTreeMap::new()),
            execs: Mutex::new(HashMap::new()),
            events,
        });
        d.adopt();
        Ok(d)
    }

    /// A container's persistent directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.opts.data_root.join("containers").join(id)
    }

    /// A container's runtime directory (sockets, agent state). Short (the ID's first 12
    /// digits) so that socket paths stay within the 108 bytes Unix sockets allow.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.opts.exec_root.join("c").join(&id[..12.min(id.len())])
    }

    /// The log file.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(format!("{id}-json.log"))
    }

    /// How to reach a container's agent.
    pub fn endpoint(&self, rec: &Record) -> Endpoint {
        match rec.isolation {
            Isolation::Process => Endpoint::Unix(self.run_dir(&rec.id).join("agent.sock")),
            Isolation::Vm => Endpoint::Vsock(
                self.run_dir(&rec.id).join("vm.sock"),
                berth_protocol::AGENT_VSOCK_PORT,
            ),
        }
    }

    /// Writes a record (aside, then renamed).
    pub fn save(&self, rec: &Record) {
        let p = self.dir(&rec.id).join("config.v2.json");
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, serde_json::to_vec_pretty(rec).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &p);
        }
    }

    /// Publishes an event.
    pub fn event(&self, kind: &str, action: &str, id: &str, attrs: serde_json::Value) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = self.events.send(serde_json::json!({
            "Type": kind, "Action": action, "status": action, "id": id,
            "Actor": {"ID": id, "Attributes": attrs},
            "scope": "local", "time": t.as_secs(), "timeNano": t.as_nanos() as u64,
        }));
    }

    /// Finds a container by full ID, name, or unique ID prefix.
    pub fn find(&self, name: &str) -> Result<Arc<Ctr>, ApiError> {
        let map = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(name) {
            return Ok(c.clone());
        }
        let n = name.trim_start_matches('/');
        if let Some(c) = map.values().find(|c| c.record().name == n) {
            return Ok(c.clone());
        }
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&Arc<Ctr>> = map
                .keys()
                .filter(|k| k.starts_with(name))
                .filter_map(|k| map.get(k))
                .collect();
            if hits.len() == 1 {
                return Ok(hits[0].clone());
            }
            if hits.len() > 1 {
                return Err(ApiError::bad(format!(
                    "multiple IDs found with provided prefix: {name}"
                )));
            }
        }
        Err(ApiError::not_found(format!("No such container: {name}")))
    }

    /// Registers a new container.
    pub fn insert(&self, rec: Record) -> Arc<Ctr> {
        let (phase, _) = watch::channel(Phase::Created);
        let c = Arc::new(Ctr {
            id: rec.id.clone(),
            rec: Mutex::new(rec),
            phase,
            pending: Mutex::new(Vec::new()),
            op: tokio::sync::Mutex::new(()),
        });
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.id.clone(), c.clone());
        c
    }

    /// Reads every record back; containers that were running are reconnected to their
    /// agents (and watched again), or marked exited (255) if the agent is gone.
    fn adopt(self: &Arc<Self>) {
        let dir = self.opts.data_root.join("containers");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path().join("config.v2.json");
            let Some(rec) = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            else {
                continue;
            };
            let running = rec.state.running;
            let c = self.insert(rec.clone());
            if !running {
                let code = rec.state.exit_code;
                c.phase.send_replace(if rec.state.status == "created" {
                    Phase::Created
                } else {
                    Phase::Exited(code)
                });
                continue;
            }
            let ep = self.endpoint(&rec);
            match ep.wait_ready(Duration::from_millis(1500)) {
                Ok(_) => {
                    c.phase.send_replace(Phase::Running);
                    self.monitor(c.clone());
                }
                Err(_) => {
                    self.finish(
                        &c,
                        255,
                        "the container's agent was gone when berthd restarted",
                    );
                }
            }
        }
    }

    /// Records an exit.
    fn finish(self: &Arc<Self>, c: &Arc<Ctr>, status: i64, error: &str) {
        let rec = {
            let mut r = c.rec.lock().unwrap_or_else(|e| e.into_inner());
            r.state.running = false;
            r.state.status = "exited".into();
            r.state.exit_code = status;
            r.state.pid = 0;
            r.state.finished_at = now_rfc3339();
            if !error.is_empty() {
                r.state.error = error.into();
            }
            r.clone()
        };
        self.save(&rec);
        self.event(
            "container",
            "die",
            &rec.id,
            serde_json::json!({"exitCode": status.to_string(), "name": rec.name}),
        );
        c.phase.send_replace(Phase::Exited(status));
    }

    /// Watches a running container from a thread: when its process exits, records the
    /// status, lets the agent go, and removes the container if it asked for that.
    pub fn monitor(self: &Arc<Self>, c: Arc<Ctr>) {
        let d = self.clone();
        std::thread::spawn(move || {
            let rec = c.record();
            let ep = d.endpoint(&rec);
            let mut status = None;
            for _ in 0..3 {
                match Client::connect(&ep).and_then(|mut cl| {
                    cl.call(&Request::Wait {
                        id: rec.id.clone(),
                        exec_id: None,
                    })
                }) {
                    Ok(Response::Exited { status: s }) => {
                        status = Some(i64::from(s));
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
            let (status, err) = match status {
                Some(s) => (s, ""),
                None => (255, "lost contact with the container's agent"),
            };
            d.finish(&c, status, err);
            d.release_agent(&rec);
            if rec.auto_remove {
                let _ = d.remove_now(&c);
            }
        });
    }

    /// Deletes the container at its agent and shuts the agent down.
    fn release_agent(&self, rec: &Record) {
        let ep = self.endpoint(rec);
        if let Ok(mut cl) = Client::connect(&ep) {
            let _ = cl.call(&Request::Delete {
                id: rec.id.clone(),
                force: true,
            });
            let _ = cl.call(&Request::Shutdown);
        }
        let _ = std::fs::remove_dir_all(self.run_dir(&rec.id));
    }

    /// Removes a stopped container: its files, its record, its name.
    pub fn remove_now(&self, c: &Arc<Ctr>) -> Result<(), ApiError> {
        let rec = c.record();
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&rec.id);
        let _ = std::fs::remove_dir_all(self.run_dir(&rec.id));
        std::fs::remove_dir_all(self.dir(&rec.id))
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| ApiError::internal(format!("removing container {}: {e}", rec.id)))?;
        self.event(
            "container",
            "destroy",
            &rec.id,
            serde_json::json!({"name": rec.name}),
        );
        c.phase.send_replace(Phase::Removed(rec.state.exit_code));
        Ok(())
    }

    /// Starts the agent for a container: a detached `berth-agent` (process isolation) or
    /// `berth-vmm` (microVM), in its own session so it outlives berthd.
    fn spawn_agent(&self, rec: &Record, disk: Option<&Path>) -> Result<(), ApiError> {
        use std::os::unix::process::CommandExt;
        let run = self.run_dir(&rec.id);
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run)
            .map_err(|e| ApiError::internal(format!("{}: {e}", run.display())))?;
        let out = std::fs::File::create(self.dir(&rec.id).join("agent.log"))
            .map_err(|e| ApiError::internal(format!("agent log: {e}")))?;
        let err = out
            .try_clone()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut cmd = match rec.isolation {
            Isolation::Process => {
                let mut c = std::process::Command::new(&self.opts.agent);
                c.arg("--listen")
                    .arg(format!("unix:{}", run.join("agent.sock").display()))
                    .arg("--state-dir")
                    .arg(run.join("state"));
                c
            }
            Isolation::Vm => {
                let (Some(kernel), Some(initrd)) = (&self.opts.kernel, &self.opts.agent_initrd)
                else {
                    return Err(ApiError::internal(
                        "microVM containers need a guest kernel and the agent initramfs: start berthd with --kernel and --agent-initrd",
                    ));
                };
                let mem_mib = if rec.memory > 0 {
                    (rec.memory >> 20).max(64) + 64
                } else {
                    256
                };
                let vcpus = if rec.nano_cpus > 0 {
                    ((rec.nano_cpus + 999_999_999) / 1_000_000_000).max(1)
                } else {
                    1
                };
                let mut c = std::process::Command::new(&self.opts.vmm);
                c.arg("--kernel")
                    .arg(kernel)
                    .arg("--initrd")
                    .arg(initrd)
                    .arg("--memory")
                    .arg(mem_mib.to_string())
                    .arg("--vcpus")
                    .arg(vcpus.to_string())
                    .arg("--vsock")
                    .arg(format!("3,{}", run.join("vm.sock").display()))
                    .arg("--control")
                    .arg(run.join("control.sock"))
                    .arg("--console")
                    .arg(format!(
                        "file:{}",
                        self.dir(&rec.id).join("console.log").display()
                    ));
                if let Some(d) = disk {
                    c.arg("--disk").arg(format!("{},ro", d.display()));
                }
                c
            }
        };
        cmd.stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: setsid is async-signal-safe; the child only calls it before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ApiError::internal(format!("starting the container's agent: {e}")))?;
        // Reap it if it exits while berthd runs; after a restart init does.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }

    /// The OCI spec for a container's process.
    fn spec(&self, rec: &Record, layer: String) -> Result<ContainerSpec, ApiError> {
        use oci_spec::runtime::{
            LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
        };
        let mut oci = berth_container::spec::docker_default(rec.args.clone());
        oci.set_hostname(Some(rec.hostname.clone()));
        if let Some(p) = oci.process_mut() {
            p.set_env(Some(rec.env.clone()));
            p.set_cwd(PathBuf::from(if rec.cwd.is_empty() {
                "/"
            } else {
                &rec.cwd
            }));
            p.set_terminal(Some(rec.tty));
            if !rec.user.is_empty() {
                // Resolved in the image's passwd/group by the runtime (Docker's --user forms).
                let mut u = p.user().clone();
                u.set_username(Some(rec.user.clone()));
                p.set_user(u);
            }
        }
        let mut res = LinuxResourcesBuilder::default();
        if rec.memory > 0 {
            res = res.memory(
                LinuxMemoryBuilder::default()
                    .limit(rec.memory)
                    .build()
                    .map_err(|e| ApiError::bad(e.to_string()))?,
            );
        }
        if rec.nano_cpus > 0 {
            let period = 100_000u64;
            let quota = (rec.nano_cpus as i128 * period as i128 / 1_000_000_000) as i64;
            res = res.cpu(
                LinuxCpuBuilder::default()
                    .period(period)
                    .quota(quota)
                    .build()
                    .map_err(|e| ApiError::bad(e.to_string()))?,
            );
        }
        if rec.pids_limit > 0 {
            res = res.pids(
                LinuxPidsBuilder::default()
                    .limit(rec.pids_limit)
                    .build()
                    .map_err(|e| ApiError::bad(e.to_string()))?,
            );
        }
        let res = res.build().map_err(|e| ApiError::bad(e.to_string()))?;
        if let Some(l) = oci.linux_mut() {
            l.set_resources(Some(res));
        }
        let (writable, log_path) = match rec.isolation {
            Isolation::Process => {
                let rw = self.dir(&rec.id).join("rw");
                std::fs::create_dir_all(&rw).map_err(|e| ApiError::internal(e.to_string()))?;
                (
                    Some(rw.display().to_string()),
                    Some(self.log_path(&rec.id).display().to_string()),
                )
            }
            // In a microVM the writable layer is a tmpfs and the log lives in the guest;
            // berthd copies the output to the host log while it runs.
            Isolation::Vm => (None, Some(format!("/run/berth/{}.log", rec.id))),
        };
        Ok(ContainerSpec {
            oci,
            rootfs: RootfsSpec {
                layers: vec![layer],
                writable,
            },
            open_stdin: rec.open_stdin,
            log_path,
        })
    }

    /// Starts a container (blocking: call from a blocking task). Attachers waiting for
    /// the start connect between the agent's create and start.
    pub fn start_blocking(self: &Arc<Self>, c: &Arc<Ctr>) -> Result<(), ApiError> {
        let rec = c.record();
        if rec.state.running {
            return Err(ApiError {
                status: hyper::StatusCode::NOT_MODIFIED,
                message: String::new(),
            });
        }
        let img = self.images.resolve(&rec.image_id)?;
        let (layer, disk) = match rec.isolation {
            Isolation::Process => (self.images.rootfs(&img)?.display().to_string(), None),
            Isolation::Vm => {
                crate::vm_check()?;
                (
                    format!("/run/berth/image-{}", &rec.image_id[7..19]),
                    Some(self.images.disk(&img)?),
                )
            }
        };
        let spec = self.spec(&rec, layer.clone())?;
        self.spawn_agent(&rec, disk.as_deref())?;
        let ep = self.endpoint(&rec);
        let fail = |d: &Arc<Daemon>, msg: String, status: i64| {
            d.release_agent(&rec);
            let mut r = c.rec.lock().unwrap_or_else(|e| e.into_inner());
            r.state.error = msg.clone();
            r.state.exit_code = status;
            r.state.status = if r.state.started_at.is_empty() {
                "created".into()
            } else {
                "exited".into()
            };
            d.save(&r);
            msg
        };
        let timeout = if rec.isolation == Isolation::Vm {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(10)
        };
        let mut cl = ep.wait_ready(timeout).map_err(|e| {
            ApiError::internal(fail(
                self,
                format!("the container's agent did not answer: {e}"),
                255,
            ))
        })?;
        let call = |cl: &mut Client, req: &Request| -> Result<Response, ApiError> {
            match cl.call(req) {
                Ok(Response::Error { kind, message }) => Err(match kind {
                    ErrorKind::ExecNotFound
                    | ErrorKind::ExecPermission
                    | ErrorKind::InvalidArgument => ApiError::bad(message),
                    ErrorKind::NotFound => ApiError::not_found(message),
                    ErrorKind::Conflict | ErrorKind::AlreadyExists => ApiError::conflict(message),
                    ErrorKind::NotImplemented => ApiError {
                        status: hyper::StatusCode::NOT_IMPLEMENTED,
                        message,
                    },
                    ErrorKind::Internal => ApiError::internal(message),
                }),
                Ok(r) => Ok(r),
                Err(e) => Err(ApiError::internal(format!("agent: {e}"))),
            }
        };
        if disk.is_some() {
            call(
                &mut cl,
                &Request::MountStorage {
                    source: "/dev/vda".into(),
                    fstype: "erofs".into(),
                    target: layer.clone(),
                    read_only: true,
                },
            )
            .map_err(|e| ApiError {
                message: fail(self, e.message.clone(), 255),
                ..e
            })?;
        }
        let pid = match call(
            &mut cl,
            &Request::Create {
                id: rec.id.clone(),
                spec: Box::new(spec),
            },
        ) {
            Ok(Response::Created { pid }) => pid,
            Ok(other) => {
                return Err(ApiError::internal(fail(
                    self,
                    format!("agent answered {other:?}"),
                    255,
                )))
            }
            Err(e) => {
                return Err(ApiError {
                    message: fail(self, e.message.clone(), 255),
                    ..e
                })
            }
        };
        // The host-side log of a microVM, and attachers, connect now: before the first
        // byte of output.
        let vm_log = if rec.isolation == Isolation::Vm {
            self.vm_log_streams(&rec)
        } else {
            Vec::new()
        };
        let pending: Vec<PendingAttach> =
            std::mem::take(&mut *c.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut acks = Vec::new();
        for p in pending {
            if p.ready.send(ep.clone()).is_ok() {
                acks.push(p.ack);
            }
        }
        for a in acks {
            let _ = a.blocking_recv();
        }
        if let Err(e) = call(&mut cl, &Request::Start { id: rec.id.clone() }) {
            let status = if e.message.contains("executable file not found")
                || e.message.contains("no such file or directory")
            {
                127
            } else if e.message.contains("permission denied") {
                126
            } else {
                128
            };
            return Err(ApiError {
                message: fail(self, e.message.clone(), status),
                ..e
            });
        }
        let rec = {
            let mut r = c.rec.lock().unwrap_or_else(|e| e.into_inner());
            r.state = State {
                status: "running".into(),
                running: true,
                pid: i64::from(pid),
                exit_code: 0,
                error: String::new(),
                started_at: now_rfc3339(),
                finished_at: String::new(),
            };
            r.clone()
        };
        self.save(&rec);
        c.phase.send_replace(Phase::Running);
        self.event(
            "container",
            "start",
            &rec.id,
            serde_json::json!({"name": rec.name}),
        );
        self.vm_logger(&rec, vm_log);
        self.monitor(c.clone());
        Ok(())
    }

    /// For a microVM: the guest streams that feed the host-side log.
    fn vm_log_streams(&self, rec: &Record) -> Vec<(std::os::unix::net::UnixStream, &'static str)> {
        let ep = self.endpoint(rec);
        let kinds: &[(berth_protocol::StreamKind, &'static str)] = if rec.tty {
            &[(berth_protocol::StreamKind::Pty, "stdout")]
        } else {
            &[
                (berth_protocol::StreamKind::Stdout, "stdout"),
                (berth_protocol::StreamKind::Stderr, "stderr"),
            ]
        };
        kinds
            .iter()
            .filter_map(|(kind, name)| {
                ep.open(berth_protocol::Channel::Stdio {
                    container: rec.id.clone(),
                    exec_id: None,
                    stream: *kind,
                })
                .ok()
                .map(|s| (s, *name))
            })
            .collect()
    }

    /// Copies a microVM container's output to the host log (Docker's json-file lines).
    fn vm_logger(
        &self,
        rec: &Record,
        streams: Vec<(std::os::unix::net::UnixStream, &'static str)>,
    ) {
        let log = self.log_path(&rec.id);
        for (s, name) in streams {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                else {
                    return;
                };
                let mut r = std::io::BufReader::new(s);
                let mut line = Vec::new();
                while r
                    .read_until(b'\n', &mut line)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {
                    let _ = writeln!(f, "{}", berth_protocol::time::json_log_line(&line, name));
                    line.clear();
                }
            });
        }
    }

    /// Sends a signal to a running container.
    pub fn signal(&self, rec: &Record, sig: i32, all: bool) -> Result<(), ApiError> {
        let ep = self.endpoint(rec);
        match Client::connect(&ep).and_then(|mut cl| {
            cl.call(&Request::Signal {
                id: rec.id.clone(),
                exec_id: None,
                signal: sig,
                all,
            })
        }) {
            Ok(Response::Ok) => Ok(()),
            Ok(Response::Error { message, .. }) => Err(ApiError::conflict(message)),
            Ok(other) => Err(ApiError::internal(format!("agent answered {other:?}"))),
            Err(e) => Err(ApiError::internal(format!("agent: {e}"))),
        }
    }

    /// Calls a container's agent.
    pub fn call(&self, rec: &Record, req: &Request) -> Result<Response, ApiError> {
        let ep = self.endpoint(rec);
        match Client::connect(&ep).and_then(|mut cl| cl.call(req)) {
            Ok(Response::Error {
                kind: ErrorKind::NotFound,
                message,
            }) => Err(ApiError::not_found(message)),
            Ok(Response::Error {
                kind: ErrorKind::NotImplemented,
                message,
            }) => Err(ApiError {
                status: hyper::StatusCode::NOT_IMPLEMENTED,
                message,
            }),
            Ok(Response::Error {
                kind:
                    ErrorKind::ExecNotFound | ErrorKind::ExecPermission | ErrorKind::InvalidArgument,
                message,
            }) => Err(ApiError::bad(message)),
            Ok(Response::Error { message, .. }) => Err(ApiError::conflict(message)),
            Ok(r) => Ok(r),
            Err(e) => Err(ApiError::internal(format!("agent: {e}"))),
        }
    }
}
