//! Byte-level deltas on fetch: a changed file whose previous version is
//! held locally may cost far less as a zstd patch-from delta than as its
//! missing chunks (a source tar whose headers changed, an executable whose
//! addresses shifted). The source computes the delta; this side takes it
//! only if it is smaller than the missing chunks, and keeps the result
//! only if every chunk matches the signed manifest.

use std::collections::HashMap;

use ferry_content::{Digest, FileEntry, Manifest, ManifestLimits};
use ferry_net::HubClient;
use ferry_net::api::routes;

use crate::TransferError;
use crate::local::{LocalContent, store_err};

/// Files with fewer missing bytes than this fetch their chunks: a delta
/// costs a round trip and work at the source.
pub(crate) const DELTA_MIN_MISSING: u64 = 64 << 10;

/// For each regular file of `manifest`, the held file of the newest other
/// version of the same package that a delta would be made against: the
/// file at the same path, or, when both versions hold a single file, that
/// one (a renamed release archive). Blocks (reads local manifests).
pub(crate) fn delta_bases(local: &LocalContent, manifest: &Manifest) -> HashMap<Digest, Digest> {
    let mut bases = HashMap::new();
    let Some((_, bytes)) = local.newest_manifest_of(&manifest.name, &manifest.target_name()) else {
        return bases;
    };
    let Ok(base) = Manifest::from_slice(&bytes, ManifestLimits::default()) else {
        return bases;
    };
    let regular = |m: &Manifest| -> Vec<FileEntry> {
        m.files
            .iter()
            .filter(|f| f.symlink.is_none() && f.size > 0)
            .cloned()
            .collect()
    };
    let (old, new) = (regular(&base), regular(manifest));
    let by_path: HashMap<&str, &FileEntry> = old.iter().map(|f| (f.path.as_str(), f)).collect();
    for file in &new {
        let from = match by_path.get(file.path.as_str()) {
            Some(f) => Some(*f),
            None if old.len() == 1 && new.len() == 1 => old.first(),
            None => None,
        };
        if let Some(from) = from
            && from.content_id() != file.content_id()
            && local.store().has_object(&from.content_id())
        {
            bases.insert(file.content_id(), from.content_id());
        }
    }
    bases
}

/// Fetches `file` as a delta of the held file `base`, unless the delta is
/// larger than `missing` bytes (its missing chunks); stores it verified
/// chunk by chunk. Returns the delta's size, or `None` when the chunks are
/// the better deal or the source cannot make a delta.
pub(crate) async fn fetch_by_delta(
    client: &HubClient,
    local: &LocalContent,
    file: &FileEntry,
    base: Digest,
    missing: u64,
) -> Result<Option<u64>, TransferError> {
    let to = file.content_id();
    let url = client.url(&routes::delta(&to, &base))?;
    let delta = match client.get_bytes(&url, missing).await {
        Ok(delta) => delta,
        // Larger than the missing chunks, or refused (a source without
        // deltas, or one that lacks the base): take the chunks.
        Err(e @ (ferry_net::NetError::TooLarge { .. } | ferry_net::NetError::Status { .. })) => {
            tracing::debug!(file = %file.path.as_str(), "no delta: {e}");
            return Ok(None);
        }
        // A source that stalls or drops the connection is down for the
        // chunks too: the caller moves on instead of waiting again.
        Err(e) => return Err(e.into()),
    };
    let (local, file) = (local.clone(), file.clone());
    let size = delta.len() as u64;
    tokio::task::spawn_blocking(move || {
        let base_path = local.store().object_path(&base).map_err(store_err)?;
        let base_bytes = std::fs::read(&base_path).map_err(|e| TransferError::io(&base_path, e))?;
        let rebuilt =
            ferry_content::decode_file_delta(&base_bytes, &delta, file.size).map_err(|e| {
                TransferError::Trust(ferry_trust::TrustError::Tampered(format!(
                    "delta of {} from the source: {e}",
                    file.path.as_str()
                )))
            })?;
        let mut offset = 0usize;
        let mut slices = HashMap::new();
        for c in &file.chunks {
            let end = offset + c.len as usize;
            let piece = rebuilt.get(offset..end).ok_or_else(|| {
                TransferError::Trust(ferry_trust::TrustError::Tampered(format!(
                    "delta of {} rebuilds a file shorter than the signed one",
                    file.path.as_str()
                )))
            })?;
            slices.insert(c.digest, piece);
            offset = end;
        }
        // `assemble` checks every chunk against its signed digest.
        local
            .store()
            .assemble(&to, &file.chunks, |c| {
                slices
                    .get(&c.digest)
                    .map(|s| s.to_vec())
                    .ok_or(ferry_store::StoreError::Missing(c.digest))
            })
            .map_err(|e| match e {
                ferry_store::StoreError::DigestMismatch { .. } => {
                    TransferError::Trust(ferry_trust::TrustError::Tampered(format!(
                        "delta of {} does not rebuild the signed file",
                        file.path.as_str()
                    )))
                }
                other => store_err(other),
            })?;
        Ok::<_, TransferError>(())
    })
    .await
    .map_err(|e| TransferError::Refused(format!("delta task failed: {e}")))??;
    Ok(Some(size))
}
