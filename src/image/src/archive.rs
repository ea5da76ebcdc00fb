//! Images in and out of the store without a registry: `docker save`/`docker load`
//! tarballs (both Docker's `manifest.json` form and the OCI image layout, which Docker 25+
//! writes together), OCI image-layout directories, and `import` of a root filesystem
//! tarball as a one-layer image with optional Dockerfile-style changes.
//!
//! Loading never trusts the archive: entry names are checked like layer entries, blobs
//! are verified against the digests that name them, every layer is unpacked (and so
//! checked for escapes and against its diff ID) before the image is recorded, and a
//! failed load removes every blob it added.

use crate::digest::{Digest, Hasher};
use crate::images::{io_at, ImageError, ImageRecord, ImageStore, MAX_DOCUMENT};
use crate::layer::{self, LayerError};
use crate::media::{self, ContainerConfig, Descriptor, Document, ImageConfig, Index, MediaError};
use crate::reference::Reference;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// Errors saving, loading or importing.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is malformed or hostile.
    #[error("invalid image archive: {0}")]
    Invalid(String),
    /// A `--change` that isn't understood.
    #[error("invalid change {0:?}: {1}")]
    Change(String, String),
    /// A store problem.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A document problem.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A layer problem.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A filesystem error outside the store.
    #[error("{path}: {err}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        err: io::Error,
    },
}

fn io_err(p: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |err| ArchiveError::Io {
        path: p.display().to_string(),
        err,
    }
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Where a save writes: a tar stream or a directory.
trait Sink {
    fn put(&mut self, path: &str, size: u64, r: &mut dyn Read) -> Result<(), ArchiveError>;
}

struct TarSink<W: Write>(tar::Builder<W>);

impl<W: Write> Sink for TarSink<W> {
    fn put(&mut self, path: &str, size: u64, r: &mut dyn Read) -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        self.0
            .append_data(&mut h, path, r)
            .map_err(io_err(Path::new(path)))
    }
}

struct DirSink(PathBuf);

impl Sink for DirSink {
    fn put(&mut self, path: &str, _size: u64, r: &mut dyn Read) -> Result<(), ArchiveError> {
        let p = self.0.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut f = File::create(&p).map_err(io_err(&p))?;
        io::copy(r, &mut f).map_err(io_err(&p))?;
        Ok(())
    }
}

fn save_to(store: &ImageStore, names: &[String], sink: &mut dyn Sink) -> Result<(), ArchiveError> {
    if names.is_empty() {
        return Err(ArchiveError::Invalid("no image named to save".into()));
    }
    let mut written = BTreeSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    let mut put_blob = |d: &Digest, sink: &mut dyn Sink| -> Result<(), ArchiveError> {
        if written.insert(d.clone()) {
            let p = store.blobs().blob_path(d);
            let f = File::open(&p)
                .map_err(io_at(&p))
                .map_err(ArchiveError::Image)?;
            let size = f.metadata().map_err(io_at(&p))?.len();
            sink.put(
                &format!("blobs/sha256/{}", d.hex()),
                size,
                &mut io::BufReader::new(f),
            )?;
        }
        Ok(())
    };
    for name in names {
        let rec = store.resolve(name)?;
        let manifest = store.manifest(&rec)?;
        put_blob(&rec.manifest, sink)?;
        put_blob(&rec.id, sink)?;
        for l in manifest.layers() {
            put_blob(&media::digest_of(l)?, sink)?;
        }
        // Save what was asked for: a tag names itself; an ID saves the image untagged
        // unless it has tags.
        let tags: Vec<Reference> = match name.parse::<Reference>() {
            Ok(r) if r.digest.is_none() && store.tags()?.contains_key(&r.to_string()) => vec![r],
            _ => store
                .tags()?
                .into_iter()
                .filter(|(_, d)| *d == rec.id)
                .filter_map(|(t, _)| t.parse().ok())
                .collect(),
        };
        let size = store.read_document(&rec.manifest)?.len() as u64;
        let mut desc = media::descriptor(&rec.manifest_media_type, &rec.manifest, size);
        if tags.is_empty() {
            index.push(desc.clone());
        }
        for t in &tags {
            let mut a = std::collections::HashMap::new();
            a.insert(NAME_ANNOTATION.to_owned(), t.to_string());
            a.insert(REF_ANNOTATION.to_owned(), t.tag.clone().unwrap_or_default());
            desc.set_annotations(Some(a));
            index.push(desc.clone());
        }
        docker.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", rec.id.hex()),
            "RepoTags": tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
            "Layers": manifest.layers().iter().map(|l| format!("blobs/sha256/{}", l.digest().digest())).collect::<Vec<_>>(),
        }));
    }
    let index = media::to_json(&media::new_index(index));
    let docker = serde_json::to_vec(&docker).unwrap_or_default();
    sink.put("oci-layout", OCI_LAYOUT.len() as u64, &mut &OCI_LAYOUT[..])?;
    sink.put("index.json", index.len() as u64, &mut &index[..])?;
    sink.put("manifest.json", docker.len() as u64, &mut &docker[..])?;
    Ok(())
}

