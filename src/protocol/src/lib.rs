//! The berth agent protocol, shared by the host (berthd, tests) and the guest agent, so
//! that version skew between them is a compile error. See docs/agent-protocol.md.
//!
//! Framing: every message is a 4-byte big-endian length followed by that many bytes of
//! JSON. A connection starts with a [`Hello`] naming what it is for:
//! - [`Channel::Control`]: requests and responses, one at a time, in order;
//! - [`Channel::Stdio`]: after the agent's [`HelloOk`], raw bytes of one process stream
//!   (stdin: host → agent, half-close for EOF; stdout/stderr/pty: agent → host);
//! - [`Channel::Log`]: after the agent's [`HelloOk`], the container's json-file log from a
//!   byte offset, followed until the container's output has ended, then EOF;
//! - [`Channel::CopyIn`] / [`Channel::CopyOut`]: raw tar bytes into or out of a path.

#[cfg(feature = "async")]
pub mod aclient;
pub mod client;
pub mod logfile;
pub mod targuard;
pub mod time;

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Protocol version. Bump on any incompatible change.
pub const VERSION: u32 = 1;
/// The vsock port the guest agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Largest frame accepted (a container spec fits easily).
pub const MAX_FRAME: usize = 16 << 20;

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed mid-frame.
    #[error("agent connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection between frames.
    #[error("agent connection closed")]
    Closed,
    /// A frame larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// A frame that is not the expected JSON.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

/// One frame's bytes: the length, then the JSON.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// The body length a frame's 4-byte header announces, if it is within [`MAX_FRAME`].
pub fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode_frame(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; frame_len(header)?];
    r.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// The first message on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The client's [`VERSION`].
    pub version: u32,
    /// What the connection is for.
    pub channel: Channel,
}

/// The agent's answer to a [`Hello`]: it accepted the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloOk {
    /// The agent's [`VERSION`].
    pub version: u32,
    /// The agent's name and version.
    pub agent: String,
}

/// One process stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Standard input (host → process).
    Stdin,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// The terminal, both ways (processes started with a TTY).
    Pty,
}

/// What a connection carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Channel {
    /// Requests and responses.
    Control,
    /// One stream of a container's init process (`exec_id` None) or of an exec.
    Stdio {
        /// Container ID.
        container: String,
        /// Exec ID, or None for the container's own process.
        exec_id: Option<String>,
        /// Which stream.
        stream: StreamKind,
    },
    /// The container's json-file log (as the agent writes it) from byte `offset`, followed
    /// until the container's process exited and its output is drained; then EOF. A host
    /// that keeps a copy of the log resumes it from the copy's length.
    Log {
        /// Container ID.
        container: String,
        /// Where to start, in bytes.
        offset: u64,
    },
    /// A tar stream to unpack at `path` inside the container.
    CopyIn {
        /// Container ID.
        container: String,
        /// Destination directory inside the container.
        path: String,
    },
    /// A tar stream of `path` inside the container.
    CopyOut {
        /// Container ID.
        container: String,
        /// Source path inside the container.
        path: String,
    },
}

/// The root filesystem of a container: read-only lower layers and a writable upper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsSpec {
    /// Lower layers, topmost first (directories as the agent sees them).
    pub layers: Vec<String>,
    /// Directory for the writable layer (it gets `upper/` and `work/`); None for a tmpfs.
    #[serde(default)]
    pub writable: Option<String>,
}

