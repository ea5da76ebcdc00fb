//! A json-file log with Docker's rotation (`--log-opt max-size`, `max-file`), written by
//! the agent (on the host, or in a guest) and, for a microVM, by berthd's host copy.
//!
//! Files: `PATH` (current), `PATH.1` (newest rotated) … `PATH.<max_files-1>`. With
//! `max_files` 1 the log is truncated when full, as Docker does. Every byte ever written
//! has a *logical offset*; `PATH.base` records where the current file starts, so that a
//! follower (the agent's log channel, a restarted berthd's copy) can resume by offset
//! across rotations and restarts. A follower can *hold* the log ([`LogFile::holder`]):
//! rotated files it has not read yet are kept past `max_files` until it has, so the host
//! copy of a microVM's log loses nothing to the guest's rotation (Docker's json-file
//! logging blocks the workload rather than lose lines; this keeps files instead).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// How a log rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Largest size of one file in bytes (0: no limit, no rotation).
    pub max_size: u64,
    /// Files kept, the current one included (at least 1).
    pub max_files: u32,
}

/// An open log.
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    base: u64,
    rotation: Rotation,
    hold: std::sync::Arc<std::sync::atomic::AtomicU64>,
    changes: std::sync::Arc<Changes>,
}

/// Counts a log's appends (and whatever else its followers must wake for), so that a
/// follower at the end sleeps until the next one instead of polling the file: an idle
/// microVM's CPU stays idle.
#[derive(Debug, Default)]
pub struct Changes {
    count: std::sync::Mutex<u64>,
    changed: std::sync::Condvar,
}

impl Changes {
    /// Wakes every follower.
    pub fn bump(&self) {
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *c += 1;
        self.changed.notify_all();
    }

    /// The count now: read before looking at the file, then [`Changes::wait_past`] it.
    pub fn count(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the count is past `seen`, or `max`; returns the count.
    pub fn wait_past(&self, seen: u64, max: std::time::Duration) -> u64 {
        let c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let (c, _) = self
            .changed
            .wait_timeout_while(c, max, |c| *c == seen)
            .unwrap_or_else(|e| e.into_inner());
        *c
    }
}

/// No follower holds anything.
pub const NO_HOLD: u64 = u64::MAX;

/// `PATH.n`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn base_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".base");
    PathBuf::from(s)
}

/// The logical offset just past the end of the log at `path` (0 if there is none).
pub fn end_of(path: &Path) -> u64 {
    base_of(path) + std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The logical offset where `path`'s current file starts (0 if never rotated).
pub fn base_of(path: &Path) -> u64 {
    std::fs::read_to_string(base_path(path))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The log's files that exist, oldest first (rotated ones, then the current one).
pub fn files(path: &Path) -> Vec<PathBuf> {
    spans(path).into_iter().map(|(p, _, _)| p).collect()
}

/// The log's files, oldest first, with the logical offset each starts at and its length.
pub fn spans(path: &Path) -> Vec<(PathBuf, u64, u64)> {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let mut out = Vec::new();
    let mut start = base_of(path);
    if let Some(l) = len(path) {
        out.push((path.to_owned(), start, l));
    }
    for n in 1..10_000 {
        let p = rotated(path, n);
        let Some(l) = len(&p) else { break };
        start = start.saturating_sub(l);
        out.push((p, start, l));
    }
    out.reverse();
    out
}

/// Opens a log for appending, creating it readable by its owner only: a workload's output
/// is as private as its files.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // One made before logs were private keeps its mode through open.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

impl LogFile {
    /// Opens (or creates) the log for appending.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_log(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_owned(),
            file,
            size,
            base: base_of(path),
            rotation: Rotation {
                max_files: rotation.max_files.max(1),
                ..rotation
            },
            hold: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(NO_HOLD)),
            changes: std::sync::Arc::default(),
        })
    }

    /// Opens the log; one that does not exist yet starts at logical offset `base`. A
    /// container's log continued by a new writer (a restarted microVM's, whose host copy
    /// already holds `base` bytes) so keeps one offset space. An existing log keeps its
    /// own.
    pub fn open_from(path: &Path, rotation: Rotation, base: u64) -> std::io::Result<LogFile> {
        if base > 0 && !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(base_path(path), base.to_string())?;
        }
        LogFile::open(path, rotation)
    }

    /// The offset a follower still needs: a follower stores its position here (and
    /// [`NO_HOLD`] when done), and rotation keeps every file that ends past it.
    pub fn holder(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.hold.clone()
    }

    /// What its followers wait on: bumped after every append.
    pub fn changes(&self) -> std::sync::Arc<Changes> {
        self.changes.clone()
    }

    /// The logical offset just past the last byte written.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Appends newline-terminated records, rotating between records so that no file
    /// grows past `max_size` (a single record larger than that gets a file of its own).
    pub fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        let r = self.append_records(data);
        self.changes.bump();
        r
    }

    fn append_records(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        let max = self.rotation.max_size;
        loop {
            if max == 0 || self.size + data.len() as u64 <= max {
                return self.write(data);
            }
            let room = max.saturating_sub(self.size) as usize;
            let mut fit = data[..room.min(data.len())]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            if fit == 0 && self.size == 0 {
                fit = data
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |i| i + 1);
            }
            self.write(&data[..fit])?;
            data = &data[fit..];
            if data.is_empty() {
                return Ok(());
            }
            self.rotate()?;
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let n = self.rotation.max_files;
        let hold = self.hold.load(std::sync::atomic::Ordering::Relaxed);
        if n == 1 && hold >= self.end() {
            // Docker's max-file 1: truncate, unless a follower still needs the data.
            self.file.set_len(0)?;
        } else {
            let mut top = 0;
            while rotated(&self.path, top + 1).exists() {
                top += 1;
            }
            for i in (1..=top).rev() {
                std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1))?;
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = open_log(&self.path)?;
        }
        self.base += self.size;
        self.size = 0;
        std::fs::write(base_path(&self.path), self.base.to_string())?;
        // Keep max_files in all; past that, only files a follower has yet to read.
        let mut end = self.base;
        for i in 1.. {
            let p = rotated(&self.path, i);
            let Ok(m) = std::fs::metadata(&p) else { break };
            let keep = i < n || end > hold;
            end = end.saturating_sub(m.len());
            if !keep {
                std::fs::remove_file(&p)?;
            }
        }
        Ok(())
    }
}