/// Writes images as a `docker save` tarball (OCI layout plus Docker's manifest.json).
pub fn save(store: &ImageStore, names: &[String], w: impl Write) -> Result<(), ArchiveError> {
    let mut sink = TarSink(tar::Builder::new(w));
    save_to(store, names, &mut sink)?;
    sink.0
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err(Path::new("(output)")))
}

/// Writes images as an OCI image-layout directory (created; must be empty or absent).
pub fn save_oci_dir(store: &ImageStore, names: &[String], dir: &Path) -> Result<(), ArchiveError> {
    if dir.exists() && fs::read_dir(dir).map_err(io_err(dir))?.next().is_some() {
        return Err(ArchiveError::Invalid(format!(
            "{} is not empty",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    save_to(store, names, &mut DirSink(dir.to_owned()))
}

/// An archive read into the store: small metadata files in memory, everything else
/// ingested as blobs.
#[derive(Default)]
struct Staged {
    small: BTreeMap<String, Vec<u8>>,
    blobs: BTreeMap<String, Digest>,
    links: BTreeMap<String, String>,
    new_blobs: Vec<Digest>,
}

const METADATA: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];

/// Checks an archive entry name: relative, no `..`, normalised.
fn entry_name(p: &Path) -> Result<String, ArchiveError> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(ArchiveError::Invalid(format!(
                    "entry {:?} is absolute or climbs out with \"..\"",
                    p.display().to_string()
                )))
            }
        }
    }
    Ok(parts.join("/"))
}

