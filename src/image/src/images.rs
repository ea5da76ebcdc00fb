//! The image store: blobs (see [`crate::store`]), image records, tags, unpacked root
//! filesystems and root disks, under one data root:
//!
//! ```text
//! <root>/blobs/sha256/<hex>      manifests, indexes, configs, layers (verified)
//! <root>/ingest/                 downloads in progress (<hex>.partial, resumable)
//! <root>/images/<id>.json        one record per image; the ID is the config digest
//! <root>/repositories.json       tags: full reference -> image ID
//! <root>/rootfs/<id>/            the image's layers applied, read-only lower dir
//! <root>/disks/<id>.erofs        the same tree as a read-only disk for microVMs
//! <root>/tmp/                    builds in progress
//! ```
//!
//! Every file that makes something visible is written aside and renamed into place, and an
//! image record is written only after everything it references is complete, so a kill at
//! any moment leaves the store consistent. Writers (pull, load, import) hold a shared lock
//! on `<root>/lock`; removal and garbage collection hold it exclusively.

use crate::digest::Digest;
use crate::disk;
use crate::layer::{self, LayerError};
use crate::media::{self, ContainerConfig, Document, ImageConfig, Manifest, MediaError};
use crate::reference::{Reference, ReferenceError};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Largest manifest, index or config accepted.
pub const MAX_DOCUMENT: u64 = 8 << 20;

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image by that name or ID.
    #[error("No such image: {0}")]
    NotFound(String),
    /// The operation would break another image or needs `force`.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A malformed reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A blob problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer problem.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A document problem.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A blob the image needs is missing.
    #[error("image {image}: blob {digest} is missing from the store")]
    MissingBlob {
        /// The image.
        image: String,
        /// The blob.
        digest: Digest,
    },
    /// Building a root disk failed.
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    /// A filesystem error.
    #[error("image store {path}: {err}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        err: io::Error,
    },
}

pub(crate) fn io_at(p: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |err| ImageError::Io {
        path: p.display().to_string(),
        err,
    }
}

/// What the store knows of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID: the config's digest, as Docker has it.
    pub id: Digest,
    /// The manifest.
    pub manifest: Digest,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The index it was chosen from, if it came from one (kept for push and save).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    /// `registry/repo@sha256:...` names it was pulled or pushed by.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Total size of its layer blobs, bytes.
    pub size: u64,
    /// When it entered this store (seconds since the epoch).
    pub added: u64,
    /// The image `commit` built it on (Docker's `Parent`); none for pulled, loaded and
    /// imported images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
}

/// A held lock on the store; released when dropped.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] File);

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor this File owns; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Opens `path` and takes a flock on it (`op`: LOCK_SH, LOCK_EX, maybe | LOCK_NB).
pub(crate) fn lock_file(path: &Path, op: libc::c_int) -> io::Result<Lock> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    flock(&f, op)?;
    Ok(Lock(f))
}

/// Writes `data` to `path` atomically: a temp file beside it, synced, renamed.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map_err(io_at(path))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `remove` did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// A tag was removed.
    Untagged(String),
    /// An image was deleted.
    Deleted(Digest),
}

/// What garbage collection freed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: u64,
    /// Root filesystems and disks removed.
    pub unpacked: u64,
    /// Bytes of blobs freed.
    pub bytes: u64,
}

/// The image store.
pub struct ImageStore {
    root: PathBuf,
    blobs: Store,
    limits: Limits,
}

/// What unpacking one image may use (see [`layer::Budget`]).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// The most bytes of file content one image may unpack to.
    pub max_image_size: Option<u64>,
    /// Bytes to leave free on the store's filesystem.
    pub min_free_space: u64,
}

