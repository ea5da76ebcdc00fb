//! The daemon core: containers (records on disk, one sandbox per container), images (the
//! berth-image store), execs and events. One file per verb or object:
//! `create`, `start` (and the supervisor that watches a running container), `stop`,
//! `remove`, `exec`, `adopt` (re-adoption after a restart), `inspect`, `logs`.
//!
//! Every container gets its own agent, detached from berthd, in a sandbox
//! ([`crate::sandbox`]). So containers keep running when berthd stops or crashes, and a
//! restarted berthd reads the records back and reconnects to each agent.
//!
//! The core returns [`crate::errors::Error`]; it never builds HTTP replies.

pub mod adopt;
pub mod archive;
pub mod confinement;
pub mod create;
pub mod events;
pub mod exec;
pub mod health;
pub mod inspect;
pub mod logs;
pub mod networking;
pub mod pause;
pub mod remove;
pub mod restart;
pub mod start;
pub mod stop;
pub mod update;
pub mod volumes;

use crate::errors::{Error, Result};
use crate::models::{docker, HostConfig};
use crate::sandbox::{AgentRef, Isolation, Sandbox, Sandboxes};
use crate::state::State;
use berth_image::ImageStore;
use berth_protocol::client::Endpoint;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};

pub use berth_protocol::time::now_rfc3339;

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
    /// The uid range (start, count) microVM monitors are jailed with, one uid each; None:
    /// monitors run unjailed (`--vmm-jail false`).
    pub vmm_jail: Option<(u32, u32)>,
    /// `--vmm-debug`: microVMs boot with the kernel's full console and traced steps.
    pub vmm_debug: bool,
    /// `--vm-snapshots`: microVMs start from a snapshot of a guest booted once.
    pub vm_snapshots: bool,
    /// Guest kernel for microVMs.
    pub kernel: Option<PathBuf>,
    /// The agent for microVMs: its erofs image (virtio-pmem) or its initramfs.
    pub agent_initrd: Option<PathBuf>,
    /// virtiofsd, the backend of microVMs' volumes and bind mounts (None: not found).
    pub virtiofsd: Option<PathBuf>,
    /// Isolation when a container doesn't ask.
    pub default_isolation: Isolation,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Network settings (`--bip`, `--mtu`, `default-address-pools`).
    pub net: crate::network::NetOpts,
    /// What unpacking one image may use (`--max-image-size`, `--min-free-space`).
    pub image_limits: berth_image::images::Limits,
    /// Tenants and their quotas (config file `tenants`); None: every TLS client is the
    /// operator, as with dockerd.
    pub tenants: Option<crate::tenant::Tenants>,
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
    /// The terminal's initial size (rows, columns), if given.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
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
    /// How the json-file log rotates (`--log-opt max-size`, `max-file`).
    #[serde(default)]
    pub log_rotation: LogRotation,
    /// `--log-driver none`: no log is kept (`docker logs` answers 501, as dockerd).
    #[serde(default)]
    pub log_none: bool,
    /// Its networks, addresses, published ports and DNS settings.
    #[serde(default)]
    pub net: crate::network::NetConfig,
    /// Its bind mounts and volumes.
    #[serde(default)]
    pub mounts: Vec<volumes::MountRec>,
    /// Read-only root, capabilities, seccomp, ulimits, tmpfs mounts... as applied.
    #[serde(default)]
    pub confinement: confinement::Confinement,
    /// `--restart`.
    #[serde(default)]
    pub restart_policy: restart::RestartPolicy,
    /// Its last run was ended by the kernel's OOM killer (`State.OOMKilled`).
    #[serde(default)]
    pub oom_killed: bool,
    /// Frozen by `pause` (while running).
    #[serde(default)]
    pub paused: bool,
    /// The memory limit and CPUs its running sandbox was sized with (a microVM's memory
    /// and vCPUs are fixed at boot: `update` may not raise past them).
    #[serde(default)]
    pub sandbox_sized: (i64, i64),
    /// Its healthcheck (the image's, merged with the create body's), if it has one.
    #[serde(default)]
    pub healthcheck: Option<health::HealthCheck>,
    /// Restarts its policy made since it was last started by hand.
    #[serde(default)]
    pub restart_count: i64,
    /// Stopped or killed through the API (its policy does not restart it).
    #[serde(default)]
    pub stopped_by_hand: bool,
    /// Waiting out the backoff before its policy restarts it.
    #[serde(default)]
    pub restarting: bool,
    /// The Config as created, with the image's defaults applied (for inspect).
    pub config: docker::ContainerConfig,
    /// The HostConfig as created (for inspect).
    pub host_config: HostConfig,
    /// Where it is in its life.
    pub state: State,
    /// The tenant that created it (None: the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// How a container's json-file log rotates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    /// Bytes per file (0: no limit).
    pub max_size: u64,
    /// Files kept, the current one included.
    pub max_files: u32,
}

