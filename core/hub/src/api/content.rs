use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use ferry_net::api::{MAX_MISSING_QUERY, MissingChunksResponse, PackResponse, Role};
use ferry_serve::blocking;

use super::{ApiError, Caller};
use crate::HubState;

/// `POST /v1/chunks/missing`: which of the queried chunks the hub has
/// neither published nor staged.
pub(super) async fn missing_chunks(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<MissingChunksResponse>, ApiError> {
    caller.require(&[Role::Publisher], "uploading content")?;
    let digests = ferry_serve::digests_from_body(&body, MAX_MISSING_QUERY, "missing-chunks query")?;
    let catalog = state.catalog.clone();
    let missing = blocking(move || Ok(catalog.missing_chunks(&digests)?)).await?;
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
    let catalog = state.catalog.clone();
    let staged = blocking(move || {
        let staged = store.stage_pack(&body, ferry_content::ChunkParams::MAX_CHUNK)?;
        catalog.stage_chunks(&staged.id, &staged.chunks, chrono::Utc::now().timestamp())?;
        Ok(staged)
    })
    .await?;
    Ok(Json(PackResponse {
        chunks: staged.chunks.len(),
        bytes: staged.chunks.iter().map(|c| c.2 as u64).sum(),
    }))
}