/// Everything needed to create a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The OCI runtime spec: process, hostname, mounts, resources, namespaces.
    pub oci: oci_spec::runtime::Spec,
    /// Where the root comes from (the spec's `root.path` is ignored).
    pub rootfs: RootfsSpec,
    /// Whether the process gets a stdin pipe (otherwise /dev/null); with a TTY, the
    /// terminal is its stdin.
    #[serde(default)]
    pub open_stdin: bool,
    /// If set, the agent itself copies the process's output to this file as Docker's
    /// json-file lines (`{"log":..,"stream":"stdout"|"stderr","time":..}`), so that logs
    /// keep being written while no client is attached; stream connections then receive
    /// the output from the moment they attach.
    #[serde(default)]
    pub log_path: Option<String>,
    /// Rotate the log at this many bytes (0: never), Docker's `max-size`.
    #[serde(default)]
    pub log_max_size: u64,
    /// Keep this many log files, the current one included (0 or 1: truncate when full),
    /// Docker's `max-file`.
    #[serde(default)]
    pub log_max_files: u32,
    /// The logical offset the log starts at when the agent creates it: what the host copy
    /// of an earlier run of the container already holds (a restarted microVM), so that
    /// the copy continues from there.
    #[serde(default)]
    pub log_base: u64,
    /// Run without Docker's default seccomp profile (`--security-opt seccomp=unconfined`),
    /// for the container's process and every process exec'd in it.
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// /etc files the agent writes and binds over the image's (a microVM's hosts,
    /// hostname and resolv.conf, which berthd cannot bind from the host).
    #[serde(default)]
    pub etc_files: Vec<EtcFile>,
}

/// One of the /etc files a container gets from its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcFile {
    /// "hosts", "hostname" or "resolv.conf".
    pub name: String,
    /// Its content.
    pub content: String,
}

/// The /etc files a container may get from its host.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// A microVM's network interface, configured by the guest agent before any workload runs
/// (no DHCP on the boot path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestInterface {
    /// The virtio-net device's MAC address (aa:bb:cc:dd:ee:ff), which finds it.
    pub mac: String,
    /// Its name in the guest (eth0, eth1... as berth recorded it); empty: the kernel's.
    #[serde(default)]
    pub ifname: String,
    /// Its IPv4 address.
    pub address: std::net::Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The MTU.
    pub mtu: u32,
    /// The default route's gateway (on one interface at most).
    #[serde(default)]
    pub gateway: Option<std::net::Ipv4Addr>,
}

/// A process to run in an existing container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// args, env, cwd, user, terminal, capabilities.
    pub process: oci_spec::runtime::Process,
    /// Whether the process gets a stdin pipe.
    #[serde(default)]
    pub open_stdin: bool,
    /// Instead of `process`: the agent's own file-transfer helper with these arguments
    /// (`ROOT-JSON OP ...`, berth_container::archive), run in the agent's namespaces, not
    /// the container's (it joins the container's mounts itself), with pipes for its
    /// streams. How berthd reaches a microVM's filesystem for `cp`, `export` and `diff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<Vec<String>>,
}