impl From<LogRotation> for berth_protocol::logfile::Rotation {
    fn from(r: LogRotation) -> Self {
        berth_protocol::logfile::Rotation {
            max_size: r.max_size,
            max_files: r.max_files,
        }
    }
}

/// A waiter for a container's start, so that attachers see output from the first byte.
pub struct PendingAttach {
    /// Told the agent once the container exists there.
    pub ready: oneshot::Sender<AgentRef>,
    /// Answers once its streams are connected.
    pub ack: oneshot::Receiver<()>,
}

/// Counts a container's output relays (attached clients) still copying, so that its exit
/// is reported only after they have the last byte.
#[derive(Default)]
pub struct Relays {
    n: Mutex<usize>,
    /// Bytes the relays copied so far (their progress).
    pub copied: std::sync::atomic::AtomicU64,
}

/// One relay, counted while it lives.
pub struct RelayGuard(Arc<Ctr>);

impl RelayGuard {
    /// The container, for counting progress.
    pub fn progress(&self) -> Arc<Ctr> {
        self.0.clone()
    }
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        let mut n = self.0.relays.n.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
    }
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
    /// Attached output relays.
    pub relays: Relays,
    /// The last restart backoff of its restart policy.
    pub backoff: Mutex<Option<Duration>>,
    /// `State.Health`, while it has a healthcheck and has run since berthd started.
    pub health: Mutex<Option<docker::Health>>,
}

impl Ctr {
    /// A copy of the record.
    pub fn record(&self) -> Record {
        self.rec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counts one more output relay until the guard drops.
    pub fn relay(self: &Arc<Self>) -> RelayGuard {
        *self.relays.n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        RelayGuard(self.clone())
    }

    /// Waits until no relay is copying, while they make progress (see
    /// [`wait_while_progressing`]).
    pub async fn relays_done(&self, idle: Duration) {
        wait_while_progressing(
            || *self.relays.n.lock().unwrap_or_else(|e| e.into_inner()) > 0,
            &self.relays.copied,
            idle,
        )
        .await;
    }
}

/// An exec.
#[derive(Debug, Clone)]
pub struct ExecRec {
    /// Typed on its stdin, these end the session (not the process).
    pub detach_keys: Vec<u8>,
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
    /// A start request took it (see `Daemon::exec_claim`): a second start is a 409.
    pub claimed: bool,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// PID.
    pub pid: i64,
}

/// The daemon.
pub struct Daemon {
    /// Options.
    pub opts: Opts,
    /// The runtime the supervisors run on.
    pub rt: tokio::runtime::Handle,
    /// Images.
    pub images: Arc<ImageStore>,
    /// The isolation backends.
    pub sandboxes: Sandboxes,
    /// Containers by ID.
    pub containers: Mutex<BTreeMap<String, Arc<Ctr>>>,
    /// Execs by ID.
    pub execs: Mutex<HashMap<String, ExecRec>>,
    /// Events (`/events`).
    pub events: broadcast::Sender<docker::EventMessage>,
    /// Which tenants have which images.
    pub image_owners: crate::tenant::ImageOwners,
    /// Serialises quota checks with the creates and updates they admit.
    pub quota_lock: Mutex<()>,
    /// The last events, for `/events?since=` (dockerd keeps a bounded history too).
    pub event_log: Mutex<std::collections::VecDeque<docker::EventMessage>>,
    /// Networks.
    pub networks: Arc<crate::network::Networks>,
    /// What berthd holds for networks while it runs (proxies, DNS servers).
    pub net_rt: networking::NetRuntime,
    /// Named and anonymous volumes.
    pub volumes: Arc<crate::volume::Volumes>,
    /// Itself, weakly (for tasks that must not keep it alive).
    pub weak: std::sync::OnceLock<std::sync::Weak<Daemon>>,
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

/// The bytes a directory tree holds (regular files' sizes; symlinks not followed).
pub fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return if m.is_file() { m.len() } else { 0 };
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

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

/// Parses a signal (`SIGTERM`, `TERM`, `15`).
pub fn parse_signal(s: &str) -> Result<i32> {
    signal_number(s).ok_or_else(|| Error::InvalidParameter(format!("Invalid signal: {s}")))
}

impl Daemon {
    /// Opens the data root with the real sandboxes and re-adopts every container found
    /// there.
    pub fn open(
        opts: Opts,
        rt: tokio::runtime::Handle,
    ) -> std::result::Result<Arc<Daemon>, String> {
        let images = Arc::new(
            ImageStore::open(&opts.data_root.join("image"))
                .map_err(|e| e.to_string())?
                .with_limits(opts.image_limits.clone()),
        );
        let sandboxes = Sandboxes::new(&opts, &images);
        Daemon::with_sandboxes(opts, images, sandboxes, rt)
    }

