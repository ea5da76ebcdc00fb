//! `stop`, `kill` and `restart`.

use super::{blocking, parse_signal, Ctr, Daemon, Phase};
use crate::errors::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// Waits until the container's phase satisfies `done`, up to `t`.
pub async fn wait_phase(c: &Ctr, t: Duration, done: impl Fn(Phase) -> bool) -> bool {
    let mut rx = c.phase.subscribe();
    let r = tokio::time::timeout(t, async {
        loop {
            if done(*rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    r.is_ok()
}

/// Exited or removed.
pub fn exited(p: Phase) -> bool {
    matches!(p, Phase::Exited(_) | Phase::Removed(_))
}

impl Daemon {
    /// Sends `signal` (the container's stop signal if None), waits up to `timeout`
    /// seconds (its stop timeout if None), then kills it. 304 if it isn't running.
    pub async fn stop(
        self: &Arc<Self>,
        c: Arc<Ctr>,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        let _op = c.op.lock().await;
        let rec = c.record();
        if !rec.state.running() {
            // Exited: a stop still means its policy must not start it again (it may be
            // waiting out the backoff, or about to).
            self.mark_stopped_by_hand(&c)?;
            if rec.restarting {
                return Ok(());
            }
            return Err(Error::NotModified);
        }
        let t = timeout.unwrap_or(rec.stop_timeout);
        let sig = parse_signal(signal.unwrap_or(&rec.stop_signal))?;
        self.mark_stopped_by_hand(&c)?;
        let agent = self.agent(&rec);
        blocking(move || agent.signal(sig, false)).await?;
        self.thaw_after_signal(&c).await;
        // A negative timeout waits as long as it takes (Docker's -1).
        let wait = if t < 0 {
            Duration::from_secs(10 * 365 * 24 * 3600)
        } else {
            Duration::from_secs(t as u64)
        };
        let waited = wait_phase(&c, wait, exited).await;
        if !waited {
            let agent = self.agent(&rec);
            let _ = blocking(move || agent.signal(libc::SIGKILL, true)).await;
            wait_phase(&c, Duration::from_secs(10), exited).await;
        }
        self.event("container", "stop", &rec.id, &[("name", rec.name.clone())]);
        Ok(())
    }

    /// Sends a signal (SIGKILL by default); for SIGKILL, waits for the exit.
    pub async fn kill(self: &Arc<Self>, c: Arc<Ctr>, signal: Option<&str>) -> Result<()> {
        let sig = parse_signal(signal.unwrap_or("SIGKILL"))?;
        let rec = self.running(&c)?;
        self.mark_stopped_by_hand(&c)?;
        let agent = self.agent(&rec);
        blocking(move || agent.signal(sig, sig == libc::SIGKILL)).await?;
        // As dockerd: a paused container is thawed for a signal that ends it.
        if sig == libc::SIGKILL || parse_signal(&rec.stop_signal).ok() == Some(sig) {
            self.thaw_after_signal(&c).await;
        }
        if sig == libc::SIGKILL {
            wait_phase(&c, Duration::from_secs(10), exited).await;
        }
        self.event("container", "kill", &rec.id, &[("signal", sig.to_string())]);
        Ok(())
    }

    /// Stopped through the API: its restart policy leaves it be.
    pub(super) fn mark_stopped_by_hand(&self, c: &Ctr) -> Result<()> {
        self.update(c, |r| {
            r.stopped_by_hand = true;
            r.restarting = false;
            Ok(())
        })
    }

    /// A start asked for through the API (`start`, `restart`): the restart policy
    /// applies again, counting from 0, as in Docker.
    pub async fn start_by_hand(self: &Arc<Self>, c: Arc<Ctr>) -> Result<()> {
        let r = c.record();
        if r.stopped_by_hand || r.restarting || r.restart_count != 0 {
            self.update(&c, |r| {
                r.stopped_by_hand = false;
                r.restarting = false;
                r.restart_count = 0;
                Ok(())
            })?;
        }
        *c.backoff.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.start_async(c).await
    }

    /// Starts a container from a blocking task; a `--rm` container that could not start
    /// is removed, as Docker does (the CLI waits for that before it reports the error).
    pub async fn start_async(self: &Arc<Self>, c: Arc<Ctr>) -> Result<()> {
        let _op = c.op.lock().await;
        let (d, c2) = (self.clone(), c.clone());
        match blocking(move || d.start(&c2)).await {
            Err(e) if !matches!(e, Error::NotModified) && c.record().auto_remove => {
                if let Err(re) = self.remove_now(&c, true) {
                    super::log_failure("removing an --rm container that failed to start", &re);
                }
                Err(e)
            }
            r => r,
        }
    }

    /// Stops (if running) and starts again.
    pub async fn restart(
        self: &Arc<Self>,
        c: Arc<Ctr>,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        match self.stop(c.clone(), timeout, signal).await {
            Ok(()) | Err(Error::NotModified) => {}
            Err(e) => return Err(e),
        }
        self.start_by_hand(c).await
    }
}
