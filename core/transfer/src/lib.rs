//! Moving content between this machine and a hub or mirror, with every byte
//! checked: TUF metadata through [`TufTransport`], manifests through
//! [`fetch_manifest`], files through [`download_package`], and publishing
//! through [`upload`].
//!
//! A mirror is untrusted: everything it serves is checked against metadata
//! that chains up to the root pinned at enrollment.

mod download;
mod error;
mod metadata;
pub mod upload;

pub use download::{DownloadReport, download_package};
pub use error::TransferError;
pub use metadata::{TufTransport, fetch_manifest, load_repository, resolve_version};
