//! The read side of Ferry's `/v1` API: signed metadata, manifests (whole or
//! as a delta of another), objects with HTTP `Range`, single chunks and
//! batches of chunks, and the package listing.
//!
//! Every serving role mounts the same [`router`]: the hub over its catalog
//! and store, a relay over what it has synced. What differs between them
//! lies behind two narrow traits: [`ContentSource`] (where the bytes and
//! metadata come from) and [`Authorizer`] (who may read). Everything the
//! traits do may block, so the handlers call them through
//! `spawn_blocking`; the async worker threads only move bytes.

mod auth;
mod background;
mod batch;
pub mod checkin;
mod deltas;
pub mod egress;
mod error;
mod handlers;
mod manifests;
pub mod reports;
mod source;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use ferry_content::Digest;
use ferry_net::api::routes;

pub use auth::{Authentication, Authorizer, Caller, ClientIdentity, Lookup};
pub use background::background;
pub use error::ApiError;
pub use source::{ChunkPlace, ContentSource, Pull, version_info};

/// Time a read route has to start its answer.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Chunk batch answers streaming at once (each holds a blocking thread).
const MAX_BATCHES: usize = 64;

/// Shared state of the read routes.
pub struct Served {
    source: Arc<dyn ContentSource>,
    manifests: manifests::ManifestCache,
    deltas: deltas::DeltaCache,
    batches: Arc<tokio::sync::Semaphore>,
}

/// The read routes over `source`. Mount the result of
/// [`Authentication::layer`] around it (or around the role's whole router)
/// so handlers know the caller; add [`not_found`] as the fallback of the
/// role's final router.
pub fn router(source: Arc<dyn ContentSource>) -> Router {
    let served = Arc::new(Served {
        source,
        manifests: manifests::ManifestCache::new(),
        deltas: deltas::DeltaCache::new(),
        batches: Arc::new(tokio::sync::Semaphore::new(MAX_BATCHES)),
    });
    Router::new()
        .route(routes::WHOAMI, get(handlers::whoami))
        .route(routes::PACKAGES, get(handlers::packages))
        .route(routes::OBJECT, get(handlers::object))
        .route(routes::CHUNK, get(handlers::chunk))
        .route(
            routes::CHUNKS_BATCH,
            post(batch::chunks_batch).layer(axum::extract::DefaultBodyLimit::max(
                ferry_net::api::MAX_BATCH_DIGESTS * 32,
            )),
        )
        .route(routes::TUF_METADATA, get(handlers::metadata))
        .route(routes::TUF_TARGET, get(handlers::tuf_target))
        .route(routes::MANIFEST, get(handlers::manifest))
        .route(routes::OUTLINE, get(handlers::outline))
        .route(routes::REVOCATIONS, get(handlers::revocations))
        .route(routes::METADATA_WAIT, get(handlers::metadata_wait))
        .route(routes::DELTA, get(deltas::delta))
        // A read answers quickly or not at all (its body may then stream as
        // long as the client reads); a wedged disk must not pile up requests.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            READ_TIMEOUT,
        ))
        .with_state(served)
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such API route; see `ferry --help`")
}

/// Parses a request body of raw 32-byte digests (a chunk batch, a
/// missing-chunks query): at least one, at most `max`.
pub fn digests_from_body(body: &[u8], max: usize, what: &str) -> Result<Vec<Digest>, ApiError> {
    if body.is_empty() || !body.len().is_multiple_of(32) {
        return Err(ApiError::bad_request(format!(
            "a {what} is a sequence of 32-byte digests; {} bytes is not",
            body.len()
        )));
    }
    if body.len() / 32 > max {
        return Err(ApiError::bad_request(format!(
            "at most {max} digests per {what}; split the request"
        )));
    }
    Ok(body
        .chunks_exact(32)
        .map(|d| Digest(d.try_into().expect("32 bytes")))
        .collect())
}

/// Runs blocking work (database, files) off the async worker threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))?
}
