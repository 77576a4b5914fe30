//! The hub's catalog: packages and versions, the chunk index that says where
//! each chunk lives in the content store, enrollment tokens and enrolled
//! clients. SQLite in WAL mode with `synchronous=FULL`: a publish or an
//! enrollment that was acknowledged survives a power loss.
//!
//! Roles talk to the catalog through [`HubCatalog`] so that another database
//! can replace SQLite without touching them.

mod cache;
mod reports;
mod schema;
mod sqlite;
mod tasks;
mod types;

pub use cache::{CacheIndex, Pin};
pub use reports::ReportStore;
pub use sqlite::SqliteCatalog;
pub use tasks::{SettingsRecord, TaskRecord, TaskStore};
pub use types::*;

use ferry_content::{Digest, PackageName};

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The version is already published.
    #[error(
        "{name} {version} is already published; versions are immutable, publish a new version instead"
    )]
    DuplicateVersion {
        /// Package name.
        name: String,
        /// Version.
        version: String,
    },
    /// The token is unknown or its secret does not match.
    #[error(
        "enrollment token is not valid for this hub (mistyped, forged, or from another hub); create a new one with `ferry token create`"
    )]
    TokenInvalid,
    /// The token was redeemed before.
    #[error(
        "enrollment token was already used; tokens are one-time, create a new one with `ferry token create`"
    )]
    TokenUsed,
    /// The token's lifetime ran out.
    #[error(
        "enrollment token expired (at unix time {0}); create a new one with `ferry token create`"
    )]
    TokenExpired(i64),
    /// The database failed.
    #[error("catalog database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Applying the schema failed.
    #[error("catalog schema migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A query the catalog cannot answer as asked (a caller's bug).
    #[error("invalid catalog query: {0}")]
    Invalid(String),
    /// Stored data that cannot be read back.
    #[error("catalog holds corrupt data: {0}")]
    Corrupt(String),
}

/// The catalog, split by concern so each backend (SQLite now, PostgreSQL
/// later) and each role implements only what it keeps: the chunk index and
/// staging ([`ChunkIndex`]), published versions and the objects they use
/// ([`VersionCatalog`]), enrollment ([`Enrollment`]) and agents' reports
/// ([`ReportStore`], also a relay's outbox) and tasks ([`TaskStore`]).
///
/// Every method may block (disk, database); async callers run them through
/// `spawn_blocking`.
pub trait HubCatalog: ChunkIndex + VersionCatalog + Enrollment + ReportStore + TaskStore {}

impl<T: ChunkIndex + VersionCatalog + Enrollment + ReportStore + TaskStore> HubCatalog for T {}

/// Where chunks live: published chunks inside stored objects, and uploaded
/// chunks waiting in staged packs for a publish.
pub trait ChunkIndex: Send + Sync {
    /// For each digest prefix in `prefixes` (concatenated, `prefix_len`
    /// bytes each, 1-32): true when no chunk the hub has published or staged
    /// starts with it. With 32-byte prefixes this is an exact lookup.
    fn missing_chunks(&self, prefixes: &[u8], prefix_len: usize)
    -> Result<Vec<bool>, CatalogError>;
    /// Distinct chunks, published or staged, of length `len` whose digest
    /// starts with `prefix`: at most `limit` of them.
    fn chunks_with_prefix(
        &self,
        prefix: &[u8],
        len: u32,
        limit: usize,
    ) -> Result<Vec<Digest>, CatalogError>;
    /// Where a published chunk can be read: object, offset, length.
    fn chunk_location(&self, digest: &Digest) -> Result<Option<ChunkLocation>, CatalogError>;
    /// [`ChunkIndex::chunk_location`] for many chunks in one call.
    fn chunk_locations(
        &self,
        digests: &[Digest],
    ) -> Result<Vec<Option<ChunkLocation>>, CatalogError>;
    /// Where a published or staged chunk can be read.
    fn chunk_source(&self, digest: &Digest) -> Result<Option<ChunkSource>, CatalogError>;
    /// Records the chunks of an uploaded pack. Chunks already staged keep
    /// their earlier location.
    fn stage_chunks(
        &self,
        pack: &Digest,
        chunks: &[(Digest, u64, u32)],
        now: i64,
    ) -> Result<(), CatalogError>;
    /// Forgets staged chunks (a publish made them part of objects).
    fn unstage(&self, digests: &[Digest]) -> Result<(), CatalogError>;
    /// Forgets chunks staged before `before` (unix time); returns how many.
    fn expire_staged(&self, before: i64) -> Result<usize, CatalogError>;
    /// Packs that still hold at least one staged chunk.
    fn live_packs(&self) -> Result<Vec<Digest>, CatalogError>;
}

/// Published versions, their manifests, and the objects they reference.
pub trait VersionCatalog: Send + Sync {
    /// Whether `name@version` is published.
    fn version_exists(
        &self,
        name: &PackageName,
        version: &semver::Version,
    ) -> Result<bool, CatalogError>;
    /// Makes a version visible together with its objects and chunk index, in
    /// one transaction.
    fn commit_version(&self, version: &NewVersion) -> Result<(), CatalogError>;
    /// Removes a published version; returns whether it existed. Its objects
    /// stay until garbage collection finds them unreferenced.
    fn delete_version(
        &self,
        name: &PackageName,
        version: &semver::Version,
    ) -> Result<bool, CatalogError>;
    /// All versions, optionally of one package, newest first per package.
    fn list_versions(&self, name: Option<&PackageName>)
    -> Result<Vec<VersionRecord>, CatalogError>;
    /// A version's manifest bytes, by TUF target name.
    fn manifest_by_target(&self, target: &str) -> Result<Option<Vec<u8>>, CatalogError>;
    /// Every published manifest, as the signed metadata lists it.
    fn all_targets(&self) -> Result<Vec<TargetRecord>, CatalogError>;
    /// Objects no version references any more.
    fn unreferenced_objects(&self) -> Result<Vec<Digest>, CatalogError>;
    /// Forgets an object and its chunk index entries.
    fn delete_object(&self, id: &Digest) -> Result<(), CatalogError>;
    /// Whether an object is referenced by a published version.
    fn object_known(&self, id: &Digest) -> Result<bool, CatalogError>;
}

/// Enrollment tokens and enrolled clients.
pub trait Enrollment: Send + Sync {
    /// Stores a new enrollment token.
    fn insert_token(&self, token: &TokenRecord) -> Result<(), CatalogError>;
    /// Checks a token without redeeming it.
    fn peek_token(
        &self,
        token_id: &str,
        secret_sha256: &[u8; 32],
        now: i64,
    ) -> Result<TokenRecord, CatalogError>;
    /// Redeems a token and records the client it enrolls, atomically.
    fn redeem_token(
        &self,
        token_id: &str,
        secret_sha256: &[u8; 32],
        now: i64,
        client: &ClientRecord,
    ) -> Result<TokenRecord, CatalogError>;
    /// The client holding a certificate, by the certificate's SHA-256.
    fn client_by_cert(&self, cert_sha256: &[u8; 32]) -> Result<Option<ClientRecord>, CatalogError>;
    /// All enrolled clients.
    fn list_clients(&self) -> Result<Vec<ClientRecord>, CatalogError>;
    /// Revokes a client; returns whether it existed.
    fn revoke_client(&self, id: &str, now: i64) -> Result<bool, CatalogError>;
}