impl ImageStore {
    /// Opens (creating) the store under `root`. If no other process is using it, leftovers
    /// of interrupted builds are removed.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        for d in ["images", "rootfs", "disks", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        let blobs = Store::open(root)?;
        let s = ImageStore {
            root: root.to_owned(),
            blobs,
            limits: Limits::default(),
        };
        if let Ok(_l) = lock_file(&s.root.join("lock"), libc::LOCK_EX | libc::LOCK_NB) {
            s.clean_leftovers(false)?;
        }
        Ok(s)
    }

    /// Sets what unpacking one image may use.
    pub fn with_limits(mut self, limits: Limits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn blobs(&self) -> &Store {
        &self.blobs
    }

    /// A shared lock: held while adding to the store.
    pub fn lock_shared(&self) -> Result<Lock, ImageError> {
        let p = self.root.join("lock");
        lock_file(&p, libc::LOCK_SH).map_err(io_at(&p))
    }

    /// An exclusive lock: held while removing from the store.
    pub fn lock_exclusive(&self) -> Result<Lock, ImageError> {
        let p = self.root.join("lock");
        lock_file(&p, libc::LOCK_EX).map_err(io_at(&p))
    }

    /// A temp directory under the store (same filesystem, so results can be renamed in).
    pub fn tmp_dir(&self, what: &str) -> Result<PathBuf, ImageError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = self.root.join("tmp").join(format!(
            "{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).map_err(io_at(&p))?;
        Ok(p)
    }

    /// Removes interrupted builds (and, with `partials`, resumable downloads too). Only
    /// called while no other process uses the store.
    fn clean_leftovers(&self, partials: bool) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_at(&tmp))?.flatten() {
            remove_any(&e.path()).map_err(io_at(&e.path()))?;
        }
        self.blobs.clean_leftovers();
        if partials {
            let ingest = self.root.join("ingest");
            for e in fs::read_dir(&ingest).map_err(io_at(&ingest))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".partial") || name.ends_with(".lock") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Reads a small blob (manifest, index, config) whole.
    pub fn read_document(&self, d: &Digest) -> Result<Vec<u8>, ImageError> {
        let f = self.blobs.open_blob(d)?;
        let mut v = Vec::new();
        f.take(MAX_DOCUMENT + 1)
            .read_to_end(&mut v)
            .map_err(io_at(&self.blobs.blob_path(d)))?;
        if v.len() as u64 > MAX_DOCUMENT {
            return Err(ImageError::Conflict(format!(
                "blob {d} is larger than {MAX_DOCUMENT} bytes; not an image document"
            )));
        }
        Ok(v)
    }

    /// The manifest of an image.
    pub fn manifest(&self, rec: &ImageRecord) -> Result<Manifest, ImageError> {
        match Document::parse(&self.read_document(&rec.manifest)?, None)? {
            Document::Manifest(m) => Ok(*m),
            Document::Index(_) => Err(ImageError::Conflict(format!(
                "{} is an index, not an image manifest",
                rec.manifest
            ))),
        }
    }

    /// The config of an image.
    pub fn config(&self, rec: &ImageRecord) -> Result<ImageConfig, ImageError> {
        Ok(media::parse_config(&self.read_document(&rec.id)?)?)
    }

    /// What the runtime needs from the image: entrypoint, cmd, env, user, workdir.
    pub fn runtime_config(&self, rec: &ImageRecord) -> Result<ContainerConfig, ImageError> {
        Ok(self.config(rec)?.config().clone().unwrap_or_default())
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    /// The record of an image by ID.
    pub fn record(&self, id: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        let p = self.record_path(id);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io_at(&p)(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&p)(e)),
        }
    }

    /// Every image, newest first.
    pub fn records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_at(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            if let Ok(d) = format!("sha256:{hex}").parse::<Digest>() {
                if let Some(r) = self.record(&d)? {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| b.added.cmp(&a.added).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Writes an image record, checking first that every blob it names is present, and
    /// merging repo digests with an existing record.
    pub fn put_record(&self, mut rec: ImageRecord) -> Result<ImageRecord, ImageError> {
        let _meta = self.meta_lock()?;
        for d in self.referenced_by(&rec)? {
            if !self.blobs.has(&d) {
                return Err(ImageError::MissingBlob {
                    image: rec.id.to_string(),
                    digest: d,
                });
            }
        }
        if let Some(old) = self.record(&rec.id)? {
            let mut all: BTreeSet<String> = old.repo_digests.into_iter().collect();
            all.extend(rec.repo_digests);
            rec.repo_digests = all.into_iter().collect();
            rec.added = old.added;
            rec.parent = rec.parent.or(old.parent);
        }
        let p = self.record_path(&rec.id);
        write_atomic(&p, &serde_json::to_vec_pretty(&rec).unwrap_or_default())?;
        Ok(rec)
    }

    fn meta_lock(&self) -> Result<Lock, ImageError> {
        let p = self.root.join("meta.lock");
        lock_file(&p, libc::LOCK_EX).map_err(io_at(&p))
    }

    /// Every tag: full reference -> image ID.
    pub fn tags(&self) -> Result<BTreeMap<String, Digest>, ImageError> {
        let p = self.root.join("repositories.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| io_at(&p)(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_at(&p)(e)),
        }
    }

    fn update_tags<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Digest>) -> T,
    ) -> Result<T, ImageError> {
        let _meta = self.meta_lock()?;
        let mut tags = self.tags()?;
        let out = f(&mut tags);
        let p = self.root.join("repositories.json");
        write_atomic(&p, &serde_json::to_vec_pretty(&tags).unwrap_or_default())?;
        Ok(out)
    }

    /// Points a tag at an image (which must exist).
    pub fn tag(&self, reference: &Reference, id: &Digest) -> Result<(), ImageError> {
        if self.record(id)?.is_none() {
            return Err(ImageError::NotFound(id.to_string()));
        }
        let mut r = reference.clone();
        r.digest = None;
        if r.tag.is_none() {
            r.tag = Some("latest".into());
        }
        self.update_tags(|t| {
            t.insert(r.to_string(), id.clone());
        })
    }

    /// Removes a tag (the image stays, even untagged). The name as [`ImageStore::tags`]
    /// keys it.
    pub fn untag(&self, name: &str) -> Result<(), ImageError> {
        self.update_tags(|t| {
            t.remove(name);
        })
    }

    /// The tags of one image, in Docker's short form.
    pub fn tags_of(&self, id: &Digest) -> Result<Vec<String>, ImageError> {
        Ok(self
            .tags()?
            .into_iter()
            .filter(|(_, d)| d == id)
            .filter_map(|(r, _)| r.parse::<Reference>().ok().map(|r| r.familiar()))
            .collect())
    }

    /// Finds an image by reference (`busybox`, `x:1`, `x@sha256:...`), full ID, or unique
    /// ID prefix, as Docker does.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let not_found = || ImageError::NotFound(name.to_owned());
        if let Ok(id) = name.parse::<Digest>() {
            return self.record(&id)?.ok_or_else(not_found);
        }
        let is_hex =
            |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if name.len() == 64 && is_hex(name) {
            if let Ok(id) = format!("sha256:{name}").parse::<Digest>() {
                if let Some(r) = self.record(&id)? {
                    return Ok(r);
                }
            }
        }
        if let Ok(r) = name.parse::<Reference>() {
            if let Some(d) = &r.digest {
                let want = format!("{}/{}@{d}", r.registry, r.repository);
                if let Some(rec) = self
                    .records()?
                    .into_iter()
                    .find(|rec| rec.repo_digests.contains(&want))
                {
                    return Ok(rec);
                }
            } else if let Some(id) = self.tags()?.get(&r.to_string()) {
                return self.record(id)?.ok_or_else(not_found);
            }
        }
        let prefix = name.strip_prefix("sha256:").unwrap_or(name);
        if is_hex(prefix) {
            let mut hits: Vec<ImageRecord> = self
                .records()?
                .into_iter()
                .filter(|r| r.id.hex().starts_with(prefix))
                .collect();
            if hits.len() == 1 {
                return Ok(hits.remove(0));
            }
        }
        Err(not_found())
    }

    /// Every blob an image needs: manifest, index, config, layers.
    pub fn referenced_by(&self, rec: &ImageRecord) -> Result<Vec<Digest>, ImageError> {
        let mut out = vec![rec.manifest.clone(), rec.id.clone()];
        out.extend(rec.index.clone());
        if self.blobs.has(&rec.manifest) {
            for l in self.manifest(rec)?.layers() {
                out.push(media::digest_of(l)?);
            }
        }
        Ok(out)
    }

    /// Every blob some image needs.
    pub fn referenced_blobs(&self) -> Result<BTreeSet<Digest>, ImageError> {
        let mut keep = BTreeSet::new();
        for rec in self.records()? {
            keep.extend(self.referenced_by(&rec)?);
        }
        Ok(keep)
    }

    /// Removes those of `blobs` that no image references: what a failed or partly
    /// used pull, load or import added.
    pub fn discard_unreferenced(&self, blobs: &[Digest]) {
        let keep = self.referenced_blobs().unwrap_or_default();
        for d in blobs.iter().filter(|d| !keep.contains(d)) {
            let _ = self.blobs.remove(d);
        }
    }

    /// Where an image's unpacked root filesystem lives (built or not).
    pub fn rootfs_path(&self, id: &Digest) -> PathBuf {
        self.root.join("rootfs").join(id.hex())
    }

    /// Where an image's root disk lives (built or not).
    pub fn disk_path(&self, id: &Digest) -> PathBuf {
        self.root.join("disks").join(format!("{}.erofs", id.hex()))
    }

    /// The image's layers applied in order into one read-only tree, built once. Each
    /// layer's uncompressed digest is checked against the config.
    pub fn rootfs(&self, rec: &ImageRecord) -> Result<PathBuf, ImageError> {
        let dest = self.rootfs_path(&rec.id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let _shared = self.lock_shared()?;
        let manifest = self.manifest(rec)?;
        let config = self.config(rec)?;
        let diff_ids = media::diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::Conflict(format!(
                "image {}: the manifest has {} layers but the config lists {} diff IDs",
                rec.id,
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let work = self.tmp_dir("rootfs")?;
        let tree = work.join("rootfs");
        let mut budget = layer::Budget {
            max_bytes: self.limits.max_image_size,
            min_free: self.limits.min_free_space,
            used: 0,
        };
        let r = (|| {
            fs::create_dir(&tree).map_err(io_at(&tree))?;
            for (l, diff_id) in manifest.layers().iter().zip(&diff_ids) {
                media::layer_compression(l.media_type())?;
                let digest = media::digest_of(l)?;
                let blob = self
                    .blobs
                    .open_blob(&digest)
                    .map_err(|_| ImageError::MissingBlob {
                        image: rec.id.to_string(),
                        digest,
                    })?;
                layer::apply_verified(
                    &tree,
                    io::BufReader::with_capacity(1 << 20, blob),
                    diff_id,
                    &mut budget,
                )?;
            }
            fs::rename(&tree, &dest).or_else(|e| {
                // Another process finished the same build first.
                if dest.is_dir() {
                    Ok(())
                } else {
                    Err(io_at(&dest)(e))
                }
            })
        })();
        let _ = remove_any(&work);
        r.map(|_| dest)
    }

    /// The image's read-only root disk (erofs; see docs/images.md), built once from
    /// [`ImageStore::rootfs`].
    pub fn disk(&self, rec: &ImageRecord) -> Result<PathBuf, ImageError> {
        let dest = self.disk_path(&rec.id);
        if dest.is_file() {
            return Ok(dest);
        }
        let tree = self.rootfs(rec)?;
        let _shared = self.lock_shared()?;
        let work = self.tmp_dir("disk")?;
        let tmp = work.join("disk.erofs");
        let r = disk::build_erofs(&tree, &tmp)
            .map_err(ImageError::from)
            .and_then(|_| fs::rename(&tmp, &dest).map_err(io_at(&dest)));
        let _ = remove_any(&work);
        r.map(|_| dest)
    }

    /// Removes a tag, or an image by ID, as `docker rmi` does, then collects garbage.
    /// An image with several tags is only untagged when named by tag; by ID it needs
    /// `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<Removed>, ImageError> {
        let _x = self.lock_exclusive()?;
        let rec = self.resolve(name)?;
        let tags: Vec<String> = self
            .tags()?
            .into_iter()
            .filter(|(_, d)| *d == rec.id)
            .map(|(r, _)| r)
            .collect();
        let by_tag = name
            .parse::<Reference>()
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.to_string())
            .filter(|r| tags.contains(r));
        let mut out = Vec::new();
        let untag: Vec<String> = match &by_tag {
            Some(t) => vec![t.clone()],
            None if tags.len() > 1 && !force => {
                return Err(ImageError::Conflict(format!(
                    "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    &rec.id.hex()[..12]
                )))
            }
            None => tags.clone(),
        };
        self.update_tags(|t| {
            for u in &untag {
                t.remove(u);
            }
        })?;
        for u in &untag {
            out.push(Removed::Untagged(
                u.parse::<Reference>()
                    .map(|r| r.familiar())
                    .unwrap_or_else(|_| u.clone()),
            ));
        }
        if untag.len() == tags.len() {
            for rd in &rec.repo_digests {
                out.push(Removed::Untagged(
                    rd.parse::<Reference>()
                        .map(|r| r.familiar())
                        .unwrap_or_else(|_| rd.clone()),
                ));
            }
            let p = self.record_path(&rec.id);
            fs::remove_file(&p).map_err(io_at(&p))?;
            out.push(Removed::Deleted(rec.id.clone()));
            self.gc_locked()?;
        }
        Ok(out)
    }

    /// Removes every blob, root filesystem and disk that no image references, and any
    /// leftovers of interrupted work.
    pub fn gc(&self) -> Result<GcReport, ImageError> {
        let _x = self.lock_exclusive()?;
        self.gc_locked()
    }

    fn gc_locked(&self) -> Result<GcReport, ImageError> {
        let keep = self.referenced_blobs()?;
        let live: BTreeSet<Digest> = self.records()?.into_iter().map(|r| r.id).collect();
        let ids: BTreeSet<String> = live.iter().map(|d| d.hex().to_owned()).collect();
        // Tags pointing at images that are gone (a crash between the two writes).
        self.update_tags(|t| t.retain(|_, d| live.contains(d)))?;
        let mut rep = GcReport::default();
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).map_err(io_at(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if !keep.contains(&d) {
                rep.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                self.blobs.remove(&d)?;
                rep.blobs += 1;
            }
        }
        for (sub, suffix) in [("rootfs", ""), ("disks", ".erofs")] {
            let dir = self.root.join(sub);
            for e in fs::read_dir(&dir).map_err(io_at(&dir))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let hex = name.strip_suffix(suffix).unwrap_or(&name);
                if !ids.contains(hex) {
                    remove_any(&e.path()).map_err(io_at(&e.path()))?;
                    rep.unpacked += 1;
                }
            }
        }
        self.clean_leftovers(true)?;
        Ok(rep)
    }

    /// Checks every blob against its digest and every image against its blobs; returns
    /// the problems found (none in a consistent store).
    pub fn verify(&self) -> Result<Vec<String>, ImageError> {
        let mut problems = Vec::new();
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).map_err(io_at(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else {
                problems.push(format!("stray file blobs/sha256/{name}"));
                continue;
            };
            let mut h = crate::digest::Hasher::default();
            let mut f = self.blobs.open_blob(&d)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(io_at(&e.path()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let got = h.finish();
            if got != d {
                problems.push(format!("blob {d} hashes to {got}"));
            }
        }
        for rec in self.records()? {
            for d in self.referenced_by(&rec)? {
                if !self.blobs.has(&d) {
                    problems.push(format!("image {} lacks blob {d}", rec.id));
                }
            }
        }
        for (t, id) in self.tags()? {
            if self.record(&id)?.is_none() {
                problems.push(format!("tag {t} points at missing image {id}"));
            }
        }
        Ok(problems)
    }

    /// Records a new image whose blobs are all in the store, and tags it.
    pub fn commit_image(
        &self,
        manifest: &Digest,
        manifest_media_type: &str,
        index: Option<Digest>,
        repo_digest: Option<String>,
        tags: &[Reference],
    ) -> Result<ImageRecord, ImageError> {
        let m = match Document::parse(&self.read_document(manifest)?, Some(manifest_media_type))? {
            Document::Manifest(m) => m,
            Document::Index(_) => {
                return Err(ImageError::Conflict(format!("{manifest} is an index")))
            }
        };
        let rec = self.put_record(ImageRecord {
            id: media::digest_of(m.config())?,
            manifest: manifest.clone(),
            manifest_media_type: manifest_media_type.to_owned(),
            index,
            repo_digests: repo_digest.into_iter().collect(),
            size: m.layers().iter().map(|l| l.size()).sum(),
            added: now(),
            parent: None,
        })?;
        for t in tags {
            self.tag(t, &rec.id)?;
        }
        Ok(rec)
    }
}

/// Removes a file or a directory tree; absent is fine.
pub(crate) fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
