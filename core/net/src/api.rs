//! Request and response bodies of the hub's `/v1` API.
//!
//! Routes (all under `/v1`; every route except `ca` and `enroll` needs a
//! client certificate):
//! - `GET  ca` - the hub CA certificate (PEM), for pinned first contact
//! - `POST enroll` - [`EnrollRequest`] → [`EnrollResponse`]
//! - `POST chunks/missing?prefix=N` - concatenated N-byte prefixes of
//!   SHA-256 digests (N is 1-32, 32 when absent; `application/octet-stream`,
//!   at most [`MAX_MISSING_QUERY`] prefixes) → one bit per prefix, set when
//!   no chunk the hub holds starts with it (see [`decode_missing_bitmap`])
//!   (publisher)
//! - `POST chunks` - a chunk pack ([`PACK_CONTENT_TYPE`], see
//!   [`ferry_content::pack_records`], at most [`MAX_PACK_BODY`] bytes) →
//!   [`PackResponse`]; the hub hashes every chunk itself; the pack is kept
//!   whole or refused whole (publisher)
//! - `GET  chunks/{digest}` - raw chunk bytes
//! - `POST chunks/batch` - concatenated 32-byte digests (at most
//!   [`MAX_BATCH_DIGESTS`]) → one streamed answer of records, each the
//!   digest, its length as u32 little-endian ([`BATCH_NOT_HELD`] for a chunk
//!   the server lacks) and the bytes; in any order, each requested chunk
//!   once; zstd-compressed (`Content-Encoding: zstd`) when the request
//!   accepts it
//! - `GET  manifests/{sha256}.{target}[?base={sha256}.{target}]` - a
//!   manifest as a zstd frame, or as a zstd delta of the base manifest
//!   (`unknown-base` if the server lacks it)
//! - `POST publish` - a manifest (JSON), or with `?base=TARGET` a zstd delta
//!   against that published manifest → [`PublishResponse`] (publisher). With
//!   `?abbreviated=SHA256&prefix=N` the body is a zstd frame (or with `base`,
//!   delta) of the abbreviated manifest (see
//!   [`ferry_content::Manifest::abbreviate`]); the hub rebuilds the manifest
//!   from the chunks it holds and refuses it with `manifest-mismatch` unless
//!   it hashes to SHA256
//! - `GET  packages[?name=N&req=R]` - [`VersionInfo`] list
//! - `GET  objects/{content id}` - a whole file, with HTTP `Range` support
//! - `GET  tuf/{file}` - signed TUF metadata
//! - `GET  tuf/targets/{sha256}.{target}` - a manifest, as a TUF target
//! - `GET  revocations` - the hub-signed revocation list
//! - `GET  deltas/{to}?from={from}` - file `to` (a content id) as a zstd
//!   patch-from delta of file `from`, which the client holds and verifies
//!   the result against its signed manifest (`unknown-base` if the server
//!   lacks `from`, `too-large` past 1 GiB)
//! - `GET  metadata/wait?after=N[&wait=S]` - [`MetadataVersion`] as soon as
//!   the served metadata's version passes N, or after S seconds (at most 20)
//! - `POST reports` - [`ReportBatch`] → [`ReportAck`] once every report is
//!   durable; report ids make resending harmless (agent: its own; relay:
//!   its agents')
//! - `POST tasks`, `GET tasks`, `GET tasks/{id}`, `DELETE tasks/{id}` -
//!   create, list, show and cancel tasks (publisher; the hub only)
//! - `POST groups`, `GET groups`, `POST groups/{name}` - create, list and
//!   change groups of agents (publisher; the hub only)
//! - `POST checkin?wait=S` - the signed tasks that may concern the caller,
//!   once the task list passes the caller's version (agent, relay)
//! - `POST relay/sync[?wait=true]` - a relay only, called by itself
//!   (`ferry relay sync`): sync now; with `wait`, the sync's record
//!
//! A relay serves the same routes to its agents (enrollment is passed on
//! to its upstream); publishing and withdrawal are the hub's alone.

use serde::{Deserialize, Serialize};

