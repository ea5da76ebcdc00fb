//! Container logs: Docker's json-file lines in `<id>-json.log`. The agent owns the log in
//! both modes: in process isolation it writes it on the host; for a microVM it writes it
//! in the guest and berthd keeps a byte-for-byte host copy ([`copy_to_host_log`]).

use super::wait_while_progressing;
use crate::errors::{Error, Result};
use crate::sandbox::AgentRef;
use berth_protocol::logfile::LogFile;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The task copying a microVM container's log to the host.
pub struct Copier {
    task: tokio::task::JoinHandle<()>,
    copied: Arc<AtomicU64>,
}

impl Copier {
    /// Waits until the copy reached the log's end (the container's output ended), while
    /// it makes progress (see [`super::wait_while_progressing`]).
    pub async fn finish(self, idle: Duration) {
        let task = &self.task;
        wait_while_progressing(|| !task.is_finished(), &self.copied, idle).await;
        self.task.abort();
    }
}

/// Follows the agent's own log of the container from where the host copy ends (so a
/// restarted berthd catches up on what the container printed meanwhile) and appends it to
/// `log`, byte for byte: the host log is a copy of the guest's.
pub async fn copy_to_host_log(
    agent: &AgentRef,
    log: PathBuf,
    rotation: super::LogRotation,
) -> Result<Copier> {
    let what = format!("{}", log.display());
    let mut f = LogFile::open(&log, rotation.into()).map_err(Error::io(what))?;
    let mut s = agent.log(f.end()).await?;
    let copied = Arc::new(AtomicU64::new(0));
    let progress = copied.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        // Records are appended whole, so that rotation keeps them intact.
        let mut pending: Vec<u8> = Vec::new();
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    let whole = pending
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1);
                    if whole > 0 {
                        if f.append(&pending[..whole]).is_err() {
                            break;
                        }
                        pending.drain(..whole);
                    }
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        if !pending.is_empty() {
            let _ = f.append(&pending);
        }
    });
    Ok(Copier { task, copied })
}
