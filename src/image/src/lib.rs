//! berth's image store: Docker image references, a content-addressed blob store that
//! verifies digests as it writes, OCI and Docker manifests, layer application that never
//! writes outside its root, registry pull and push, save/load/import, root disks for
//! microVMs, and garbage collection. See docs/images.md.

pub mod archive;
pub mod digest;
pub mod disk;
pub mod images;
pub mod layer;
pub mod media;
pub mod reference;
pub mod registry;
pub mod store;

pub use digest::Digest;
pub use images::{ImageError, ImageRecord, ImageStore};
pub use reference::Reference;
