//! Moving content between this machine and a hub, relay or mirror, with
//! every byte checked: TUF metadata through [`TufTransport`], manifests
//! through [`fetch_manifest`] (as deltas of ones held locally), files
//! through [`fetch_objects`] (only the chunks no local file holds, in
//! batches, into [`LocalContent`]) and [`materialize`], and publishing
//! through [`upload`].
//!
//! A source is untrusted: everything it serves is checked against metadata
//! that chains up to the root pinned at enrollment.

pub mod chunks;
mod delta;
mod error;
mod fetch;
mod local;
mod metadata;
mod outline;
pub mod upload;

pub use error::TransferError;
pub use fetch::{FetchReport, ManifestFetch, fetch_manifest, fetch_objects, materialize};
pub use local::{LocalContent, Trimmed};
pub use metadata::{TufTransport, load_repository, load_repository_recorded, resolve_version};
