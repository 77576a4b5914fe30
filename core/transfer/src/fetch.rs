//! Fetching a package version into local content and out to a directory:
//! the manifest as a delta of one held locally, then only the chunks no
//! local file of any version or package already holds, in few batched
//! requests, every chunk verified before it is kept.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_content::{Digest, Manifest, ManifestLimits, PackageName};
use ferry_net::HubClient;
use ferry_net::api::{ErrorCode, routes};
use ferry_trust::TrustedRepository;

use crate::local::{LocalChunk, LocalContent, SpoolWriter, store_err};
use crate::{TransferError, chunks};

/// How a manifest reached this client.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ManifestFetch {
    /// Bytes received for it (0 if it was held already).
    pub bytes_received: u64,
    /// The manifest it came as a delta of, if any.
    pub delta_base: Option<String>,
    /// Whether it came as an outline, with its changed files rebuilt from
    /// byte-level deltas and chunked here (then these are in the store
    /// already, and the counts below say what that cost).
    pub outline: bool,
    /// Bytes of the file deltas received with the outline.
    pub bytes_delta: u64,
    /// Files rebuilt from them.
    pub files_by_delta: u64,
    /// Their total size.
    pub bytes_rebuilt: u64,
}

/// Gets the signed manifest of `name` `version`: from local content if held,
/// else from `client` as a zstd delta of the newest manifest of the same
/// package held locally (or whole). Its length and SHA-256 are checked
/// against the signed targets metadata before it is parsed or kept.
pub async fn fetch_manifest(
    repo: &TrustedRepository,
    client: &HubClient,
    local: &LocalContent,
    name: &PackageName,
    version: &semver::Version,
) -> Result<(Manifest, Vec<u8>, ManifestFetch), TransferError> {
    let target = ferry_content::target_name(name, version);
    let info = repo.target(&target).ok_or_else(|| {
        TransferError::Trust(ferry_trust::TrustError::UnknownTarget(target.clone()))
    })?;
    let mut report = ManifestFetch::default();
    // Local manifests are read (and the newest of the package found) off
    // the async threads.
    let (held, base) = {
        let (local, target, sha, name) = (
            local.clone(),
            target.clone(),
            info.sha256.clone(),
            name.clone(),
        );
        tokio::task::spawn_blocking(move || match local.manifest(&target, &sha) {
            Some(bytes) => (Some(bytes), None),
            None => (None, local.newest_manifest_of(&name, &target)),
        })
        .await
        .map_err(|e| TransferError::Refused(format!("reading local manifests failed: {e}")))?
    };
    let bytes = match held {
        Some(bytes) => bytes,
        None => {
            let base = base.map(|(t, b)| {
                let sha = Digest::of(&b).to_hex();
                (t, sha, b)
            });
            // A package of a few files: its changed files' chunk records
            // need not cross the link.
            if let Some((btarget, bsha, bbytes)) = &base {
                match crate::outline::fetch_by_outline(
                    client,
                    local,
                    &target,
                    &info,
                    (btarget, bsha, bbytes),
                )
                .await
                {
                    Ok(done) => {
                        report.bytes_received = done.outline_bytes;
                        report.delta_base = Some(btarget.clone());
                        report.outline = true;
                        report.bytes_delta = done.delta_bytes;
                        report.files_by_delta = done.files_by_delta;
                        report.bytes_rebuilt = done.rebuilt_bytes;
                        return keep_manifest(local, name, version, target, done.bytes, report)
                            .await;
                    }
                    Err(crate::outline::GiveUp::Unfit(why)) => {
                        tracing::debug!(%target, "taking the whole manifest: {why}");
                    }
                    Err(crate::outline::GiveUp::Suspect(why)) => {
                        tracing::warn!(%target, "{why}; taking the whole manifest");
                    }
                    Err(crate::outline::GiveUp::Failed(e)) => return Err(e),
                }
            }
            // zstd never grows data by more than a few bytes per block.
            let limit = info.length + info.length / 64 + 4096;
            let mut received = None;
            if let Some((btarget, bsha, bbytes)) = &base {
                let url = client.url(&routes::manifest(
                    &info.sha256,
                    &target,
                    Some((bsha, btarget)),
                ))?;
                match client.get_bytes(&url, limit).await {
                    Ok(delta) => {
                        report.delta_base = Some(btarget.clone());
                        received = Some((delta, bbytes.as_slice()));
                    }
                    // The source lacks the base, or answered that it
                    // could not make the delta: take the whole manifest.
                    // A source that stalls or drops the connection is not
                    // asked again.
                    Err(e)
                        if e.code() == Some(ErrorCode::UnknownBase.as_str())
                            || matches!(e, ferry_net::NetError::Status { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let (frame, base_bytes) = match received {
                Some(r) => r,
                None => {
                    let url = client.url(&routes::manifest(&info.sha256, &target, None))?;
                    (client.get_bytes(&url, limit).await?, &[][..])
                }
            };
            report.bytes_received = frame.len() as u64;
            let tampered = |detail: String| {
                TransferError::Trust(ferry_trust::TrustError::Tampered(format!(
                    "manifest {target} from {}: {detail}",
                    client.base()
                )))
            };
            let bytes = ferry_content::decode_manifest_delta(base_bytes, &frame, info.length)
                .map_err(|e| tampered(e.to_string()))?;
            if bytes.len() as u64 != info.length || Digest::of(&bytes).to_hex() != info.sha256 {
                return Err(tampered(
                    "it does not match the length and SHA-256 the hub signed".into(),
                ));
            }
            bytes
        }
    };
    keep_manifest(local, name, version, target, bytes, report).await
}

/// Parses a manifest whose bytes match the signed target, checks it is the
/// version asked for, and keeps it.
async fn keep_manifest(
    local: &LocalContent,
    name: &PackageName,
    version: &semver::Version,
    target: String,
    bytes: Vec<u8>,
    report: ManifestFetch,
) -> Result<(Manifest, Vec<u8>, ManifestFetch), TransferError> {
    let manifest = Manifest::from_slice(&bytes, ManifestLimits::default())?;
    if &manifest.name != name || &manifest.version != version {
        return Err(TransferError::Trust(ferry_trust::TrustError::Tampered(
            format!(
                "target {target} holds the manifest of {} {}",
                manifest.name, manifest.version
            ),
        )));
    }
    let (keep, kept) = (local.clone(), bytes.clone());
    tokio::task::spawn_blocking(move || keep.put_manifest(&target, &kept))
        .await
        .map_err(|e| TransferError::Refused(format!("keeping the manifest failed: {e}")))??;
    Ok((manifest, bytes, report))
}

/// What fetching a package did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FetchReport {
    /// Entries written to the output directory.
    pub files: u64,
    /// Chunk bytes received now (verified).
    pub bytes_downloaded: u64,
    /// Chunk bytes taken from local files of other versions or packages.
    pub bytes_reused: u64,
    /// Chunk bytes kept from an earlier, interrupted fetch.
    pub bytes_resumed: u64,
    /// Chunks received now.
    pub chunks_downloaded: u64,
    /// Chunk batch requests made.
    pub requests: u64,
    /// Bytes of byte-level deltas received (files rebuilt from an older
    /// version held locally; see `GET /v1/deltas`).
    pub bytes_delta: u64,
    /// Files rebuilt from deltas.
    pub files_by_delta: u64,
}

impl FetchReport {
    /// Counts the files rebuilt while fetching the manifest by outline
    /// (which [`fetch_objects`] then found stored) as rebuilt from deltas,
    /// not as reused.
    pub fn count_outline(&mut self, manifest: &ManifestFetch) {
        self.bytes_delta += manifest.bytes_delta;
        self.files_by_delta += manifest.files_by_delta;
        self.bytes_reused = self.bytes_reused.saturating_sub(manifest.bytes_rebuilt);
    }
}

/// Makes every file of `manifest` present in `local`'s store, fetching from
/// `client` only the chunks nothing local holds. `progress` is called with
/// the bytes of each chunk as it is verified (reused and resumed chunks
/// count too, up front). Chunks received before a failure stay in the spool
/// for the next attempt.
pub async fn fetch_objects(
    client: &HubClient,
    local: &LocalContent,
    manifest: &Manifest,
    mut progress: impl FnMut(u64),
) -> Result<FetchReport, TransferError> {
    let mut report = FetchReport::default();
    let mut wanted: Vec<&ferry_content::FileEntry> = Vec::new();
    let mut ids = HashSet::new();
    for file in manifest.files.iter().filter(|f| f.symlink.is_none()) {
        let id = file.content_id();
        if local.store().has_object(&id) {
            report.bytes_reused += file.size;
        } else if ids.insert(id) {
            wanted.push(file);
        }
    }
    let (index, spooled, bases) = {
        let (local, manifest) = (local.clone(), manifest.clone());
        tokio::task::spawn_blocking(move || {
            Ok::<_, TransferError>((
                local.chunk_index(),
                local.spooled()?.chunks,
                crate::delta::delta_bases(&local, &manifest),
            ))
        })
        .await
        .map_err(|e| TransferError::Refused(format!("local index task failed: {e}")))??
    };
    let mut have: HashMap<Digest, LocalChunk> = index;
    // Files with many missing bytes and an older version held: try a
    // byte-level delta first; it is taken only if smaller.
    let mut by_delta = HashSet::new();
    for file in &wanted {
        let Some(base) = bases.get(&file.content_id()) else {
            continue;
        };
        let missing: u64 = file
            .chunks
            .iter()
            .filter(|c| !have.contains_key(&c.digest) && !spooled.contains_key(&c.digest))
            .map(|c| c.len as u64)
            .sum();
        if missing < crate::delta::DELTA_MIN_MISSING {
            continue;
        }
        if let Some(size) =
            crate::delta::fetch_by_delta(client, local, file, *base, missing).await?
        {
            report.bytes_delta += size;
            report.files_by_delta += 1;
            report.bytes_reused += file.size.saturating_sub(missing);
            progress(file.size);
            by_delta.insert(file.content_id());
        }
    }
    wanted.retain(|f| !by_delta.contains(&f.content_id()));
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    for file in &wanted {
        for c in &file.chunks {
            if !seen.insert(c.digest) {
                continue;
            }
            match have.entry(c.digest) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    report.bytes_reused += c.len as u64;
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    if let Some(at) = spooled.get(&c.digest) {
                        report.bytes_resumed += c.len as u64;
                        slot.insert(at.clone());
                    } else {
                        missing.push(c.digest);
                    }
                }
            }
        }
    }
    progress(report.bytes_reused + report.bytes_resumed);
    if !missing.is_empty() {
        let mut sink = Spooling {
            spool: local.spool_writer(),
            have: &mut have,
            progress: &mut progress,
        };
        let result = chunks::fetch_chunks(client, &missing, &mut sink).await;
        // What arrived verified is kept for the next attempt, even on failure.
        sink.spool.finish().await?;
        let stats = result?;
        report.bytes_downloaded = stats.bytes;
        report.chunks_downloaded = stats.chunks;
        report.requests = stats.requests;
    }
    let store_local = local.clone();
    let files: Vec<(Digest, Vec<ferry_content::ChunkRef>)> = wanted
        .iter()
        .map(|f| (f.content_id(), f.chunks.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        for (id, chunk_list) in files {
            store_local
                .store()
                .assemble(&id, &chunk_list, |c| {
                    let at = have
                        .get(&c.digest)
                        .ok_or(ferry_store::StoreError::Missing(c.digest))?;
                    store_local.read(at)
                })
                .map_err(store_err)?;
        }
        store_local.clear_spool()
    })
    .await
    .map_err(|e| TransferError::Refused(format!("assembly task failed: {e}")))??;
    Ok(report)
}

/// Fetched chunks go to the spool and are remembered where they lie.
struct Spooling<'a, P> {
    spool: SpoolWriter,
    have: &'a mut HashMap<Digest, LocalChunk>,
    progress: &'a mut P,
}