impl Staged {
    fn add(
        &mut self,
        store: &ImageStore,
        name: String,
        size: u64,
        r: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        if METADATA.contains(&name.as_str()) {
            if size > MAX_DOCUMENT {
                return Err(ArchiveError::Invalid(format!("{name} is {size} bytes")));
            }
            let mut v = Vec::new();
            r.take(MAX_DOCUMENT)
                .read_to_end(&mut v)
                .map_err(io_err(Path::new(&name)))?;
            self.small.insert(name, v);
            return Ok(());
        }
        // blobs/sha256/<hex> must hash to <hex>; anything else is hashed as it comes.
        let expected = name
            .strip_prefix("blobs/sha256/")
            .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok());
        let existed = expected.as_ref().is_some_and(|d| store.blobs().has(d));
        let mut r = r;
        let d = store
            .blobs()
            .write(&mut r, expected.as_ref().map(|d| (d, Some(size))))
            .map_err(|e| ArchiveError::Invalid(format!("{name}: {e}")))?;
        if !existed {
            self.added(d.clone());
        }
        self.blobs.insert(name, d);
        Ok(())
    }

    /// Notes a blob this operation wrote (a no-op for one already noted).
    fn added(&mut self, d: Digest) {
        if !self.new_blobs.contains(&d) {
            self.new_blobs.push(d);
        }
    }

    fn blob(&self, path: &str) -> Result<Digest, ArchiveError> {
        let mut p = path.trim_start_matches("./").to_owned();
        for _ in 0..8 {
            if let Some(d) = self.blobs.get(&p) {
                return Ok(d.clone());
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(ArchiveError::Invalid(format!(
            "{path} is named but not in the archive"
        )))
    }
}

/// Loads a `docker save` tarball (either form) or an OCI layout tarball. Returns the
/// images loaded with their tags.
pub fn load(
    store: &ImageStore,
    r: impl Read,
) -> Result<Vec<(ImageRecord, Vec<String>)>, ArchiveError> {
    let _shared = store.lock_shared()?;
    let mut st = Staged::default();
    let result = (|| {
        let mut ar = tar::Archive::new(berth_protocol::targuard::TarGuard::new(r));
        let entries = ar
            .entries()
            .map_err(|e| ArchiveError::Invalid(format!("not a tar archive: {e}")))?;
        for e in entries {
            let mut e = e.map_err(|e| ArchiveError::Invalid(format!("corrupt tar stream: {e}")))?;
            let raw = e
                .path()
                .map_err(|e| ArchiveError::Invalid(format!("bad entry name: {e}")))?
                .into_owned();
            let name = entry_name(&raw)?;
            let size = e
                .header()
                .size()
                .map_err(|e| ArchiveError::Invalid(format!("{name}: bad size: {e}")))?;
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    st.add(store, name, size, &mut e)?
                }
                tar::EntryType::Directory
                | tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader => {}
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    // Old `docker save` links duplicate layers to one copy.
                    let t = e
                        .link_name()
                        .map_err(|e| ArchiveError::Invalid(e.to_string()))?
                        .ok_or_else(|| {
                            ArchiveError::Invalid(format!("{name}: link without a target"))
                        })?;
                    let target = if e.header().entry_type() == tar::EntryType::Symlink {
                        Path::new(&name).parent().unwrap_or(Path::new("")).join(&*t)
                    } else {
                        t.into_owned()
                    };
                    let target = normalise_link(&target).ok_or_else(|| {
                        ArchiveError::Invalid(format!("{name}: link leads outside the archive"))
                    })?;
                    st.links.insert(name, target);
                }
                other => {
                    return Err(ArchiveError::Invalid(format!(
                        "{name}: unexpected entry type {other:?}"
                    )))
                }
            }
        }
        interpret(store, &st, None)
    })();
    finish(store, &st, result)
}

/// Loads an OCI image-layout directory. `name` tags images whose layout entry names
/// only a tag.
pub fn load_oci_dir(
    store: &ImageStore,
    dir: &Path,
    name: Option<&Reference>,
) -> Result<Vec<(ImageRecord, Vec<String>)>, ArchiveError> {
    let _shared = store.lock_shared()?;
    let mut st = Staged::default();
    let result = (|| {
        for f in ["oci-layout", "index.json"] {
            let p = dir.join(f);
            let b = fs::read(&p).map_err(io_err(&p))?;
            st.add(store, f.into(), b.len() as u64, &mut &b[..])?;
        }
        let blobs = dir.join("blobs/sha256");
        for e in fs::read_dir(&blobs).map_err(io_err(&blobs))?.flatten() {
            let m = fs::symlink_metadata(e.path()).map_err(io_err(&e.path()))?;
            if !m.is_file() {
                continue;
            }
            let name = format!("blobs/sha256/{}", e.file_name().to_string_lossy());
            let mut f = File::open(e.path()).map_err(io_err(&e.path()))?;
            st.add(store, name, m.len(), &mut f)?;
        }
        interpret(store, &st, name)
    })();
    finish(store, &st, result)
}