/// Route paths, relative to the server's base URL. Servers mount them with
/// axum's `{param}` syntax; clients build URLs with the helper functions.
pub mod routes {
    /// `GET`: the CA certificate (PEM).
    pub const CA: &str = "/v1/ca";
    /// `POST`: enrollment.
    pub const ENROLL: &str = "/v1/enroll";
    /// `GET`: the caller's own record.
    pub const WHOAMI: &str = "/v1/whoami";
    /// `POST`: which chunks the server lacks.
    pub const CHUNKS_MISSING: &str = "/v1/chunks/missing";
    /// `POST`: upload a chunk pack.
    pub const CHUNKS: &str = "/v1/chunks";
    /// `POST`: many chunks in one streamed answer.
    pub const CHUNKS_BATCH: &str = "/v1/chunks/batch";
    /// `GET`: one chunk.
    pub const CHUNK: &str = "/v1/chunks/{digest}";
    /// `POST`: publish a manifest.
    pub const PUBLISH: &str = "/v1/publish";
    /// `GET`: published versions.
    pub const PACKAGES: &str = "/v1/packages";
    /// `DELETE`: withdraw a version.
    pub const PACKAGE_VERSION: &str = "/v1/packages/{name}/{version}";
    /// `GET`: a whole file, with `Range`.
    pub const OBJECT: &str = "/v1/objects/{id}";
    /// `GET`: signed TUF metadata.
    pub const TUF_METADATA: &str = "/v1/tuf/{file}";
    /// `GET`: a manifest as a TUF target.
    pub const TUF_TARGET: &str = "/v1/tuf/targets/{file}";
    /// `GET`: a manifest (`SHA256.TARGET`, as TUF names consistent
    /// snapshots) as a zstd frame, optionally as a delta of another
    /// manifest the client holds (`?base=SHA256.TARGET`).
    pub const MANIFEST: &str = "/v1/manifests/{file}";
    /// `GET ?base=SHA256.TARGET`: a manifest's outline (its files without
    /// chunk lists, see `ferry_content::Outline`) as a zstd delta of the
    /// base manifest's outline.
    pub const OUTLINE: &str = "/v1/outlines/{file}";

    /// `GET`: the hub-signed revocation list (see `ferry_trust::documents`).
    pub const REVOCATIONS: &str = "/v1/revocations";
    /// `GET ?from={content id}`: a stored file as a zstd patch-from delta
    /// of an older one.
    pub const DELTA: &str = "/v1/deltas/{to}";
    /// `GET ?after=N[&wait=S]`: long-poll for metadata newer than version
    /// N ([`MetadataVersion`]).
    pub const METADATA_WAIT: &str = "/v1/metadata/wait";
    /// `POST`: agents' status reports ([`ReportBatch`] → [`ReportAck`]);
    /// agents send their own, relays forward their agents'.
    pub const REPORTS: &str = "/v1/reports";
    /// `POST`: create a task ([`crate::tasks::TaskSpec`] →
    /// [`crate::tasks::TaskCreated`]); `GET`: list them
    /// ([`crate::tasks::TaskSummary`] rows). Publisher role (the hub).
    pub const TASKS: &str = "/v1/tasks";
    /// `GET`: one task with each target's state
    /// ([`crate::tasks::TaskDetail`]); `DELETE`: cancel it (the hub).
    pub const TASK: &str = "/v1/tasks/{id}";
    /// `POST`: create a group ([`crate::tasks::GroupSpec`]); `GET`: list
    /// them ([`crate::tasks::GroupInfo`] rows). Publisher role (the hub).
    pub const GROUPS: &str = "/v1/groups";
    /// `POST`: change a group's selectors ([`crate::tasks::GroupChange`] →
    /// [`crate::tasks::GroupInfo`]).
    pub const GROUP: &str = "/v1/groups/{name}";
    /// `GET [?agent=ID]`: every scope's settings
    /// ([`crate::settings::SettingsView`]), with what agent ID resolves;
    /// `POST`: change one scope ([`crate::settings::SettingsChange`] →
    /// [`crate::settings::SettingsView`]). Publisher role (the hub).
    pub const SETTINGS: &str = "/v1/settings";
    /// `POST ?wait=S`: an agent's (or a relay's) check-in
    /// ([`crate::tasks::CheckinRequest`] → [`crate::tasks::CheckinResponse`]),
    /// held open until the task list passes the caller's version.
    pub const CHECKIN: &str = "/v1/checkin";
    /// `POST` (a relay, to itself): sync with the upstream now;
    /// `?wait=true` answers when that sync ended, with its record.
    pub const RELAY_SYNC: &str = "/v1/relay/sync";

