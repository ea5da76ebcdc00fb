//! A json-file log with Docker's rotation (`--log-opt max-size`, `max-file`), written by
//! the agent (on the host, or in a guest) and, for a microVM, by berthd's host copy.
//!
//! Files: `PATH` (current), `PATH.1` (newest rotated) … `PATH.<max_files-1>`. With
//! `max_files` 1 the log is truncated when full, as Docker does. Every byte ever written
//! has a *logical offset*; `PATH.base` records where the current file starts, so that a
//! follower (the agent's log channel, a restarted berthd's copy) can resume by offset
//! across rotations and restarts.

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
}

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

/// The logical offset where `path`'s current file starts (0 if never rotated).
pub fn base_of(path: &Path) -> u64 {
    std::fs::read_to_string(base_path(path))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The log's files that exist, oldest first (rotated ones, then the current one).
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..1000)
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    out.reverse();
    if path.exists() {
        out.push(path.to_owned());
    }
    out
}

impl LogFile {
    /// Opens (or creates) the log for appending.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
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
        })
    }

    /// The logical offset just past the last byte written.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Where the current file starts, logically.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Appends newline-terminated records, rotating between records so that no file
    /// grows past `max_size` (a single record larger than that gets a file of its own).
    pub fn append(&mut self, mut data: &[u8]) -> std::io::Result<()> {
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

    /// Skips the logical range up to `offset` (a follower resuming past data it can no
    /// longer get: rotated away at the source). The current file starts there.
    pub fn skip_to(&mut self, offset: u64) -> std::io::Result<()> {
        if offset > self.end() {
            self.rotate()?;
            self.base = offset;
            std::fs::write(base_path(&self.path), offset.to_string())?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let n = self.rotation.max_files;
        if n > 1 {
            let _ = std::fs::remove_file(rotated(&self.path, n - 1));
            for i in (1..n - 1).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, i + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        } else {
            self.file.set_len(0)?;
        }
        self.base += self.size;
        self.size = 0;
        std::fs::write(base_path(&self.path), self.base.to_string())
    }
}

/// Reads a log by logical offset while it is being written and rotated.
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64)>,
    pos: u64,
}

impl Follower {
    /// Starts at logical `offset` (or at the oldest byte still in the current file).
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

    /// Reads what is there now; 0 means nothing new (yet). Across a rotation it finishes
    /// the old file, then goes on in the new one; what rotated away before it was read
    /// (a follower slower than two rotations, or `max_files` 1) is skipped.
    pub fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Seek, SeekFrom};
        loop {
            if let Some((f, _)) = self.file.as_mut() {
                let n = f.read(buf)?;
                if n > 0 {
                    self.pos += n as u64;
                    return Ok(n);
                }
            }
            let base = base_of(&self.path);
            if let Some((f, fbase)) = self.file.as_mut() {
                if *fbase == base {
                    return Ok(0);
                }
                // Rotated: whatever reached the old file before it was let go is there now.
                let n = f.read(buf)?;
                if n > 0 {
                    self.pos += n as u64;
                    return Ok(n);
                }
            }
            let mut f = match File::open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            self.pos = self.pos.max(base);
            f.seek(SeekFrom::Start(self.pos - base))?;
            let fresh = self.file.is_none();
            self.file = Some((f, base));
            if fresh {
                continue;
            }
        }
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
}