fn finish<T>(
    store: &ImageStore,
    st: &Staged,
    result: Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    // Blobs this load added that no image ended up referencing (old-format metadata,
    // or everything, on failure) go again. One that was already there and is still
    // referenced stays.
    store.discard_unreferenced(&st.new_blobs);
    result
}

fn normalise_link(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// Parses an archive's JSON document; what is wrong is said with where: broken JSON, or
/// JSON of the wrong shape (serde alone calls `{not json` "invalid type: map", having
/// looked no further than its first byte).
fn parse_doc<T: serde::de::DeserializeOwned>(
    file: &str,
    want: &str,
    bytes: &[u8],
) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let e = serde_json::from_slice::<serde_json::Value>(bytes)
            .err()
            .unwrap_or(e);
        let at = format!("line {} column {}", e.line(), e.column().max(1));
        let why = e.to_string();
        let why = why.split(" at line ").next().unwrap_or(&why).to_owned();
        ArchiveError::Invalid(match e.classify() {
            serde_json::error::Category::Data => {
                format!("{file} in the archive is not {want}: {why} at {at}")
            }
            _ => format!("{file} in the archive is not valid JSON: {why} at {at}"),
        })
    })
}

fn interpret(
    store: &ImageStore,
    st: &Staged,
    name: Option<&Reference>,
) -> Result<Vec<(ImageRecord, Vec<String>)>, ArchiveError> {
    let mut out = Vec::new();
    if let Some(index) = st.small.get("index.json") {
        let idx: Index = parse_doc("index.json", "an OCI image index", index)?;
        for desc in idx.manifests() {
            let (mut digest, mut mt, mut parent) =
                (media::digest_of(desc)?, desc.media_type().to_string(), None);
            st.blob(&format!("blobs/sha256/{}", digest.hex()))?;
            if let Document::Index(inner) =
                Document::parse(&store.read_document(&digest)?, Some(&mt))?
            {
                let e = media::for_platform(&inner).ok_or_else(|| {
                    ArchiveError::Invalid(format!(
                        "no linux/amd64 image in index {digest} (it offers {})",
                        media::platforms(&inner).join(", ")
                    ))
                })?;
                let e_digest = media::digest_of(e)?;
                st.blob(&format!("blobs/sha256/{}", e_digest.hex()))?;
                parent = Some(digest);
                digest = e_digest;
                mt = e.media_type().to_string();
            }
            let ann = desc.annotations().clone().unwrap_or_default();
            let tag = match (ann.get(NAME_ANNOTATION), ann.get(REF_ANNOTATION)) {
                (Some(full), _) => Some(
                    full.parse::<Reference>()
                        .map_err(|e| ArchiveError::Invalid(format!("image name {full:?}: {e}")))?,
                ),
                (None, Some(r)) if r.contains('/') || r.contains(':') => {
                    r.parse::<Reference>().ok()
                }
                (None, Some(t)) => name.map(|n| Reference {
                    tag: Some(t.clone()),
                    digest: None,
                    ..n.clone()
                }),
                (None, None) => name.cloned(),
            };
            out.push(stage_and_commit(store, &digest, &mt, parent, tag)?);
        }
        return Ok(merge(out));
    }
    let Some(m) = st.small.get("manifest.json") else {
        return Err(ArchiveError::Invalid(
            "neither index.json nor manifest.json found: not an image archive".into(),
        ));
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = parse_doc(
        "manifest.json",
        "Docker's manifest (a JSON array of {\"Config\", \"RepoTags\", \"Layers\"} objects)",
        m,
    )?;
    for e in entries {
        let config = st.blob(&e.config)?;
        let config_size = fs::metadata(store.blobs().blob_path(&config))
            .map_err(io_at(&store.blobs().blob_path(&config)))?
            .len();
        let mut layers = Vec::new();
        for l in &e.layers {
            let d = st.blob(l)?;
            let (mt, size) = layer_type(store, &d)?;
            layers.push(media::descriptor(mt, &d, size));
        }
        let manifest = media::new_manifest(
            media::descriptor(media::OCI_CONFIG, &config, config_size),
            layers,
        );
        let bytes = media::to_json(&manifest);
        let md = write_new(store, &bytes)?;
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            out.push(stage_and_commit(
                store,
                &md,
                media::OCI_MANIFEST,
                None,
                None,
            )?);
        }
        for t in tags {
            let r = t
                .parse::<Reference>()
                .map_err(|e| ArchiveError::Invalid(format!("tag {t:?}: {e}")))?;
            out.push(stage_and_commit(
                store,
                &md,
                media::OCI_MANIFEST,
                None,
                Some(r),
            )?);
        }
    }
    Ok(merge(out))
}