/// A request on the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", deny_unknown_fields)]
pub enum Request {
    /// Mount a block device (or any source) at `target` in the agent's namespace.
    MountStorage {
        /// Device or source, e.g. /dev/vdb.
        source: String,
        /// Filesystem type, e.g. erofs, ext4.
        fstype: String,
        /// Mount point (created if missing).
        target: String,
        /// Mount read-only.
        read_only: bool,
        /// For a block device (`/dev/NAME`): its read-ahead in KiB, set before the mount;
        /// None keeps the kernel's default (and is left out on the wire).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read_ahead_kb: Option<u32>,
        /// Mount with DAX (`dax=always`): the guest maps the files of a virtio-pmem
        /// device straight from the host's page cache instead of copying them into its
        /// own. Left out on the wire when false; refused outside a microVM.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dax: bool,
    },
    /// Configure the microVM's network interfaces (address, MTU, default route) and
    /// bring them up. Refused outside a microVM.
    ConfigureNetwork {
        /// The interfaces, by MAC address.
        interfaces: Vec<GuestInterface>,
    },
    /// Set up a container (namespaces, root, cgroup); its process waits for `start`.
    Create {
        /// Container ID.
        id: String,
        /// The container.
        spec: Box<ContainerSpec>,
    },
    /// Run the container's process.
    Start {
        /// Container ID.
        id: String,
    },
    /// Run another process in a running container.
    Exec {
        /// Container ID.
        id: String,
        /// A new ID for the process.
        exec_id: String,
        /// The process.
        spec: Box<ExecSpec>,
    },
    /// Start a created exec.
    StartExec {
        /// Container ID.
        id: String,
        /// Exec ID.
        exec_id: String,
    },
    /// Send a signal to the container's process (or an exec), or to all its processes.
    Signal {
        /// Container ID.
        id: String,
        /// Exec ID, or None for the container's process.
        #[serde(default)]
        exec_id: Option<String>,
        /// Signal number.
        signal: i32,
        /// Every process in the container.
        #[serde(default)]
        all: bool,
    },
    /// Resize a process's terminal.
    ResizeTty {
        /// Container ID.
        id: String,
        /// Exec ID, or None for the container's process.
        #[serde(default)]
        exec_id: Option<String>,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Wait for a process to exit; answers [`Response::Exited`].
    Wait {
        /// Container ID.
        id: String,
        /// Exec ID, or None for the container's process.
        #[serde(default)]
        exec_id: Option<String>,
    },
    /// Resource usage; answers [`Response::Stats`].
    Stats {
        /// Container ID.
        id: String,
    },
    /// Processes in the container; answers [`Response::Processes`].
    ListProcesses {
        /// Container ID.
        id: String,
    },
    /// Freeze every process of a container (`docker pause`), or thaw them.
    Freeze {
        /// Container ID.
        id: String,
        /// Frozen, or thawed.
        frozen: bool,
    },
    /// Change a running container's resource limits (`docker update`).
    Update {
        /// Container ID.
        id: String,
        /// The limits to set (the ones absent stay).
        resources: Box<oci_spec::runtime::LinuxResources>,
    },
    /// Remove a stopped container (or kill and remove with `force`).
    Delete {
        /// Container ID.
        id: String,
        /// Kill it first if running.
        #[serde(default)]
        force: bool,
    },
    /// The microVM was started from a snapshot of a guest booted earlier (berthd's first
    /// request on it): set the wall clock, mix the host's random bytes into the kernel's
    /// pool and reseed (every guest started from one snapshot had the same random state),
    /// and probe the devices added after the snapshot. Refused outside a microVM.
    Restored {
        /// The host's CLOCK_REALTIME, in nanoseconds since the epoch.
        realtime_ns: u64,
        /// Random bytes from the host (at least 32).
        entropy: Vec<u8>,
    },
    /// Stop every container and shut down (in a microVM: power off).
    Shutdown,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a field is invalid.
    InvalidArgument,
    /// No such container or exec.
    NotFound,
    /// It already exists.
    AlreadyExists,
    /// The object is in the wrong state (not running, already started...).
    Conflict,
    /// The executable was not found (exit status 127).
    ExecNotFound,
    /// The executable can't be run (exit status 126).
    ExecPermission,
    /// Not built yet.
    NotImplemented,
    /// Anything else.
    Internal,
}

/// A response on the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", deny_unknown_fields)]
pub enum Response {
    /// Done.
    Ok,
    /// A container or exec was created; its process ID as the agent sees it.
    Created {
        /// PID in the agent's namespace.
        pid: i32,
    },
    /// A process exited: its status, Docker style (128+N when killed by signal N).
    Exited {
        /// Exit status.
        status: i32,
        /// The container's process was killed by the kernel's OOM killer (its cgroup
        /// counted an OOM kill); always false for an exec.
        #[serde(default)]
        oom_killed: bool,
    },
    /// Resource usage.
    Stats(Stats),
    /// PIDs in the container, as the agent sees them.
    Processes {
        /// PIDs.
        pids: Vec<i32>,
    },
    /// The request failed.
    Error {
        /// The class of failure.
        kind: ErrorKind,
        /// One line for the user, naming the problem.
        message: String,
        /// For a process that could not be started: the status Docker reports for it
        /// (127 not found, 126 not executable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<i32>,
    },
}

/// Container resource usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (0: none).
    pub memory_limit_bytes: u64,
    /// Processes.
    pub pids: u64,
    /// CPU time used, microseconds.
    pub cpu_usec: u64,
}

impl Channel {
    /// The channel's kind as the wire names it (`control`, `stdio`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Control => "control",
            Channel::Stdio { .. } => "stdio",
            Channel::Log { .. } => "log",
            Channel::CopyIn { .. } => "copy_in",
            Channel::CopyOut { .. } => "copy_out",
        }
    }
}

