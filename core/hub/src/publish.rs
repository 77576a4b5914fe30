//! Making a package version visible: validate its manifest, assemble every
//! file from staged and already-stored chunks (each verified), commit the
//! version with its chunk index in one transaction, and re-sign metadata.

use std::collections::HashSet;

use ferry_catalog::{NewObject, NewVersion};
use ferry_content::{Digest, Manifest, ManifestLimits};
use ferry_net::api::PublishResponse;
use ferry_store::StoreError;

use crate::HubState;
use crate::api::ApiError;

/// Publishes `manifest` for `publisher`. The caller has checked the role.
pub(crate) async fn publish(
    state: &HubState,
    manifest_bytes: Vec<u8>,
    publisher: &str,
) -> Result<PublishResponse, ApiError> {
    let manifest = Manifest::from_slice(&manifest_bytes, ManifestLimits::default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let _guard = state.publish_lock.lock().await;
    if state.catalog.version_exists(&manifest.name, &manifest.version)? {
        return Err(ApiError::conflict(format!(
            "{} {} is already published; versions are immutable, publish a new version instead",
            manifest.name, manifest.version
        )));
    }

    // Every chunk must be staged or indexed before anything is written.
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    for file in &manifest.files {
        if file.symlink.is_some() || state.catalog.object_known(&file.content_id())? {
            continue;
        }
        for c in &file.chunks {
            if seen.insert(c.digest)
                && !state.store.has_staged(&c.digest)
                && state.catalog.chunk_location(&c.digest)?.is_none()
            {
                missing.push(c.digest);
            }
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::conflict(format!(
            "{} chunk(s) of {} {} are not on the hub (first: {}); upload them, then publish again",
            missing.len(),
            manifest.name,
            manifest.version,
            missing[0]
        )));
    }

    let store = state.store.clone();
    let catalog = state.catalog.clone();
    let files = manifest.files.clone();
    let objects = tokio::task::spawn_blocking(move || -> Result<Vec<NewObject>, ApiError> {
        let mut objects = Vec::new();
        let mut done = HashSet::new();
        for file in files.iter().filter(|f| f.symlink.is_none()) {
            let id = file.content_id();
            if !done.insert(id) {
                continue;
            }
            let size = store.assemble(&id, &file.chunks, |c| {
                if store.has_staged(&c.digest) {
                    return store.read_staged(&c.digest);
                }
                match catalog.chunk_location(&c.digest) {
                    Ok(Some(at)) => store.read_range(&at.object, at.offset, at.len as u64),
                    Ok(None) => Err(StoreError::Missing(c.digest)),
                    Err(e) => Err(StoreError::Io {
                        path: "catalog".into(),
                        source: std::io::Error::other(e.to_string()),
                    }),
                }
            })?;
            let mut offset = 0u64;
            let chunks = file
                .chunks
                .iter()
                .map(|c| {
                    let entry = (c.digest, offset, c.len);
                    offset += c.len as u64;
                    entry
                })
                .collect();
            objects.push(NewObject { id, size, chunks });
        }
        Ok(objects)
    })
    .await
    .map_err(|e| ApiError::internal(format!("assembly task failed: {e}")))??;

    let target = manifest.target_name();
    let record = NewVersion {
        name: manifest.name.to_string(),
        version: manifest.version.clone(),
        target: target.clone(),
        manifest: manifest_bytes,
        total_size: manifest.total_size(),
        file_count: manifest.files.len() as u64,
        published_at: chrono::Utc::now().timestamp(),
        published_by: publisher.to_owned(),
        objects,
    };
    state.catalog.commit_version(&record)?;
    let metadata_version = state.resign().await?;

    // The chunks now live inside objects; their staged copies are spare.
    let used: HashSet<Digest> = manifest
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().map(|c| c.digest))
        .collect();
    for d in used {
        if let Err(e) = state.store.remove_staged(&d) {
            tracing::warn!("could not remove staged chunk {d}: {e}");
        }
    }
    tracing::info!(
        name = %manifest.name,
        version = %manifest.version,
        publisher,
        metadata_version,
        "published"
    );
    Ok(PublishResponse {
        name: manifest.name.to_string(),
        version: manifest.version.to_string(),
        target,
        files: record.file_count,
        total_size: record.total_size,
        metadata_version,
    })
}