/// Reads a log by logical offset while it is being written and rotated.
///
/// It keeps the file it reads open and knows it by inode: at that file's end, a file
/// still at `PATH` is the end of the log; a file rotated away (now `PATH.k`) is followed by
/// `PATH.(k-1)` (or `PATH`), which starts where it ended. So it reads every byte in order
/// across any number of rotations, unless a file it has not reached yet was deleted (then
/// it skips to the oldest file kept).
pub struct Follower {
    path: PathBuf,
    /// The open file, its inode, and the logical offset it starts at.
    file: Option<(File, u64, u64)>,
    pos: u64,
}

fn inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

impl Follower {
    /// Starts at logical `offset` (or at the oldest byte still kept).
    pub fn new(path: &Path, offset: u64) -> Follower {
        Follower {
            path: path.to_owned(),
            file: None,
            pos: offset,
        }
    }

    /// The logical offset of the next byte.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Opens `p` as the file starting at logical `start`, positioned at `self.pos`.
    fn open(&mut self, p: &Path, start: u64) -> std::io::Result<bool> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let mut f = match File::open(p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let ino = f.metadata()?.ino();
        self.pos = self.pos.max(start);
        f.seek(SeekFrom::Start(self.pos - start))?;
        self.file = Some((f, ino, start));
        Ok(true)
    }

    /// Finds the file holding `self.pos` by the logs' spans (a fresh start, or the file
    /// it needed was deleted).
    fn locate(&mut self) -> std::io::Result<bool> {
        let spans = spans(&self.path);
        let Some(&(_, oldest, _)) = spans.first() else {
            return Ok(false);
        };
        self.pos = self.pos.max(oldest);
        let last = spans.len() - 1;
        let (p, start) = spans
            .iter()
            .enumerate()
            .find(|(i, (_, start, len))| *i == last || self.pos < start + len)
            .map(|(_, (p, start, _))| (p.clone(), *start))
            .expect("spans is not empty");
        self.open(&p, start)
    }

