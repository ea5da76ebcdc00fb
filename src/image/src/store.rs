//! The content-addressed blob store: `<root>/blobs/sha256/<hex>`. A blob is written to
//! `<root>/ingest/` first, its digest checked as it streams, synced, then renamed into
//! place: a crash or a kill at any moment leaves either no blob or a complete, verified one.

use crate::digest::{Digest, Hasher};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The content does not match its digest.
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    DigestMismatch {
        /// What it should be.
        expected: Digest,
        /// What it is.
        actual: Digest,
    },
    /// The content is not the expected size.
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A filesystem error.
    #[error("image store {path}: {err}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        err: io::Error,
    },
}

fn io_at(p: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |err| StoreError::Io {
        path: p.display().to_string(),
        err,
    }
}

/// The store.
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) a store under `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for d in ["blobs/sha256", "ingest"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        Ok(Store {
            root: root.to_owned(),
        })
    }

    /// Removes leftovers of interrupted writes (`ingest/tmp-*`), which are never trusted.
    /// Only safe while no other process writes to the store (the image store calls it
    /// under its exclusive lock).
    pub fn clean_leftovers(&self) {
        if let Ok(entries) = fs::read_dir(self.root.join("ingest")) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("tmp-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Where a blob lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Whether a complete blob is present.
    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(d);
        File::open(&p).map_err(io_at(&p))
    }

    /// Writes a blob from `r`, verifying it against `expected` (digest and, if given,
    /// size) before it becomes visible. Returns its digest. Nothing is left behind on error.
    pub fn write(
        &self,
        r: &mut impl Read,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<Digest, StoreError> {
        if let Some((d, _)) = expected {
            if self.has(d) {
                return Ok(d.clone());
            }
        }
        let tmp = self
            .root
            .join("ingest")
            .join(format!("tmp-{}-{}", std::process::id(), unique()));
        let result = self.write_tmp(&tmp, r, expected);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_tmp(
        &self,
        tmp: &Path,
        r: &mut impl Read,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<Digest, StoreError> {
        let mut f = File::create(tmp).map_err(io_at(tmp))?;
        let mut h = Hasher::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_at(tmp)(e)),
            };
            h.update(&buf[..k]);
            f.write_all(&buf[..k]).map_err(io_at(tmp))?;
            n += k as u64;
        }
        let actual = h.finish();
        if let Some((d, size)) = expected {
            if let Some(size) = size.filter(|s| *s != n) {
                return Err(StoreError::SizeMismatch {
                    digest: d.clone(),
                    expected: size,
                    actual: n,
                });
            }
            if *d != actual {
                return Err(StoreError::DigestMismatch {
                    expected: d.clone(),
                    actual,
                });
            }
        }
        f.sync_all().map_err(io_at(tmp))?;
        let dest = self.blob_path(&actual);
        fs::rename(tmp, &dest).map_err(io_at(&dest))?;
        Ok(actual)
    }

    /// Removes a blob.
    pub fn remove(&self, d: &Digest) -> Result<(), StoreError> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&p)(e)),
            _ => Ok(()),
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("berth-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        (Store::open(&dir).unwrap(), dir)
    }

    #[test]
    fn blobs_are_stored_by_digest() {
        let (s, dir) = store("ok");
        let d = s.write(&mut &b"hello"[..], None).unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"hello");
        assert_eq!(s.write(&mut &b"hello"[..], Some((&d, Some(5)))).unwrap(), d);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_or_short_content_never_lands() {
        let (s, dir) = store("bad");
        let want = Digest::of(b"the real content");
        let e = s
            .write(&mut &b"tampered content"[..], Some((&want, None)))
            .unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains("is corrupt"));
        let e = s
            .write(&mut &b"the real"[..], Some((&want, Some(16))))
            .unwrap_err();
        assert!(matches!(e, StoreError::SizeMismatch { .. }));
        assert!(!s.has(&want));
        assert_eq!(
            fs::read_dir(dir.join("ingest")).unwrap().count(),
            0,
            "no temp files left"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leftovers_of_a_killed_write_are_kept_until_cleaned() {
        let (_, dir) = store("crash");
        fs::write(dir.join("ingest/tmp-1-1"), b"half a blob").unwrap();
        // Opening never touches them: another process may be writing.
        let s = Store::open(&dir).unwrap();
        assert!(dir.join("ingest/tmp-1-1").exists());
        s.clean_leftovers();
        assert!(!dir.join("ingest/tmp-1-1").exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
