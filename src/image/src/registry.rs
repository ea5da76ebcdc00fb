//! Pull from and push to registries (OCI distribution spec), through the `oci-client`
//! crate for the protocol (auth challenges, bearer tokens, uploads) with berth's own
//! verification and storage on top: every blob is checked against its digest and size as
//! it streams into the store, downloads interrupted by a crash resume where they stopped,
//! and blobs already present are never fetched again.

use crate::digest::{Digest, Hasher};
use crate::images::{io_at, lock_file, ImageError, ImageRecord, ImageStore};
use crate::media::{self, Document, MediaError};
use crate::reference::Reference;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host:port`) reached over plain HTTP. `localhost` and 127.0.0.0/8 always are.
    pub insecure: Vec<String>,
    /// User name and password (basic auth, or exchanged for a bearer token).
    pub credentials: Option<(String, String)>,
    /// Layers downloaded at once (Docker's default is 3).
    pub max_concurrent_downloads: usize,
    /// Blob uploads: `None` for one monolithic PUT, or the chunk size for chunked PATCHes.
    pub upload_chunk: Option<usize>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            credentials: None,
            max_concurrent_downloads: 3,
            upload_chunk: None,
        }
    }
}

/// A progress event, for the CLI's progress bars and the API's JSON stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A free-form status line (Docker's `status` without an id).
    Status {
        /// The line.
        status: String,
    },
    /// A layer's state changed or bytes moved.
    Layer {
        /// The blob.
        digest: Digest,
        /// Docker's words: "Already exists", "Downloading", "Download complete", ...
        status: &'static str,
        /// Bytes done.
        current: u64,
        /// Bytes in all.
        total: u64,
    },
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// No such repository, tag or digest.
    #[error("manifest unknown: the registry has no such repository, tag or digest")]
    NotFound,
    /// Credentials missing or wrong.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The registry could not be reached.
    #[error("registry {host} is unreachable: {detail}")]
    Unreachable {
        /// The registry.
        host: String,
        /// Why.
        detail: String,
    },
    /// Only other platforms are offered.
    #[error("no matching manifest for linux/amd64 in the manifest list entries (it offers {0})")]
    Platform(String),
    /// Content does not match its digest.
    #[error("filesystem layer verification failed for digest {0}")]
    Verification(Digest),
    /// The registry sent fewer bytes than the descriptor promised.
    #[error("blob {digest} is truncated: got {got} of {want} bytes")]
    Truncated {
        /// The blob.
        digest: Digest,
        /// Bytes received.
        got: u64,
        /// Bytes promised.
        want: u64,
    },
    /// A document berth can't read.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] ImageError),
    /// Any other registry answer.
    #[error("registry error: {0}")]
    Registry(String),
}

/// A failed pull or push: the image and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{image}: {cause}")]
pub struct RegistryError {
    /// The image, as the user named it.
    pub image: String,
    /// Why.
    pub cause: Cause,
}

impl RegistryError {
    fn new(image: &Reference, cause: impl Into<Cause>) -> RegistryError {
        RegistryError {
            image: image.familiar(),
            cause: cause.into(),
        }
    }
}

fn classify(host: &str, e: OciDistributionError) -> Cause {
    use OciDistributionError as E;
    match e {
        E::ImageManifestNotFoundError(_) => Cause::NotFound,
        E::UnauthorizedError { .. } => {
            Cause::Unauthorized("authentication required or credentials refused".into())
        }
        E::AuthenticationFailure(m) => Cause::Unauthorized(m),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            let text = envelope.to_string();
            if codes.iter().any(|c| c.contains("Unknown")) {
                Cause::NotFound
            } else if codes
                .iter()
                .any(|c| c.contains("Unauthorized") || c.contains("Denied"))
            {
                Cause::Unauthorized(text)
            } else {
                Cause::Registry(text)
            }
        }
        E::ServerError { code, message, .. } => match code {
            401 | 403 => Cause::Unauthorized(message),
            404 => Cause::NotFound,
            _ => Cause::Registry(format!("HTTP {code}: {message}")),
        },
        E::RequestError(r) if r.is_connect() || r.is_timeout() => Cause::Unreachable {
            host: host.to_owned(),
            detail: error_chain(&r),
        },
        other => Cause::Registry(error_chain(&other)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Whether a registry is reached over plain HTTP.
pub fn is_insecure(registry: &str, opts: &RegistryOptions) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(registry);
    host == "localhost"
        || host.starts_with("127.")
        || host == "[::1]"
        || opts.insecure.iter().any(|i| i == registry || i == host)
}

/// The registry a login's server address names, as the docker CLI's `ConvertToHostname`
/// reads it (scheme and path dropped): its host and port, `docker.io` for Docker Hub
/// under any of its names (or none).
pub fn login_host(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match s.split('/').next().unwrap_or("") {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_owned(),
    }
}

/// The repository a login check asks for (it need not exist).
const LOGIN_PROBE: &str = "berth-login-check";

/// Checks credentials against a registry, as `docker login` does, before the client
/// stores them: the registry is asked for a manifest with them (through its basic or
/// token authentication, whichever it uses). Refused credentials are
/// [`Cause::Unauthorized`]; an answer past authentication (the probe repository does not
/// exist: "manifest unknown") means they were accepted.
pub async fn login(
    registry: &str,
    user: &str,
    password: &str,
    opts: &RegistryOptions,
) -> Result<(), RegistryError> {
    let reference: Reference = format!("{registry}/{LOGIN_PROBE}:latest").parse().map_err(
        |e: crate::reference::ReferenceError| RegistryError {
            image: registry.to_owned(),
            cause: Cause::Registry(format!("invalid registry address {registry:?}: {e}")),
        },
    )?;
    let opts = RegistryOptions {
        credentials: Some((user.to_owned(), password.to_owned())),
        ..opts.clone()
    };
    let remote = Remote::new(&reference, &opts).map_err(|e| RegistryError {
        image: registry.to_owned(),
        cause: e.cause,
    })?;
    match remote.manifest(&remote.reference).await {
        Ok(_) | Err(Cause::NotFound) => Ok(()),
        Err(cause) => Err(RegistryError {
            image: registry.to_owned(),
            cause,
        }),
    }
}

/// A connection to one registry for one image.
struct Remote {
    client: oci_client::Client,
    auth: RegistryAuth,
    reference: oci_client::Reference,
    host: String,
    concurrency: usize,
}

impl Remote {
    fn new(r: &Reference, opts: &RegistryOptions) -> Result<Remote, RegistryError> {
        let protocol = if is_insecure(&r.registry, opts) {
            ClientProtocol::HttpsExcept(vec![r.registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            use_monolithic_push: opts.upload_chunk.is_none(),
            max_concurrent_download: opts.max_concurrent_downloads.max(1),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        };
        let reference = match (&r.tag, &r.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                r.registry.clone(),
                r.repository.clone(),
                d.to_string(),
            ),
            (Some(t), None) => {
                oci_client::Reference::with_tag(r.registry.clone(), r.repository.clone(), t.clone())
            }
            (None, None) => oci_client::Reference::with_tag(
                r.registry.clone(),
                r.repository.clone(),
                "latest".into(),
            ),
        };
        let auth = match &opts.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Remote {
            client: oci_client::Client::new(config),
            auth,
            reference,
            host: r.registry.clone(),
            concurrency: opts.max_concurrent_downloads.max(1),
        })
    }

    fn at_digest(&self, d: &Digest) -> oci_client::Reference {
        oci_client::Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            d.to_string(),
        )
    }

    async fn manifest(&self, at: &oci_client::Reference) -> Result<Vec<u8>, Cause> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(at, &self.auth, media::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| classify(&self.host, e))?;
        Ok(bytes.to_vec())
    }

    async fn small_blob(&self, d: &media::Descriptor) -> Result<Vec<u8>, Cause> {
        if d.size() > crate::images::MAX_DOCUMENT {
            return Err(Cause::Registry(format!(
                "config {} of {} bytes is too large",
                d.digest(),
                d.size()
            )));
        }
        let mut out = Vec::new();
        self.client
            .pull_blob(&self.reference, d.digest().as_ref(), &mut out)
            .await
            .map_err(|e| classify(&self.host, e))?;
        check(&out, &media::digest_of(d)?, d.size())?;
        Ok(out)
    }
}

fn check(data: &[u8], digest: &Digest, size: u64) -> Result<(), Cause> {
    if data.len() as u64 != size {
        return Err(Cause::Truncated {
            digest: digest.clone(),
            got: data.len() as u64,
            want: size,
        });
    }
    if Digest::of(data) != *digest {
        return Err(Cause::Verification(digest.clone()));
    }
    Ok(())
}

/// What a pull should do besides fetching.
#[derive(Debug, Clone, Copy, Default)]
pub struct PullOptions {
    /// Also unpack the root filesystem and build the root disk ("make runnable").
    pub unpack: bool,
}

/// Pulls an image by tag or digest (linux/amd64 from an index), verifying everything,
/// then records and tags it. On failure the store is left as it was, except for the
/// resumable part of a download cut short by a crash.
pub async fn pull(
    store: &ImageStore,
    reference: &Reference,
    opts: &RegistryOptions,
    pull_opts: PullOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ImageRecord, RegistryError> {
    let err = |c: Cause| RegistryError::new(reference, c);
    let _shared = store.lock_shared().map_err(|e| err(e.into()))?;
    let remote = Remote::new(reference, opts)?;
    remote
        .client
        .store_auth_if_needed(remote.reference.resolve_registry(), &remote.auth)
        .await;
    let mut new_blobs = Vec::new();
    let r = pull_inner(
        store,
        reference,
        &remote,
        pull_opts,
        progress,
        &mut new_blobs,
    )
    .await;
    if r.is_err() {
        // Leave nothing behind that no image references.
        store.discard_unreferenced(&new_blobs);
    }
    r.map_err(err)
}

async fn pull_inner(
    store: &ImageStore,
    reference: &Reference,
    remote: &Remote,
    pull_opts: PullOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
    new_blobs: &mut Vec<Digest>,
) -> Result<ImageRecord, Cause> {
    let top = remote.manifest(&remote.reference).await?;
    let top_digest = Digest::of(&top);
    if let Some(want) = &reference.digest {
        if *want != top_digest {
            return Err(Cause::Verification(want.clone()));
        }
    }
    let (index, manifest_bytes) = match Document::parse(&top, None)? {
        Document::Manifest(_) => (None, top),
        Document::Index(idx) => {
            let Some(entry) = media::for_platform(&idx) else {
                return Err(Cause::Platform(media::platforms(&idx).join(", ")));
            };
            let entry_digest = media::digest_of(entry)?;
            let child = remote.manifest(&remote.at_digest(&entry_digest)).await?;
            check(&child, &entry_digest, entry.size())?;
            (Some(top), child)
        }
    };
    let Document::Manifest(manifest) = Document::parse(&manifest_bytes, None)? else {
        return Err(Cause::Registry(
            "an index entry points at another index".into(),
        ));
    };
    let config_bytes = remote.small_blob(manifest.config()).await?;
    let config = media::parse_config(&config_bytes)?;
    if let Some(p) = media::foreign_platform(&config) {
        return Err(Cause::Platform(p));
    }
    for l in manifest.layers() {
        media::layer_compression(l.media_type())?;
    }
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(Cause::Registry(format!(
            "the manifest has {} layers but the config lists {} diff IDs",
            manifest.layers().len(),
            config.rootfs().diff_ids().len()
        )));
    }
    let config_digest = media::digest_of(manifest.config())?;
    progress(Progress::Status {
        status: format!("Pulling from {}", reference.familiar()),
    });
    let manifest_digest = Digest::of(&manifest_bytes);
    let mut docs = vec![
        (manifest_bytes.clone(), manifest_digest.clone()),
        (config_bytes, config_digest.clone()),
    ];
    if let Some(i) = &index {
        docs.push((i.clone(), top_digest.clone()));
    }
    for (bytes, d) in docs {
        if !store.blobs().has(&d) {
            store
                .blobs()
                .write(&mut &bytes[..], Some((&d, None)))
                .map_err(ImageError::from)?;
            new_blobs.push(d);
        }
    }
    // Futures built up front (not in a stream closure): keeps the pull future `Send` for
    // callers that spawn it.
    let futs: Vec<_> = manifest
        .layers()
        .iter()
        .map(|l| fetch_layer(store, remote, l, progress))
        .collect();
    let fetched: Vec<Result<Option<Digest>, Cause>> = futures_util::stream::iter(futs)
        .buffer_unordered(remote.concurrency)
        .collect()
        .await;
    for f in fetched {
        if let Some(d) = f? {
            new_blobs.push(d);
        }
    }
    let media_type = manifest
        .media_type()
        .as_ref()
        .map_or_else(|| media::OCI_MANIFEST.to_owned(), |m| m.to_string());
    let repo_digest = format!(
        "{}/{}@{}",
        reference.registry,
        reference.repository,
        if index.is_some() {
            &top_digest
        } else {
            &manifest_digest
        }
    );
    let tags: Vec<Reference> = reference.tag.iter().map(|_| reference.clone()).collect();
    let staged = ImageRecord {
        id: config_digest,
        manifest: manifest_digest.clone(),
        manifest_media_type: media_type.clone(),
        index: index.as_ref().map(|_| top_digest.clone()),
        repo_digests: vec![],
        size: 0,
        added: 0,
        parent: None,
    };
    if pull_opts.unpack {
        for l in manifest.layers() {
            progress(layer_event(
                &media::digest_of(l)?,
                "Extracting",
                0,
                l.size(),
            ));
        }
        store.disk(&staged)?;
    }
    let rec = store.commit_image(
        &manifest_digest,
        &media_type,
        staged.index.clone(),
        Some(repo_digest),
        &tags,
    )?;
    for l in manifest.layers() {
        progress(layer_event(
            &media::digest_of(l)?,
            "Pull complete",
            l.size(),
            l.size(),
        ));
    }
    progress(Progress::Status {
        status: format!(
            "Digest: {}",
            if index.is_some() {
                top_digest
            } else {
                manifest_digest
            }
        ),
    });
    Ok(rec)
}

fn layer_event(d: &Digest, status: &'static str, current: u64, total: u64) -> Progress {
    Progress::Layer {
        digest: d.clone(),
        status,
        current,
        total,
    }
}

/// Downloads one layer into the store unless present; returns its digest if it was new.
async fn fetch_layer(
    store: &ImageStore,
    remote: &Remote,
    l: &media::Descriptor,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Option<Digest>, Cause> {
    let d = &media::digest_of(l)?;
    if store.blobs().has(d) {
        progress(layer_event(d, "Already exists", l.size(), l.size()));
        return Ok(None);
    }
    let partial: PathBuf = store
        .root()
        .join("ingest")
        .join(format!("{}.partial", d.hex()));
    // One downloader per blob across processes; a second one waits, then finds it done.
    let _lock = {
        let p = partial.with_extension("lock");
        tokio::task::spawn_blocking(move || lock_file(&p, libc::LOCK_EX).map_err(|e| (p, e)))
            .await
            .map_err(|e| Cause::Registry(e.to_string()))?
            .map_err(|(p, e)| Cause::Store(io_at(&p)(e)))?
    };
    if store.blobs().has(d) {
        progress(layer_event(d, "Already exists", l.size(), l.size()));
        return Ok(None);
    }
    let io = |e| Cause::Store(io_at(&partial)(e));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(io)?;
    let mut have = f.metadata().map_err(io)?.len();
    if have > l.size() {
        f.set_len(0).map_err(io)?;
        have = 0;
    }
    let mut hasher = Hasher::default();
    if have > 0 {
        // Resume: hash what a killed pull left, then ask for the rest.
        hash_prefix(&mut f, have, &mut hasher).map_err(io)?;
        progress(Progress::Status {
            status: format!(
                "{}: resuming download at {have} of {} bytes",
                short(d),
                l.size()
            ),
        });
    }
    progress(layer_event(d, "Downloading", have, l.size()));
    let resp = remote
        .client
        .pull_blob_stream_partial(&remote.reference, &d.to_string()[..], have, None)
        .await
        .map_err(|e| classify(&remote.host, e))?;
    let mut stream = match resp {
        BlobResponse::Partial(s) => s.stream,
        BlobResponse::Full(s) => {
            // The registry ignored the range: start over.
            f.set_len(0).map_err(io)?;
            f.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
            hasher = Hasher::default();
            have = 0;
            s.stream
        }
    };
    f.seek(std::io::SeekFrom::Start(have)).map_err(io)?;
    let mut last_report = have;
    let result: Result<(), Cause> = async {
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| Cause::Registry(format!("downloading {d}: {e}")))?
        {
            if have + chunk.len() as u64 > l.size() {
                return Err(Cause::Verification(d.clone()));
            }
            f.write_all(&chunk).map_err(io)?;
            hasher.update(&chunk);
            have += chunk.len() as u64;
            if have - last_report >= 512 * 1024 {
                progress(layer_event(d, "Downloading", have, l.size()));
                last_report = have;
            }
        }
        Ok(())
    }
    .await;
    let finish = result.and_then(|_| {
        if have != l.size() {
            return Err(Cause::Truncated {
                digest: d.clone(),
                got: have,
                want: l.size(),
            });
        }
        if hasher.finish() != *d {
            return Err(Cause::Verification(d.clone()));
        }
        f.sync_all().map_err(io)?;
        let dest = store.blobs().blob_path(d);
        fs::rename(&partial, &dest).map_err(|e| Cause::Store(io_at(&dest)(e)))
    });
    if let Err(e) = finish {
        // A clean failure leaves nothing; only a crash leaves a partial to resume.
        let _ = fs::remove_file(&partial);
        let _ = fs::remove_file(partial.with_extension("lock"));
        return Err(e);
    }
    let _ = fs::remove_file(partial.with_extension("lock"));
    progress(layer_event(d, "Download complete", l.size(), l.size()));
    Ok(Some(d.clone()))
}

fn hash_prefix(f: &mut File, n: u64, h: &mut Hasher) -> std::io::Result<()> {
    f.seek(std::io::SeekFrom::Start(0))?;
    let mut r = f.take(n);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok(());
        }
        h.update(&buf[..k]);
    }
}

/// The first 12 hex digits, as Docker shows layer IDs.
pub fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// Pushes a local image to `target`: blobs the registry already has are skipped, blobs
/// the image was pulled with from another repository of the same registry are mounted,
/// the rest uploaded (monolithic or chunked). Returns the manifest digest.
pub async fn push(
    store: &ImageStore,
    name: &str,
    target: &Reference,
    opts: &RegistryOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Digest, RegistryError> {
    let err = |c: Cause| RegistryError::new(target, c);
    let rec = store.resolve(name).map_err(|e| err(e.into()))?;
    let manifest = store.manifest(&rec).map_err(|e| err(e.into()))?;
    let remote = Remote::new(target, opts)?;
    remote
        .client
        .auth(
            &remote.reference,
            &remote.auth,
            oci_client::RegistryOperation::Push,
        )
        .await
        .map_err(|e| err(classify(&remote.host, e)))?;
    progress(Progress::Status {
        status: format!(
            "The push refers to repository [{}/{}]",
            target.registry, target.repository
        ),
    });
    // Repositories on the same registry that already hold this image's blobs.
    let mount_from: Vec<oci_client::Reference> = rec
        .repo_digests
        .iter()
        .filter_map(|rd| rd.parse::<Reference>().ok())
        .filter(|r| r.registry == target.registry && r.repository != target.repository)
        .map(|r| oci_client::Reference::with_tag(r.registry, r.repository, "latest".into()))
        .collect();
    let remote = Arc::new(remote);
    let mut blobs: Vec<media::Descriptor> = manifest.layers().clone();
    blobs.push(manifest.config().clone());
    let futs: Vec<_> = blobs
        .iter()
        .map(|b| push_blob(store, &remote, b, &mount_from, opts, progress))
        .collect();
    let results: Vec<Result<(), Cause>> = futures_util::stream::iter(futs)
        .buffer_unordered(3)
        .collect()
        .await;
    for r in results {
        r.map_err(err)?;
    }
    let bytes = store
        .read_document(&rec.manifest)
        .map_err(|e| err(e.into()))?;
    let ct = rec.manifest_media_type.parse().map_err(|_| {
        err(Cause::Registry(format!(
            "bad media type {}",
            rec.manifest_media_type
        )))
    })?;
    remote
        .client
        .push_manifest_raw(&remote.reference, bytes.clone(), ct)
        .await
        .map_err(|e| err(classify(&remote.host, e)))?;
    let digest = Digest::of(&bytes);
    let mut rd = rec.clone();
    rd.repo_digests = vec![format!(
        "{}/{}@{digest}",
        target.registry, target.repository
    )];
    store.put_record(rd).map_err(|e| err(e.into()))?;
    progress(Progress::Status {
        status: format!(
            "{}: digest: {digest} size: {}",
            target.tag.as_deref().unwrap_or("latest"),
            bytes.len()
        ),
    });
    Ok(digest)
}

async fn push_blob(
    store: &ImageStore,
    remote: &Remote,
    b: &media::Descriptor,
    mount_from: &[oci_client::Reference],
    opts: &RegistryOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), Cause> {
    let d = &media::digest_of(b)?;
    let ds = d.to_string();
    if remote
        .client
        .blob_exists(&remote.reference, &ds)
        .await
        .map_err(|e| classify(&remote.host, e))?
    {
        progress(layer_event(d, "Layer already exists", b.size(), b.size()));
        return Ok(());
    }
    for src in mount_from {
        if remote
            .client
            .mount_blob(&remote.reference, src, &ds)
            .await
            .is_ok()
        {
            progress(layer_event(d, "Mounted from", b.size(), b.size()));
            return Ok(());
        }
    }
    let path = store.blobs().blob_path(d);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Cause::Store(io_at(&path)(e)))?;
    let chunk = opts.upload_chunk.unwrap_or(1 << 20).max(1);
    let total = b.size();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stream = futures_util::stream::try_unfold(file, move |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; chunk];
        let mut n = 0;
        while n < chunk {
            let k = f
                .read(&mut buf[n..])
                .await
                .map_err(OciDistributionError::IoError)?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), f)))
    });
    let counted = {
        let sent = sent.clone();
        stream.inspect_ok(move |c| {
            sent.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
        })
    };
    progress(layer_event(d, "Pushing", 0, total));
    remote
        .client
        .push_blob_stream(&remote.reference, counted, &ds, Some(total))
        .await
        .map_err(|e| classify(&remote.host, e))?;
    progress(layer_event(
        d,
        "Pushed",
        sent.load(std::sync::atomic::Ordering::Relaxed),
        total,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http_others_need_listing() {
        let o = RegistryOptions::default();
        assert!(is_insecure("localhost:5000", &o));
        assert!(is_insecure("127.0.0.1:5000", &o));
        assert!(!is_insecure("registry.example.com", &o));
        assert!(!is_insecure("10.0.0.1:5000", &o));
        let o = RegistryOptions {
            insecure: vec!["10.0.0.1:5000".into()],
            ..Default::default()
        };
        assert!(is_insecure("10.0.0.1:5000", &o));
    }

    #[test]
    fn content_is_checked_for_size_then_digest() {
        let d = Digest::of(b"abc");
        assert!(check(b"abc", &d, 3).is_ok());
        assert!(matches!(
            check(b"ab", &d, 3),
            Err(Cause::Truncated { got: 2, .. })
        ));
        assert!(matches!(check(b"abd", &d, 3), Err(Cause::Verification(_))));
    }
}
