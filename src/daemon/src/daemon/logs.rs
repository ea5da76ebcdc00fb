//! Container logs: Docker's json-file lines in `<id>-json.log`. In process isolation the
//! agent writes them on the host; for a microVM the agent writes them in the guest and
//! berthd keeps the host copy from the container's output streams ([`copy_to_host_log`]).

use super::Record;
use crate::errors::Result;
use crate::sandbox::AgentRef;
use berth_protocol::StreamKind;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The threads copying a microVM container's output into the host log.
pub struct Copier(Vec<JoinHandle<()>>);

impl Copier {
    /// Waits until every stream reached its end (all output is in the log), for at most
    /// `limit`.
    pub fn finish(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for t in self.0 {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Connects to the container's output streams (before it starts, so nothing is missed)
/// and copies them into `log` as json-file lines.
pub fn copy_to_host_log(agent: &AgentRef, rec: &Record, log: PathBuf) -> Result<Copier> {
    let kinds: &[(StreamKind, &'static str)] = if rec.tty {
        &[(StreamKind::Pty, "stdout")]
    } else {
        &[(StreamKind::Stdout, "stdout"), (StreamKind::Stderr, "stderr")]
    };
    let mut threads = Vec::new();
    for (kind, name) in kinds {
        let s = agent.open(None, *kind)?;
        let (log, name) = (log.clone(), *name);
        threads.push(std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let Ok(f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
            else {
                return;
            };
            let mut f = std::io::BufWriter::new(f);
            let mut r = std::io::BufReader::new(s);
            let mut line = Vec::new();
            while r
                .read_until(b'\n', &mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                // One write per record: the other stream's copier appends to the same file.
                let mut rec = berth_protocol::time::json_log_line(&line, name).into_bytes();
                rec.push(b'\n');
                let _ = f.write_all(&rec);
                line.clear();
                // Readers of the log see each line once nothing more is waiting.
                if r.buffer().is_empty() {
                    let _ = f.flush();
                }
            }
            let _ = f.flush();
        }));
    }
    Ok(Copier(threads))
}
