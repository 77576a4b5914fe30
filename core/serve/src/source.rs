use std::path::PathBuf;

use ferry_content::{Digest, PackageName};
use ferry_net::api::VersionInfo;

use crate::ApiError;

/// A catalog's version as the listing shows it.
pub fn version_info(v: ferry_catalog::VersionRecord) -> VersionInfo {
    VersionInfo {
        name: v.name,
        version: v.version.to_string(),
        target: v.target,
        total_size: v.total_size,
        files: v.file_count,
        published_at: chrono::DateTime::from_timestamp(v.published_at, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        published_by: v.published_by,
        manifest_sha256: v.manifest_sha256.to_string(),
    }
}

/// Where one chunk lies: a file on this server's disk and a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlace {
    /// The file holding it (a stored object).
    pub file: PathBuf,
    /// Offset inside the file.
    pub offset: u64,
    /// Length.
    pub len: u32,
}

/// Getting a target a source lacks now (see [`ContentSource::pull`]).
pub type Pull = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ApiError>> + Send>>;

/// Where served content comes from. Every method may block (database,
/// disk); the serving block calls them off the async worker threads.
///
/// What a source serves must be what the signed metadata describes: the
/// hub serves what it signed, a relay what it synced and verified. Clients
/// verify every byte anyway; a source that serves wrong bytes only wastes
/// their time.
pub trait ContentSource: Send + Sync + 'static {
    /// The directory of signed TUF metadata files (`N.root.json`,
    /// `N.targets.json`, `N.snapshot.json`, `timestamp.json`), served as
    /// they are.
    fn metadata_dir(&self) -> PathBuf;
    /// A manifest's bytes, by TUF target name (`NAME@VERSION.json`).
    fn manifest(&self, target: &str) -> Result<Option<Vec<u8>>, ApiError>;
    /// Whether `target` is served now. Must not block: it is asked on
    /// every manifest request, also when the manifest is cached, so a
    /// withdrawn version stops being served at once.
    fn serves(&self, target: &str) -> bool;
    /// The file holding a served object (a whole package file), by content
    /// id; `None` if it is not served.
    fn object(&self, id: &Digest) -> Result<Option<PathBuf>, ApiError>;
    /// Where each of `digests` lies; `None` for chunks not served.
    fn chunks(&self, digests: &[Digest]) -> Result<Vec<Option<ChunkPlace>>, ApiError>;
    /// The hub-signed revocation list (as the hub wrote it; receivers check
    /// its signature), if there is one.
    fn revocations(&self) -> Option<PathBuf>;
    /// Notes that `target`'s manifest was served (a relay's cache keeps
    /// what is asked for). Must not block. The default notes nothing.
    fn note_use(&self, _target: &str) {}
    /// Starts getting `target`, which is not served now, if this source
    /// can (a relay fetching it from its upstream: pull-through); the
    /// future ends when it is served or cannot be. Must not block. The
    /// default gets nothing.
    fn pull(&self, _target: &str) -> Option<Pull> {
        None
    }
    /// A version that grows as soon as new metadata or a new revocation
    /// list is served (long-polls wait on it); at least the served
    /// timestamp version. Must not block.
    fn metadata_version(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Served versions, optionally of one package, newest first per package.
    fn versions(&self, name: Option<&PackageName>) -> Result<Vec<VersionInfo>, ApiError>;
}
