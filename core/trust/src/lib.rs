//! Ferry's trust layer: The Update Framework (TUF) metadata through the
//! `tough` crate.
//!
//! The hub holds a [`SigningRepository`]: four role keys (root, targets,
//! snapshot, timestamp) and the signed metadata that lists every published
//! manifest as a TUF target. Every client holds a [`TrustedRepository`]
//! loaded from the root it pinned at enrollment, and accepts a manifest only
//! if its hash and length chain up to that root. Rollback, freeze,
//! mix-and-match and endless data are caught by tough's client workflow; the
//! errors are mapped to [`TrustError`] so operators see what happened.

mod client;
pub mod documents;
mod error;
mod keys;
mod signing;

pub use client::{TargetInfo, TrustedRepository};
pub use error::TrustError;
pub use keys::RoleKeys;
pub use signing::{
    Lifetimes, MetadataState, RefreshNeeds, SigningRepository, TargetEntry, latest_root_bytes,
};
pub use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
