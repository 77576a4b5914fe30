use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_catalog::{Role, VersionRecord};
use ferry_content::{PackageName, decode_manifest_delta};
use ferry_net::api::{PublishResponse, VersionInfo};
use serde::Deserialize;

use super::{ApiError, Caller};
use crate::HubState;

/// Query of `POST /v1/publish`.
#[derive(Debug, Deserialize)]
pub(super) struct PublishQuery {
    /// With a zstd body: the published target it was compressed against.
    base: Option<String>,
}

/// `POST /v1/publish`: makes a version visible once all its chunks are on the
/// hub. The body is the manifest JSON, or zstd-compressed, optionally against
/// a published manifest (`?base=TARGET`).
pub(super) async fn publish(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Query(query): Query<PublishQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PublishResponse>, ApiError> {
    caller.require(&[Role::Publisher], "publishing")?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let manifest = if content_type.starts_with(b"application/zstd") {
        let base = match &query.base {
            Some(base) => state.catalog.manifest_by_target(base)?.ok_or_else(|| {
                ApiError::conflict(format!(
                    "delta base {base} is not published on this hub; send the full manifest"
                ))
            })?,
            None => Vec::new(),
        };
        decode_manifest_delta(&base, &body).map_err(|e| ApiError::bad_request(e.to_string()))?
    } else if content_type.starts_with(b"application/json") && query.base.is_none() {
        body.to_vec()
    } else {
        return Err(ApiError::bad_request(
            "send the manifest as application/json, or zstd-compressed as application/zstd \
             (optionally as a delta of a published version's manifest with ?base=TARGET)",
        ));
    };
    let response = crate::publish::publish(&state, manifest, &caller.0.id).await?;
    Ok(Json(response))
}

/// Query of `GET /v1/packages`.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    name: Option<String>,
    req: Option<String>,
}

/// `GET /v1/packages`: published versions, optionally of one package and
/// matching a semver requirement, newest first.
pub(super) async fn list(
    State(state): State<Arc<HubState>>,
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
    let versions = state.catalog.list_versions(name.as_ref())?;
    Ok(Json(
        versions
            .into_iter()
            .filter(|v| req.as_ref().is_none_or(|r| r.matches(&v.version)))
            .map(info)
            .collect(),
    ))
}

fn info(v: VersionRecord) -> VersionInfo {
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
    }
}

/// `DELETE /v1/packages/{name}/{version}`: withdraws a version. Its content
/// is removed by the next garbage collection if nothing else uses it.
pub(super) async fn unpublish(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Publisher], "withdrawing a version")?;
    let name = PackageName::new(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let version = semver::Version::parse(&version)
        .map_err(|e| ApiError::bad_request(format!("invalid version {version:?}: {e}")))?;
    let _guard = state.metadata_lock.lock().await;
    if !state.catalog.delete_version(&name, &version)? {
        return Err(ApiError::not_found(format!(
            "{name} {version} is not published"
        )));
    }
    state.resign().await?;
    tracing::info!(%name, %version, by = %caller.0.id, "withdrawn");
    Ok(StatusCode::NO_CONTENT.into_response())
}