/// A stored layer blob's media type (by its compression's magic bytes) and size.
fn layer_type(store: &ImageStore, d: &Digest) -> Result<(&'static str, u64), ArchiveError> {
    let p = store.blobs().blob_path(d);
    let mut f = File::open(&p).map_err(io_at(&p))?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(io_at(&p))?;
    let mt = if head[..n].starts_with(&[0x1f, 0x8b]) {
        media::OCI_LAYER_GZIP
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        media::OCI_LAYER_ZSTD
    } else {
        media::OCI_LAYER
    };
    Ok((mt, f.metadata().map_err(io_at(&p))?.len()))
}

fn write_new(store: &ImageStore, bytes: &[u8]) -> Result<Digest, ArchiveError> {
    Ok(store
        .blobs()
        .write(&mut &bytes[..], None)
        .map_err(ImageError::from)?)
}

fn merge(v: Vec<(ImageRecord, Vec<String>)>) -> Vec<(ImageRecord, Vec<String>)> {
    let mut out: Vec<(ImageRecord, Vec<String>)> = Vec::new();
    for (r, t) in v {
        match out.iter_mut().find(|(o, _)| o.id == r.id) {
            Some((_, ts)) => ts.extend(t),
            None => out.push((r, t)),
        }
    }
    out
}

/// Unpacks the image (checking every layer) before recording and tagging it.
fn stage_and_commit(
    store: &ImageStore,
    manifest: &Digest,
    media_type: &str,
    index: Option<Digest>,
    tag: Option<Reference>,
) -> Result<(ImageRecord, Vec<String>), ArchiveError> {
    let m = match Document::parse(&store.read_document(manifest)?, Some(media_type))? {
        Document::Manifest(m) => m,
        Document::Index(_) => {
            return Err(ArchiveError::Invalid(format!("{manifest}: nested index")))
        }
    };
    let id = media::digest_of(m.config())?;
    for l in std::iter::once(m.config()).chain(m.layers()) {
        let d = media::digest_of(l)?;
        if !store.blobs().has(&d) {
            return Err(ArchiveError::Invalid(format!(
                "blob {d} is named but not in the archive"
            )));
        }
    }
    let staged = ImageRecord {
        id,
        manifest: manifest.clone(),
        manifest_media_type: media_type.to_owned(),
        index: index.clone(),
        repo_digests: vec![],
        size: 0,
        added: 0,
        parent: None,
    };
    store.rootfs(&staged)?;
    let tags: Vec<Reference> = tag.into_iter().collect();
    let rec = store.commit_image(manifest, media_type, index, None, &tags)?;
    Ok((rec, tags.iter().map(|t| t.familiar()).collect()))
}