    /// Opens the data root with the given sandboxes.
    pub fn with_sandboxes(
        opts: Opts,
        images: Arc<ImageStore>,
        sandboxes: Sandboxes,
        rt: tokio::runtime::Handle,
    ) -> std::result::Result<Arc<Daemon>, String> {
        for d in [opts.data_root.join("containers"), opts.exec_root.join("c")] {
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        sweep_tmp(&opts.data_root.join("tmp"));
        let (events, _) = broadcast::channel(256);
        let networks = Arc::new(
            crate::network::Networks::open(opts.data_root.join("network"), opts.net.clone())
                .map_err(|e| format!("networks: {e}"))?,
        );
        let volumes = Arc::new(
            crate::volume::Volumes::open(opts.data_root.join("volumes"))
                .map_err(|e| format!("volumes: {e}"))?,
        );
        let image_owners =
            crate::tenant::ImageOwners::open(opts.data_root.join("image-owners.json"))?;
        let d = Arc::new(Daemon {
            image_owners,
            quota_lock: Mutex::new(()),
            volumes,
            opts,
            rt,
            images,
            sandboxes,
            containers: Mutex::new(BTreeMap::new()),
            execs: Mutex::new(HashMap::new()),
            events,
            event_log: Mutex::new(std::collections::VecDeque::new()),
            networks,
            net_rt: Default::default(),
            weak: Default::default(),
        });
        let _ = d.weak.set(Arc::downgrade(&d));
        d.adopt();
        d.reconcile();
        d.net_reconcile();
        d.restart_on_boot();
        Ok(d)
    }

    /// The size of a container's writable layer, where berthd can see it (a process
    /// container's upper directory; a microVM's lives in its guest: None).
    pub fn rw_size(&self, rec: &Record) -> Option<i64> {
        self.sandbox(rec)
            .writable_layer(&self.dir(&rec.id))
            .map(|p| dir_size(&p) as i64)
    }

    /// A container's sandbox backend.
    pub fn sandbox(&self, rec: &Record) -> &Arc<dyn Sandbox> {
        self.sandboxes.get(rec.isolation)
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

    /// What a container's sandbox left on the host once its process is gone: the runtime
    /// directory, and the backend's own (a jailed monitor's cgroup). Blocking (briefly).
    pub fn sandbox_gone(&self, rec: &Record) {
        // The backend's first: a jailed monitor's uid is taken until its runtime
        // directory goes, and its last threads die with its cgroup.
        self.sandbox(rec).cleanup(&rec.id);
        let _ = std::fs::remove_dir_all(self.run_dir(&rec.id));
    }

    /// The log file.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(format!("{id}-json.log"))
    }

    /// How to reach a container's agent.
    pub fn endpoint(&self, rec: &Record) -> Endpoint {
        self.sandbox(rec).endpoint(&self.run_dir(&rec.id))
    }

    /// A container's agent.
    pub fn agent(&self, rec: &Record) -> AgentRef {
        AgentRef {
            endpoint: self.endpoint(rec),
            id: rec.id.clone(),
            pidfile: self.dir(&rec.id).join(crate::sandbox::PIDFILE),
        }
    }

    /// Writes a record atomically: aside, synced, then renamed over the old one.
    pub fn save(&self, rec: &Record) -> Result<()> {
        crate::persist::write_json(
            &self.dir(&rec.id).join("config.v2.json"),
            rec,
            &format!("saving container {}", rec.id),
        )
    }

    /// Changes a container's record through `f` and saves it; the record in memory
    /// changes only if the save succeeds.
    pub fn update<T>(&self, c: &Ctr, f: impl FnOnce(&mut Record) -> Result<T>) -> Result<T> {
        let mut g = c.rec.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = g.clone();
        let out = f(&mut next)?;
        self.save(&next)?;
        *g = next;
        Ok(out)
    }

    /// Publishes an event.
    /// A container's events carry its labels too, as dockerd's do (so `label=`
    /// filters them).
    pub fn event(&self, kind: &str, action: &str, id: &str, attrs: &[(&str, String)]) {
        let mut all: Vec<(String, String)> = Vec::new();
        // Whose it is: a container's owner, or the tenant whose request caused it.
        let mut owner = crate::tenant::current();
        if kind == "container" {
            let rec = self
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .map(|c| c.record());
            if let Some(r) = rec {
                owner = r.tenant.clone();
                all.extend(r.labels);
            }
        }
        if let Some(t) = owner {
            all.push((events::TENANT_ATTR.to_owned(), t));
        }
        all.extend(attrs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ev = docker::EventMessage {
            typ: Some(match kind {
                "image" => docker::EventMessageTypeEnum::IMAGE,
                "network" => docker::EventMessageTypeEnum::NETWORK,
                _ => docker::EventMessageTypeEnum::CONTAINER,
            }),
            action: Some(action.to_owned()),
            actor: Some(docker::EventActor {
                id: Some(id.to_owned()),
                attributes: Some(all.into_iter().collect()),
            }),
            scope: Some(docker::EventMessageScopeEnum::LOCAL),
            time: Some(t.as_secs() as i64),
            time_nano: Some(t.as_nanos() as i64),
        };
        {
            let mut log = self.event_log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() >= events::HISTORY {
                log.pop_front();
            }
            log.push_back(ev.clone());
            // Sent under the log's lock: the history and the live stream agree on order.
            let _ = self.events.send(ev);
        }
    }

    /// Finds a container by full ID, name, or unique ID prefix.
    /// A tenant finds only its own (others' are "No such container", as missing ones).
    /// Names and ID prefixes are matched among the caller's own only, so another
    /// tenant's containers neither shadow nor make a prefix ambiguous.
    pub fn find(&self, name: &str) -> Result<Arc<Ctr>> {
        self.find_in(name, true)
    }

    /// [`Daemon::find`] among every tenant's containers (names and IDs are host-wide).
    pub fn find_any(&self, name: &str) -> Result<Arc<Ctr>> {
        self.find_in(name, false)
    }

    fn find_in(&self, name: &str, visible_only: bool) -> Result<Arc<Ctr>> {
        let all = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let seen: Vec<&Arc<Ctr>> = all
            .values()
            .filter(|c| !visible_only || crate::tenant::sees(&c.record().tenant))
            .collect();
        if let Some(c) = seen.iter().find(|c| c.id == name) {
            return Ok((*c).clone());
        }
        let n = name.trim_start_matches('/');
        if let Some(c) = seen.iter().find(|c| c.record().name == n) {
            return Ok((*c).clone());
        }
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&&Arc<Ctr>> = seen.iter().filter(|c| c.id.starts_with(name)).collect();
            if hits.len() == 1 {
                return Ok((*hits[0]).clone());
            }
            if hits.len() > 1 {
                return Err(Error::InvalidParameter(format!(
                    "multiple IDs found with provided prefix: {name}"
                )));
            }
        }
        Err(Error::NotFound(format!("No such container: {name}")))
    }

    /// An image by name, ID or prefix, among those the caller sees (a tenant: its own);
    /// otherwise "No such image", as a missing one.
    pub fn find_image(&self, name: &str) -> Result<berth_image::ImageRecord> {
        let not_found = || {
            let shown = name
                .parse::<berth_image::Reference>()
                .map(|r| r.familiar())
                .unwrap_or_else(|_| name.to_owned());
            Error::NotFound(format!("No such image: {shown}"))
        };
        match self.images.resolve(name) {
            Ok(r) if self.image_owners.sees(&r.id.to_string()) => Ok(r),
            Ok(_) | Err(berth_image::ImageError::NotFound(_)) => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every container's record, whoever's (berthd's bookkeeping: rules, in-use checks).
    pub fn all_records(&self) -> Vec<Record> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.record())
            .collect()
    }

    /// Every container's record that the caller sees (a tenant: its own).
    pub fn records(&self) -> Vec<Record> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.record())
            .filter(|r| crate::tenant::sees(&r.tenant))
            .collect()
    }