    /// Relative URL of the TUF metadata directory.
    pub const TUF_METADATA_DIR: &str = "v1/tuf/";
    /// Relative URL of the TUF targets directory.
    pub const TUF_TARGETS_DIR: &str = "v1/tuf/targets/";

    /// Relative URL of one group.
    pub fn group(name: &str) -> String {
        format!("v1/groups/{name}")
    }

    /// Relative URL of one task.
    pub fn task(id: &str) -> String {
        format!("v1/tasks/{id}")
    }

    /// Relative URL of the package listing, optionally of one package and
    /// matching a requirement (both URL-encoded by the caller).
    pub fn packages(name: Option<&str>, req: Option<&str>) -> String {
        match (name, req) {
            (Some(n), Some(r)) => format!("v1/packages?name={n}&req={r}"),
            (Some(n), None) => format!("v1/packages?name={n}"),
            _ => "v1/packages".to_owned(),
        }
    }
    /// Relative URL of one published version (for withdrawal).
    pub fn package_version(name: &str, version: &str) -> String {
        format!("v1/packages/{name}/{version}")
    }
    /// Relative URL of a publish, optionally of a manifest delta.
    pub fn publish(base: Option<&str>) -> String {
        match base {
            Some(b) => format!("v1/publish?base={b}"),
            None => "v1/publish".to_owned(),
        }
    }
    /// Relative URL publishing an abbreviated manifest whose full form
    /// hashes to `sha256` (hex), with digest prefixes of `prefix_len` bytes,
    /// optionally as a delta of the published `base`.
    pub fn publish_abbreviated(base: Option<&str>, sha256: &str, prefix_len: usize) -> String {
        let mut url = format!("v1/publish?abbreviated={sha256}&prefix={prefix_len}");
        if let Some(b) = base {
            url.push_str("&base=");
            url.push_str(b);
        }
        url
    }
    /// Relative URL of a missing-chunks query with `prefix_len`-byte
    /// prefixes.
    pub fn missing_chunks(prefix_len: usize) -> String {
        format!("v1/chunks/missing?prefix={prefix_len}")
    }
    /// Relative URL of file `to` as a delta of file `from` (content ids).
    pub fn delta(to: &impl std::fmt::Display, from: &impl std::fmt::Display) -> String {
        format!("v1/deltas/{to}?from={from}")
    }
    /// Relative URL of a long-poll for metadata newer than `after`.
    pub fn metadata_wait(after: u64, wait_secs: u64) -> String {
        format!("v1/metadata/wait?after={after}&wait={wait_secs}")
    }
    /// Relative URL of a signed metadata file.
    pub fn tuf_metadata(file: &str) -> String {
        format!("v1/tuf/{file}")
    }

    /// Relative URL of one object.
    pub fn object(id: &impl std::fmt::Display) -> String {
        format!("v1/objects/{id}")
    }
    /// Relative URL of a manifest by its SHA-256 (hex) and target name,
    /// optionally as a delta of `base` (the same pair for a manifest the
    /// client holds).
    pub fn manifest(sha256: &str, target: &str, base: Option<(&str, &str)>) -> String {
        match base {
            Some((bsha, btarget)) => {
                format!("v1/manifests/{sha256}.{target}?base={bsha}.{btarget}")
            }
            None => format!("v1/manifests/{sha256}.{target}"),
        }
    }
    /// Relative URL of a manifest's outline as a delta of a base's.
    pub fn outline(sha256: &str, target: &str, base: (&str, &str)) -> String {
        format!("v1/outlines/{sha256}.{target}?base={}.{}", base.0, base.1)
    }
    /// Relative URL of a route without parameters (strips the leading `/`).
    pub fn relative(route: &str) -> &str {
        route.trim_start_matches('/')
    }
}

