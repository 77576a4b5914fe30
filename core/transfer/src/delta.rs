//! Byte-level deltas on fetch: a changed file whose previous version is
//! held locally may cost far less as a zstd patch-from delta than as its
//! missing chunks (a source tar whose headers changed, an executable whose
//! addresses shifted). The source computes the delta; this side takes it
//! only if it is smaller than the missing chunks, and keeps the result
//! only if every chunk matches the signed manifest.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_content::{Digest, FileEntry, Manifest, ManifestLimits};
use ferry_net::HubClient;
use ferry_net::api::routes;

use crate::TransferError;
use crate::local::{LocalContent, store_err};

/// Files with fewer missing bytes than this fetch their chunks: a delta
/// costs a round trip and work at the source.
pub(crate) const DELTA_MIN_MISSING: u64 = 64 << 10;

/// For each regular file of `manifest`, the held file of the newest other
/// version of the same package that a delta would be made against, by
/// content id. Blocks (reads local manifests).
pub(crate) fn delta_bases(local: &LocalContent, manifest: &Manifest) -> HashMap<Digest, Digest> {
    let Some((_, bytes)) = local.newest_manifest_of(&manifest.name, &manifest.target_name()) else {
        return HashMap::new();
    };
    let Ok(base) = Manifest::from_slice(&bytes, ManifestLimits::default()) else {
        return HashMap::new();
    };
    let by_path = bases_by_path(&base, manifest, |id| local.store().has_object(id));
    manifest
        .files
        .iter()
        .filter_map(|f| Some((f.content_id(), *by_path.get(f.path.as_str())?)))
        .filter(|(to, from)| to != from)
        .collect()
}

/// For each regular file of `new` (by path), the file of `base` a delta
/// would be made against, if `held`: the file at the same path, or, when
/// both versions hold a single file, that one (a renamed release archive).
pub(crate) fn bases_by_path(
    base: &Manifest,
    new: &Manifest,
    held: impl Fn(&Digest) -> bool,
) -> HashMap<String, Digest> {
    let regular = |m: &Manifest| -> Vec<FileEntry> {
        m.files
            .iter()
            .filter(|f| f.symlink.is_none() && f.size > 0)
            .cloned()
            .collect()
    };
    let (old, new) = (regular(base), regular(new));
    let by_path: HashMap<&str, &FileEntry> = old.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut bases = HashMap::new();
    for file in &new {
        let from = match by_path.get(file.path.as_str()) {
            Some(f) => Some(*f),
            None if old.len() == 1 && new.len() == 1 => old.first(),
            None => None,
        };
        if let Some(from) = from
            && held(&from.content_id())
        {
            bases.insert(file.path.to_string(), from.content_id());
        }
    }
    bases
}

/// Gets the delta from the held file `from` to the file `to`, unless it is
/// larger than `limit`. `None` when the source cannot make it or it is too
/// large; a source that stalls or drops the connection is an error (it is
/// down for the chunks too, so the caller moves on instead of waiting
/// again).
pub(crate) async fn get_delta(
    client: &HubClient,
    to: &Digest,
    from: &Digest,
    limit: u64,
) -> Result<Option<Bytes>, TransferError> {
    let url = client.url(&routes::delta(to, from))?;
    match client.get_bytes(&url, limit).await {
        Ok(delta) => Ok(Some(delta)),
        Err(e @ (ferry_net::NetError::TooLarge { .. } | ferry_net::NetError::Status { .. })) => {
            tracing::debug!(%to, "no delta: {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Applies `delta` to the held file `from`, expecting `size` bytes.
/// Blocks.
pub(crate) fn rebuild(
    local: &LocalContent,
    from: &Digest,
    delta: &[u8],
    size: u64,
    path: &str,
) -> Result<Vec<u8>, TransferError> {
    let base_path = local.store().object_path(from).map_err(store_err)?;
    let base_bytes = std::fs::read(&base_path).map_err(|e| TransferError::io(&base_path, e))?;
    ferry_content::decode_file_delta(&base_bytes, delta, size).map_err(|e| {
        TransferError::Trust(ferry_trust::TrustError::Tampered(format!(
            "delta of {path} from the source: {e}"
        )))
    })
}

/// Stores the rebuilt bytes of `file`, each chunk checked against the
/// file's chunk list. Blocks.
pub(crate) fn store_rebuilt(
    local: &LocalContent,
    file: &FileEntry,
    rebuilt: &[u8],
) -> Result<(), TransferError> {
    let tampered = |what: &str| {
        TransferError::Trust(ferry_trust::TrustError::Tampered(format!(
            "delta of {} {what}",
            file.path.as_str()
        )))
    };
    let mut offset = 0usize;
    let mut slices = HashMap::new();
    for c in &file.chunks {
        let end = offset + c.len as usize;
        let piece = rebuilt
            .get(offset..end)
            .ok_or_else(|| tampered("rebuilds a file shorter than the signed one"))?;
        slices.insert(c.digest, piece);
        offset = end;
    }
    // `assemble` checks every chunk against its digest.
    local
        .store()
        .assemble(&file.content_id(), &file.chunks, |c| {
            slices
                .get(&c.digest)
                .map(|s| s.to_vec())
                .ok_or(ferry_store::StoreError::Missing(c.digest))
        })
        .map_err(|e| match e {
            ferry_store::StoreError::DigestMismatch { .. } => {
                tampered("does not rebuild the signed file")
            }
            other => store_err(other),
        })?;
    Ok(())
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
    let Some(delta) = get_delta(client, &file.content_id(), &base, missing).await? else {
        return Ok(None);
    };
    let (local, file) = (local.clone(), file.clone());
    let size = delta.len() as u64;
    tokio::task::spawn_blocking(move || {
        let rebuilt = rebuild(&local, &base, &delta, file.size, file.path.as_str())?;
        store_rebuilt(&local, &file, &rebuilt)
    })
    .await
    .map_err(|e| TransferError::Refused(format!("delta task failed: {e}")))??;
    Ok(Some(size))
}
