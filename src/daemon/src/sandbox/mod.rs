//! The one sandbox interface: where a container's agent runs and how berthd reaches it.
//!
//! Two backends: [`vm::VmSandbox`] (a berth-vmm microVM whose guest agent listens on
//! vsock) and [`process::ProcessSandbox`] (berth-agent on the host, over a Unix socket).
//! Every difference between the isolation modes lives in a backend; the rest of berthd
//! only calls this trait. The agent protocol is the same in both, so the calls on a
//! running container (signal, stats, top, exec, wait) are provided here once.
//!
//! A new backend (a containerd shim, say) implements [`Sandbox`] and is registered in
//! [`Sandboxes::new`].

pub mod process;
pub mod template;
pub mod vm;

#[cfg(test)]
pub mod fake;

use crate::errors::{Error, Result};
use berth_protocol::aclient::AsyncClient;
use berth_protocol::client::{Client, Endpoint};
use berth_protocol::{Channel, ExecSpec, Request, Response, RootfsSpec, Stats, StreamKind};
use serde::{Deserialize, Serialize};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a container is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Its own microVM (berth-vmm and the guest agent).
    Vm,
    /// Namespaces and cgroups on the host (the agent on the host).
    Process,
}

impl Default for Isolation {
    /// A microVM: berth's default.
    fn default() -> Isolation {
        Isolation::Vm
    }
}

impl std::str::FromStr for Isolation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Isolation> {
        match s {
            "process" => Ok(Isolation::Process),
            "vm" | "hyperv" | "microvm" => Ok(Isolation::Vm),
            other => Err(Error::InvalidParameter(format!(
                "invalid isolation {other:?}: berth offers \"vm\" (the default) and \"process\""
            ))),
        }
    }
}

/// Docker's `--isolation` value: "" and "default" are `default`.
pub fn choose(s: &str, default: Isolation) -> Result<Isolation> {
    match s {
        "" | "default" => Ok(default),
        s => s.parse(),
    }
}

impl Isolation {
    /// The name inspect and info show.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Vm => "vm",
            Isolation::Process => "process",
        }
    }
}

/// What a sandbox needs to boot for one container.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The container's ID.
    pub id: String,
    /// Its persistent directory (record, logs).
    pub dir: PathBuf,
    /// Its runtime directory (sockets); short, for the 108-byte socket path limit.
    pub run_dir: PathBuf,
    /// The host json-file log.
    pub log_path: PathBuf,
    /// The image's ID.
    pub image_id: String,
    /// Memory limit in bytes (0: none).
    pub memory: i64,
    /// CPUs in 1e-9 units (0: none).
    pub nano_cpus: i64,
    /// Its network interfaces, for a sandbox with [`Sandbox::taps`] (empty otherwise).
    pub nics: Vec<Nic>,
    /// Host directories it is given (its volumes and binds), for a sandbox with
    /// [`Sandbox::shares`] (empty otherwise).
    pub shares: Vec<Share>,
}

/// A host directory shared with a sandbox that has a kernel of its own.
#[derive(Debug, Clone)]
pub struct Share {
    /// The host directory.
    pub source: PathBuf,
    /// Where the sandbox's agent mounts it (a guest path), before binding it into the
    /// container.
    pub guest_path: String,
    /// Writes refused by the host side, whatever the guest does.
    pub read_only: bool,
}

/// A network interface of a sandbox with a kernel of its own.
#[derive(Debug, Clone)]
pub struct Nic {
    /// The host's tap, already on its network's bridge.
    pub tap: String,
    /// How the guest configures its end.
    pub guest: berth_protocol::GuestInterface,
}

/// A booted sandbox, ready for the container to be created in it.
pub struct Booted {
    /// The container's root as the agent sees it.
    pub rootfs: RootfsSpec,
    /// Where the agent writes the json-file log.
    pub agent_log: String,
    /// A control connection to the agent.
    pub client: Client,
}

/// One isolation backend.
pub trait Sandbox: Send + Sync {
    /// Which mode this is.
    fn isolation(&self) -> Isolation;

    /// Refuses, with the reason, when this host can't run this kind of sandbox.
    fn check_host(&self) -> Result<()>;

    /// Starts the container's agent detached from berthd (its own session, so it outlives
    /// berthd), waits until it answers, and prepares the image for it. On failure it
    /// says why at once (the agent's or monitor's own reason) and leaves nothing running.
    fn boot(&self, spec: &SandboxSpec) -> Result<Booted>;

    /// How to reach the agent of the container whose runtime directory is `run_dir`.
    fn endpoint(&self, run_dir: &std::path::Path) -> Endpoint;

