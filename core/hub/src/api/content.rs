use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferry_catalog::Role;
use ferry_content::Digest;
use ferry_net::api::{MissingChunksRequest, MissingChunksResponse};
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use super::{ApiError, Caller};
use crate::HubState;

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse().map_err(|e: ferry_content::DigestParseError| ApiError::bad_request(e.to_string()))
}

/// `POST /v1/chunks/missing`: which of these chunks the hub lacks, counting
/// both published and staged chunks.
pub(super) async fn missing_chunks(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Json(req): Json<MissingChunksRequest>,
) -> Result<Json<MissingChunksResponse>, ApiError> {
    caller.require(&[Role::Publisher], "uploading content")?;
    let unindexed = state.catalog.missing_chunks(&req.chunks)?;
    let missing = unindexed
        .into_iter()
        .filter(|d| !state.store.has_staged(d))
        .collect();
    Ok(Json(MissingChunksResponse { missing }))
}

/// `PUT /v1/chunks/{digest}`: stages one chunk after checking its hash.
pub(super) async fn upload_chunk(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Path(digest): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Publisher], "uploading content")?;
    let digest = parse_digest(&digest)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty chunk body"));
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.stage_chunk(&digest, &body))
        .await
        .map_err(|e| ApiError::internal(format!("chunk write task failed: {e}")))??;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/chunks/{digest}`: one published chunk.
pub(super) async fn get_chunk(
    State(state): State<Arc<HubState>>,
    _caller: Caller,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    let digest = parse_digest(&digest)?;
    let at = state
        .catalog
        .chunk_location(&digest)?
        .ok_or_else(|| ApiError::not_found(format!("chunk {digest} is not published on this hub")))?;
    let store = state.store.clone();
    let bytes = tokio::task::spawn_blocking(move || store.read_range(&at.object, at.offset, at.len as u64))
        .await
        .map_err(|e| ApiError::internal(format!("chunk read task failed: {e}")))??;
    Ok(immutable(Body::from(bytes)))
}

fn immutable(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
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
        return Err(ApiError::not_found(format!("object {id} is not published on this hub")));
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
        return Err(ApiError::not_found(format!("{file:?} is not a TUF metadata file")));
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
) -> Result<Response, ApiError> {
    let (hash, target) = file
        .split_once('.')
        .ok_or_else(|| ApiError::not_found("target file names are SHA256.NAME"))?;
    let manifest = state
        .catalog
        .manifest_by_target(target)?
        .ok_or_else(|| ApiError::not_found(format!("{target} is not published")))?;
    if Digest::of(&manifest).to_hex() != hash {
        return Err(ApiError::not_found(format!("{target} has no version with hash {hash}")));
    }
    Ok(immutable(Body::from(manifest)))
}