impl<P: FnMut(u64)> chunks::ChunkSink for Spooling<'_, P> {
    fn chunk(&mut self, digest: Digest, bytes: &[u8]) -> Result<(), TransferError> {
        let at = self.spool.append(digest, bytes);
        self.have.insert(digest, at);
        (self.progress)(bytes.len() as u64);
        Ok(())
    }

    fn settle(&mut self) -> impl std::future::Future<Output = Result<(), TransferError>> + Send {
        self.spool.settle()
    }
}

/// Writes the package `manifest` describes from `local`'s store into the
/// new directory `out`: assembled in a temporary sibling and renamed into
/// place only when complete, so a failure leaves no half-written `out`.
pub async fn materialize(
    local: &LocalContent,
    manifest: &Manifest,
    out: &Path,
) -> Result<u64, TransferError> {
    if out.exists() {
        return Err(TransferError::Refused(format!(
            "{} already exists; choose a new output directory",
            out.display()
        )));
    }
    let local = local.clone();
    let manifest = manifest.clone();
    let out = out.to_owned();
    tokio::task::spawn_blocking(move || write_tree(&local, &manifest, &out))
        .await
        .map_err(|e| TransferError::Refused(format!("writing task failed: {e}")))?
}

fn write_tree(local: &LocalContent, manifest: &Manifest, out: &Path) -> Result<u64, TransferError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| TransferError::io(&parent, e))?;
    let staging = parent.join(format!(".ferry-fetch-{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&staging).map_err(|e| TransferError::io(&staging, e))?;
    let result = (|| {
        let mut files = 0;
        for entry in &manifest.files {
            let dest = staging.join(entry.path.as_str());
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(|e| TransferError::io(dir, e))?;
            }
            match &entry.symlink {
                Some(target) => std::os::unix::fs::symlink(target, &dest)
                    .map_err(|e| TransferError::io(&dest, e))?,
                None => {
                    let from = local
                        .store()
                        .object_path(&entry.content_id())
                        .map_err(store_err)?;
                    // A copy, not a link: the caller may change its files
                    // without touching the verified store.
                    std::fs::copy(&from, &dest).map_err(|e| TransferError::io(&dest, e))?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(entry.mode))
                        .map_err(|e| TransferError::io(&dest, e))?;
                }
            }
            files += 1;
        }
        ferry_store::durable::rename(&staging, out).map_err(|e| TransferError::io(out, e))?;
        Ok(files)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}
