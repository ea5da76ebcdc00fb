//! OCI and Docker schema2 documents: manifests, indexes (manifest lists), image configs,
//! their media types, and the platform choice from a multi-platform index.
//!
//! The documents are `oci-spec`'s image types (a Docker schema2 manifest has the OCI
//! shape, with Docker's media types as `MediaType::Other`); this module adds what berth
//! needs around them: telling a manifest from an index, the platform choice, and the
//! store's sha256 digests.

use crate::digest::{Digest, DigestError};
pub use oci_spec::image::{
    Arch, Config, Descriptor, Digest as OciDigest, History, ImageConfiguration, ImageIndex,
    ImageManifest, MediaType, Os, Platform, RootFs,
};
use serde::Deserialize;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema1 (refused).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip'd OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd'd OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// gzip'd Docker layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Uncompressed Docker layer (what `docker save` archives hold).
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The manifest types berth asks registries for.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];

/// Errors reading image documents.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Not valid JSON for the expected document.
    #[error("invalid {what}: {err}")]
    Invalid {
        /// Which document.
        what: &'static str,
        /// Why.
        err: serde_json::Error,
    },
    /// A document type berth does not read.
    #[error("unsupported manifest type {0:?} (berth reads OCI and Docker schema2 manifests and indexes)")]
    Unsupported(String),
    /// A layer type berth cannot unpack.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedLayer(String),
    /// A digest the store cannot hold (berth stores sha256 content).
    #[error(transparent)]
    Digest(DigestError),
}

/// An image config's run defaults (OCI's `config` object).
pub type ContainerConfig = Config;
/// An image config.
pub type ImageConfig = ImageConfiguration;
/// An image manifest (OCI or Docker schema2: the same shape).
pub type Manifest = ImageManifest;
/// An image index or Docker manifest list.
pub type Index = ImageIndex;

/// A descriptor of `size` bytes of `digest`, without platform, annotations or URLs.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(MediaType::from(media_type), size, OciDigest::from(digest))
}

/// The sha256 digest a descriptor names (berth's store holds sha256 content only).
pub fn digest_of(d: &Descriptor) -> Result<Digest, MediaError> {
    Digest::try_from(d.digest()).map_err(MediaError::Digest)
}

/// An OCI manifest of `config` and `layers` (bottom first).
pub fn new_manifest(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
    let mut m = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .config(config)
        .layers(layers)
        .build()
        // Every field without a default is set just above.
        .unwrap_or_else(|e| unreachable!("a manifest with every field set: {e}"));
    m.set_media_type(Some(MediaType::ImageManifest));
    m
}

/// An OCI index of `manifests`.
pub fn new_index(manifests: Vec<Descriptor>) -> Index {
    let mut i = Index::default();
    i.set_schema_version(2);
    i.set_media_type(Some(MediaType::ImageIndex));
    i.set_manifests(manifests);
    i
}

/// A manifest or an index.
#[derive(Debug, Clone)]
pub enum Document {
    /// An image manifest.
    Manifest(Box<Manifest>),
    /// An index.
    Index(Box<Index>),
}

impl Document {
    /// Parses a manifest or index, telling them apart by their `mediaType` field, else by
    /// the transport's content type, else by shape.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Document, MediaError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Peek {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde::de::IgnoredAny>,
        }
        let peek: Peek = serde_json::from_slice(bytes).map_err(|err| MediaError::Invalid {
            what: "manifest",
            err,
        })?;
        let mt = peek
            .media_type
            .clone()
            .or_else(|| content_type.map(str::to_owned));
        if peek.schema_version == Some(1) || mt.as_deref() == Some(DOCKER_SCHEMA1) {
            return Err(MediaError::Unsupported(DOCKER_SCHEMA1.into()));
        }
        let is_index = match mt.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
            Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
            Some(other) if peek.media_type.is_some() => {
                return Err(MediaError::Unsupported(other.into()))
            }
            _ => peek.manifests.is_some(),
        };
        let doc = if is_index {
            serde_json::from_slice(bytes)
                .map(|i| Document::Index(Box::new(i)))
                .map_err(|err| MediaError::Invalid {
                    what: "image index",
                    err,
                })?
        } else {
            serde_json::from_slice(bytes)
                .map(|m| Document::Manifest(Box::new(m)))
                .map_err(|err| MediaError::Invalid {
                    what: "image manifest",
                    err,
                })?
        };
        // Every digest it names must be one the store can hold.
        let named: Vec<&Descriptor> = match &doc {
            Document::Manifest(m) => std::iter::once(m.config()).chain(m.layers()).collect(),
            Document::Index(i) => i.manifests().iter().collect(),
        };
        for d in named {
            digest_of(d)?;
        }
        Ok(doc)
    }
}

/// The linux/amd64 entry of an index, as Docker picks it.
pub fn for_platform(index: &Index) -> Option<&Descriptor> {
    index.manifests().iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    })
}

/// The platforms an index lists, for error messages.
pub fn platforms(index: &Index) -> Vec<String> {
    index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| format!("{}/{}", p.os(), p.architecture()))
        .collect()
}

