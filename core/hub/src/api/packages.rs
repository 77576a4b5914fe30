use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_content::{PackageName, decode_manifest_delta};
use ferry_net::api::{ErrorCode, PublishResponse, Role};
use ferry_serve::blocking;
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
        let base = match query.base.clone() {
            Some(base) => {
                let catalog = state.catalog.clone();
                let name = base.clone();
                blocking(move || Ok(catalog.manifest_by_target(&name)?))
                    .await?
                    .ok_or_else(|| {
                ApiError::conflict(ErrorCode::UnknownBase, format!(
                    "delta base {base} is not published on this hub; send the full manifest"
                ))
            })?
            }
            None => Vec::new(),
        };
        // Decoding a large manifest is CPU work: off the async threads.
        blocking(move || {
            decode_manifest_delta(&base, &body, ferry_content::MAX_MANIFEST_BYTES)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .await?
    } else if content_type.starts_with(b"application/json") && query.base.is_none() {
        body.to_vec()
    } else {
        return Err(ApiError::bad_request(
            "send the manifest as application/json, or zstd-compressed as application/zstd \
             (optionally as a delta of a published version's manifest with ?base=TARGET)",
        ));
    };
    // Once the version is committed it must be signed whatever the client
    // does: run the publish as its own task, which a dropped request future
    // (a client that disconnects) does not cancel.
    let task_state = state.clone();
    let response =
        tokio::spawn(
            async move { crate::publish::publish(&task_state, manifest, &caller.0.id).await },
        )
        .await
        .map_err(|e| ApiError::internal(format!("publish task failed: {e}")))??;
    Ok(Json(response))
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
    // Like publish: once withdrawn from the catalog, the withdrawal is
    // signed even if the client goes away (a task of its own).
    tokio::spawn(async move {
        let _guard = state.metadata_lock.lock().await;
        let catalog = state.catalog.clone();
        let (n, v) = (name.clone(), version.clone());
        if !crate::state::blocking(move || catalog.delete_version(&n, &v)).await?? {
            return Err(ApiError::not_found(format!(
                "{name} {version} is not published"
            )));
        }
        state.resign().await?;
        tracing::info!(%name, %version, by = %caller.0.id, "withdrawn");
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
    .map_err(|e| ApiError::internal(format!("withdraw task failed: {e}")))?
}
