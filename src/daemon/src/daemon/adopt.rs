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
            // A re-adopted microVM's host log catches up on what it printed while berthd
            // was away, and follows it again (see `supervise`).
            if self.agent(&rec).alive(Duration::from_millis(1500)) {
                self.supervise(c);
            } else {
                self.finish(
                    &c,
                    255,
                    false,
                    "the container's agent was gone when berthd restarted",
                );
            }
        }
    }
}