impl Request {
    /// The request's `op`, as the wire names it (`create`, `start`, ...).
    pub fn op(&self) -> &'static str {
        match self {
            Request::MountStorage { .. } => "mount_storage",
            Request::ConfigureNetwork { .. } => "configure_network",
            Request::Create { .. } => "create",
            Request::Start { .. } => "start",
            Request::Exec { .. } => "exec",
            Request::StartExec { .. } => "start_exec",
            Request::Signal { .. } => "signal",
            Request::ResizeTty { .. } => "resize_tty",
            Request::Wait { .. } => "wait",
            Request::Stats { .. } => "stats",
            Request::ListProcesses { .. } => "list_processes",
            Request::Freeze { .. } => "freeze",
            Request::Update { .. } => "update",
            Request::Delete { .. } => "delete",
            Request::Shutdown => "shutdown",
            Request::Restored { .. } => "restored",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let req = Request::Signal {
            id: "c1".into(),
            exec_id: None,
            signal: 15,
            all: false,
        };
        write_frame(&mut buf, &req).unwrap();
        assert_eq!(&buf[..4], &((buf.len() - 4) as u32).to_be_bytes());
        let back: Request = read_frame(&mut &buf[..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn a_mount_without_read_ahead_or_dax_keeps_the_kernels_defaults() {
        let r: Request = serde_json::from_str(
            r#"{"op":"mount_storage","source":"/dev/vda","fstype":"erofs","target":"/l","read_only":true}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::MountStorage {
                read_ahead_kb: None,
                dax: false,
                ..
            }
        ));
        // Neither goes on the wire unless set: an older agent reads the request as before.
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            !text.contains("read_ahead_kb") && !text.contains("dax"),
            "{text}"
        );
        let r: Request = serde_json::from_str(
            r#"{"op":"mount_storage","source":"/dev/pmem1","fstype":"erofs","target":"/l","read_only":true,"dax":true}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::MountStorage { dax: true, .. }));
    }

    #[test]
    fn op_and_kind_are_the_wire_names() {
        for req in [
            Request::Shutdown,
            Request::Start { id: "c1".into() },
            Request::Signal {
                id: "c1".into(),
                exec_id: None,
                signal: 15,
                all: false,
            },
        ] {
            let v = serde_json::to_value(&req).unwrap();
            assert_eq!(v["op"], req.op());
        }
        for ch in [
            Channel::Control,
            Channel::Log {
                container: "c1".into(),
                offset: 0,
            },
        ] {
            let v = serde_json::to_value(&ch).unwrap();
            let name = v
                .as_str()
                .map(str::to_owned)
                .or_else(|| v.as_object().and_then(|o| o.keys().next().cloned()));
            assert_eq!(name.as_deref(), Some(ch.kind()));
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            read_frame::<Request>(&mut &huge[..]),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame::<Request>(&mut &b""[..]),
            Err(FrameError::Closed)
        ));
        let mut junk = Vec::new();
        junk.extend_from_slice(&3u32.to_be_bytes());
        junk.extend_from_slice(b"{x}");
        assert!(matches!(
            read_frame::<Request>(&mut &junk[..]),
            Err(FrameError::Json(_))
        ));
        let mut short = Vec::new();
        short.extend_from_slice(&10u32.to_be_bytes());
        short.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<Request>(&mut &short[..]),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn unknown_fields_and_ops_are_rejected() {
        let r: Result<Request, _> = serde_json::from_str(r#"{"op":"start","id":"x","bogus":1}"#);
        assert!(r.is_err());
        let r: Result<Request, _> = serde_json::from_str(r#"{"op":"explode"}"#);
        assert!(r.is_err());
        let r: Request = serde_json::from_str(r#"{"op":"shutdown"}"#).unwrap();
        assert_eq!(r, Request::Shutdown);
    }

    #[test]
    fn hello_names_its_channel() {
        let h = Hello {
            version: VERSION,
            channel: Channel::Stdio {
                container: "c".into(),
                exec_id: None,
                stream: StreamKind::Stdout,
            },
        };
        let s = serde_json::to_string(&h).unwrap();
        assert!(s.contains("\"stdio\"") && s.contains("\"stdout\""), "{s}");
        assert_eq!(serde_json::from_str::<Hello>(&s).unwrap(), h);
    }
}
