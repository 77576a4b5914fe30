use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

use ferry_catalog::HubCatalog;
use ferry_content::{
    ABBREVIATED_PREFIX, Digest, ExpandError, Manifest, ManifestLimits, PackageName,
    decode_manifest_delta,
};
use ferry_net::api::{ErrorCode, PublishResponse, Role};
use ferry_serve::{background, blocking};
use serde::Deserialize;

use super::{ApiError, Caller};
use crate::HubState;

/// Query of `POST /v1/publish`.
#[derive(Debug, Deserialize)]
pub(super) struct PublishQuery {
    /// With a zstd body: the published target it was compressed against.
    base: Option<String>,
    /// The body is an abbreviated manifest whose full form has this
    /// SHA-256 (hex).
    abbreviated: Option<String>,
    /// Digest prefix length of the abbreviated manifest.
    prefix: Option<usize>,
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
        match query.abbreviated {
            Some(expected) => {
                let expected: Digest = expected.parse().map_err(|_| {
                    ApiError::bad_request(
                        "abbreviated= is the full manifest's SHA-256 as 64 hex digits",
                    )
                })?;
                let prefix_len = query.prefix.unwrap_or(ABBREVIATED_PREFIX);
                if !(1..=32).contains(&prefix_len) {
                    return Err(ApiError::bad_request(format!(
                        "prefix={prefix_len}: digest prefixes are 1-32 bytes"
                    )));
                }
                let catalog = state.catalog.clone();
                background(move || expand(&*catalog, &base, &body, prefix_len, &expected)).await?
            }
            // Decoding a large manifest is CPU work: off the async threads.
            None => {
                blocking(move || {
                    decode_manifest_delta(&base, &body, ferry_content::MAX_MANIFEST_BYTES)
                        .map_err(|e| ApiError::bad_request(e.to_string()))
                })
                .await?
            }
        }
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

/// Rebuilds the manifest a publisher abbreviated (as a zstd frame, or a
/// delta of `base`'s abbreviation) from the chunks this hub holds, and
/// checks it is the one the publisher meant.
fn expand(
    catalog: &dyn HubCatalog,
    base: &[u8],
    body: &[u8],
    prefix_len: usize,
    expected: &Digest,
) -> Result<Vec<u8>, ApiError> {
    let base = if base.is_empty() {
        Vec::new()
    } else {
        Manifest::from_slice(base, ManifestLimits::default())
            .map_err(|e| ApiError::internal(format!("a published manifest does not parse: {e}")))?
            .abbreviate(prefix_len)
    };
    let abbreviated = decode_manifest_delta(&base, body, ferry_content::MAX_MANIFEST_BYTES)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut resolved: HashMap<(Vec<u8>, u32), Digest> = HashMap::new();
    let resolve = |prefix: &[u8], len: u32| -> Result<Digest, ApiError> {
        if let Some(d) = resolved.get(&(prefix.to_vec(), len)) {
            return Ok(*d);
        }
        let found = catalog.chunks_with_prefix(prefix, len, 2)?;
        match found[..] {
            [one] => {
                resolved.insert((prefix.to_vec(), len), one);
                Ok(one)
            }
            [] => Err(ApiError::conflict(
                ErrorCode::ChunksMissing,
                format!(
                    "no chunk of {len} bytes on this hub starts with {}; upload it, then publish again",
                    hex(prefix)
                ),
            )),
            _ => Err(mismatch()),
        }
    };
    let manifest = Manifest::expand(&abbreviated, ManifestLimits::default(), resolve).map_err(
        |e| match e {
            ExpandError::Invalid(e) => ApiError::bad_request(e.to_string()),
            ExpandError::Resolve(e) => e,
        },
    )?;
    let bytes = manifest.to_vec();
    if Digest::of(&bytes) != *expected {
        return Err(mismatch());
    }
    Ok(bytes)
}

fn mismatch() -> ApiError {
    ApiError::conflict(
        ErrorCode::ManifestMismatch,
        "the abbreviated manifest names a digest prefix that more than one chunk on this hub \
         starts with; send the full manifest",
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
