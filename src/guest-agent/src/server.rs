//! The agent's protocol server: one thread per connection.

use crate::output::{Fanout, Tee};
use berth_container::{reaper, spec, Config, Container, Streams};
use berth_protocol::logfile::{Follower, LogFile, NO_HOLD};
use berth_protocol::{
    read_frame, write_frame, Channel, ErrorKind, Hello, HelloOk, Request, Response, Stats,
    StreamKind, VERSION,
};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// A process's streams, handed out once each to the stream connections that attach; or,
/// for a container that logs, its output fanned out to every attached connection.
#[derive(Default)]
struct Attach {
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    pty: Option<OwnedFd>,
    out_fan: Option<Arc<Fanout>>,
    err_fan: Option<Arc<Fanout>>,
    /// The copies of a logging process's output, until its exit waits for them.
    tees: Vec<Tee>,
}

impl Attach {
    fn from(s: Streams) -> Attach {
        match s {
            Streams::Inherited => Attach::default(),
            Streams::Tty(m) => Attach {
                pty: Some(m),
                ..Default::default()
            },
            Streams::Pipes {
                stdin,
                stdout,
                stderr,
            } => Attach {
                stdin,
                stdout: Some(stdout),
                stderr: Some(stderr),
                ..Default::default()
            },
        }
    }
}

/// A process's exit status, once known.
#[derive(Default)]
struct Exit {
    status: Mutex<Option<i32>>,
    cv: Condvar,
}

