//! Test images built from scratch: tar layers (files, links, whiteouts, opaque
//! directories, hostile entries), gzip and zstd compression, and OCI image layouts with
//! single images and multi-platform indexes, which `skopeo` then pushes to a registry.

use berth_image::media::{self, Descriptor, Platform};
use berth_image::Digest;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

/// One tar entry.
pub enum Entry<'a> {
    /// A directory.
    Dir(&'a str),
    /// A regular file with content and mode.
    File(&'a str, &'a [u8], u32),
    /// A symlink: path, target.
    Symlink(&'a str, &'a str),
    /// A hard link: path, target.
    Hardlink(&'a str, &'a str),
    /// A whiteout for a path (`dir/.wh.name`).
    Whiteout(&'a str),
    /// An opaque marker in a directory (`dir/.wh..wh..opq`).
    Opaque(&'a str),
    /// A raw header name written byte for byte (for hostile archives), with content.
    RawFile(&'a [u8], &'a [u8]),
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A tar archive of `entries`.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match *e {
            Entry::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, data, mode) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
                b.append_data(&mut h, p, data).unwrap();
            }
            Entry::Symlink(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                b.append_link(&mut h, p, t).unwrap();
            }
            Entry::Hardlink(p, t) => {
                let mut h = header(tar::EntryType::Link, 0, 0o644);
                b.append_link(&mut h, p, t).unwrap();
            }
            Entry::Whiteout(p) => {
                let path = Path::new(p);
                let wh = path.parent().unwrap_or(Path::new("")).join(format!(
                    ".wh.{}",
                    path.file_name().unwrap().to_string_lossy()
                ));
                let mut h = header(tar::EntryType::Regular, 0, 0o644);
                b.append_data(&mut h, wh, &[][..]).unwrap();
            }
            Entry::Opaque(d) => {
                let mut h = header(tar::EntryType::Regular, 0, 0o644);
                b.append_data(&mut h, Path::new(d).join(".wh..wh..opq"), &[][..])
                    .unwrap();
            }
            Entry::RawFile(name, data) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
                let raw = h.as_old_mut();
                raw.name = [0; 100];
                raw.name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A tar archive of a directory tree (symlinks kept as links).
pub fn tar_dir(dir: &Path) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir)?;
    b.into_inner()
}

/// gzip'd.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zstd'd.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// One layer: media type, blob, and the uncompressed tar (for the diff ID).
pub struct Layer {
    /// Media type.
    pub media_type: &'static str,
    /// The blob as stored.
    pub blob: Vec<u8>,
    /// The uncompressed tar.
    pub tar: Vec<u8>,
}

impl Layer {
    /// A gzip'd layer.
    pub fn gzip(tar: Vec<u8>) -> Layer {
        Layer {
            media_type: media::OCI_LAYER_GZIP,
            blob: gzip(&tar),
            tar,
        }
    }
    /// A zstd'd layer.
    pub fn zstd(tar: Vec<u8>) -> Layer {
        Layer {
            media_type: media::OCI_LAYER_ZSTD,
            blob: zstd(&tar),
            tar,
        }
    }
    /// An uncompressed layer.
    pub fn plain(tar: Vec<u8>) -> Layer {
        Layer {
            media_type: media::OCI_LAYER,
            blob: tar.clone(),
            tar,
        }
    }
}

/// An image to write into a layout.
pub struct TestImage {
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// Architecture.
    pub arch: &'static str,
    /// The config's `Cmd`.
    pub cmd: Vec<String>,
    /// The config's `Env`.
    pub env: Vec<String>,
}

impl TestImage {
    /// An amd64 image running `cmd`.
    pub fn new(layers: Vec<Layer>, cmd: &[&str]) -> TestImage {
        TestImage {
            layers,
            arch: "amd64",
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
        }
    }
}

/// What goes under one tag of a layout.
pub enum Node {
    /// One image.
    Image(TestImage),
    /// A multi-platform index.
    Index(Vec<TestImage>),
}

fn put(dir: &Path, data: &[u8]) -> io::Result<Digest> {
    let d = Digest::of(data);
    let p = dir.join("blobs/sha256").join(d.hex());
    std::fs::create_dir_all(p.parent().unwrap())?;
    std::fs::write(p, data)?;
    Ok(d)
}

fn write_image(dir: &Path, img: &TestImage) -> io::Result<Descriptor> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &img.layers {
        layers.push(media::descriptor(
            l.media_type,
            &put(dir, &l.blob)?,
            l.blob.len() as u64,
        ));
        diff_ids.push(Digest::of(&l.tar).to_string());
    }
    let config = serde_json::json!({
        "architecture": img.arch,
        "os": "linux",
        "created": "2026-11-27T00:00:00Z",
        "config": {"Cmd": img.cmd, "Env": img.env},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let cb = serde_json::to_vec(&config)?;
    let m = media::new_manifest(
        media::descriptor(media::OCI_CONFIG, &put(dir, &cb)?, cb.len() as u64),
        layers,
    );
    let mb = serde_json::to_vec(&m)?;
    let mut d = media::descriptor(media::OCI_MANIFEST, &put(dir, &mb)?, mb.len() as u64);
    let mut p = Platform::default();
    p.set_architecture(img.arch.into());
    p.set_os("linux".into());
    d.set_platform(Some(p));
    Ok(d)
}

/// Writes an OCI image layout at `dir` with one entry per tag; returns each entry's
/// digest (manifest or index).
pub fn write_layout(dir: &Path, entries: Vec<(&str, Node)>) -> io::Result<Vec<Digest>> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut top = Vec::new();
    let mut out = Vec::new();
    for (tag, node) in entries {
        let mut desc = match node {
            Node::Image(img) => {
                let mut d = write_image(dir, &img)?;
                d.set_platform(None);
                d
            }
            Node::Index(imgs) => {
                let manifests = imgs
                    .iter()
                    .map(|i| write_image(dir, i))
                    .collect::<io::Result<Vec<_>>>()?;
                let b = serde_json::to_vec(&media::new_index(manifests))?;
                media::descriptor(media::OCI_INDEX, &put(dir, &b)?, b.len() as u64)
            }
        };
        out.push(media::digest_of(&desc).map_err(io::Error::other)?);
        let mut a = HashMap::new();
        a.insert(
            "org.opencontainers.image.ref.name".to_owned(),
            tag.to_owned(),
        );
        desc.set_annotations(Some(a));
        top.push(desc);
    }
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&media::new_index(top))?,
    )?;
    Ok(out)
}
