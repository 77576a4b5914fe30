//! `GET /v1/deltas/{to}?from={from}`: a stored file as a byte-level delta
//! of an older file the client holds (zstd patch-from), for changes chunk
//! reuse cannot see. Each delta is computed once, on the low-priority
//! background threads, apart from the request that asked (a client that
//! gives up does not waste the work), shared by concurrent requests and
//! kept in memory (bounded). A delta made quickly for the first client is
//! then made again at a slower, better level for every later one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use ferry_content::Digest;
use ferry_net::api::ErrorCode;
use serde::Deserialize;
use tokio::sync::watch;

use crate::{ApiError, Caller, Served, background, blocking};

/// The zstd level of a file delta made while a client waits: near the best
/// size in about a second for 58 MiB.
const DELTA_LEVEL: i32 = 12;
/// The level it is made again at afterwards, for every later client: on
/// the Django source tar 210.8 KB (xdelta3 -9: 277.9 KB, level 12:
/// 321.5 KB) in 24 s instead of 1 s.
const REFINED_LEVEL: i32 = 19;
/// Largest file whose delta is refined (time grows with size).
const REFINE_MAX: usize = 256 << 20;
/// Deltas computed at once (each holds both files in memory).
const MAX_COMPUTING: usize = 2;
/// Most bytes of deltas kept; past it the cache starts again empty.
const CACHE_BYTES: usize = 512 << 20;

type Key = (Digest, Digest);
type Outcome = Option<Result<Bytes, (ErrorCode, String)>>;

/// Deltas computed and in flight.
pub(crate) struct DeltaCache {
    done: Mutex<(HashMap<Key, Bytes>, usize)>,
    computing: Mutex<HashMap<Key, watch::Receiver<Outcome>>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// One refinement at a time: it is slow, and only saves bytes.
    refining: Arc<tokio::sync::Semaphore>,
}

impl DeltaCache {
    pub fn new() -> Self {
        DeltaCache {
            done: Mutex::new((HashMap::new(), 0)),
            computing: Mutex::new(HashMap::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_COMPUTING)),
            refining: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    fn get(&self, key: &Key) -> Option<Bytes> {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(key)
            .cloned()
    }

    fn keep(&self, key: Key, delta: Bytes) {
        if delta.len() > CACHE_BYTES / 4 {
            return;
        }
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if done.1 + delta.len() > CACHE_BYTES {
            done.0.clear();
            done.1 = 0;
        }
        done.1 += delta.len();
        // A refined delta replaces the first one.
        if let Some(old) = done.0.insert(key, delta) {
            done.1 -= old.len();
        }
    }
}

/// Query of `GET /v1/deltas/{to}`.
#[derive(Debug, Deserialize)]
pub(crate) struct DeltaQuery {
    from: String,
}

pub(crate) async fn delta(
    State(served): State<Arc<Served>>,
    _caller: Caller,
    Path(to): Path<String>,
    Query(query): Query<DeltaQuery>,
) -> Result<Response, ApiError> {
    let parse = |text: &str| {
        text.parse::<Digest>()
            .map_err(|_| ApiError::bad_request(format!("{text:?} is not a content id")))
    };
    let (to, from) = (parse(&to)?, parse(&query.from)?);
    if to == from {
        return Err(ApiError::bad_request("a delta needs two different files"));
    }
    let key = (from, to);
    if let Some(delta) = served.deltas.get(&key) {
        return Ok(crate::handlers::immutable(delta, "application/zstd"));
    }
    let mut outcome = {
        let mut computing = served
            .deltas
            .computing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match computing.get(&key) {
            Some(rx) => rx.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                computing.insert(key, rx.clone());
                let served = served.clone();
                tokio::spawn(async move {
                    let result = compute(&served, from, to, DELTA_LEVEL).await;
                    if let Ok((delta, size)) = &result {
                        served.deltas.keep(key, delta.clone());
                        if *size <= REFINE_MAX {
                            tokio::spawn(refine(served.clone(), key, delta.len()));
                        }
                    }
                    let result = result.map(|(delta, _)| delta);
                    served
                        .deltas
                        .computing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    tx.send_replace(Some(result.map_err(|e| (e.code(), e.message().to_owned()))));
                });
                rx
            }
        }
    };
    let ended = outcome
        .wait_for(Option::is_some)
        .await
        .map_err(|_| ApiError::internal("a delta task stopped"))?
        .clone();
    match ended {
        Some(Ok(delta)) => Ok(crate::handlers::immutable(delta, "application/zstd")),
        Some(Err((code, message))) => Err(ApiError::new(status_of(code), code, message)),
        None => Err(ApiError::internal("a delta task ended without a result")),
    }
}

fn status_of(code: ErrorCode) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::UnknownBase => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Makes the delta `key` again at [`REFINED_LEVEL`], one at a time, and
/// keeps it for later clients if it is smaller than the first (`first`
/// bytes).
async fn refine(served: Arc<Served>, key: Key, first: usize) {
    let Ok(_permit) = served.deltas.refining.clone().acquire_owned().await else {
        return;
    };
    let (from, to) = key;
    match compute(&served, from, to, REFINED_LEVEL).await {
        Ok((delta, _)) if delta.len() < first => {
            tracing::info!(%from, %to, first, refined = delta.len(), "file delta refined");
            served.deltas.keep(key, delta);
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(%from, %to, "refining a delta failed: {e}"),
    }
}

/// Makes the delta from `from` to `to` at zstd `level`; returns it and
/// the size of `to`.
async fn compute(
    served: &Arc<Served>,
    from: Digest,
    to: Digest,
    level: i32,
) -> Result<(Bytes, usize), ApiError> {
    let source = served.source.clone();
    let (to_path, from_path) =
        blocking(move || Ok((source.object(&to)?, source.object(&from)?))).await?;
    let to_path =
        to_path.ok_or_else(|| ApiError::not_found(format!("object {to} is not served here")))?;
    let from_path = from_path.ok_or_else(|| {
        ApiError::conflict(
            ErrorCode::UnknownBase,
            format!("delta base {from} is not served here; fetch the missing chunks instead"),
        )
    })?;
    let _permit = served
        .deltas
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("the delta limiter closed"))?;
    background(move || {
        let read = |path: &std::path::Path| {
            let size = std::fs::metadata(path)
                .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?
                .len();
            if size > ferry_content::MAX_DELTA_FILE {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::TooLarge,
                    format!(
                        "files over {} bytes get no delta; fetch the missing chunks instead",
                        ferry_content::MAX_DELTA_FILE
                    ),
                ));
            }
            std::fs::read(path).map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))
        };
        let (base, new) = (read(&from_path)?, read(&to_path)?);
        let started = std::time::Instant::now();
        let delta = ferry_content::encode_file_delta(&base, &new, level)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        tracing::info!(
            %from,
            %to,
            level,
            size = new.len(),
            delta = delta.len(),
            millis = started.elapsed().as_millis() as u64,
            "file delta computed"
        );
        Ok((Bytes::from(delta), new.len()))
    })
    .await
}
