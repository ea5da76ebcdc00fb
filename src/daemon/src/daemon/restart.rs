//! Restart policies, as Docker has them: `no`, `always`, `unless-stopped`,
//! `on-failure[:N]`. When a container's process exits, its supervisor asks
//! [`RestartPolicy::should_restart`]; a restart waits Docker's backoff first (100 ms,
//! doubling, at most a minute, back to 100 ms once a run lasted 10 s). A container that
//! was stopped or killed through the API is not restarted. When berthd starts, `always`
//! containers start again, and `unless-stopped` ones that were not stopped by hand.

use super::{Ctr, Daemon, Phase};
use crate::errors::{Error, Result};
use crate::models::docker;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// A container's restart policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// `no`, `always`, `unless-stopped` or `on-failure`.
    pub name: String,
    /// For `on-failure`: at most this many restarts (0: no limit).
    pub max_retries: i64,
}

/// The first backoff.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest backoff.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff.
const STEADY_RUN: Duration = Duration::from_secs(10);

impl RestartPolicy {
    /// Reads and checks a HostConfig's policy (400 for a bad one, as dockerd words it).
    pub fn from_host_config(h: &docker::HostConfig) -> Result<RestartPolicy> {
        use docker::RestartPolicyNameEnum as N;
        let p = h.restart_policy.clone().unwrap_or_default();
        let name = match p.name {
            None | Some(N::EMPTY) | Some(N::NO) => "no",
            Some(N::ALWAYS) => "always",
            Some(N::UNLESS_STOPPED) => "unless-stopped",
            Some(N::ON_FAILURE) => "on-failure",
        };
        let max = p.maximum_retry_count.unwrap_or(0);
        if max < 0 {
            return Err(Error::InvalidParameter(
                "invalid restart policy: maximum retry count cannot be negative".into(),
            ));
        }
        if max > 0 && name != "on-failure" {
            return Err(Error::InvalidParameter(format!(
                "invalid restart policy: maximum retry count can only be used with 'on-failure', not '{name}'"
            )));
        }
        if name != "no" && h.auto_remove.unwrap_or(false) {
            return Err(Error::InvalidParameter(
                "can't create 'AutoRemove' container with restart policy".into(),
            ));
        }
        Ok(RestartPolicy {
            name: name.into(),
            max_retries: max,
        })
    }

    /// Whether a container that exited with `status` restarts, after `restarts`
    /// restarts, when it was (or was not) stopped through the API.
    pub fn should_restart(&self, status: i64, restarts: i64, stopped_by_hand: bool) -> bool {
        if stopped_by_hand {
            return false;
        }
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => status != 0 && (self.max_retries == 0 || restarts < self.max_retries),
            _ => false,
        }
    }

    /// Whether berthd's start brings the container back: `always`; `unless-stopped` not
    /// stopped by hand; `on-failure` after a failure, within its retries (as dockerd).
    pub fn starts_with_berthd(&self, stopped_by_hand: bool, status: i64, restarts: i64) -> bool {
        match self.name.as_str() {
            "always" => true,
            "unless-stopped" => !stopped_by_hand,
            "on-failure" => self.should_restart(status, restarts, stopped_by_hand),
            _ => false,
        }
    }
}

/// The backoff before the next restart, given the last one and how long the run lasted.
pub fn next_delay(last: Option<Duration>, ran: Duration) -> Duration {
    match last {
        _ if ran >= STEADY_RUN => FIRST_DELAY,
        None => FIRST_DELAY,
        Some(d) => (d * 2).min(MAX_DELAY),
    }
}

