use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use ferry_net::api::{MAX_MISSING_QUERY, MAX_PACK_BODY, PackResponse, Role, encode_missing_bitmap};
use ferry_serve::background;

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

/// Query of `POST /v1/chunks/missing`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct MissingQuery {
    /// Bytes per digest prefix in the body, 1-32 (32 when absent).
    prefix: Option<usize>,
}

/// `POST /v1/chunks/missing`: for each digest prefix in the body, whether
/// the hub has neither published nor staged a chunk starting with it.
pub(super) async fn missing_chunks(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    Query(query): Query<MissingQuery>,
    body: Bytes,
) -> Result<Vec<u8>, ApiError> {
    caller.require(&[Role::Publisher], "uploading content")?;
    let prefix_len = query.prefix.unwrap_or(32);
    if !(1..=32).contains(&prefix_len) {
        return Err(ApiError::bad_request(format!(
            "prefix={prefix_len}: digest prefixes are 1-32 bytes"
        )));
    }
    if !body.len().is_multiple_of(prefix_len) {
        return Err(ApiError::bad_request(format!(
            "the missing-chunks query is {} bytes, not a whole number of {prefix_len}-byte digest prefixes",
            body.len()
        )));
    }
    if body.len() / prefix_len > MAX_MISSING_QUERY {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ferry_net::api::ErrorCode::TooLarge,
            format!("a missing-chunks query may name at most {MAX_MISSING_QUERY} chunks; split it"),
        ));
    }
    let catalog = state.catalog.clone();
    let missing = background(move || Ok(catalog.missing_chunks(&body, prefix_len)?)).await?;
    Ok(encode_missing_bitmap(&missing))
}

/// `POST /v1/chunks`: hashes every chunk of a pack and stages it for a
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
    let staged = background(move || {
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