/// Largest request body the API accepts outside chunk and publish uploads.
pub const MAX_JSON_BODY: usize = 64 << 20;

/// Response header that repeats an error's [`ErrorCode`], so a client can
/// classify a failure without parsing the body.
pub const ERROR_CODE_HEADER: &str = "x-ferry-error";

/// Request header naming the package a content request is for, so a relay
/// can count the bytes it serves per package. Only a statistic: nothing
/// served depends on it.
pub const PACKAGE_HEADER: &str = "x-ferry-package";

/// Stable, machine-readable error codes. Clients match these, never the
/// message text, which is for people and may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The request is malformed; the message says how.
    BadRequest,
    /// No client certificate, or one this server does not know.
    Unauthenticated,
    /// The caller's role may not do this.
    Forbidden,
    /// The caller's certificate was revoked.
    Revoked,
    /// No such route, version, object, chunk or metadata file.
    NotFound,
    /// The version exists already; versions are immutable.
    AlreadyPublished,
    /// A publish names chunks the server does not hold.
    ChunksMissing,
    /// A delta names a base the server does not hold.
    UnknownBase,
    /// An abbreviated manifest resolves to another manifest than the one
    /// the publisher meant (a digest prefix matched more than one chunk).
    ManifestMismatch,
    /// The enrollment token is unknown, used or expired.
    TokenRefused,
    /// The request body or a requested range is too large.
    TooLarge,
    /// A byte range outside the object.
    RangeNotSatisfiable,
    /// Too many requests or connections from this client; retry later.
    Busy,
    /// The server's disk is full.
    StorageFull,
    /// A server-side failure; the server's log has the details.
    Internal,
    /// A relay could not reach its upstream for what was asked; retry
    /// later or use another source.
    UpstreamUnavailable,
    /// A code this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Revoked => "revoked",
            ErrorCode::NotFound => "not-found",
            ErrorCode::AlreadyPublished => "already-published",
            ErrorCode::ChunksMissing => "chunks-missing",
            ErrorCode::UnknownBase => "unknown-base",
            ErrorCode::ManifestMismatch => "manifest-mismatch",
            ErrorCode::TokenRefused => "token-refused",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::RangeNotSatisfiable => "range-not-satisfiable",
            ErrorCode::Busy => "busy",
            ErrorCode::StorageFull => "storage-full",
            ErrorCode::Internal => "internal",
            ErrorCode::UpstreamUnavailable => "upstream-unavailable",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// What `GET /v1/metadata/wait` answers: a version that grows whenever the
/// server serves new metadata or a new revocation list (at least its
/// timestamp metadata version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataVersion {
    /// The version.
    pub version: u64,
}

/// An error body: every non-2xx response carries one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
    /// The stable code, as [`ErrorCode::as_str`] spells it (a string, so a
    /// client keeps codes it does not know yet).
    #[serde(default)]
    pub code: Option<String>,
}

/// What an enrolled client is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Uploads and publishes packages.
    Publisher,
    /// A branch office's distribution server.
    Relay,
    /// An endpoint.
    Agent,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Relay => "relay",
            Role::Agent => "agent",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publisher" => Ok(Role::Publisher),
            "relay" => Ok(Role::Relay),
            "agent" => Ok(Role::Agent),
            other => Err(format!(
                "unknown role {other:?}: use publisher, relay or agent"
            )),
        }
    }
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
    /// For a serving role (a relay): the DNS names and IP addresses it is
    /// reached at, so its certificate also authenticates it as a TLS server.
    #[serde(default)]
    pub server_names: Vec<String>,
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

/// Most digests one `chunks/batch` request may name.
pub const MAX_BATCH_DIGESTS: usize = 16 << 10;

/// In a `chunks/batch` answer, the length field of a chunk the server does
/// not hold (no bytes follow).
pub const BATCH_NOT_HELD: u32 = u32::MAX;

