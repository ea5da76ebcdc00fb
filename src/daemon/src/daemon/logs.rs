//! Container logs: Docker's json-file lines in `<id>-json.log`. The agent owns the log in
//! both modes: in process isolation it writes it on the host; for a microVM it writes it
//! in the guest and berthd keeps a byte-for-byte host copy ([`copy_to_host_log`]).

use super::wait_while_progressing;
use crate::errors::{Error, Result};
use crate::sandbox::AgentRef;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
pub async fn copy_to_host_log(agent: &AgentRef, log: PathBuf) -> Result<Copier> {
    let what = || format!("{}", log.display());
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .await
        .map_err(Error::io(what()))?;
    let offset = f.metadata().await.map_err(Error::io(what()))?.len();
    let mut s = agent.log(offset).await?;
    let copied = Arc::new(AtomicU64::new(0));
    let progress = copied.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if f.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        let _ = f.flush().await;
    });
    Ok(Copier { task, copied })
}