    /// Registers a container.
    pub fn insert(&self, rec: Record) -> Arc<Ctr> {
        let phase = match &rec.state {
            State::Created { .. } => Phase::Created,
            State::Running { .. } => Phase::Running,
            State::Exited { exit_code, .. } => Phase::Exited(*exit_code),
        };
        let (phase, _) = watch::channel(phase);
        let c = Arc::new(Ctr {
            id: rec.id.clone(),
            rec: Mutex::new(rec),
            phase,
            pending: Mutex::new(Vec::new()),
            op: tokio::sync::Mutex::new(()),
            relays: Relays::default(),
            backoff: Mutex::new(None),
            health: Mutex::new(None),
        });
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.id.clone(), c.clone());
        c
    }

    /// A running container, or a conflict naming it.
    pub fn running(&self, c: &Ctr) -> Result<Record> {
        let rec = c.record();
        if rec.state.running() {
            Ok(rec)
        } else {
            Err(Error::Conflict(format!(
                "Container {} is not running",
                rec.id
            )))
        }
    }
}

/// Waits while `busy()` holds and `progress` keeps moving; gives up once it has not moved
/// for `idle` (a stuck client or guest must not hold an exit forever, but a slow one that
/// is still copying, as under emulation, must not be cut short).
pub async fn wait_while_progressing(
    busy: impl Fn() -> bool,
    progress: &std::sync::atomic::AtomicU64,
    idle: Duration,
) {
    use std::sync::atomic::Ordering;
    let mut seen = progress.load(Ordering::Relaxed);
    let mut since = std::time::Instant::now();
    while busy() {
        let now = progress.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            since = std::time::Instant::now();
        } else if since.elapsed() >= idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Logs a failure that nobody waits for (a background task's), as a JSON line.
pub fn log_failure(what: &str, e: &Error) {
    crate::log("error", what, &[("error", &e.to_string())]);
}

/// Runs blocking core work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(crate::tenant::carry(f))
        .await
        .map_err(|e| Error::Sandbox(format!("a worker failed: {e}")))?
}

#[cfg(test)]
mod tests;

/// Removes what a previous berthd left in `<data-root>/tmp` (request bodies of `load` and
/// `import`, `save` archives: each removed when its request ends, unless berthd died
/// first). Only this berthd uses the data root (main.rs holds its lock), so all of it is
/// stale.
fn sweep_tmp(dir: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}