impl Daemon {
    /// After an exit: restarts the container if its policy says so (supervisor task).
    pub async fn maybe_restart(self: &Arc<Self>, c: Arc<Ctr>, status: i64, ran: Duration) {
        let rec = c.record();
        if !rec
            .restart_policy
            .should_restart(status, rec.restart_count, rec.stopped_by_hand)
        {
            return;
        }
        let delay = {
            let mut last = c.backoff.lock().unwrap_or_else(|e| e.into_inner());
            let d = next_delay(*last, ran);
            *last = Some(d);
            d
        };
        if self
            .update(&c, |r| {
                r.restarting = true;
                Ok(())
            })
            .is_err()
        {
            return;
        }
        tokio::time::sleep(delay).await;
        // Checked under the container's lock, which stop, kill, start and rm take too:
        // removed, stopped or started by hand meanwhile, there is nothing to do.
        let _op = c.op.lock().await;
        let rec = c.record();
        if matches!(*c.phase.borrow(), Phase::Removed(_))
            || rec.stopped_by_hand
            || !rec.restarting
            || rec.state.running()
        {
            if rec.restarting && !matches!(*c.phase.borrow(), Phase::Removed(_)) {
                let _ = self.update(&c, |r| {
                    r.restarting = false;
                    Ok(())
                });
            }
            return;
        }
        // Still restarting (inspect says so) until it runs again: the start clears it.
        let _ = self.update(&c, |r| {
            r.restart_count += 1;
            Ok(())
        });
        let (d, c2) = (self.clone(), c.clone());
        if let Err(e) = super::blocking(move || d.start(&c2)).await {
            super::log_failure("restarting a container (its restart policy)", &e);
            let _ = self.update(&c, |r| {
                r.restarting = false;
                Ok(())
            });
        }
    }

    /// At berthd's start: the containers whose policy brings them back.
    pub(super) fn restart_on_boot(self: &Arc<Self>) {
        let victims: Vec<Arc<Ctr>> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let victims: Vec<Arc<Ctr>> = victims
            .into_iter()
            .filter(|c| {
                let r = c.record();
                if r.state.running() {
                    return false;
                }
                let back = r.restart_policy.starts_with_berthd(
                    r.stopped_by_hand,
                    r.state.exit_code(),
                    r.restart_count,
                );
                // A backoff berthd did not live to finish is over, either way.
                if r.restarting && !back {
                    let _ = self.update(c, |r| {
                        r.restarting = false;
                        Ok(())
                    });
                }
                back && matches!(r.state, crate::state::State::Exited { .. })
            })
            .collect();
        for c in victims {
            let d = self.clone();
            self.rt.spawn(async move {
                let _ = d.update(&c, |r| {
                    r.restarting = false;
                    Ok(())
                });
                if let Err(e) = d.start_async(c).await {
                    super::log_failure("starting a container at berthd's start", &e);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: docker::RestartPolicyNameEnum, max: i64, rm: bool) -> Result<RestartPolicy> {
        RestartPolicy::from_host_config(&docker::HostConfig {
            restart_policy: Some(docker::RestartPolicy {
                name: Some(name),
                maximum_retry_count: Some(max),
            }),
            auto_remove: Some(rm),
            ..Default::default()
        })
    }

    #[test]
    fn policies_decide_as_dockers_do() {
        use docker::RestartPolicyNameEnum as N;
        let on_failure = policy(N::ON_FAILURE, 2, false).unwrap();
        assert!(on_failure.should_restart(1, 0, false));
        assert!(on_failure.should_restart(1, 1, false));
        assert!(
            !on_failure.should_restart(1, 2, false),
            "at most 2 restarts"
        );
        assert!(!on_failure.should_restart(0, 0, false), "a success ends it");
        let always = policy(N::ALWAYS, 0, false).unwrap();
        assert!(always.should_restart(0, 100, false));
        assert!(!always.should_restart(0, 0, true), "stopped by hand");
        assert!(always.starts_with_berthd(true, 0, 0));
        let unless = policy(N::UNLESS_STOPPED, 0, false).unwrap();
        assert!(unless.starts_with_berthd(false, 0, 0) && !unless.starts_with_berthd(true, 0, 0));
        assert!(on_failure.starts_with_berthd(false, 1, 0));
        assert!(!on_failure.starts_with_berthd(false, 0, 0));
        assert!(!on_failure.starts_with_berthd(false, 1, 2));
        let no = policy(N::NO, 0, false).unwrap();
        assert!(!no.should_restart(1, 0, false) && !no.starts_with_berthd(false, 1, 0));
        assert!(
            policy(N::ALWAYS, 3, false).is_err(),
            "a retry count needs on-failure"
        );
        assert!(policy(N::ON_FAILURE, -1, false).is_err());
        assert!(policy(N::ALWAYS, 0, true).is_err(), "--rm with a policy");
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_a_steady_run() {
        let short = Duration::from_millis(5);
        let mut d = next_delay(None, short);
        assert_eq!(d, Duration::from_millis(100));
        for _ in 0..20 {
            d = next_delay(Some(d), short);
        }
        assert_eq!(d, Duration::from_secs(60));
        assert_eq!(
            next_delay(Some(d), Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }
}
