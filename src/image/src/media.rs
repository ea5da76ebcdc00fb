//! OCI and Docker schema2 documents: manifests, indexes (manifest lists), image configs,
//! their media types, and the platform choice from a multi-platform index.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// The platform berth runs.
pub const OS: &str = "linux";
/// The architecture berth runs.
pub const ARCH: &str = "amd64";

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
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Alternative URLs (foreign layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// A descriptor without platform, annotations or URLs.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: None,
            urls: None,
        }
    }
}

/// A platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// Architecture variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema2: the same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index or manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Entries.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A manifest or an index.
#[derive(Debug, Clone)]
pub enum Document {
    /// An image manifest.
    Manifest(Manifest),
    /// An index.
    Index(Index),
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
            manifests: Option<serde_json::Value>,
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
        if is_index {
            serde_json::from_slice(bytes)
                .map(Document::Index)
                .map_err(|err| MediaError::Invalid {
                    what: "image index",
                    err,
                })
        } else {
            serde_json::from_slice(bytes)
                .map(Document::Manifest)
                .map_err(|err| MediaError::Invalid {
                    what: "image manifest",
                    err,
                })
        }
    }
}

impl Index {
    /// The linux/amd64 entry, as Docker picks it.
    pub fn for_platform(&self) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == OS && p.architecture == ARCH)
        })
    }

    /// The platforms listed, for error messages.
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect()
    }
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
pub fn layer_compression(media_type: &str) -> Result<Compression, MediaError> {
    let base = media_type.replace(".nondistributable", "");
    match base.as_str() {
        OCI_LAYER | DOCKER_LAYER => Ok(Compression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Ok(Compression::Gzip),
        OCI_LAYER_ZSTD => Ok(Compression::Zstd),
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        _ => Err(MediaError::UnsupportedLayer(media_type.into())),
    }
}

/// An image config (the parts berth reads; the blob itself is kept byte for byte).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The container defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' uncompressed digests.
    pub rootfs: RootFs,
    /// History.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// `rootfs` of a config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Always "layers".
    #[serde(rename = "type")]
    pub kind: String,
    /// One per layer, bottom first.
    pub diff_ids: Vec<Digest>,
}

/// A history entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when it made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The run defaults an image carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Exposed ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    /// Parses a config blob.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, MediaError> {
        serde_json::from_slice(bytes).map_err(|err| MediaError::Invalid {
            what: "image config",
            err,
        })
    }
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
            matches!(Document::parse(m.as_bytes(), None).unwrap(), Document::Manifest(m) if m.layers.len() == 1)
        );
        // No mediaType field: the transport's content type decides, then the shape.
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":9,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let Document::Index(idx) = Document::parse(i.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(idx.for_platform().unwrap().size, 9);
        assert_eq!(idx.platforms(), ["linux/arm64", "linux/amd64"]);
    }

    #[test]
    fn schema1_and_unknown_types_are_refused() {
        let e = Document::parse(br#"{"schemaVersion":1,"name":"x"}"#, None).unwrap_err();
        assert!(e.to_string().contains("unsupported manifest type"), "{e}");
        let e =
            Document::parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None).unwrap_err();
        assert!(e.to_string().contains("text/plain"), "{e}");
        assert!(Document::parse(b"not json", None).is_err());
    }

    #[test]
    fn layer_compression_by_media_type() {
        assert_eq!(
            layer_compression(DOCKER_LAYER_GZIP).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            layer_compression(OCI_LAYER_ZSTD).unwrap(),
            Compression::Zstd
        );
        assert_eq!(layer_compression(OCI_LAYER).unwrap(), Compression::None);
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
                .unwrap(),
            Compression::Gzip
        );
        assert!(layer_compression("application/x-foo").is_err());
    }
}
