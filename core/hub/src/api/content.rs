use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferry_catalog::Role;
use ferry_content::Digest;
use ferry_net::api::{MAX_MISSING_QUERY, MissingChunksResponse, PackResponse};
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use super::{ApiError, Caller};
use crate::HubState;

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse()
        .map_err(|e: ferry_content::DigestParseError| ApiError::bad_request(e.to_string()))
}

/// `POST /v1/chunks/missing`: which of the queried chunks the hub has
/// neither published nor staged.
pub(super) async fn missing_chunks(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<MissingChunksResponse>, ApiError> {
    caller.require(&[Role::Publisher], "uploading content")?;
    if !body.len().is_multiple_of(32) {
        return Err(ApiError::bad_request(format!(
            "a missing-chunks query is a sequence of 32-byte digests; {} bytes is not a multiple of 32",
            body.len()
        )));
    }
    let digests: Vec<Digest> = body
        .chunks_exact(32)
        .map(|d| Digest(d.try_into().expect("32 bytes")))
        .collect();
    if digests.len() > MAX_MISSING_QUERY {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_MISSING_QUERY} digests per query"
        )));
    }
    let catalog = state.catalog.clone();
    let missing = tokio::task::spawn_blocking(move || catalog.missing_chunks(&digests))
        .await
        .map_err(|e| ApiError::internal(format!("chunk query task failed: {e}")))??;
    Ok(Json(MissingChunksResponse { missing }))
}

/// `POST /v1/chunks`: verifies every chunk of a pack and stages it for a
/// later publish. A pack with one bad record is refused whole.
pub(super) async fn upload_pack(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<PackResponse>, ApiError> {
    caller.require(&[Role::Publisher], "uploading content")?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty chunk pack"));
    }
    let _staging = state.staging_lock.read().await;
    let store = state.store.clone();
    let staged = tokio::task::spawn_blocking(move || {
        store.stage_pack(&body, ferry_content::ChunkParams::MAX_CHUNK)
    })
    .await
    .map_err(|e| ApiError::internal(format!("chunk write task failed: {e}")))??;
    state
        .catalog
        .stage_chunks(&staged.id, &staged.chunks, chrono::Utc::now().timestamp())?;
    Ok(Json(PackResponse {
        chunks: staged.chunks.len(),
        bytes: staged.chunks.iter().map(|c| c.2 as u64).sum(),
    }))
}

/// `GET /v1/chunks/{digest}`: one published chunk.
pub(super) async fn get_chunk(
    State(state): State<Arc<HubState>>,
    _caller: Caller,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&digest)?;
    let at = state.catalog.chunk_location(&digest)?.ok_or_else(|| {
        ApiError::not_found(format!("chunk {digest} is not published on this hub"))
    })?;
    let store = state.store.clone();
    let bytes =
        tokio::task::spawn_blocking(move || store.read_range(&at.object, at.offset, at.len as u64))
            .await
            .map_err(|e| ApiError::internal(format!("chunk read task failed: {e}")))??;
    Ok(immutable(Body::from(bytes)))
}

fn immutable(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // Content-addressed: the bytes behind this URL never change.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

async fn serve_file(path: std::path::PathBuf, req: Request) -> Result<Response, ApiError> {
    match ServeFile::new(path).oneshot(req).await {
        Ok(response) => Ok(response.map(Body::new).into_response()),
        Err(e) => Err(ApiError::internal(format!("serving file failed: {e}"))),
    }
}

/// `GET /v1/objects/{id}`: a whole stored file; honours `Range` so
/// interrupted downloads resume.
pub(super) async fn get_object(
    State(state): State<Arc<HubState>>,
    _caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = parse_digest(&id)?;
    if !state.catalog.object_known(&id)? {
        return Err(ApiError::not_found(format!(
            "object {id} is not published on this hub"
        )));
    }
    let path = state.store.object_path(&id)?;
    let mut response = serve_file(path, req).await?;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}

/// Accepts only metadata file names the repository writes.
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
pub(super) async fn get_metadata(
    State(state): State<Arc<HubState>>,
    _caller: Caller,
    Path(file): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    if !metadata_name_ok(&file) {
        return Err(ApiError::not_found(format!(
            "{file:?} is not a TUF metadata file"
        )));
    }
    let path = state.tuf.metadata_dir().join(&file);
    if !path.exists() {
        return Err(ApiError::not_found(format!("{file} does not exist")));
    }
    let mut response = serve_file(path, req).await?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `GET /v1/tuf/targets/{sha256}.{target}`: a manifest, by the consistent
/// snapshot name TUF clients ask for.
pub(super) async fn get_target(
    State(state): State<Arc<HubState>>,
    _caller: Caller,
    Path(file): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let (hash, target) = file
        .split_once('.')
        .ok_or_else(|| ApiError::not_found("target file names are SHA256.NAME"))?;
    let manifest = state
        .catalog
        .manifest_by_target(target)?
        .ok_or_else(|| ApiError::not_found(format!("{target} is not published")))?;
    if Digest::of(&manifest).to_hex() != hash {
        return Err(ApiError::not_found(format!(
            "{target} has no version with hash {hash}"
        )));
    }
    let accepts_zstd = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.trim().split(';').next() == Some("zstd"));
    if !accepts_zstd {
        return Ok(immutable(Body::from(manifest)));
    }
    // A manifest is mostly base64 chunk lists; compressed it costs about a
    // quarter less on the wire.
    let compressed =
        tokio::task::spawn_blocking(move || ferry_content::encode_manifest_delta(&[], &manifest))
            .await
            .map_err(|e| ApiError::internal(format!("compression task failed: {e}")))?;
    let mut response = immutable(Body::from(compressed));
    response
        .headers_mut()
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    Ok(response)
}
