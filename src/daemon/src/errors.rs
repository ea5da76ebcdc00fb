//! The daemon core's one error type (moby's errdefs idea): every failure says what class
//! it is, and `router::status_of` is the single place that turns a class into an HTTP
//! status. The core never builds HTTP errors.

use berth_protocol::ErrorKind;

/// A failure in the daemon core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a malformed or invalid value (400).
    #[error("{0}")]
    InvalidParameter(String),
    /// No such object (404).
    #[error("{0}")]
    NotFound(String),
    /// Credentials refused (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The object is in the wrong state, or a name is taken (409).
    #[error("{0}")]
    Conflict(String),
    /// A Docker feature or setting berth has not built (501). Names it.
    #[error("not implemented: {0} is not supported by berthd yet")]
    NotImplemented(String),
    /// Not allowed on this object: removing a predefined network, one in use (403, as
    /// dockerd answers).
    #[error("{0}")]
    Forbidden(String),
    /// The service is not available in this state: swarm calls on a node that is not in
    /// a swarm (503, as dockerd answers them).
    #[error("{0}")]
    Unavailable(String),
    /// Nothing to do: already started, already stopped (304).
    #[error("not modified")]
    NotModified,
    /// The container's process could not be started; `exit_status` is what Docker
    /// reports for it (127 not found, 126 not executable).
    #[error("{message}")]
    Start {
        /// One line naming the problem.
        message: String,
        /// The status the container is left with.
        exit_status: i64,
        /// Whether the request itself was at fault (a missing or non-executable
        /// program: 400) rather than the host (500).
        user_error: bool,
    },
    /// The container's sandbox (agent or microVM) failed; the message says why.
    #[error("{0}")]
    Sandbox(String),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] berth_image::ImageError),
    /// Writing berthd's own state failed.
    #[error("{what}: {err}")]
    Io {
        /// What was being written.
        what: String,
        /// Why it failed.
        err: std::io::Error,
    },
}

/// The core's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An `Io` error constructor for `map_err`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |err| Error::Io { what, err }
    }

    /// An error the agent answered, keeping its class.
    pub fn from_agent(kind: ErrorKind, message: String, exit_status: Option<i32>) -> Error {
        if let Some(s) = exit_status {
            return Error::Start {
                message,
                exit_status: i64::from(s),
                user_error: matches!(kind, ErrorKind::ExecNotFound | ErrorKind::ExecPermission),
            };
        }
        match kind {
            ErrorKind::InvalidArgument | ErrorKind::ExecNotFound | ErrorKind::ExecPermission => {
                Error::InvalidParameter(message)
            }
            ErrorKind::NotFound => Error::NotFound(message),
            ErrorKind::AlreadyExists | ErrorKind::Conflict => Error::Conflict(message),
            ErrorKind::NotImplemented => Error::NotImplemented(message),
            ErrorKind::Internal => Error::Sandbox(message),
        }
    }

    /// The status a container is left with when this error stops its start.
    pub fn exit_status(&self) -> i64 {
        match self {
            Error::Start { exit_status, .. } => *exit_status,
            _ => 255,
        }
    }
}

impl From<berth_protocol::client::ClientError> for Error {
    fn from(e: berth_protocol::client::ClientError) -> Error {
        Error::Sandbox(format!("the container's agent: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_errors_keep_their_class_and_exit_status() {
        let e = Error::from_agent(
            ErrorKind::ExecNotFound,
            "exec: \"x\": executable file not found in $PATH".into(),
            Some(127),
        );
        assert!(matches!(
            e,
            Error::Start {
                exit_status: 127,
                user_error: true,
                ..
            }
        ));
        assert_eq!(e.exit_status(), 127);
        assert!(matches!(
            Error::from_agent(ErrorKind::NotFound, "no".into(), None),
            Error::NotFound(_)
        ));
        assert!(matches!(
            Error::from_agent(ErrorKind::Internal, "boom".into(), None),
            Error::Sandbox(_)
        ));
        assert_eq!(
            Error::Sandbox("x".into()).exit_status(),
            255,
            "a sandbox failure leaves Docker's 255"
        );
    }
}
