use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use ferry_net::api::{MAX_MISSING_QUERY, MAX_PACK_BODY, MissingChunksResponse, PackResponse, Role};
use ferry_serve::blocking;

/// Largest zstd window a compressed pack may ask for (8 MiB); packs are
/// compressed whole at level 3, which needs far less.
const PACK_WINDOW_LOG: u32 = 23;

/// Decodes a zstd-compressed pack, refusing more than a pack may hold or a
/// window larger than [`PACK_WINDOW_LOG`] before allocating it.
fn decompress_pack(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    use std::io::Read as _;
    let corrupt =
        |e: std::io::Error| ApiError::bad_request(format!("compressed pack is corrupt: {e}"));
    let mut decoder = zstd::stream::read::Decoder::new(body).map_err(corrupt)?;
    decoder.window_log_max(PACK_WINDOW_LOG).map_err(corrupt)?;
    let mut out = Vec::new();
    decoder
        .take(MAX_PACK_BODY as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > MAX_PACK_BODY {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ferry_net::api::ErrorCode::TooLarge,
            format!("a pack decompresses to more than {MAX_PACK_BODY} bytes"),
        ));
    }
    Ok(out)
}

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
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PackResponse>, ApiError> {
    caller.require(&[Role::Publisher], "uploading content")?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty chunk pack"));
    }
    let zstd = match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None | Some(b"identity") => false,
        Some(b"zstd") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "chunk packs are sent plain or as zstd, not {:?}",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let _staging = state.staging_lock.read().await;
    let store = state.store.clone();
    let catalog = state.catalog.clone();
    let staged = blocking(move || {
        let body = if zstd {
            decompress_pack(&body)?
        } else {
            body.to_vec()
        };
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