    /// Whether berthd keeps the host log itself, from the container's output streams
    /// (the agent's own log is out of reach, inside a guest).
    fn copies_logs(&self) -> bool;

    /// The command line of a process, by the PID the agent reported, if this host can
    /// see it.
    fn command_of(&self, pid: i32) -> String;

    /// The directory holding the container's writable layer on the host, if it has one
    /// there (for commit).
    fn writable_layer(&self, dir: &std::path::Path) -> Option<PathBuf>;

    /// Refuses new limits (memory bytes, CPUs in 1e-9 units; 0: none) for a running
    /// container whose sandbox was sized with `sized`, when the sandbox cannot honour
    /// them without a restart. The default: any limit applies live.
    fn check_update(&self, _sized: (i64, i64), _new: (i64, i64)) -> Result<()> {
        Ok(())
    }

    /// Whether this kind of sandbox has a kernel of its own: its containers reach their
    /// networks through taps (a virtio-net device each), get their /etc files through
    /// the agent, and cannot share the host's or another container's network namespace.
    /// The default: no (a veth into the container's namespace on the host).
    fn taps(&self) -> bool {
        false
    }

    /// Whether the container's volumes and bind mounts reach it as shared directories
    /// ([`SandboxSpec::shares`]: a virtio-fs device each, mounted by the guest agent)
    /// rather than as host paths bound by the agent. The default: no.
    fn shares(&self) -> bool {
        false
    }

    /// Removes what this backend kept on the host for container `id` once its sandbox's
    /// process is gone (called with the runtime directory's removal). The default:
    /// nothing.
    fn cleanup(&self, _id: &str) {}

    /// Refuses settings this kind of sandbox cannot honour (checked at create). The
    /// default: all of them.
    fn check_confinement(&self, _c: &crate::daemon::confinement::Confinement) -> Result<()> {
        Ok(())
    }
}

/// The backends, by isolation mode.
#[derive(Clone)]
pub struct Sandboxes {
    vm: Arc<dyn Sandbox>,
    process: Arc<dyn Sandbox>,
    /// The mode a container gets when it doesn't ask.
    pub default: Isolation,
}

impl Sandboxes {
    /// The real backends.
    pub fn new(opts: &crate::daemon::Opts, images: &Arc<berth_image::ImageStore>) -> Sandboxes {
        Sandboxes {
            vm: Arc::new(vm::VmSandbox::new(opts, images.clone())),
            process: Arc::new(process::ProcessSandbox::new(opts, images.clone())),
            default: opts.default_isolation,
        }
    }

    /// Any backends (tests).
    pub fn with(vm: Arc<dyn Sandbox>, process: Arc<dyn Sandbox>, default: Isolation) -> Sandboxes {
        Sandboxes {
            vm,
            process,
            default,
        }
    }

    /// A tenant keeps the boundary the operator chose: when the default sandbox has a
    /// kernel of its own, a tenant may not pick one that shares the host's.
    pub fn check_tenant_choice(&self, i: Isolation) -> Result<()> {
        match crate::tenant::current() {
            Some(t) if self.get(self.default).taps() && !self.get(i).taps() => {
                Err(Error::Forbidden(format!(
                    "tenant {t}: --isolation {} is for the operator only on this host",
                    i.as_str()
                )))
            }
            _ => Ok(()),
        }
    }

    /// The backend for a mode.
    pub fn get(&self, i: Isolation) -> &Arc<dyn Sandbox> {
        match i {
            Isolation::Vm => &self.vm,
            Isolation::Process => &self.process,
        }
    }
}

/// A running container's agent, reached through its sandbox's endpoint.
#[derive(Clone)]
pub struct AgentRef {
    /// Where it listens.
    pub endpoint: Endpoint,
    /// The container's ID.
    pub id: String,
    /// Where the sandbox's process (the monitor or the host agent) is recorded
    /// ([`spawn_detached`]), so that a release can make sure it is gone.
    pub pidfile: PathBuf,
}

/// The file in a container's directory that names its sandbox's process.
pub const PIDFILE: &str = "sandbox.pid";

/// How long a released sandbox has to exit by itself before it is killed.
const RELEASE_GRACE: Duration = Duration::from_secs(10);

/// A process's start time (clock ticks since boot), which tells it from a later process
/// with the same PID.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces;
    // the start time is field 22 of the line.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // An exited process not reaped yet is gone for this purpose.
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Creates (or truncates) a log file that only root reads.
pub(crate) fn private_file(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Appending: berthd's own trace lines (`--vmm-debug`) go into the same log as the
    // monitor's output without overwriting it.
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .and_then(|f| {
            use std::os::unix::fs::PermissionsExt;
            f.set_len(0)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map(|_| f)
        })
        .map_err(Error::io(format!("{}", path.display())))
}

