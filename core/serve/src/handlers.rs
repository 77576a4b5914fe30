use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferry_content::{Digest, PackageName};
use ferry_net::api::{ErrorCode, MetadataVersion, VersionInfo};
use serde::Deserialize;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::manifests::CachedManifest;
use crate::{ApiError, Caller, ClientIdentity, Served, blocking};

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse()
        .map_err(|e: ferry_content::DigestParseError| ApiError::bad_request(e.to_string()))
}

/// Content-addressed: the bytes behind the URL never change.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

pub(crate) fn immutable(body: impl Into<Body>, content_type: &'static str) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, IMMUTABLE);
    response
}

/// Bytes read from disk per step when serving a file. Each read is a hop to
/// a blocking thread; measured with bench/serve (1 GiB, 1 and 10 clients,
/// GB/s): tower-http's default 64 KiB gave 1.32/1.31, 1 MiB 1.22/1.59,
/// 256 KiB 1.64/1.48, beside nginx's 1.55/1.69.
const FILE_READ_CHUNK: usize = 256 << 10;

async fn serve_file(path: std::path::PathBuf, req: Request) -> Result<Response, ApiError> {
    match ServeFile::new(path)
        .with_buf_chunk_size(FILE_READ_CHUNK)
        .oneshot(req)
        .await
    {
        Ok(response) => Ok(response.map(Body::new).into_response()),
        Err(e) => Err(ApiError::internal(format!("serving file failed: {e}"))),
    }
}

/// `GET /v1/whoami`: the caller as this server knows it.
pub(crate) async fn whoami(caller: Caller) -> Json<ClientIdentity> {
    Json(caller.0)
}

/// Query of `GET /v1/metadata/wait`.
#[derive(Debug, Deserialize)]
pub(crate) struct WaitQuery {
    /// The metadata version the caller has.
    #[serde(default)]
    after: u64,
    /// Longest wait, in seconds.
    #[serde(default = "default_wait")]
    wait: u64,
}

fn default_wait() -> u64 {
    MAX_METADATA_WAIT.as_secs()
}

/// Longest wait of a metadata long-poll: below clients' 30 s wait for an
/// answer's headers.
pub(crate) const MAX_METADATA_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// `GET /v1/metadata/wait?after=N[&wait=S]`: answers as soon as the served
/// metadata's version is above N, or after S seconds (at most 20) with the
/// version served then. How relays and agents learn of new metadata within
/// seconds without polling.
pub(crate) async fn metadata_wait(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Query(query): Query<WaitQuery>,
) -> Json<MetadataVersion> {
    let mut versions = served.source.metadata_version();
    let wait = std::time::Duration::from_secs(query.wait).min(MAX_METADATA_WAIT);
    let _ = tokio::time::timeout(wait, versions.wait_for(|v| *v > query.after)).await;
    let version = *versions.borrow();
    Json(MetadataVersion { version })
}

/// Query of `GET /v1/packages`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    name: Option<String>,
    req: Option<String>,
}

/// `GET /v1/packages`: served versions, optionally of one package and
/// matching a semver requirement, newest first.
pub(crate) async fn packages(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    let name = query
        .name
        .as_deref()
        .map(PackageName::new)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let req = query
        .req
        .as_deref()
        .map(semver::VersionReq::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("invalid version requirement: {e}")))?;
    let source = served.source.clone();
    let versions = blocking(move || source.versions(name.as_ref())).await?;
    Ok(Json(
        versions
            .into_iter()
            .filter(|v| {
                req.as_ref().is_none_or(|r| {
                    semver::Version::parse(&v.version).is_ok_and(|version| r.matches(&version))
                })
            })
            .collect(),
    ))
}

/// `GET /v1/objects/{id}`: a whole stored file; honours `Range` so
/// interrupted downloads resume.
pub(crate) async fn object(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = parse_digest(&id)?;
    let source = served.source.clone();
    let path = blocking(move || source.object(&id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("object {id} is not served here")))?;
    let mut response = serve_file(path, req).await?;
    if response.status().is_success() {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, IMMUTABLE);
    }
    Ok(response)
}