/// Imports a root filesystem tarball (plain, gzip or zstd) as a one-layer image, with
/// Dockerfile-style `changes` (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE,
/// VOLUME) applied to its config, as `docker import` does.
pub fn import(
    store: &ImageStore,
    mut r: impl Read,
    tag: Option<&Reference>,
    changes: &[String],
    message: Option<&str>,
) -> Result<ImageRecord, ArchiveError> {
    let mut config = ContainerConfig::default();
    for c in changes {
        apply_change(&mut config, c)?;
    }
    let _shared = store.lock_shared()?;
    let mut st = Staged::default();
    let result = (|| {
        let layer = store
            .blobs()
            .write(&mut r, None)
            .map_err(ImageError::from)?;
        st.added(layer.clone());
        let p = store.blobs().blob_path(&layer);
        let (mt, size) = layer_type(store, &layer)?;
        let mut tar = layer::decompress(File::open(&p).map_err(io_at(&p))?)?;
        let mut h = Hasher::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = tar
                .read(&mut buf)
                .map_err(|e| ArchiveError::Invalid(format!("reading the tarball: {e}")))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
        let created = rfc3339_now();
        let cfg = media::new_config(
            &created,
            config.clone(),
            &[h.finish()],
            vec![media::history(
                &created,
                "berth import",
                Some(message.unwrap_or("Imported from tarball")),
            )],
        );
        new_image(
            store,
            &mut st,
            &cfg,
            vec![media::descriptor(mt, &layer, size)],
            tag,
        )
    })();
    finish(store, &st, result)
}

/// Writes a new image's config and OCI manifest (recorded in `st` as new blobs), unpacks
/// it, and records and tags it.
fn new_image(
    store: &ImageStore,
    st: &mut Staged,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
    tag: Option<&Reference>,
) -> Result<ImageRecord, ArchiveError> {
    let cb = media::to_json(config);
    let cd = write_new(store, &cb)?;
    st.added(cd.clone());
    let manifest = media::new_manifest(
        media::descriptor(media::OCI_CONFIG, &cd, cb.len() as u64),
        layers,
    );
    let mb = media::to_json(&manifest);
    let md = write_new(store, &mb)?;
    st.added(md.clone());
    Ok(stage_and_commit(store, &md, media::OCI_MANIFEST, None, tag.cloned())?.0)
}

/// Tars a container's overlay upper directory as an image layer: overlay whiteouts
/// (0/0 character devices) become `.wh.NAME` entries and opaque directories (the
/// `trusted.overlay.opaque` xattr) get `.wh..wh..opq`.
fn tar_upper(upper: &Path, out: impl Write) -> Result<(), ArchiveError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    let io = |p: &Path| {
        let p = p.to_owned();
        move |err: io::Error| ArchiveError::Io {
            path: p.display().to_string(),
            err,
        }
    };
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir).map_err(io(&dir))?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = rel.join(e.file_name());
            let m = fs::symlink_metadata(&path).map_err(io(&path))?;
            let ft = m.file_type();
            let mut h = tar::Header::new_gnu();
            h.set_mode(m.mode() & 0o7777);
            h.set_uid(u64::from(m.uid()));
            h.set_gid(u64::from(m.gid()));
            h.set_mtime(m.mtime().max(0) as u64);
            if ft.is_char_device() && m.rdev() == 0 {
                let wh = rel.join(format!(".wh.{}", e.file_name().to_string_lossy()));
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(0);
                b.append_data(&mut h, &wh, io::empty()).map_err(io(&path))?;
            } else if ft.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, &name, io::empty())
                    .map_err(io(&path))?;
                if is_opaque(&path) {
                    let mut o = tar::Header::new_gnu();
                    o.set_entry_type(tar::EntryType::Regular);
                    o.set_size(0);
                    o.set_mode(0o644);
                    b.append_data(&mut o, name.join(".wh..wh..opq"), io::empty())
                        .map_err(io(&path))?;
                }
                stack.push(name);
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(io(&path))?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &name, &target).map_err(io(&path))?;
            } else if ft.is_file() {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(m.len());
                let f = File::open(&path).map_err(io(&path))?;
                b.append_data(&mut h, &name, f).map_err(io(&path))?;
            } else {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else if ft.is_fifo() {
                    tar::EntryType::Fifo
                } else {
                    continue; // sockets don't belong in an image
                };
                h.set_entry_type(kind);
                h.set_size(0);
                let _ = h.set_device_major(libc::major(m.rdev()));
                let _ = h.set_device_minor(libc::minor(m.rdev()));
                b.append_data(&mut h, &name, io::empty())
                    .map_err(io(&path))?;
            }
        }
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io(upper))?;
    Ok(())
}

fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut v = [0u8; 4];
    // SAFETY: NUL-terminated path and attribute name; the value buffer is 4 bytes and its
    // length is passed.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    n == 1 && v[0] == b'y'
}

/// `commit`: a new image from `parent` plus a container's changes (its overlay upper
/// directory) as one more layer, with Dockerfile-style `changes`, as `docker commit` does.
pub fn commit(
    store: &ImageStore,
    parent: &ImageRecord,
    upper: &Path,
    tag: Option<&Reference>,
    changes: &[String],
    comment: Option<&str>,
    author: Option<&str>,
) -> Result<ImageRecord, ArchiveError> {
    let mut pcfg = store.config(parent)?;
    let mut run_config = pcfg.config().clone().unwrap_or_default();
    for c in changes {
        apply_change(&mut run_config, c)?;
    }
    let pmanifest = store.manifest(parent)?;
    let _shared = store.lock_shared()?;
    let mut st = Staged::default();
    let result = (|| {
        let work = store.tmp_dir("commit")?;
        let tarp = work.join("layer.tar");
        let r = File::create(&tarp)
            .map_err(io_err(&tarp))
            .and_then(|f| tar_upper(upper, io::BufWriter::new(f)))
            .and_then(|_| {
                let mut f = File::open(&tarp).map_err(io_err(&tarp))?;
                Ok(store
                    .blobs()
                    .write(&mut f, None)
                    .map_err(ImageError::from)?)
            });
        let _ = fs::remove_dir_all(&work);
        let layer = r?;
        st.added(layer.clone());
        let size = fs::metadata(store.blobs().blob_path(&layer))
            .map_err(io_at(&store.blobs().blob_path(&layer)))?
            .len();
        let created = rfc3339_now();
        pcfg.set_created(Some(created.clone()));
        if let Some(a) = author {
            pcfg.set_author(Some(a.to_owned()));
        }
        pcfg.set_config(Some(run_config));
        pcfg.rootfs_mut().diff_ids_mut().push(layer.to_string());
        let mut history = pcfg.history().clone().unwrap_or_default();
        history.push(media::history(&created, "berth commit", comment));
        pcfg.set_history(Some(history));
        let mut layers = pmanifest.layers().clone();
        layers.push(media::descriptor(media::OCI_LAYER, &layer, size));
        let mut rec = new_image(store, &mut st, &pcfg, layers, tag)?;
        rec.parent = Some(parent.id.clone());
        Ok(store.put_record(rec)?)
    })();
    finish(store, &st, result)
}