    /// Reads what is there now; 0 means nothing new (yet).
    pub fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Seek, SeekFrom};
        if self.file.is_none() && !self.locate()? {
            return Ok(0);
        }
        for _ in 0..64 {
            let Some((f, ino, _)) = self.file.as_mut() else {
                return Ok(0);
            };
            let ino = *ino;
            let n = f.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            if inode(&self.path) == Some(ino) {
                // The current file. Shorter than where we are: truncated (max-file 1).
                let len = f.metadata()?.len();
                if f.stream_position()? > len {
                    f.seek(SeekFrom::Start(0))?;
                    self.pos = base_of(&self.path).max(self.pos);
                    self.file = self.file.take().map(|(f, i, _)| (f, i, self.pos));
                    continue;
                }
                return Ok(0);
            }
            // Rotated away: whatever reached it before it was let go is there now.
            let n = f.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            let k = (1..10_000u32)
                .map(|i| (i, rotated(&self.path, i)))
                .take_while(|(_, p)| p.exists())
                .find(|(_, p)| inode(p) == Some(ino))
                .map(|(i, _)| i);
            let next = match k {
                Some(1) => self.path.clone(),
                Some(k) => rotated(&self.path, k - 1),
                None => {
                    // Deleted before we got to its successors' turn.
                    if !self.locate()? {
                        return Ok(0);
                    }
                    continue;
                }
            };
            let at = self.pos;
            if !self.open(&next, at)? {
                return Ok(0);
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rotates_keeping_max_files_and_tracks_offsets() {
        let d = dir("rot");
        let p = d.join("c-json.log");
        let r = Rotation {
            max_size: 100,
            max_files: 3,
        };
        let mut l = LogFile::open(&p, r).unwrap();
        for i in 0..30 {
            l.append(format!("{i:039}\n").as_bytes()).unwrap(); // 40 bytes each
        }
        assert_eq!(l.end(), 1200);
        let fs = files(&p);
        assert_eq!(fs.len(), 3, "{fs:?}");
        for f in &fs {
            assert!(std::fs::metadata(f).unwrap().len() <= 100);
        }
        let last = std::fs::read_to_string(&p).unwrap();
        assert!(last.ends_with(&format!("{:039}\n", 29)));
        // Reopened (a restarted writer), it continues at the same logical end.
        drop(l);
        let l = LogFile::open(&p, r).unwrap();
        assert_eq!(l.end(), 1200);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_new_writer_continues_an_earlier_logs_offsets() {
        let d = dir("from");
        let host = d.join("host-json.log");
        std::fs::write(&host, "first\n").unwrap();
        assert_eq!(end_of(&host), 6);
        // A restarted microVM's fresh log starts where the host copy ends...
        let guest = d.join("guest-json.log");
        let mut g = LogFile::open_from(&guest, Rotation::default(), end_of(&host)).unwrap();
        assert_eq!(g.end(), 6);
        g.append(b"second\n").unwrap();
        assert_eq!(g.end(), 13);
        // ...so a copier asking from the host's end gets exactly the new output.
        let mut f = Follower::new(&guest, end_of(&host));
        let mut buf = [0u8; 64];
        let n = f.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"second\n");
        // An existing log keeps its own offsets.
        drop(g);
        assert_eq!(
            LogFile::open_from(&guest, Rotation::default(), 999)
                .unwrap()
                .end(),
            13
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_holding_follower_loses_nothing_to_rotation() {
        let d = dir("hold");
        let p = d.join("l");
        let mut l = LogFile::open(
            &p,
            Rotation {
                max_size: 30,
                max_files: 2,
            },
        )
        .unwrap();
        let hold = l.holder();
        let mut f = Follower::new(&p, 0);
        hold.store(0, std::sync::atomic::Ordering::Relaxed);
        let mut want = Vec::new();
        // Far more than two files' worth before the follower reads anything.
        for i in 0..100u32 {
            let rec = format!("{i:09}\n");
            want.extend_from_slice(rec.as_bytes());
            l.append(rec.as_bytes()).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 13];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            hold.store(f.pos(), std::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        // Once read, the next rotation lets the extra files go.
        hold.store(NO_HOLD, std::sync::atomic::Ordering::Relaxed);
        l.append(b"000000100\n").unwrap();
        l.append(b"000000101\n").unwrap();
        l.append(b"000000102\n").unwrap();
        l.append(b"000000103\n").unwrap();
        assert_eq!(files(&p).len(), 2, "{:?}", files(&p));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn one_file_truncates() {
        let d = dir("one");
        let p = d.join("l");
        let mut l = LogFile::open(
            &p,
            Rotation {
                max_size: 50,
                max_files: 1,
            },
        )
        .unwrap();
        l.append(&[b'a'; 40]).unwrap();
        l.append(&[b'b'; 40]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), vec![b'b'; 40]);
        assert_eq!(files(&p), vec![p.clone()]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_follower_reads_every_byte_across_rotations() {
        let d = dir("follow");
        let p = d.join("l");
        let mut l = LogFile::open(
            &p,
            Rotation {
                max_size: 64,
                max_files: 5,
            },
        )
        .unwrap();
        let mut f = Follower::new(&p, 0);
        let mut got = Vec::new();
        let mut want = Vec::new();
        let mut buf = [0u8; 7];
        for i in 0..200u32 {
            let rec = format!("{i:09}\n");
            want.extend_from_slice(rec.as_bytes());
            l.append(rec.as_bytes()).unwrap();
            if i % 3 == 0 {
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            }
        }
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(f.pos(), l.end());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_follower_waiting_for_changes_wakes_at_the_next_append() {
        let d = dir("changes");
        let mut log = LogFile::open(&d.join("log"), Rotation::default()).unwrap();
        let changes = log.changes();
        let seen = changes.count();
        // Nothing changed: the wait runs out.
        let t = std::time::Instant::now();
        assert_eq!(
            changes.wait_past(seen, std::time::Duration::from_millis(50)),
            seen
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(50));
        let waiter =
            std::thread::spawn(move || changes.wait_past(seen, std::time::Duration::from_secs(30)));
        std::thread::sleep(std::time::Duration::from_millis(20));
        log.append(b"line\n").unwrap();
        assert_eq!(waiter.join().unwrap(), seen + 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
