//! Re-adoption after a restart: every record is read back; containers that were running
//! are reconnected to their agents (and supervised again), or marked exited (255) if the
//! agent is gone.

use super::{Daemon, Record};
use std::sync::Arc;
use std::time::Duration;

impl Daemon {
    /// Reads every record under the data root back.
    pub(super) fn adopt(self: &Arc<Self>) {
        let dir = self.opts.data_root.join("containers");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path().join("config.v2.json");
            let rec = match std::fs::read(&p).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) => r,
                Ok(Err(err)) => {
                    crate::log(
                        "warn",
                        "skipping an unreadable container record",
                        &[
                            ("path", &p.display().to_string()),
                            ("error", &err.to_string()),
                        ],
                    );
                    continue;
                }
                Err(_) => continue,
            };
            let running = rec.state.running();
            let c = self.insert(rec.clone());
            if !running {
                continue;
            }
            let agent = self.agent(&rec);
            if agent.alive(Duration::from_millis(1500)) {
                // The host copy of a microVM's log catches up on what it printed while
                // berthd was away, and follows it again.
                let copier = if self.sandbox(&rec).copies_logs() {
                    match super::logs::copy_to_host_log(&agent, self.log_path(&rec.id)) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            super::log_failure("following a re-adopted container's log", &e);
                            None
                        }
                    }
                } else {
                    None
                };
                self.supervise(c, copier);
            } else {
                self.finish(
                    &c,
                    255,
                    "the container's agent was gone when berthd restarted",
                );
            }
        }
    }
}