/// Applies one Dockerfile-style change to a config.
pub fn apply_change(c: &mut ContainerConfig, change: &str) -> Result<(), ArchiveError> {
    let bad = |why: &str| ArchiveError::Change(change.to_owned(), why.to_owned());
    let (instr, rest) = change
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("expected INSTRUCTION ARGUMENTS"))?;
    let rest = rest.trim();
    let words = |rest: &str| -> Result<Vec<String>, ArchiveError> {
        if rest.starts_with('[') {
            serde_json::from_str(rest).map_err(|e| bad(&format!("bad JSON array: {e}")))
        } else {
            Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
        }
    };
    let pairs = |rest: &str| -> Result<Vec<(String, String)>, ArchiveError> {
        if !rest.contains('=') {
            let (k, v) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected KEY=VALUE"))?;
            return Ok(vec![(k.into(), v.trim().into())]);
        }
        rest.split_whitespace()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| bad("expected KEY=VALUE"))
            })
            .collect()
    };
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => {
            c.set_cmd(Some(words(rest)?));
        }
        "ENTRYPOINT" => {
            c.set_entrypoint(Some(words(rest)?));
        }
        "ENV" => {
            let mut env = c.env().clone().unwrap_or_default();
            for (k, v) in pairs(rest)? {
                env.retain(|e| e.split('=').next() != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
            c.set_env(Some(env));
        }
        "LABEL" => {
            let l = c.labels_mut().get_or_insert_with(Default::default);
            for (k, v) in pairs(rest)? {
                l.insert(k, v);
            }
        }
        "WORKDIR" => {
            c.set_working_dir(Some(rest.to_owned()));
        }
        "USER" => {
            c.set_user(Some(rest.to_owned()));
        }
        "EXPOSE" => {
            let mut p = c.exposed_ports().clone().unwrap_or_default();
            for port in rest.split_whitespace() {
                let full = if port.contains('/') {
                    port.to_owned()
                } else {
                    format!("{port}/tcp")
                };
                if !p.contains(&full) {
                    p.push(full);
                }
            }
            c.set_exposed_ports(Some(p));
        }
        "VOLUME" => {
            let mut v = c.volumes().clone().unwrap_or_default();
            let list: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest).map_err(|e| bad(&format!("bad JSON array: {e}")))?
            } else {
                rest.split_whitespace().map(str::to_owned).collect()
            };
            for p in list {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
            c.set_volumes(Some(v));
        }
        "STOPSIGNAL" => {
            c.set_stop_signal(Some(rest.to_owned()));
        }
        other => return Err(bad(&format!("{other} is not a valid change command"))),
    }
    Ok(())
}

/// The current UTC time as RFC 3339.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    berth_protocol::time::rfc3339(secs, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_follow_dockerfile_syntax() {
        let mut c = ContainerConfig::default();
        for ch in [
            r#"CMD ["/bin/echo", "hi"]"#,
            "ENTRYPOINT /bin/run it",
            "ENV A=1 B=two",
            "ENV C three",
            "ENV A=replaced",
            "WORKDIR /srv",
            "USER nobody",
            "EXPOSE 80 53/udp",
            "LABEL k=v",
        ] {
            apply_change(&mut c, ch).unwrap();
        }
        assert_eq!(c.cmd().clone().unwrap(), ["/bin/echo", "hi"]);
        assert_eq!(
            c.entrypoint().clone().unwrap(),
            ["/bin/sh", "-c", "/bin/run it"]
        );
        assert_eq!(c.env().clone().unwrap(), ["B=two", "C=three", "A=replaced"]);
        assert_eq!(c.working_dir().as_deref(), Some("/srv"));
        assert_eq!(c.user().as_deref(), Some("nobody"));
        assert!(c
            .exposed_ports()
            .clone()
            .unwrap()
            .contains(&"53/udp".to_owned()));
        let mut c = ContainerConfig::default();
        for bad in ["FROM busybox", "CMD [unclosed", "ENV", "ENV =x"] {
            assert!(apply_change(&mut c, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_broken_manifest_is_reported_with_what_and_where() {
        let e = parse_doc::<Vec<String>>("manifest.json", "Docker's manifest", b"{not json")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid image archive: manifest.json in the archive is not valid JSON: key must be a string at line 1 column 2"
        );
        let e = parse_doc::<Vec<String>>("manifest.json", "Docker's manifest", b"{}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid image archive: manifest.json in the archive is not Docker's manifest: invalid type: map, expected a sequence at line 1 column 1"
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn archive_entry_names_are_checked() {
        assert_eq!(
            entry_name(Path::new("./blobs/sha256/ab")).unwrap(),
            "blobs/sha256/ab"
        );
        assert!(entry_name(Path::new("/etc/passwd")).is_err());
        assert!(entry_name(Path::new("a/../../x")).is_err());
        assert_eq!(
            normalise_link(Path::new("a/../b/layer.tar")).unwrap(),
            "b/layer.tar"
        );
        assert!(normalise_link(Path::new("../../x")).is_none());
    }
}
