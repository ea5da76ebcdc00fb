//! Container logs: Docker's json-file lines in `<id>-json.log`. The agent owns the log in
//! both modes: in process isolation it writes it on the host; for a microVM it writes it
//! in the guest and berthd keeps a byte-for-byte host copy ([`copy_to_host_log`]).

use crate::errors::{Error, Result};
use crate::sandbox::AgentRef;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The threads copying a microVM container's output into the host log.
pub struct Copier {
    threads: Vec<JoinHandle<()>>,
    copied: Arc<AtomicU64>,
}

impl Copier {
    /// Waits until every stream reached its end (all output is in the log), while the
    /// copy makes progress (see [`super::wait_while_progressing`]).
    pub fn finish(self, idle: Duration) {
        super::wait_while_progressing(
            || self.threads.iter().any(|t| !t.is_finished()),
            &self.copied,
            idle,
        );
    }
}

/// Follows the agent's own log of the container from where the host copy ends (so a
/// restarted berthd catches up on what the container printed meanwhile) and appends it to
/// `log`, byte for byte: the host log is a copy of the guest's.
pub fn copy_to_host_log(agent: &AgentRef, log: PathBuf) -> Result<Copier> {
    use std::io::{Read, Write};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(Error::io(format!("{}", log.display())))?;
    let offset = f
        .metadata()
        .map_err(Error::io(format!("{}", log.display())))?
        .len();
    let mut s = agent.log(offset)?;
    let copied = Arc::new(AtomicU64::new(0));
    let progress = copied.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if f.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    Ok(Copier {
        threads: vec![thread],
        copied,
    })
}
