//! Ferry's content model: what a package is, how its files are split into
//! content-defined chunks, and the manifest that names every byte.
//!
//! Everything here is pure computation over bytes and paths, so every role
//! (hub, relay, agent) and the publishing CLI agree on it exactly.

mod abbreviated;
mod chunking;
mod digest;
mod error;
mod file_delta;
mod gzip_delta;
mod manifest;
mod manifest_delta;
mod name;
mod outline;
mod pack;
mod path;
mod scan;

pub use abbreviated::{ABBREVIATED_PREFIX, ExpandError};
pub use chunking::{ChunkParams, ChunkRef, chunk_bytes, chunk_file};
pub use digest::{Digest, DigestParseError};
pub use error::ContentError;
pub use file_delta::{MAX_DELTA_FILE, decode_file_delta, encode_file_delta};
pub use manifest::{
    FileEntry, InstallStep, MAX_FILES, MAX_MANIFEST_BYTES, Manifest, ManifestLimits, target_name,
};
pub use manifest_delta::{decode_manifest_delta, encode_manifest_delta};
pub use name::PackageName;
pub use outline::Outline;
pub use pack::{PackRecord, pack_push, pack_record_header, pack_records};
pub use path::RelPath;
pub use scan::{ChunkSource, ScannedPackage, scan_directory};
