//! berth's container runtime library, shared by the guest agent (inside each microVM) and
//! process isolation (directly on the host): namespaces, cgroups (v2, or v1 on legacy
//! hosts), an overlay root entered with pivot_root, Docker's default mounts, masked paths,
//! capabilities and seccomp profile, TTYs, exec into a running container.
//!
//! The mount-namespace work goes through [`syscall::Syscall`] so that it can be tested
//! without root.

pub mod archive;
pub mod cgroups;
pub mod container;
pub mod devices;
pub mod init;
pub mod process;
pub mod reaper;
pub mod rootfs;
pub mod security;
pub mod spec;
pub mod syscall;
pub mod tty;
pub mod user;

pub use container::{
    group_add, privileged, wants_init, Config, Container, Streams, GROUP_ADD_ANNOTATION,
    INIT_ANNOTATION, PRIVILEGED_ANNOTATION,
};

/// Errors from the runtime, each naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid; the message names the field.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A container with this ID exists.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// The container is in the wrong state.
    #[error("{0}")]
    Conflict(String),
    /// A cgroup problem (including limits that can't be enforced).
    #[error("{0}")]
    Cgroup(String),
    /// The executable was not found (status 127).
    #[error("{0}")]
    ExecNotFound(String),
    /// The executable can't be run (status 126).
    #[error("{0}")]
    ExecPermission(String),
    /// The container's setup failed; the message says where.
    #[error("{0}")]
    Setup(String),
    /// A host call failed.
    #[error("{what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        err: std::io::Error,
    },
}

impl Error {
    /// An `Io` error constructor for `map_err`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |err| Error::Io { what, err }
    }

    /// The exit status a failed start leaves the container with (Docker's 126/127).
    pub fn exit_status(&self) -> Option<i32> {
        match self {
            Error::ExecNotFound(_) => Some(127),
            Error::ExecPermission(_) => Some(126),
            _ => None,
        }
    }
}

static STEP_HOOK: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Where the steps of a container's creation and start are noted (the guest agent's
/// step notes, docs/boot.md). Set once; later calls are ignored.
pub fn set_step_hook(hook: fn(&str)) {
    let _ = STEP_HOOK.set(hook);
}

/// Notes a step through the hook, if any.
pub(crate) fn step(what: &str) {
    if let Some(f) = STEP_HOOK.get() {
        f(what)
    }
}
