//! A logging process's output: copied to its json-file log and fanned out to every
//! attached connection.
//!
//! Two promises: a slow (or stuck) attacher never stalls the workload, since each attacher
//! has its own bounded queue and writer thread and one that falls too far behind is cut
//! off; and a process's exit is reported only once its output is drained: every byte is
//! in the log and handed to every attacher ([`Tee::drained`]).

use berth_protocol::logfile::LogFile;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes queued for one attacher before it counts as stuck and is cut off.
const QUEUE_BYTES: usize = 8 << 20;
/// How long one write to an attacher may block before it is cut off.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest line written to the log as one record (Docker splits at 16 KiB too).
const MAX_LINE: usize = 16384;

struct Sub {
    tx: Sender<Arc<[u8]>>,
    queued: Arc<AtomicUsize>,
    conn: UnixStream,
    writer: JoinHandle<()>,
}

#[derive(Default)]
struct FanState {
    subs: Vec<Sub>,
    ended: bool,
}

/// One output stream's attached connections.
#[derive(Default)]
pub struct Fanout {
    state: Mutex<FanState>,
    /// Bytes read from the stream plus bytes written to attachers: the copy's progress.
    progress: Arc<AtomicU64>,
}

impl Fanout {
    /// Adds a connection; it gets the output from now on. One added after the stream
    /// ended is closed at once.
    pub fn subscribe(&self, conn: UnixStream) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.ended {
            let _ = conn.shutdown(std::net::Shutdown::Write);
            return;
        }
        let (Ok(mut out), Ok(keep)) = (conn.try_clone(), conn.try_clone()) else {
            return;
        };
        let _ = out.set_write_timeout(Some(WRITE_TIMEOUT));
        let (tx, rx) = channel::<Arc<[u8]>>();
        let progress = self.progress.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let writer = std::thread::spawn(move || {
            while let Ok(chunk) = rx.recv() {
                if out.write_all(&chunk).is_err() {
                    return;
                }
                q.fetch_sub(chunk.len(), Ordering::Relaxed);
                progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            let _ = out.shutdown(std::net::Shutdown::Write);
        });
        drop(conn);
        g.subs.push(Sub {
            tx,
            queued,
            conn: keep,
            writer,
        });
    }

    /// Queues `data` for every attacher; one that has fallen [`QUEUE_BYTES`] behind is
    /// cut off.
    pub fn send(&self, data: &[u8]) {
        let chunk: Arc<[u8]> = Arc::from(data);
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.subs.retain(|s| {
            if s.queued.load(Ordering::Relaxed) + chunk.len() > QUEUE_BYTES {
                let _ = s.conn.shutdown(std::net::Shutdown::Both);
                return false;
            }
            s.queued.fetch_add(chunk.len(), Ordering::Relaxed);
            s.tx.send(chunk.clone()).is_ok()
        });
    }

    /// The stream ended: every attacher gets what is queued for it, then EOF. Returns
    /// once that is written (or the attacher was cut off).
    pub fn end(&self) {
        let subs = {
            let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
            g.ended = true;
            std::mem::take(&mut g.subs)
        };
        for s in subs {
            drop(s.tx);
            let _ = s.writer.join();
        }
    }
}

/// The copy of one output stream to the log and the fanout.
pub struct Tee {
    thread: JoinHandle<()>,
    progress: Arc<AtomicU64>,
}