/// The platform a config names, when it is not one berth runs (linux/amd64; a config
/// that names none is taken as runnable).
pub fn foreign_platform(config: &ImageConfig) -> Option<String> {
    let os_ok = matches!(config.os(), Os::Linux) || config.os().to_string().is_empty();
    let arch_ok = matches!(config.architecture(), Arch::Amd64)
        || config.architecture().to_string().is_empty();
    (!os_ok || !arch_ok).then(|| format!("{}/{}", config.os(), config.architecture()))
}

/// The config's layer digests (`rootfs.diff_ids`), bottom first.
pub fn diff_ids(config: &ImageConfig) -> Result<Vec<Digest>, MediaError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse().map_err(MediaError::Digest))
        .collect()
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression a layer media type declares.
pub fn layer_compression(media_type: &MediaType) -> Result<Compression, MediaError> {
    let base = media_type.to_string().replace(".nondistributable", "");
    match base.as_str() {
        OCI_LAYER | DOCKER_LAYER => Ok(Compression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Ok(Compression::Gzip),
        OCI_LAYER_ZSTD => Ok(Compression::Zstd),
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        _ => Err(MediaError::UnsupportedLayer(media_type.to_string())),
    }
}

/// Parses an image config blob. `architecture` and `os` are required by the OCI spec but
/// missing from some configs in the wild; they read as empty (see [`foreign_platform`]).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, MediaError> {
    let invalid = |err| MediaError::Invalid {
        what: "image config",
        err,
    };
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    if let Some(o) = v.as_object_mut() {
        for k in ["architecture", "os"] {
            o.entry(k)
                .or_insert_with(|| serde_json::Value::String(String::new()));
        }
    }
    serde_json::from_value(v).map_err(invalid)
}

/// A document as berth writes it: JSON with its object keys sorted, so that the same
/// content always has the same bytes and digest (`oci-spec` keeps labels, ports and
/// annotations in hash maps).
pub fn to_json<T: serde::Serialize>(doc: &T) -> Vec<u8> {
    serde_json::to_value(doc)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default()
}

/// A new linux/amd64 image config, as `import` and `commit` write them.
pub fn new_config(
    created: &str,
    config: ContainerConfig,
    diff_ids: &[Digest],
    history: Vec<History>,
) -> ImageConfig {
    let mut c = ImageConfig::default();
    c.set_architecture(Arch::Amd64);
    c.set_os(Os::Linux);
    c.set_created(Some(created.to_owned()));
    c.set_config(Some(config));
    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(diff_ids.iter().map(Digest::to_string).collect());
    c.set_rootfs(rootfs);
    c.set_history(Some(history));
    c
}

/// A history entry.
pub fn history(created: &str, created_by: &str, comment: Option<&str>) -> History {
    let mut h = History::default();
    h.set_created(Some(created.to_owned()));
    h.set_created_by(Some(created_by.to_owned()));
    h.set_comment(comment.map(str::to_owned));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn manifests_and_indexes_are_told_apart() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D}","size":2}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{D}","size":3}}]}}"#
        );
        assert!(
            matches!(Document::parse(m.as_bytes(), None).unwrap(), Document::Manifest(m) if m.layers().len() == 1)
        );
        // No mediaType field: the transport's content type decides, then the shape.
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":9,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let Document::Index(idx) = Document::parse(i.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(for_platform(&idx).unwrap().size(), 9);
        assert_eq!(platforms(&idx), ["linux/arm64", "linux/amd64"]);
    }

    #[test]
    fn schema1_and_unknown_types_are_refused() {
        let e = Document::parse(br#"{"schemaVersion":1,"name":"x"}"#, None).unwrap_err();
        assert!(e.to_string().contains("unsupported manifest type"), "{e}");
        let e =
            Document::parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None).unwrap_err();
        assert!(e.to_string().contains("text/plain"), "{e}");
        assert!(Document::parse(b"not json", None).is_err());
        // A digest the store cannot hold is refused when the document is read.
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{sha512}","size":2}},"layers":[]}}"#
        );
        let e = Document::parse(m.as_bytes(), None).unwrap_err();
        assert!(e.to_string().contains("sha512"), "{e}");
    }

    #[test]
    fn configs_without_a_platform_read_and_documents_serialise_sorted() {
        let c = parse_config(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
        assert_eq!(foreign_platform(&c), None, "no platform named: runnable");
        let mut cfg = ContainerConfig::default();
        cfg.set_labels(Some(
            [("b", "2"), ("a", "1"), ("c", "3")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        let j = String::from_utf8(to_json(&cfg)).unwrap();
        assert_eq!(j, r#"{"Labels":{"a":"1","b":"2","c":"3"}}"#);
    }

    #[test]
    fn layer_compression_by_media_type() {
        assert_eq!(
            layer_compression(&DOCKER_LAYER_GZIP.into()).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            layer_compression(&OCI_LAYER_ZSTD.into()).unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            layer_compression(&OCI_LAYER.into()).unwrap(),
            Compression::None
        );
        assert_eq!(
            layer_compression(
                &"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into()
            )
            .unwrap(),
            Compression::Gzip
        );
        assert!(layer_compression(&"application/x-foo".into()).is_err());
    }
}