/// `GET /v1/chunks/{digest}`: one chunk.
pub(crate) async fn chunk(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&digest)?;
    let source = served.source.clone();
    let bytes = blocking(move || {
        let place = source
            .chunks(&[digest])?
            .pop()
            .flatten()
            .ok_or_else(|| ApiError::not_found(format!("chunk {digest} is not served here")))?;
        crate::batch::read_place(&place)
    })
    .await?;
    Ok(immutable(bytes, "application/octet-stream"))
}

/// Accepts only metadata file names a signing repository writes.
fn metadata_name_ok(name: &str) -> bool {
    if name == "timestamp.json" {
        return true;
    }
    let Some((version, role)) = name.split_once('.') else {
        return false;
    };
    !version.is_empty()
        && version.bytes().all(|b| b.is_ascii_digit())
        && matches!(role, "root.json" | "targets.json" | "snapshot.json")
}

/// `GET /v1/tuf/{file}`: signed metadata.
pub(crate) async fn metadata(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Path(file): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    if !metadata_name_ok(&file) {
        return Err(ApiError::not_found(format!(
            "{file:?} is not a TUF metadata file"
        )));
    }
    let path = served.source.metadata_dir().join(&file);
    let exists = {
        let path = path.clone();
        blocking(move || Ok(path.exists())).await?
    };
    if !exists {
        return Err(ApiError::not_found(format!("{file} does not exist")));
    }
    let mut response = serve_file(path, req).await?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Splits `SHA256.TARGET`.
fn split_file(file: &str) -> Result<(&str, &str), ApiError> {
    file.split_once('.')
        .filter(|(hash, _)| hash.len() == 64)
        .ok_or_else(|| ApiError::not_found("manifest file names are SHA256.TARGET"))
}

/// The manifest `SHA256.TARGET`, from the cache or the source. With
/// `pull`, a target the source lacks but can get (a relay's pull-through)
/// is got first.
async fn manifest_entry(
    served: &Arc<Served>,
    file: &str,
    pull: bool,
) -> Result<Arc<CachedManifest>, ApiError> {
    let (hash, target) = split_file(file)?;
    let not_served = || ApiError::not_found(format!("{target} is not served here"));
    if pull {
        served.source.note_use(target);
    }
    if !served.source.serves(target) {
        match served.source.pull(target).filter(|_| pull) {
            Some(pulling) => pulling.await?,
            None => return Err(not_served()),
        }
        if !served.source.serves(target) {
            return Err(not_served());
        }
    }
    if let Some(entry) = served.manifests.get(file) {
        return Ok(entry);
    }
    let source = served.source.clone();
    let name = target.to_owned();
    let bytes = blocking(move || source.manifest(&name))
        .await?
        .ok_or_else(not_served)?;
    // Only what was asked for is cached: a wrong hash must not flush the
    // cache with manifests nobody wants.
    if ferry_content::Digest::of(&bytes).to_hex() != hash {
        return Err(ApiError::not_found(format!(
            "{target} has no version with hash {hash} here"
        )));
    }
    Ok(served.manifests.insert(target, bytes))
}

/// Whether the request accepts a zstd-encoded answer (`zstd;q=0` does not).
pub(crate) fn accepts_zstd(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';').map(str::trim);
            parts.next() == Some("zstd")
                && parts.all(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_none_or(|q| q > 0.0)
                })
        })
}

/// `GET /v1/tuf/targets/{sha256}.{target}`: a manifest, by the consistent
/// snapshot name TUF clients ask for; zstd-compressed if the client accepts
/// it.
pub(crate) async fn tuf_target(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = manifest_entry(&served, &file, true).await?;
    if !accepts_zstd(&headers) {
        let mut response = immutable(entry.bytes.clone(), "application/json");
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        return Ok(response);
    }
    let compressed = blocking(move || Ok(entry.zstd())).await?;
    let mut response = immutable(compressed, "application/json");
    response
        .headers_mut()
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    Ok(response)
}

/// Query of `GET /v1/manifests/{file}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ManifestQuery {
    base: Option<String>,
}

