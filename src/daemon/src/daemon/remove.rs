//! `rm`, `prune` and `rename`.

use super::create::invalid_name;
use super::stop::{exited, wait_phase};
use super::{blocking, Ctr, Daemon, Phase};
use crate::errors::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

impl Daemon {
    /// Removes a container; a running one only with `force` (killed first); its
    /// anonymous volumes too with `volumes` (`rm -v`).
    pub async fn remove(self: &Arc<Self>, c: Arc<Ctr>, force: bool, volumes: bool) -> Result<()> {
        let _op = c.op.lock().await;
        let rec = c.record();
        if rec.state.running() {
            if !force {
                return Err(Error::Conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    rec.id
                )));
            }
            // Its restart policy must not start it again.
            let _ = self.mark_stopped_by_hand(&c);
            let agent = self.agent(&rec);
            let _ = blocking(move || agent.signal(libc::SIGKILL, true)).await;
            self.thaw_after_signal(&c).await;
            if !wait_phase(&c, Duration::from_secs(30), exited).await {
                // The agent does not answer: take the sandbox down so that nothing
                // outlives the container's record.
                let agent = self.agent(&rec);
                let _ = blocking(move || {
                    agent.release();
                    Ok(())
                })
                .await;
            }
        }
        if matches!(*c.phase.borrow(), Phase::Removed(_)) {
            return Ok(());
        }
        self.remove_now(&c, volumes)
    }

    /// Removes a stopped container: its files, its record, its name.
    pub fn remove_now(&self, c: &Arc<Ctr>, volumes: bool) -> Result<()> {
        let rec = c.record();
        // A microVM whose exit was never seen (an agent that did not answer) leaves no
        // tap behind.
        self.delete_taps(&rec);
        self.sandbox_gone(&rec);
        match std::fs::remove_dir_all(self.dir(&rec.id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing container {}", rec.id))(e)),
        }
        self.net_release(&rec.id, &rec.net);
        // The event first: it carries the container's labels from the registry.
        self.event(
            "container",
            "destroy",
            &rec.id,
            &[("name", rec.name.clone())],
        );
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&rec.id);
        // Out of the registry, its volumes count as unused.
        if volumes {
            self.remove_anonymous_volumes(&rec);
        }
        // Before the phase: that wakes a waiting `run --rm`.
        crate::trace(&rec.id, "removed");
        c.phase.send_replace(Phase::Removed(rec.state.exit_code()));
        Ok(())
    }

    /// Removes every stopped container; their IDs and the bytes their writable layers
    /// held on the host.
    pub fn prune(&self) -> (Vec<String>, u64) {
        let victims: Vec<Arc<Ctr>> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| !c.record().state.running())
            .filter(|c| crate::tenant::sees(&c.record().tenant))
            .cloned()
            .collect();
        let mut space = 0u64;
        let ids = victims
            .into_iter()
            .filter(|c| {
                let size = self.rw_size(&c.record()).unwrap_or(0) as u64;
                let ok = self.remove_now(c, false).is_ok();
                if ok {
                    space += size;
                }
                ok
            })
            .map(|c| c.id.clone())
            .collect();
        (ids, space)
    }

    /// Renames a container.
    pub fn rename(&self, c: &Ctr, name: &str) -> Result<()> {
        let n = name.trim_start_matches('/').to_owned();
        if !super::create::valid_name(&n) {
            return Err(invalid_name(&n));
        }
        if let Ok(o) = self.find_any(&n) {
            if o.record().name == n && !crate::tenant::sees(&o.record().tenant) {
                return Err(Error::Conflict(format!(
                    "Conflict. The container name \"/{n}\" is already in use"
                )));
            }
            if o.record().name == n {
                return Err(Error::Conflict(format!(
                    "Conflict. The container name \"/{n}\" is already in use by container \"{}\"",
                    o.id
                )));
            }
        }
        self.update(c, |r| {
            r.name = n;
            Ok(())
        })
    }
}