impl Tee {
    /// Copies `src` until EOF (or EIO: a terminal whose last process exited) to `log`, one
    /// json-file line per output line, and to `fan`'s connections.
    pub fn spawn(
        mut src: File,
        stream: &'static str,
        log: Arc<Mutex<LogFile>>,
        fan: Arc<Fanout>,
    ) -> Tee {
        let progress = fan.progress.clone();
        let read = progress.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_LINE];
            let mut line: Vec<u8> = Vec::new();
            let mut records: Vec<u8> = Vec::new();
            let record = |line: &[u8], records: &mut Vec<u8>| {
                records.extend_from_slice(
                    berth_protocol::time::json_log_line(line, stream).as_bytes(),
                );
                records.push(b'\n');
            };
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                read.fetch_add(n as u64, Ordering::Relaxed);
                fan.send(&buf[..n]);
                for &b in &buf[..n] {
                    line.push(b);
                    if b == b'\n' || line.len() >= MAX_LINE {
                        record(&line, &mut records);
                        line.clear();
                    }
                }
                if !records.is_empty() {
                    let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = f.append(&records);
                    records.clear();
                }
            }
            if !line.is_empty() {
                record(&line, &mut records);
                let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                let _ = f.append(&records);
            }
            // The process closed it (at exit, before its namespaces are torn down).
            crate::steps::note(if stream == "stdout" {
                "output: stdout closed"
            } else {
                "output: stderr closed"
            });
            fan.end();
        });
        Tee { thread, progress }
    }

    /// Waits until every tee has copied its stream to the end, while the copies make
    /// progress; gives up after `idle` without any (a process that left a child holding
    /// the stream open, or a stuck attacher, must not hold the exit forever; a slow copy
    /// that is still moving, as under emulation, must not be cut short).
    pub fn drained(tees: Vec<Tee>, idle: Duration) {
        let total =
            |ts: &[Tee]| -> u64 { ts.iter().map(|t| t.progress.load(Ordering::Relaxed)).sum() };
        let mut seen = total(&tees);
        let mut since = Instant::now();
        while tees.iter().any(|t| !t.thread.is_finished()) {
            let now = total(&tees);
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() >= idle {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for t in tees {
            let _ = t.thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        use std::os::unix::io::FromRawFd;
        // SAFETY: both fds were just created and are owned by nobody else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[test]
    fn every_byte_reaches_the_log_and_the_attacher_before_drained_returns() {
        let dir = std::env::temp_dir().join(format!("berth-tee-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let logp = dir.join("log");
        let log = Arc::new(Mutex::new(
            LogFile::open(&logp, Default::default()).unwrap(),
        ));
        let (r, mut w) = pipe();
        let fan = Arc::new(Fanout::default());
        let (mine, theirs) = UnixStream::pair().unwrap();
        fan.subscribe(theirs);
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let mut m = mine;
            m.read_to_end(&mut v).unwrap();
            v
        });
        let tee = Tee::spawn(r, "stdout", log, fan);
        let mut want = Vec::new();
        for i in 0..50_000 {
            want.extend_from_slice(format!("{i}\n").as_bytes());
        }
        want.extend_from_slice(b"no newline at the end");
        w.write_all(&want).unwrap();
        drop(w);
        Tee::drained(vec![tee], Duration::from_secs(30));
        // Read the log at once: drained means everything is already there.
        let text = std::fs::read_to_string(&logp).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 50_001);
        assert!(
            lines[49_999].contains("\"log\":\"49999\\n\""),
            "{}",
            lines[49_999]
        );
        assert!(lines[50_000].contains("no newline at the end"));
        assert_eq!(reader.join().unwrap(), want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stuck_attacher_never_stalls_the_stream() {
        let dir = std::env::temp_dir().join(format!("berth-tee2-{}", std::process::id()));
        let log = Arc::new(Mutex::new(
            LogFile::open(&dir.join("log"), Default::default()).unwrap(),
        ));
        let (r, mut w) = pipe();
        let fan = Arc::new(Fanout::default());
        // Subscribed, never read: its queue fills and it is cut off.
        let (_stuck, theirs) = UnixStream::pair().unwrap();
        fan.subscribe(theirs);
        let tee = Tee::spawn(r, "stdout", log, fan);
        let t0 = Instant::now();
        let chunk = vec![b'x'; 16384];
        for _ in 0..2048 {
            w.write_all(&chunk).unwrap();
        }
        drop(w);
        Tee::drained(vec![tee], Duration::from_secs(30));
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "32 MiB through a tee with a stuck attacher took {:?}",
            t0.elapsed()
        );
    }
}
