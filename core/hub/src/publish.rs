//! Making a package version visible: validate its manifest, assemble every
//! file from staged and already-stored chunks (each verified), commit the
//! version with its chunk index in one transaction, and re-sign metadata.

use std::collections::HashSet;

use ferry_catalog::{ChunkSource, NewObject, NewVersion};
use ferry_content::{Digest, Manifest, ManifestLimits};
use ferry_net::api::{ErrorCode, PublishResponse};
use ferry_store::StoreError;

use crate::HubState;
use crate::api::ApiError;
use ferry_serve::{background, blocking};

/// Publishes `manifest` for `publisher`. The caller has checked the role.
pub(crate) async fn publish(
    state: &HubState,
    manifest_bytes: Vec<u8>,
    publisher: &str,
) -> Result<PublishResponse, ApiError> {
    let (manifest, manifest_bytes) = background(move || {
        let manifest = Manifest::from_slice(&manifest_bytes, ManifestLimits::default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok((manifest, manifest_bytes))
    })
    .await?;
    let metadata_guard = state.metadata_lock.lock().await;
    let staging_guard = state.staging_lock.read().await;

    // Every chunk must be staged or stored before anything is written.
    let catalog = state.catalog.clone();
    let files = manifest.files.clone();
    let (name, version) = (manifest.name.clone(), manifest.version.clone());
    background(move || {
        if catalog.version_exists(&name, &version)? {
            return Err(ApiError::conflict(
                ErrorCode::AlreadyPublished,
                format!(
                    "{name} {version} is already published; versions are immutable, publish a new version instead"
                ),
            ));
        }
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        for file in &files {
            if file.symlink.is_some() || catalog.object_known(&file.content_id())? {
                continue;
            }
            for c in &file.chunks {
                if seen.insert(c.digest) && catalog.chunk_source(&c.digest)?.is_none() {
                    missing.push(c.digest);
                }
            }
        }
        if let Some(first) = missing.first() {
            return Err(ApiError::conflict(
                ErrorCode::ChunksMissing,
                format!(
                    "{} chunk(s) of {name} {version} are not on the hub (first: {first}); upload them, then publish again",
                    missing.len()
                ),
            ));
        }
        Ok(())
    })
    .await?;

    let store = state.store.clone();
    let catalog = state.catalog.clone();
    let files = manifest.files.clone();
    let objects = background(move || -> Result<Vec<NewObject>, ApiError> {
        let mut objects = Vec::new();
        let mut done = HashSet::new();
        for file in files.iter().filter(|f| f.symlink.is_none()) {
            let id = file.content_id();
            if !done.insert(id) {
                continue;
            }
            let size = store.assemble(&id, &file.chunks, |c| {
                match catalog.chunk_source(&c.digest) {
                    Ok(Some(ChunkSource::Staged { pack, offset, len })) => {
                        store.read_staged(&pack, offset, len, &c.digest)
                    }
                    Ok(Some(ChunkSource::Stored(at))) => {
                        store.read_range(&at.object, at.offset, at.len as u64)
                    }
                    Ok(None) => Err(StoreError::Missing(c.digest)),
                    Err(e) => Err(StoreError::Io {
                        path: "catalog".into(),
                        source: std::io::Error::other(e.to_string()),
                    }),
                }
            })?;
            let object = NewObject::new(id, &file.chunks);
            debug_assert_eq!(object.size, size);
            objects.push(object);
        }
        Ok(objects)
    })
    .await?;

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
    // The chunks now live inside objects; their staged copies are spare. A
    // crash between the two leaves staged rows that expire by age.
    let used: Vec<Digest> = manifest
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().map(|c| c.digest))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let catalog = state.catalog.clone();
    let record = background(move || {
        catalog.commit_version(&record)?;
        catalog.unstage(&used)?;
        Ok(record)
    })
    .await?;
    drop(staging_guard);
    let metadata_version = match state.resign().await {
        Ok(v) => v,
        Err(e) => {
            // Unsigned, the version must not be listed either: withdraw it so
            // the publisher can simply try again.
            let catalog = state.catalog.clone();
            let (name, version) = (manifest.name.clone(), manifest.version.clone());
            if let Err(undo) = blocking(move || Ok(catalog.delete_version(&name, &version)?)).await
            {
                // Still unlisted (listings show only signed versions); the
                // refresh loop signs it once signing works again.
                return Err(ApiError::internal(format!(
                    "signing metadata for {} {} failed ({e}), and withdrawing it failed too ({undo}); \
                     the hub signs it at its next refresh",
                    manifest.name, manifest.version
                )));
            }
            return Err(ApiError::internal(format!(
                "signing metadata for {} {} failed, nothing was published: {e}",
                manifest.name, manifest.version
            )));
        }
    };
    drop(metadata_guard);
    if let Err(e) = crate::gc::remove_dead_packs(state).await {
        tracing::warn!("could not remove used upload packs (the next collection will): {e}");
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
        warnings: state.expiry_warnings(),
    })
}