/// The last three lines of a sandbox's log, joined, for an error.
pub(crate) fn log_tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    if tail.is_empty() {
        "it wrote nothing".to_owned()
    } else {
        tail.join(" / ")
    }
}

/// Records a sandbox's process as `PID STARTTIME`.
fn write_pidfile(path: &std::path::Path, pid: i32) -> Result<()> {
    let line = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
    std::fs::write(path, line).map_err(Error::io(format!("{}", path.display())))
}

/// The sandbox process a pidfile names, if it is still that process.
pub(crate) fn recorded_process(path: &std::path::Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid: i32 = it.next()?.parse().ok()?;
    let started: u64 = it.next()?.parse().ok()?;
    (pid > 1 && start_time(pid) == Some(started)).then_some(pid)
}

/// Waits up to `grace` for the recorded sandbox process to exit, then kills its process
/// group (it leads its own session). Blocking.
pub(crate) fn reap_sandbox(pidfile: &std::path::Path, grace: Duration) {
    let deadline = std::time::Instant::now() + grace;
    while let Some(pid) = recorded_process(pidfile) {
        if std::time::Instant::now() >= deadline {
            // SAFETY: kill takes plain integers; the group is the sandbox's own session.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            // SAFETY: as above; in case it left its group.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let killed = std::time::Instant::now() + Duration::from_secs(5);
            while recorded_process(pidfile).is_some_and(|_| std::time::Instant::now() < killed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Maps an agent's answer: its errors keep their class and exit status.
pub fn answer(
    r: std::result::Result<Response, berth_protocol::client::ClientError>,
) -> Result<Response> {
    match r? {
        Response::Error {
            kind,
            message,
            exit_status,
        } => Err(Error::from_agent(kind, message, exit_status)),
        r => Ok(r),
    }
}

fn unexpected(r: Response) -> Error {
    Error::Sandbox(format!("the container's agent answered {r:?}"))
}

impl AgentRef {
    /// One request on a fresh control connection.
    pub fn call(&self, req: &Request) -> Result<Response> {
        answer(Client::connect(&self.endpoint).and_then(|mut c| c.call(req)))
    }

    /// Whether the agent answers within `t` (re-adoption after a berthd restart).
    pub fn alive(&self, t: Duration) -> bool {
        self.endpoint.wait_ready(t).is_ok()
    }

    /// Signals the container's process, or all its processes.
    pub fn signal(&self, signal: i32, all: bool) -> Result<()> {
        match self.call(&Request::Signal {
            id: self.id.clone(),
            exec_id: None,
            signal,
            all,
        }) {
            Ok(_) => Ok(()),
            Err(Error::InvalidParameter(m)) => Err(Error::InvalidParameter(m)),
            Err(e) => Err(Error::Conflict(e.to_string())),
        }
    }

    /// Waits (blocking) for the container's process or an exec to exit: its status, once
    /// its output is drained.
    pub fn wait(&self, exec_id: Option<String>) -> Result<i64> {
        match self.call(&Request::Wait {
            id: self.id.clone(),
            exec_id,
        })? {
            Response::Exited { status, .. } => Ok(i64::from(status)),
            r => Err(unexpected(r)),
        }
    }

    /// Resource usage.
    pub fn stats(&self) -> Result<Stats> {
        match self.call(&Request::Stats {
            id: self.id.clone(),
        })? {
            Response::Stats(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }

    /// The container's PIDs, as the agent sees them.
    pub fn pids(&self) -> Result<Vec<i32>> {
        match self.call(&Request::ListProcesses {
            id: self.id.clone(),
        })? {
            Response::Processes { pids } => Ok(pids),
            r => Err(unexpected(r)),
        }
    }

    /// Creates and starts an exec; its PID.
    pub fn exec(&self, exec_id: &str, spec: ExecSpec) -> Result<i32> {
        self.call(&Request::Exec {
            id: self.id.clone(),
            exec_id: exec_id.to_owned(),
            spec: Box::new(spec),
        })?;
        match self.call(&Request::StartExec {
            id: self.id.clone(),
            exec_id: exec_id.to_owned(),
        })? {
            Response::Created { pid } => Ok(pid),
            _ => Ok(0),
        }
    }

    /// Resizes the terminal of the container's process or an exec.
    pub fn resize(&self, exec_id: Option<String>, rows: u16, cols: u16) -> Result<()> {
        self.call(&Request::ResizeTty {
            id: self.id.clone(),
            exec_id,
            rows,
            cols,
        })
        .map(|_| ())
    }

    /// Opens one stream of the container's process or an exec.
    pub fn open(&self, exec_id: Option<String>, stream: StreamKind) -> Result<UnixStream> {
        self.endpoint
            .open(Channel::Stdio {
                container: self.id.clone(),
                exec_id,
                stream,
            })
            .map_err(Error::from)
    }

    /// Opens the agent's log of the container from byte `offset`, followed until the
    /// container's output ends.
    pub async fn log(&self, offset: u64) -> Result<tokio::net::UnixStream> {
        berth_protocol::aclient::open(
            &self.endpoint,
            Channel::Log {
                container: self.id.clone(),
                offset,
            },
        )
        .await
        .map_err(Error::from)
    }

    /// One request on a fresh async control connection.
    pub async fn call_async(&self, req: &Request) -> Result<Response> {
        let r = async {
            let mut c = AsyncClient::connect(&self.endpoint).await?;
            c.call(req).await
        }
        .await;
        answer(r)
    }

    /// Waits for the container's process or an exec to exit, without a thread: its
    /// status, once its output is drained, and whether the OOM killer ended it (the
    /// container's process only).
    pub async fn wait_async(&self, exec_id: Option<String>) -> Result<(i64, bool)> {
        match self
            .call_async(&Request::Wait {
                id: self.id.clone(),
                exec_id,
            })
            .await?
        {
            Response::Exited { status, oom_killed } => Ok((i64::from(status), oom_killed)),
            r => Err(unexpected(r)),
        }
    }

    /// [`AgentRef::release`], without holding an async worker.
    pub async fn release_async(&self) {
        let ask = async {
            let mut cl = AsyncClient::connect(&self.endpoint).await?;
            cl.call(&Request::Shutdown).await
        };
        let _ = tokio::time::timeout(RELEASE_GRACE, ask).await;
        crate::trace(&self.id, "agent shut down");
        let pidfile = self.pidfile.clone();
        let _ = tokio::task::spawn_blocking(move || reap_sandbox(&pidfile, RELEASE_GRACE)).await;
    }

    /// Shuts the container's agent down (a host agent deletes its container first; a
    /// microVM's agent syncs and powers off, which ends everything in the guest), then
    /// makes sure the sandbox's process is gone: one that has not exited within
    /// [`RELEASE_GRACE`] (or whose agent does not answer) is killed. When this
    /// returns, no monitor or host agent of the container is left.
    pub fn release(&self) {
        if let Ok(mut cl) = Client::connect(&self.endpoint) {
            let _ = cl.call(&Request::Shutdown);
        }
        reap_sandbox(&self.pidfile, RELEASE_GRACE);
    }
}

/// Starts `cmd` detached from berthd (its own session, so it outlives berthd), with its
/// output in `log`; then waits until `endpoint` answers, up to `timeout`. If the process
/// exits first, the error carries the last lines it wrote, at once; if it never answers,
/// the error ends with `timeout_hint` (what may keep it silent), if any.
pub fn spawn_detached(
    mut cmd: std::process::Command,
    log: &std::path::Path,
    pidfile: &std::path::Path,
    endpoint: &Endpoint,
    timeout: Duration,
    what: &str,
    timeout_hint: Option<&str>,
) -> Result<Client> {
    use std::os::unix::process::CommandExt;
    let out = private_file(log)?;
    let err = out.try_clone().map_err(Error::io("the agent's log"))?;
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
        .map_err(|e| Error::Sandbox(format!("starting the {what}: {e}")))?;
    if let Err(e) = write_pidfile(pidfile, child.id() as i32) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut poll = Duration::from_millis(10);
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(Error::Sandbox(format!(
                "the {what} exited ({status}) before it answered: {}",
                log_tail(log)
            )));
        }
        match Client::connect(endpoint) {
            Ok(c) => break Ok(c),
            Err(e) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(Error::Sandbox(format!(
                    "the {what} did not answer within {}s: {e}{}",
                    timeout.as_secs(),
                    timeout_hint.map(|h| format!(" ({h})")).unwrap_or_default()
                )));
            }
            Err(_) => {
                // Backing off from 10 ms to 50 ms: every attempt costs the monitor (and,
                // once its vsock driver is up, the guest) work while it boots; polling at
                // 10 ms slowed a microVM's boot by ~0.5 s in the lab (docs/boot.md).
                std::thread::sleep(poll);
                poll = (poll * 3 / 2).min(Duration::from_millis(50));
            }
        }
    };
    if result.is_ok() {
        // Reap it if it exits while berthd runs; after a restart init does.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
    result
}
