//! berth's image store (work in progress; see the "Images" issue): Docker image
//! references, a content-addressed blob store that verifies digests as it writes, and
//! layer application with whiteouts that never writes outside its root.

pub mod digest;
pub mod layer;
pub mod reference;
pub mod store;
