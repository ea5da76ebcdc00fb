//! A container's lifecycle: one enum, changed only through its methods, persisted with
//! the record (moby's `container/state.go`, smaller).

use crate::errors::{Error, Result};
use serde::{Deserialize, Serialize};

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Status", rename_all = "lowercase")]
pub enum State {
    /// Created and never started (or its first start failed: `error` says why).
    Created {
        /// Why the last start failed, if it did.
        #[serde(default)]
        error: String,
        /// The status a failed start left (Docker's 126/127), or 0.
        #[serde(default)]
        exit_code: i64,
    },
    /// Its process runs.
    Running {
        /// The PID as the agent sees it.
        pid: i64,
        /// RFC 3339.
        started_at: String,
    },
    /// Its process exited (or a restart of it failed).
    Exited {
        /// The status, Docker style (128+N for signal N).
        exit_code: i64,
        /// Why, when berthd or the sandbox ended it rather than the workload.
        #[serde(default)]
        error: String,
        /// RFC 3339.
        started_at: String,
        /// RFC 3339.
        finished_at: String,
    },
}

impl Default for State {
    fn default() -> State {
        State::Created {
            error: String::new(),
            exit_code: 0,
        }
    }
}

impl State {
    /// created, running or exited.
    pub fn status(&self) -> &'static str {
        match self {
            State::Created { .. } => "created",
            State::Running { .. } => "running",
            State::Exited { .. } => "exited",
        }
    }

    /// Whether its process runs.
    pub fn running(&self) -> bool {
        matches!(self, State::Running { .. })
    }

    /// The PID while running, else 0.
    pub fn pid(&self) -> i64 {
        match self {
            State::Running { pid, .. } => *pid,
            _ => 0,
        }
    }

    /// The last exit status (0 while running or never run).
    pub fn exit_code(&self) -> i64 {
        match self {
            State::Created { exit_code, .. } | State::Exited { exit_code, .. } => *exit_code,
            State::Running { .. } => 0,
        }
    }

    /// The last error, if any.
    pub fn error(&self) -> &str {
        match self {
            State::Created { error, .. } | State::Exited { error, .. } => error,
            State::Running { .. } => "",
        }
    }

    /// When it last started ("" if never).
    pub fn started_at(&self) -> &str {
        match self {
            State::Running { started_at, .. } | State::Exited { started_at, .. } => started_at,
            State::Created { .. } => "",
        }
    }

    /// When it last exited ("" if never).
    pub fn finished_at(&self) -> &str {
        match self {
            State::Exited { finished_at, .. } => finished_at,
            _ => "",
        }
    }

    /// Whether a start may begin: not while running (Docker's 304).
    pub fn can_start(&self) -> Result<()> {
        if self.running() {
            Err(Error::NotModified)
        } else {
            Ok(())
        }
    }

    /// The process started.
    pub fn started(&mut self, pid: i64, now: String) -> Result<()> {
        self.can_start()?;
        *self = State::Running {
            pid,
            started_at: now,
        };
        Ok(())
    }

    /// A start failed: a never-started container stays created, one that ran before is
    /// exited; both keep the error and the status the failure leaves.
    pub fn start_failed(&mut self, exit_code: i64, error: String, now: String) {
        *self = match self {
            State::Created { .. } => State::Created { error, exit_code },
            State::Running { started_at, .. } | State::Exited { started_at, .. } => State::Exited {
                exit_code,
                error,
                started_at: std::mem::take(started_at),
                finished_at: now,
            },
        };
    }

    /// The process exited. Only a running container can exit; anything else is a
    /// conflict (a second report of the same exit).
    pub fn exited(&mut self, exit_code: i64, error: String, now: String) -> Result<()> {
        let State::Running { started_at, .. } = self else {
            return Err(Error::Conflict(format!(
                "a container that is {} cannot exit",
                self.status()
            )));
        };
        *self = State::Exited {
            exit_code,
            error,
            started_at: std::mem::take(started_at),
            finished_at: now,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let mut s = State::default();
        assert_eq!((s.status(), s.running(), s.pid()), ("created", false, 0));
        s.started(42, "t1".into()).unwrap();
        assert_eq!((s.status(), s.pid(), s.started_at()), ("running", 42, "t1"));
        assert!(matches!(
            s.started(43, "t2".into()),
            Err(Error::NotModified)
        ));
        s.exited(3, String::new(), "t3".into()).unwrap();
        assert_eq!(
            (s.status(), s.exit_code(), s.started_at(), s.finished_at()),
            ("exited", 3, "t1", "t3")
        );
        assert!(
            s.exited(4, String::new(), "t4".into()).is_err(),
            "exits once"
        );
        assert_eq!(s.exit_code(), 3);
        s.started(44, "t5".into()).unwrap();
        assert_eq!(s.exit_code(), 0);
    }

    #[test]
    fn a_failed_start_keeps_the_state_it_had_and_says_why() {
        let mut s = State::default();
        s.start_failed(127, "not found".into(), "t1".into());
        assert_eq!(
            (s.status(), s.exit_code(), s.error()),
            ("created", 127, "not found")
        );
        s.started(1, "t2".into()).unwrap();
        s.exited(0, String::new(), "t3".into()).unwrap();
        s.start_failed(126, "denied".into(), "t4".into());
        assert_eq!(
            (s.status(), s.exit_code(), s.error(), s.started_at()),
            ("exited", 126, "denied", "t2")
        );
    }

    #[test]
    fn persisted_as_tagged_json() {
        let s = State::Running {
            pid: 7,
            started_at: "t".into(),
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"Status":"running","pid":7,"started_at":"t"}"#);
        assert_eq!(serde_json::from_str::<State>(&j).unwrap(), s);
    }
}