/// `GET /v1/manifests/{sha256}.{target}[?base=...]`: a manifest as a zstd
/// frame, or as a zstd delta of a base manifest the client holds. A new
/// version's manifest shares almost all chunk records with the previous
/// one's, so the delta is about the size of what changed.
pub(crate) async fn manifest(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Path(file): Path<String>,
    Query(query): Query<ManifestQuery>,
) -> Result<Response, ApiError> {
    let entry = manifest_entry(&served, &file, true).await?;
    let Some(base) = query.base else {
        let compressed = blocking(move || Ok(entry.zstd())).await?;
        return Ok(immutable(compressed, "application/zstd"));
    };
    let delta = manifest_delta(served, file, entry, base, Form::Whole).await?;
    Ok(immutable(delta, "application/zstd"))
}

/// `GET /v1/outlines/{sha256}.{target}?base=...`: the manifest's outline
/// (files named by content id, without chunk lists) as a zstd delta of the
/// base manifest's outline. A client that will rebuild the changed files
/// from byte-level deltas chunks them itself, so the chunk records of a
/// shifted file never cross the link.
pub(crate) async fn outline(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Path(file): Path<String>,
    Query(query): Query<ManifestQuery>,
) -> Result<Response, ApiError> {
    let entry = manifest_entry(&served, &file, true).await?;
    let base = query.base.ok_or_else(|| {
        ApiError::bad_request("an outline is served as a delta: add ?base=SHA256.TARGET")
    })?;
    let delta = manifest_delta(served, file, entry, base, Form::Outline).await?;
    Ok(immutable(delta, "application/zstd"))
}

/// What a manifest delta is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Form {
    /// The manifest itself.
    Whole,
    /// Its outline.
    Outline,
}

/// The manifest `file` (or its outline) as a zstd delta of `base`'s, from
/// the cache or computed once.
async fn manifest_delta(
    served: Arc<Served>,
    file: String,
    entry: Arc<CachedManifest>,
    base: String,
    form: Form,
) -> Result<bytes::Bytes, ApiError> {
    if let Some(delta) = served.manifests.delta(&file, &base, form) {
        return Ok(delta);
    }
    let base_entry = match manifest_entry(&served, &base, false).await {
        Ok(e) => e,
        Err(e) if e.code() == ErrorCode::NotFound => {
            return Err(ApiError::conflict(
                ErrorCode::UnknownBase,
                format!("delta base {base} is not served here; ask for the whole manifest"),
            ));
        }
        Err(e) => return Err(e),
    };
    // Computed apart from this request, so a client that gives up (or the
    // route's time limit) does not waste the work: the cache gets it.
    let cache = served.clone();
    tokio::spawn(async move {
        let delta: bytes::Bytes = blocking(move || {
            let (base, new) = match form {
                Form::Whole => (base_entry.bytes.to_vec(), entry.bytes.to_vec()),
                Form::Outline => (outline_of(&base_entry)?, outline_of(&entry)?),
            };
            Ok(ferry_content::encode_manifest_delta(&base, &new).into())
        })
        .await?;
        cache
            .manifests
            .insert_delta(&file, &base, form, delta.clone());
        Ok::<_, ApiError>(delta)
    })
    .await
    .map_err(|e| ApiError::internal(format!("delta task failed: {e}")))?
}

/// A served manifest's outline. Blocks (parses the manifest).
fn outline_of(entry: &CachedManifest) -> Result<Vec<u8>, ApiError> {
    let manifest =
        ferry_content::Manifest::from_slice(&entry.bytes, ferry_content::ManifestLimits::default())
            .map_err(|e| ApiError::internal(format!("a served manifest does not parse: {e}")))?;
    Ok(manifest.outline())
}

/// `GET /v1/revocations`: the hub-signed list of revoked certificates.
pub(crate) async fn revocations(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let source = served.source.clone();
    let path = blocking(move || Ok(source.revocations().filter(|p| p.exists())))
        .await?
        .ok_or_else(|| ApiError::not_found("this server has no signed revocation list"))?;
    let mut response = serve_file(path, req).await?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