impl Exit {
    fn set(&self, s: i32) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
        self.cv.notify_all();
    }
    fn get(&self) -> Option<i32> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn wait(&self) -> i32 {
        let mut g = self.status.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = *g {
                return s;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

struct Proc {
    pid: i32,
    attach: Mutex<Attach>,
    exit: Arc<Exit>,
    pty: Option<OwnedFd>,
}

struct Entry {
    container: Mutex<Option<Container>>,
    /// The json-file log the agent writes, if it logs.
    log_path: Option<PathBuf>,
    /// Where the log's follower (berthd's host copy) has read to: rotation keeps what it
    /// has not.
    log_hold: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Wakes the log's followers: each append, and the exit.
    log_changes: Option<Arc<berth_protocol::logfile::Changes>>,
    main: Proc,
    started: Mutex<bool>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    pending_execs: Mutex<HashMap<String, berth_protocol::ExecSpec>>,
}

/// The agent's state.
pub struct Agent {
    state_dir: PathBuf,
    cgroup_root: PathBuf,
    in_vm: bool,
    containers: Mutex<HashMap<String, Arc<Entry>>>,
    socket: Mutex<Option<PathBuf>>,
}

type Reply = Response;

/// How long an exit waits for the process's output to drain once the copy stops making
/// progress (a leftover child holding the stream open, or a stuck attacher).
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

fn err(kind: ErrorKind, message: impl Into<String>) -> Reply {
    Response::Error {
        kind,
        message: message.into(),
        exit_status: None,
    }
}

fn runtime_err(e: berth_container::Error) -> Reply {
    use berth_container::Error as E;
    let kind = match &e {
        E::InvalidSpec(_) => ErrorKind::InvalidArgument,
        E::AlreadyExists(_) => ErrorKind::AlreadyExists,
        E::Conflict(_) => ErrorKind::Conflict,
        E::ExecNotFound(_) => ErrorKind::ExecNotFound,
        E::ExecPermission(_) => ErrorKind::ExecPermission,
        E::Cgroup(m) if m.contains("cannot enforce") || m.contains("invalid") => {
            ErrorKind::InvalidArgument
        }
        _ => ErrorKind::Internal,
    };
    Response::Error {
        kind,
        message: e.to_string(),
        exit_status: e.exit_status(),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !id.starts_with('.')
}

impl Agent {
    /// A new agent keeping container state under `state_dir`.
    pub fn new(state_dir: PathBuf, cgroup_root: PathBuf, in_vm: bool) -> Arc<Agent> {
        Arc::new(Agent {
            state_dir,
            cgroup_root,
            in_vm,
            containers: Mutex::new(HashMap::new()),
            socket: Mutex::new(None),
        })
    }

    fn get(&self, id: &str) -> Result<Arc<Entry>, Reply> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| err(ErrorKind::NotFound, format!("No such container: {id}")))
    }

    fn proc_of(&self, e: &Entry, exec_id: &Option<String>) -> Result<ProcRef, Reply> {
        match exec_id {
            None => Ok(ProcRef::Main),
            Some(x) => e
                .execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(x)
                .cloned()
                .map(ProcRef::Exec)
                .ok_or_else(|| err(ErrorKind::NotFound, format!("No such exec instance: {x}"))),
        }
    }

    /// Handles one control request. Never panics on bad input.
    pub fn handle(self: &Arc<Self>, req: Request) -> (Reply, bool) {
        crate::steps::note(req.op());
        let r = match req {
            Request::MountStorage {
                source,
                fstype,
                target,
                read_only,
                read_ahead_kb,
                dax,
            } => self.mount_storage(&source, &fstype, &target, read_only, read_ahead_kb, dax),
            Request::ConfigureNetwork { interfaces } => {
                if self.in_vm {
                    crate::net::configure(&interfaces)
                        .map(|()| Response::Ok)
                        .map_err(|e| err(ErrorKind::InvalidArgument, format!("network: {e}")))
                } else {
                    Err(err(
                        ErrorKind::InvalidArgument,
                        "configure_network is for the agent in a microVM (the host's agent leaves the host's network alone)",
                    ))
                }
            }
            Request::Restored {
                realtime_ns,
                entropy,
            } => {
                if self.in_vm {
                    crate::restore::restored(realtime_ns, &entropy)
                        .map(|()| Response::Ok)
                        .map_err(|e| err(ErrorKind::InvalidArgument, e))
                } else {
                    Err(err(
                        ErrorKind::InvalidArgument,
                        "restored is for the agent in a microVM started from a snapshot (the host's agent leaves the host's clock alone)",
                    ))
                }
            }
            Request::Create { id, spec } => self.create(id, *spec),
            Request::Start { id } => self.start(&id),
            Request::Exec { id, exec_id, spec } => self.exec(&id, exec_id, *spec),
            Request::StartExec { id, exec_id } => self.start_exec(&id, &exec_id),
            Request::Signal {
                id,
                exec_id,
                signal,
                all,
            } => self.signal(&id, &exec_id, signal, all),
            Request::ResizeTty {
                id,
                exec_id,
                rows,
                cols,
            } => self.resize(&id, &exec_id, rows, cols),
            Request::Wait { id, exec_id } => self.wait(&id, &exec_id),
            Request::Stats { id } => self.stats(&id),
            Request::ListProcesses { id } => self.list(&id),
            Request::Freeze { id, frozen } => self.with_running(&id, |c| c.freeze(frozen)),
            Request::Update { id, resources } => self.with_running(&id, |c| c.update(&resources)),
            Request::Delete { id, force } => self.delete(&id, force),
            Request::Shutdown => {
                // In a microVM the power-off ends every process and the memory that held
                // the containers' mounts and cgroups; on the host each one is undone.
                if !self.in_vm {
                    self.stop_all();
                }
                return (Response::Ok, true);
            }
        };
        (r.unwrap_or_else(|e| e), false)
    }

    fn mount_storage(
        &self,
        source: &str,
        fstype: &str,
        target: &str,
        ro: bool,
        read_ahead_kb: Option<u32>,
        dax: bool,
    ) -> Result<Reply, Reply> {
        if !target.starts_with('/') || target.contains("..") {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("mount target {target:?} must be an absolute path without \"..\""),
            ));
        }
        if dax && !self.in_vm {
            return Err(err(
                ErrorKind::InvalidArgument,
                "dax is for the agent in a microVM (its virtio-pmem devices)",
            ));
        }
        if self.in_vm {
            wait_for_device(source)?;
        }
        if let Some(kb) = read_ahead_kb {
            if !self.in_vm {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    "read_ahead_kb is for the agent in a microVM (the host's agent leaves the host's disks alone)",
                ));
            }
            set_read_ahead(source, kb)?;
        }
        std::fs::create_dir_all(target)
            .map_err(|e| err(ErrorKind::Internal, format!("creating {target}: {e}")))?;
        let c = |s: &str| {
            std::ffi::CString::new(s)
                .map_err(|_| err(ErrorKind::InvalidArgument, "NUL in a mount argument"))
        };
        let (s, t, f) = (c(source)?, c(target)?, c(fstype)?);
        let flags = if ro { libc::MS_RDONLY } else { 0 };
        let data = c(if dax { "dax=always" } else { "" })?;
        // A device probed just now (one added to a microVM restored from a snapshot) can
        // have its node before its driver is done with it: the mount then fails with
        // ENXIO for a moment. In a microVM that is retried for up to DEVICE_WAIT.
        let deadline = std::time::Instant::now() + DEVICE_WAIT;
        loop {
            // SAFETY: NUL-terminated strings valid for the call; the data is a
            // NUL-terminated option string.
            if unsafe {
                libc::mount(
                    s.as_ptr(),
                    t.as_ptr(),
                    f.as_ptr(),
                    flags,
                    data.as_ptr().cast(),
                )
            } == 0
            {
                return Ok(Response::Ok);
            }
            let e = std::io::Error::last_os_error();
            let not_ready = matches!(e.raw_os_error(), Some(libc::ENXIO) | Some(libc::ENODEV));
            if !(self.in_vm && not_ready && std::time::Instant::now() < deadline) {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!("mounting {source} ({fstype}) at {target}: {e}"),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Writes a container's /etc files from the host and binds them over the image's.
    fn etc_files(
        &self,
        id: &str,
        files: &[berth_protocol::EtcFile],
        oci: &mut oci_spec::runtime::Spec,
    ) -> Result<(), Reply> {
        let dir = self.state_dir.join(format!("{id}.etc"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| err(ErrorKind::Internal, format!("{}: {e}", dir.display())))?;
        let mut mounts = oci.mounts().clone().unwrap_or_default();
        for f in files {
            if !berth_protocol::ETC_FILES.contains(&f.name.as_str()) {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!(
                        "etc file {:?}: only hosts, hostname and resolv.conf",
                        f.name
                    ),
                ));
            }
            let p = dir.join(&f.name);
            std::fs::write(&p, &f.content)
                .map_err(|e| err(ErrorKind::Internal, format!("{}: {e}", p.display())))?;
            let dest = format!("/etc/{}", f.name);
            if mounts
                .iter()
                .any(|m| m.destination().to_str() == Some(&dest))
            {
                continue;
            }
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination(dest)
                    .typ("bind")
                    .source(p)
                    .options(vec!["rbind".into(), "rprivate".into()])
                    .build()
                    .map_err(|e| err(ErrorKind::Internal, format!("a mount: {e}")))?,
            );
        }
        oci.set_mounts(Some(mounts));
        Ok(())
    }

    fn create(&self, id: String, spec: berth_protocol::ContainerSpec) -> Result<Reply, Reply> {
        if !valid_id(&id) {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("invalid container id {id:?}"),
            ));
        }
        let mut map = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&id) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("container {id} already exists"),
            ));
        }
        let mut oci = spec.oci;
        if !spec.etc_files.is_empty() {
            self.etc_files(&id, &spec.etc_files, &mut oci)?;
        }
        let scratch_made = self.in_vm && spec.rootfs.writable.is_none();
        let writable = match spec.rootfs.writable {
            Some(w) => Some(PathBuf::from(w)),
            None if self.in_vm => Some(guest_scratch(&id)?),
            None => None,
        };
        let cfg = Config {
            id: id.clone(),
            spec: oci,
            layers: spec.rootfs.layers.iter().map(PathBuf::from).collect(),
            writable,
            state_dir: self.state_dir.clone(),
            cgroup_root: self.cgroup_root.clone(),
            open_stdin: spec.open_stdin,
            inherit_stdio: false,
            seccomp: !spec.seccomp_unconfined,
            device_filter: !self.in_vm,
        };
        let rotation = berth_protocol::logfile::Rotation {
            max_size: spec.log_max_size,
            max_files: spec.log_max_files,
        };
        // A failed create leaves no writable tmpfs behind.
        let undo = |e: Reply| {
            if scratch_made {
                drop_guest_scratch(&id);
            }
            e
        };
        let log = match &spec.log_path {
            Some(p) => Some(Arc::new(Mutex::new(
                LogFile::open_from(std::path::Path::new(p), rotation, spec.log_base)
                    .map_err(|e| err(ErrorKind::InvalidArgument, format!("log file {p}: {e}")))
                    .map_err(undo)?,
            ))),
            None => None,
        };
        let log_hold = log
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).holder());
        let log_changes = log
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).changes());
        let (c, streams) = Container::create(&cfg).map_err(runtime_err).map_err(undo)?;
        crate::steps::note("create: done");
        let pid = c.pid;
        let mut attach = Attach::from(streams);
        let pty = attach.pty.as_ref().and_then(|p| p.try_clone().ok());
        if pty.is_none() {
            attach.pty = None;
        }
        if let Some(log) = log {
            // The agent owns the output from now on: logged, and fanned out to attachers.
            if let Some(out) = attach.stdout.take() {
                let fan = Arc::new(Fanout::default());
                attach
                    .tees
                    .push(Tee::spawn(out, "stdout", log.clone(), fan.clone()));
                attach.out_fan = Some(fan);
            }
            if let Some(e) = attach.stderr.take() {
                let fan = Arc::new(Fanout::default());
                attach
                    .tees
                    .push(Tee::spawn(e, "stderr", log.clone(), fan.clone()));
                attach.err_fan = Some(fan);
            }
            if let Some(m) = attach.pty.as_ref().and_then(|m| m.try_clone().ok()) {
                let fan = Arc::new(Fanout::default());
                attach
                    .tees
                    .push(Tee::spawn(File::from(m), "stdout", log, fan.clone()));
                attach.out_fan = Some(fan);
            }
        }
        map.insert(
            id,
            Arc::new(Entry {
                container: Mutex::new(Some(c)),
                log_path: spec.log_path.as_ref().map(PathBuf::from),
                log_hold,
                log_changes,
                main: Proc {
                    pid,
                    attach: Mutex::new(attach),
                    exit: Arc::new(Exit::default()),
                    pty,
                },
                started: Mutex::new(false),
                execs: Mutex::new(HashMap::new()),
                pending_execs: Mutex::new(HashMap::new()),
            }),
        );
        Ok(Response::Created { pid })
    }

    fn start(&self, id: &str) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        let mut started = e.started.lock().unwrap_or_else(|p| p.into_inner());
        if *started {
            return Err(err(
                ErrorKind::Conflict,
                format!("container {id} is already started"),
            ));
        }
        *started = true;
        let mut guard = e.container.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard
            .as_mut()
            .ok_or_else(|| err(ErrorKind::Conflict, format!("container {id} was deleted")))?;
        let exit = e.main.exit.clone();
        let pid = c.pid;
        // The exit is reported once the output is drained: in the log and handed to every
        // attacher (the agent may be told to shut down right after).
        let tees =
            std::mem::take(&mut e.main.attach.lock().unwrap_or_else(|p| p.into_inner()).tees);
        let (status, reply) = match c.start() {
            Ok(()) => (None, Ok(Response::Ok)),
            Err(er) => (er.exit_status(), Err(runtime_err(er))),
        };
        let changes = e.log_changes.clone();
        std::thread::spawn(move || {
            let s = reaper::wait(pid);
            crate::steps::note("exit: reaped");
            Tee::drained(tees, DRAIN_IDLE);
            crate::steps::note("exit: drained");
            exit.set(status.unwrap_or(s));
            if let Some(c) = changes {
                c.bump();
            }
        });
        reply
    }

    fn exec(
        &self,
        id: &str,
        exec_id: String,
        spec: berth_protocol::ExecSpec,
    ) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        if !valid_id(&exec_id) {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("invalid exec id {exec_id:?}"),
            ));
        }
        if e.main.exit.get().is_some() || !*e.started.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(err(
                ErrorKind::Conflict,
                format!("container {id} is not running"),
            ));
        }
        if spec.archive.is_none() {
            spec::process_config(&spec.process, true).map_err(runtime_err)?;
        }
        let mut pending = e.pending_execs.lock().unwrap_or_else(|p| p.into_inner());
        if pending.contains_key(&exec_id)
            || e.execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&exec_id)
        {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("exec {exec_id} already exists"),
            ));
        }
        pending.insert(exec_id, spec);
        Ok(Response::Ok)
    }

    fn start_exec(&self, id: &str, exec_id: &str) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        let spec = e
            .pending_execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id)
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("No such exec instance: {exec_id}"),
                )
            })?;
        let guard = e.container.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard.as_ref().ok_or_else(|| {
            err(
                ErrorKind::Conflict,
                format!("container {id} is not running"),
            )
        })?;
        let (pid, streams) = match &spec.archive {
            Some(args) => spawn_archive(args, spec.open_stdin).map_err(|e| {
                err(
                    ErrorKind::Internal,
                    format!("starting the archive helper: {e}"),
                )
            })?,
            None => c
                .exec(&spec.process, spec.open_stdin)
                .map_err(runtime_err)?,
        };
        let mut attach = Attach::from(streams);
        let pty = attach.pty.as_ref().and_then(|p| p.try_clone().ok());
        if pty.is_none() {
            attach.pty = None;
        }
        let exit = Arc::new(Exit::default());
        let x = exit.clone();
        std::thread::spawn(move || x.set(reaper::wait(pid)));
        e.execs.lock().unwrap_or_else(|p| p.into_inner()).insert(
            exec_id.to_owned(),
            Arc::new(Proc {
                pid,
                attach: Mutex::new(attach),
                exit,
                pty,
            }),
        );
        Ok(Response::Created { pid })
    }

    fn signal(
        &self,
        id: &str,
        exec_id: &Option<String>,
        sig: i32,
        all: bool,
    ) -> Result<Reply, Reply> {
        if !(1..=64).contains(&sig) {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("invalid signal {sig}"),
            ));
        }
        let e = self.get(id)?;
        if e.main.exit.get().is_some() {
            return Err(err(
                ErrorKind::Conflict,
                format!("container {id} is not running"),
            ));
        }
        match self.proc_of(&e, exec_id)? {
            ProcRef::Main => {
                let g = e.container.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = g.as_ref() {
                    c.signal(sig, all).map_err(runtime_err)?;
                }
            }
            ProcRef::Exec(p) => {
                // SAFETY: kill takes a pid and a signal number.
                unsafe { libc::kill(p.pid, sig) };
            }
        }
        Ok(Response::Ok)
    }

    fn resize(
        &self,
        id: &str,
        exec_id: &Option<String>,
        rows: u16,
        cols: u16,
    ) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        let pty = match self.proc_of(&e, exec_id)? {
            ProcRef::Main => e.main.pty.as_ref().and_then(|p| p.try_clone().ok()),
            ProcRef::Exec(p) => p.pty.as_ref().and_then(|p| p.try_clone().ok()),
        };
        let pty = pty.ok_or_else(|| err(ErrorKind::Conflict, "the process has no terminal"))?;
        berth_container::tty::resize(&pty, rows, cols)
            .map_err(|e| err(ErrorKind::Internal, format!("resizing the terminal: {e}")))?;
        Ok(Response::Ok)
    }

    fn wait(&self, id: &str, exec_id: &Option<String>) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        let (exit, main) = match self.proc_of(&e, exec_id)? {
            ProcRef::Main => (e.main.exit.clone(), true),
            ProcRef::Exec(p) => (p.exit.clone(), false),
        };
        let status = exit.wait();
        crate::steps::note("wait: answered");
        if let (false, Some(x)) = (main, exec_id) {
            // An exec's exit is reported once (berthd keeps its record): the agent lets
            // it go, so that execs (healthchecks every few seconds) do not pile up.
            e.execs.lock().unwrap_or_else(|p| p.into_inner()).remove(x);
        }
        let oom_killed = main
            && e.container
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|c| c.oom_killed());
        Ok(Response::Exited { status, oom_killed })
    }

    fn stats(&self, id: &str) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        let g = e.container.lock().unwrap_or_else(|p| p.into_inner());
        let u = g.as_ref().map(|c| c.usage()).unwrap_or_default();
        Ok(Response::Stats(Stats {
            memory_bytes: u.memory,
            memory_limit_bytes: u.memory_limit,
            pids: u.pids,
            cpu_usec: u.cpu_usec,
        }))
    }

    /// Runs `f` on a container that has a process (created or running).
    fn with_running(
        &self,
        id: &str,
        f: impl FnOnce(&berth_container::Container) -> Result<(), berth_container::Error>,
    ) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        let g = e.container.lock().unwrap_or_else(|p| p.into_inner());
        let c = g.as_ref().ok_or_else(|| {
            err(
                ErrorKind::Conflict,
                format!("container {id} is not running"),
            )
        })?;
        f(c).map(|_| Response::Ok).map_err(runtime_err)
    }

    fn list(&self, id: &str) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        let g = e.container.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Response::Processes {
            pids: g.as_ref().map(|c| c.pids()).unwrap_or_default(),
        })
    }

    fn delete(&self, id: &str, force: bool) -> Result<Reply, Reply> {
        let e = self.get(id)?;
        let started = *e.started.lock().unwrap_or_else(|p| p.into_inner());
        if started && e.main.exit.get().is_none() {
            if !force {
                return Err(err(
                    ErrorKind::Conflict,
                    format!("cannot remove container {id}: container is running: stop the container before removing or force remove"),
                ));
            }
            let g = e.container.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = g.as_ref() {
                let _ = c.signal(libc::SIGKILL, true);
            }
            drop(g);
            e.main.exit.wait();
        }
        if let Some(c) = e.container.lock().unwrap_or_else(|p| p.into_inner()).take() {
            c.destroy();
        }
        if self.in_vm {
            drop_guest_scratch(id);
        }
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(Response::Ok)
    }

    /// Kills and removes every container.
    pub fn stop_all(&self) {
        let ids: Vec<String> = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.delete(&id, true);
        }
    }

    /// Serves a stream channel: copies between the connection and the process's stream.
    fn stream(
        &self,
        mut conn: UnixStream,
        container: &str,
        exec_id: &Option<String>,
        kind: StreamKind,
    ) {
        let attach_of = |e: &Entry| -> Result<ProcRef, Reply> { self.proc_of(e, exec_id) };
        let e = match self.get(container) {
            Ok(e) => e,
            Err(r) => return fail_stream(&mut conn, r),
        };
        let p = match attach_of(&e) {
            Ok(p) => p,
            Err(r) => return fail_stream(&mut conn, r),
        };
        let proc_: &Proc = match &p {
            ProcRef::Main => &e.main,
            ProcRef::Exec(x) => x,
        };
        let mut a = proc_.attach.lock().unwrap_or_else(|p| p.into_inner());
        let fan = match kind {
            StreamKind::Stdout | StreamKind::Pty => a.out_fan.clone(),
            StreamKind::Stderr => a.err_fan.clone(),
            StreamKind::Stdin => None,
        };
        if let Some(fan) = fan {
            // A logging container: subscribe to its output (and, for a terminal, feed it).
            let pty_in = match kind {
                StreamKind::Pty => a.pty.as_ref().and_then(|m| m.try_clone().ok()),
                _ => None,
            };
            drop(a);
            if write_frame(&mut conn, &hello_ok()).is_err() {
                return;
            }
            let Ok(sub) = conn.try_clone() else {
                return;
            };
            fan.subscribe(sub);
            if let Some(m) = pty_in {
                let _ = std::io::copy(&mut conn, &mut File::from(m));
            }
            return;
        }
        let taken: Option<Stream> = match kind {
            StreamKind::Stdin => a.stdin.take().map(Stream::In),
            StreamKind::Stdout => a.stdout.take().map(Stream::Out),
            StreamKind::Stderr => a.stderr.take().map(Stream::Out),
            StreamKind::Pty => a.pty.take().map(Stream::Pty),
        };
        drop(a);
        let Some(s) = taken else {
            return fail_stream(&mut conn, err(ErrorKind::Conflict, format!("the {kind:?} stream is not available (no such stream, or already attached)")));
        };
        if write_frame(&mut conn, &hello_ok()).is_err() {
            return;
        }
        match s {
            Stream::In(mut f) => {
                let _ = std::io::copy(&mut conn, &mut f);
            }
            Stream::Out(mut f) => {
                let _ = std::io::copy(&mut f, &mut conn);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
            Stream::Pty(m) => {
                let mut m_in = File::from(m);
                let Ok(mut m_out) = m_in.try_clone() else {
                    return;
                };
                let Ok(mut c_out) = conn.try_clone() else {
                    return;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut conn, &mut m_in);
                });
                // EIO at the end: the terminal's last process exited.
                let _ = copy_until_eio(&mut m_out, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Agent {
    /// Serves a log channel: the log from `offset`, followed until the container's
    /// output ended (its exit is known only once the output is drained into the log).
    fn follow_log(&self, mut conn: UnixStream, container: &str, offset: u64) {
        let e = match self.get(container) {
            Ok(e) => e,
            Err(r) => return fail_stream(&mut conn, r),
        };
        // A container that logs has both: its log's path and what wakes its followers.
        let (Some(path), Some(changes)) = (e.log_path.clone(), e.log_changes.clone()) else {
            return fail_stream(
                &mut conn,
                err(
                    ErrorKind::Conflict,
                    format!("container {container} keeps no log"),
                ),
            );
        };
        if write_frame(&mut conn, &hello_ok()).is_err() {
            return;
        }
        // Hold the log where this follower is, until it is done (or gone).
        struct Release(Option<Arc<std::sync::atomic::AtomicU64>>);
        impl Drop for Release {
            fn drop(&mut self) {
                if let Some(h) = &self.0 {
                    h.store(NO_HOLD, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        let hold = Release(e.log_hold.clone());
        let mut f = Follower::new(&path, offset);
        let mark = |pos: u64| {
            if let Some(h) = &hold.0 {
                h.store(pos, std::sync::atomic::Ordering::Relaxed);
            }
        };
        mark(offset);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // What to wait past if the read finds nothing new (an append or the exit).
            let seen = changes.count();
            // Read the exit first: once it is known the log is complete, so a read after
            // it that finds nothing means the end.
            let ended = e.main.exit.get().is_some();
            match f.read(&mut buf) {
                Ok(0) if ended => break,
                // Asleep until the next append or the exit (a second at most: a rotation
                // by another writer wakes nobody), not polling: an idle guest stays idle.
                Ok(0) => {
                    changes.wait_past(seen, std::time::Duration::from_secs(1));
                }
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    mark(f.pos());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = conn.shutdown(std::net::Shutdown::Write);
    }
}

enum ProcRef {
    Main,
    Exec(Arc<Proc>),
}

enum Stream {
    In(File),
    Out(File),
    Pty(OwnedFd),
}

fn copy_until_eio(from: &mut File, to: &mut UnixStream) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn hello_ok() -> HelloOk {
    HelloOk {
        version: VERSION,
        agent: format!("berth-agent {}", env!("CARGO_PKG_VERSION")),
    }
}

/// A stream connection that can't be served gets the error as its answer to the hello.
fn fail_stream(conn: &mut UnixStream, r: Reply) {
    let _ = write_frame(conn, &r);
}

fn serve_conn(agent: Arc<Agent>, mut conn: UnixStream) {
    let hello: Hello = match read_frame(&mut conn) {
        Ok(h) => h,
        Err(e) => {
            let _ = write_frame(
                &mut conn,
                &err(ErrorKind::InvalidArgument, format!("bad hello: {e}")),
            );
            return;
        }
    };
    if hello.version != VERSION {
        let _ = write_frame(
            &mut conn,
            &err(
                ErrorKind::InvalidArgument,
                format!(
                    "protocol version {} is not supported (agent speaks {VERSION})",
                    hello.version
                ),
            ),
        );
        return;
    }
    crate::steps::note(hello.channel.kind());
    match hello.channel {
        Channel::Control => {
            if write_frame(&mut conn, &hello_ok()).is_err() {
                return;
            }
            loop {
                let req: Request = match read_frame(&mut conn) {
                    Ok(r) => r,
                    Err(berth_protocol::FrameError::Closed) => return,
                    Err(berth_protocol::FrameError::Json(e)) => {
                        if write_frame(
                            &mut conn,
                            &err(
                                ErrorKind::InvalidArgument,
                                format!("malformed request: {e}"),
                            ),
                        )
                        .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                };
                let (reply, shutdown) = agent.handle(req);
                let _ = write_frame(&mut conn, &reply);
                if shutdown {
                    // Let the reply reach the host before the VM goes away: wait (briefly)
                    // for the client to close its end.
                    let _ = conn.shutdown(std::net::Shutdown::Write);
                    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(1)));
                    let _ = conn.read(&mut [0u8; 1]);
                    if agent.in_vm {
                        crate::init::power_off();
                    }
                    if let Some(p) = agent
                        .socket
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                    {
                        let _ = std::fs::remove_file(p);
                    }
                    std::process::exit(0);
                }
            }
        }
        Channel::Stdio {
            container,
            exec_id,
            stream,
        } => agent.stream(conn, &container, &exec_id, stream),
        Channel::Log { container, offset } => agent.follow_log(conn, &container, offset),
        Channel::CopyIn { .. } | Channel::CopyOut { .. } => {
            let _ = write_frame(
                &mut conn,
                &err(
                    ErrorKind::NotImplemented,
                    "not implemented: copying files into or out of a container",
                ),
            );
        }
    }
}

/// How long a microVM's agent waits for a device node to appear: the nvdimm bus probes
/// virtio-pmem devices asynchronously, so /dev/pmem1 may come a little after /init runs.
const DEVICE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until `source`, a device under /dev, exists (anything else: at once).
fn wait_for_device(source: &str) -> Result<(), Reply> {
    if !source.starts_with("/dev/") {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + DEVICE_WAIT;
    while !std::path::Path::new(source).exists() {
        if std::time::Instant::now() >= deadline {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "mounting {source}: no such device after {}s",
                    DEVICE_WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// Sets a block device's read-ahead (`source` is `/dev/NAME`).
fn set_read_ahead(source: &str, kb: u32) -> Result<(), Reply> {
    let bad = |why: String| {
        err(
            ErrorKind::InvalidArgument,
            format!("read_ahead_kb for {source}: {why}"),
        )
    };
    let name = source
        .strip_prefix("/dev/")
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'))
        .ok_or_else(|| bad("not a block device under /dev".into()))?;
    std::fs::write(
        format!("/sys/block/{name}/queue/read_ahead_kb"),
        kb.to_string(),
    )
    .map_err(|e| bad(format!("setting its read-ahead: {e}")))
}

fn spawn_conn(agent: &Arc<Agent>, conn: UnixStream) {
    crate::steps::note("connection accepted");
    let a = agent.clone();
    if std::thread::Builder::new()
        .name("conn".into())
        .spawn(move || serve_conn(a, conn))
        .is_err()
    {
        eprintln!("berth-agent: cannot start a connection thread");
    }
}

/// Serves on a Unix socket (process isolation). The socket path must not exist.
pub fn serve_unix(agent: Arc<Agent>, path: PathBuf) -> std::io::Result<()> {
    let l = UnixListener::bind(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("listening on {}: {e}", path.display()))
    })?;
    *agent.socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.clone());
    let _cleanup = RemoveOnDrop(path);
    loop {
        match l.accept() {
            Ok((c, _)) => spawn_conn(&agent, c),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Serves on vsock (inside a microVM).
pub fn serve_vsock(agent: Arc<Agent>, port: u32) -> std::io::Result<()> {
    let l = crate::vsock::listen(port).map_err(|e| {
        std::io::Error::new(e.kind(), format!("listening on vsock port {port}: {e}"))
    })?;
    crate::init::trace("listening");
    loop {
        match crate::vsock::accept(&l) {
            Ok(c) => spawn_conn(&agent, c),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => eprintln!("berth-agent: accept: {e}"),
        }
    }
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts the agent's own file-transfer helper (`__archive`, berth_container::archive) in
/// the agent's namespaces, with pipes for its streams; it joins the container's mounts
/// itself.
fn spawn_archive(args: &[String], open_stdin: bool) -> std::io::Result<(i32, Streams)> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("/proc/self/exe")
        .arg("__archive")
        .args(args)
        .stdin(if open_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let file = |fd: OwnedFd| File::from(fd);
    let stdin = child.stdin.take().map(|s| file(s.into()));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("the helper's pipes are missing"));
    };
    // The reaper collects its status (the agent reaps every child).
    Ok((
        child.id() as i32,
        Streams::Pipes {
            stdin,
            stdout: file(stdout.into()),
            stderr: file(stderr.into()),
        },
    ))
}

/// In a microVM: the container's writable layer, a tmpfs mounted in the agent's own
/// namespace (not only in the container's), so that the agent's file-transfer helper
/// reaches it for `diff` and `export` while the container runs. `/run/berth/rw/<id>`.
fn guest_scratch(id: &str) -> Result<PathBuf, Reply> {
    let dir = PathBuf::from("/run/berth/rw").join(id);
    drop_guest_scratch(id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| err(ErrorKind::Internal, format!("{}: {e}", dir.display())))?;
    let target = std::ffi::CString::new(dir.display().to_string())
        .map_err(|_| err(ErrorKind::InvalidArgument, "NUL in a container id"))?;
    // SAFETY: NUL-terminated strings valid for the call.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"mode=0755".as_ptr().cast(),
        )
    };
    if r < 0 {
        return Err(err(
            ErrorKind::Internal,
            format!(
                "mounting the writable tmpfs at {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(dir)
}

/// Unmounts and removes a container's writable layer in a microVM (if any).
fn drop_guest_scratch(id: &str) {
    let dir = PathBuf::from("/run/berth/rw").join(id);
    if let Ok(c) = std::ffi::CString::new(dir.display().to_string()) {
        // SAFETY: umount2 on a NUL-terminated path; failure (not mounted) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir_all(&dir);
}
