//! `pause` and `unpause`: every process of the container frozen, or thawed, through its
//! cgroup's freezer. The agent does it where the container runs (in the guest for a
//! microVM: cgroup v2's `cgroup.freeze`; on the host: v2, or v1's freezer controller), so
//! both modes mean the same. A paused container refuses exec (409, as dockerd); `stop`,
//! `kill` and `rm -f` signal it and then thaw it, so the signal is handled.

use super::{blocking, Ctr, Daemon};
use crate::errors::{Error, Result};
use berth_protocol::Request;
use std::sync::Arc;

impl Daemon {
    /// `POST /containers/{id}/pause` (or unpause, with `frozen` false).
    pub async fn set_paused(self: &Arc<Self>, c: Arc<Ctr>, frozen: bool) -> Result<()> {
        let _op = c.op.lock().await;
        let rec = self.running(&c)?;
        match (frozen, rec.paused) {
            (true, true) => {
                return Err(Error::Conflict(format!(
                    "Container {} is already paused",
                    rec.id
                )))
            }
            (false, false) => {
                return Err(Error::Conflict(format!(
                    "Container {} is not paused",
                    rec.id
                )))
            }
            _ => {}
        }
        let agent = self.agent(&rec);
        let id = rec.id.clone();
        blocking(move || agent.call(&Request::Freeze { id, frozen }).map(|_| ())).await?;
        self.update(&c, |r| {
            r.paused = frozen;
            Ok(())
        })?;
        let action = if frozen { "pause" } else { "unpause" };
        self.event("container", action, &rec.id, &[("name", rec.name.clone())]);
        Ok(())
    }

    /// Thaws a paused container after a signal was sent to it (stop, kill, rm -f), so
    /// that its processes handle the signal. Errors are logged: the container is going.
    pub(super) async fn thaw_after_signal(self: &Arc<Self>, c: &Ctr) {
        let rec = c.record();
        if !rec.paused {
            return;
        }
        let agent = self.agent(&rec);
        let id = rec.id.clone();
        let r = blocking(move || {
            agent
                .call(&Request::Freeze { id, frozen: false })
                .map(|_| ())
        })
        .await;
        match r {
            Ok(()) => {
                let _ = self.update(c, |r| {
                    r.paused = false;
                    Ok(())
                });
            }
            Err(e) => super::log_failure("thawing a paused container", &e),
        }
    }

    /// A running container that is not paused (exec's precondition), or a conflict.
    pub fn running_unpaused(&self, c: &Ctr) -> Result<super::Record> {
        let rec = self.running(c)?;
        if rec.paused {
            return Err(Error::Conflict(format!(
                "Container {} is paused, unpause the container before exec",
                rec.id
            )));
        }
        Ok(rec)
    }
}
