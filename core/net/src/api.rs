//! Request and response bodies of the hub's `/v1` API.
//!
//! Routes (all under `/v1`; every route except `ca` and `enroll` needs a
//! client certificate):
//! - `GET  ca` - the hub CA certificate (PEM), for pinned first contact
//! - `POST enroll` - [`EnrollRequest`] → [`EnrollResponse`]
//! - `POST chunks/missing` - concatenated 32-byte SHA-256 digests
//!   (`application/octet-stream`, at most [`MAX_MISSING_QUERY`]) →
//!   [`MissingChunksResponse`] (publisher)
//! - `POST chunks` - a chunk pack ([`PACK_CONTENT_TYPE`], see
//!   [`ferry_content::pack_records`], at most [`MAX_PACK_BODY`] bytes) →
//!   [`PackResponse`]; the pack is kept whole or refused whole (publisher)
//! - `GET  chunks/{digest}` - raw chunk bytes
//! - `POST publish` - a manifest (JSON), or with `?base=TARGET` a zstd delta
//!   against that published manifest → [`PublishResponse`] (publisher)
//! - `GET  packages[?name=N&req=R]` - [`VersionInfo`] list
//! - `GET  objects/{content id}` - a whole file, with HTTP `Range` support
//! - `GET  tuf/{file}` - signed TUF metadata
//! - `GET  tuf/targets/{sha256}.{target}` - a manifest, as a TUF target

use serde::{Deserialize, Serialize};

/// Largest request body the API accepts outside chunk and publish uploads.
pub const MAX_JSON_BODY: usize = 64 << 20;

/// An error body: every non-2xx response carries one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
}

/// Redeems an enrollment token for a client certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The token's id.
    pub token_id: String,
    /// The token's secret, base64url.
    pub token_secret: String,
    /// A certificate signing request for the client's own key (PEM).
    pub csr_pem: String,
    /// A name the client suggests for itself (its hostname), for inventory.
    pub hostname: Option<String>,
}

/// What an enrolled client keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The id the hub gave the client.
    pub client_id: String,
    /// Its role.
    pub role: String,
    /// Its site, if any.
    pub site: Option<String>,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// The hub CA certificate (PEM).
    pub ca_pem: String,
    /// The hub's current TUF root metadata (JSON text).
    pub tuf_root: String,
}

/// Most digests one `chunks/missing` query may carry.
pub const MAX_MISSING_QUERY: usize = 1 << 20;

/// Largest chunk pack one upload may carry.
pub const MAX_PACK_BODY: usize = 64 << 20;

/// Content type of a chunk pack.
pub const PACK_CONTENT_TYPE: &str = "application/x-ferry-pack";

/// The chunks the hub lacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingChunksResponse {
    /// Positions, in the query, of the digests to upload.
    pub missing: Vec<usize>,
}

/// What the hub kept of an uploaded pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackResponse {
    /// Chunks verified and staged.
    pub chunks: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// The result of a publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishResponse {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// TUF target name of the manifest.
    pub target: String,
    /// Number of entries.
    pub files: u64,
    /// Sum of file sizes.
    pub total_size: u64,
    /// Version of the TUF metadata that lists it.
    pub metadata_version: u64,
}

/// A published version, as listed by `GET /v1/packages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// TUF target name of the manifest.
    pub target: String,
    /// Sum of file sizes.
    pub total_size: u64,
    /// Number of entries.
    pub files: u64,
    /// Publish time, RFC 3339.
    pub published_at: String,
    /// Client id of the publisher.
    pub published_by: String,
}