/// Bytes before each chunk's data in a `chunks/batch` answer: its SHA-256
/// and its length (u32, little-endian).
pub const BATCH_RECORD_HEADER: usize = 36;

/// Most digest prefixes one `chunks/missing` query may carry.
pub const MAX_MISSING_QUERY: usize = 1 << 20;

/// Largest chunk pack one upload may carry.
pub const MAX_PACK_BODY: usize = 64 << 20;

/// Content type of a chunk pack.
pub const PACK_CONTENT_TYPE: &str = "application/x-ferry-pack";

/// Encodes the answer to a `chunks/missing` query: one bit per queried
/// prefix, least significant bit first, set when the chunk must be uploaded.
pub fn encode_missing_bitmap(missing: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; missing.len().div_ceil(8)];
    for (i, _) in missing.iter().enumerate().filter(|(_, m)| **m) {
        out[i / 8] |= 1 << (i % 8);
    }
    out
}

/// Decodes a `chunks/missing` answer for a query of `count` prefixes, or
/// `None` when its length does not match the query.
pub fn decode_missing_bitmap(bitmap: &[u8], count: usize) -> Option<Vec<bool>> {
    (bitmap.len() == count.div_ceil(8)).then(|| {
        (0..count)
            .map(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
            .collect()
    })
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
    /// What the hub's operator must act on (such as root metadata about to
    /// expire with its key offline); empty when all is well.
    #[serde(default)]
    pub warnings: Vec<String>,
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
    /// SHA-256 of its manifest (hex), so a client can tell whether a
    /// version holds exactly the content it has.
    #[serde(default)]
    pub manifest_sha256: String,
}

/// Most reports in one `POST /v1/reports`.
pub const MAX_REPORTS_PER_BATCH: usize = 1000;
/// Largest report body, as JSON text.
pub const MAX_REPORT_BODY: usize = 16 << 10;
/// Largest `POST /v1/reports` body.
pub const MAX_REPORTS_REQUEST: usize = MAX_REPORTS_PER_BATCH * (MAX_REPORT_BODY + 512);

/// A status report from an agent (a task's progress, an install's result),
/// passed from its relay up to the hub. Its `id`, chosen by the agent,
/// makes it idempotent: sent again (a lost answer, a relay restart, a
/// second path) it is applied once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unique per report: 1-64 characters of `A-Z a-z 0-9 - _`.
    pub id: String,
    /// The agent it is about (the sender itself, unless a relay forwards).
    pub agent: String,
    /// What kind of report: 1-32 characters of `a-z 0-9 -`.
    pub kind: String,
    /// When the agent made it, unix seconds.
    pub created_at: i64,
    /// Its content (at most [`MAX_REPORT_BODY`] bytes as JSON).
    pub body: serde_json::Value,
}

impl Report {
    /// Checks the fields' forms and sizes; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let word = |text: &str, max: usize, extra: &[char], what: &str| {
            let ok = !text.is_empty()
                && text.len() <= max
                && text
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "report {:?}: {what} {text:?} must be 1-{max} characters of a-z, 0-9{}",
                    self.id.chars().take(64).collect::<String>(),
                    extra.iter().map(|c| format!(", {c:?}")).collect::<String>()
                ))
            }
        };
        let upper: Vec<char> = ('A'..='Z').chain(['-', '_']).collect();
        word(&self.id, 64, &upper, "id")?;
        word(&self.agent, 64, &upper, "agent")?;
        word(&self.kind, 32, &['-'], "kind")?;
        let body = serde_json::to_vec(&self.body).map_err(|e| e.to_string())?;
        if body.len() > MAX_REPORT_BODY {
            return Err(format!(
                "report {}: body of {} bytes is over the {MAX_REPORT_BODY}-byte limit",
                self.id,
                body.len()
            ));
        }
        Ok(())
    }
}

/// Body of `POST /v1/reports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// At most [`MAX_REPORTS_PER_BATCH`] reports.
    pub reports: Vec<Report>,
}

/// Answer of `POST /v1/reports`: every report is durable on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// Reports in the batch.
    pub accepted: usize,
    /// Of those, reports the server had not seen before.
    pub new: usize,
}
