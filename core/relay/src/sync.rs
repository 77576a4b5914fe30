//! One sync with the upstream: verify its metadata as a TUF client, fetch
//! what the relay keeps and lacks (manifests as deltas, only missing
//! chunks), commit each version, then switch the served metadata at once.
//! Whatever fails, the last good snapshot stays served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ferry_catalog::{NewObject, NewVersion, VersionCatalog};
use ferry_content::{Manifest, PackageName};
use ferry_net::HubClient;
use ferry_net::api::{VersionInfo, routes};
use ferry_trust::TrustedRepository;

use crate::config::KeepRule;
use crate::snapshot::SnapshotInfo;
use crate::state::Revoked;
use crate::status::{Failure, Outcome, PackageTraffic, SyncRecord, UpstreamSeen};
use crate::{RelayError, RelayState};

/// The hub-signed revocation list's file name in a snapshot.
pub(crate) const REVOCATIONS_FILE: &str = "revocations.json";

/// Largest root metadata file fetched to complete the chain of roots.
const MAX_ROOT_FILE: u64 = 1 << 20;
/// Largest revocation list accepted.
const MAX_REVOCATIONS: u64 = 16 << 20;

/// What a sync may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Metadata and every missing kept version.
    Full,
    /// Metadata only: switch to it if every kept version is held already,
    /// else report the backlog for the schedule to decide on.
    MetadataOnly,
}

/// How a sync that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// New metadata is served.
    Switched,
    /// Metadata only, and nothing switched: about this many bytes of
    /// content are missing (0: the metadata served is the newest).
    Backlog(u64),
}

/// Runs one sync. A sync that switched or failed is recorded in the status
/// and returned; a metadata-only one that switched nothing is not (it
/// changed nothing), and returns the bytes of content missing instead.
pub(crate) async fn sync(
    state: &Arc<RelayState>,
    trigger: &str,
    mode: Mode,
) -> Result<SyncRecord, u64> {
    let started = chrono::Utc::now();
    let wan_before = state.link.received() + state.link.sent();
    let mut record = SyncRecord {
        started: started.to_rfc3339(),
        finished: String::new(),
        outcome: Outcome::Failed,
        error: None,
        trigger: trigger.to_owned(),
        fetched: Vec::new(),
        dropped: Vec::new(),
        chunk_bytes: 0,
        reused_bytes: 0,
        resumed_bytes: 0,
        manifest_bytes: 0,
        delta_bytes: 0,
        files_by_delta: 0,
        wan_bytes: 0,
    };
    let mut traffic = BTreeMap::new();
    let result = sync_inner(state, mode, &mut record, &mut traffic).await;
    record.finished = chrono::Utc::now().to_rfc3339();
    record.wan_bytes = state.link.received() + state.link.sent() - wan_before;
    match &result {
        Ok(Done::Backlog(bytes)) => {
            if *bytes > 0 {
                tracing::info!(backlog = bytes, "new upstream content to sync");
            }
            return Err(*bytes);
        }
        Ok(Done::Switched) => {
            record.outcome = Outcome::Succeeded;
            tracing::info!(
                fetched = record.fetched.len(),
                chunk_bytes = record.chunk_bytes,
                wan_bytes = record.wan_bytes,
                "sync finished"
            );
        }
        Err(e) => {
            record.error = Some(e.to_string());
            record.outcome = if record.fetched.is_empty() && record.chunk_bytes == 0 {
                Outcome::Failed
            } else {
                Outcome::Partial
            };
            tracing::warn!("sync failed: {e}");
        }
    }
    let done = record.clone();
    let serving = state.snapshots.info();
    state
        .update_status(move |status| {
            if let Some(reason) = &done.error {
                status.last_failure = Some(Failure {
                    at: done.finished.clone(),
                    reason: reason.clone(),
                });
            }
            for (name, t) in traffic {
                let entry: &mut PackageTraffic = status.packages.entry(name).or_default();
                entry.wan_bytes += t.wan_bytes;
                entry.full_bytes += t.full_bytes;
            }
            status.serving = serving;
            status.last_sync = Some(done);
        })
        .await;
    Ok(record)
}

async fn sync_inner(
    state: &Arc<RelayState>,
    mode: Mode,
    record: &mut SyncRecord,
    traffic: &mut BTreeMap<String, PackageTraffic>,
) -> Result<Done, RelayError> {
    // Versions dropped at an earlier sync are no longer served by any
    // snapshot a request may still be using: their files can go.
    collect_garbage(state).await?;

    // The sync's requests are judged together: an upstream that trickles
    // answers to many small requests fails it after one window.
    let upstream = &state.upstream.clone().sharing_pace();
    // One sync or pull-through moves content at a time.
    let _fetching = state.fetching.lock().await;
    let (repo, mut files) =
        ferry_transfer::load_repository_recorded(&state.creds, upstream).await?;
    keep_roots(state, upstream, &mut files).await?;
    let (timestamp_version, expires) = timestamp_facts(&files, state)?;
    complete_files(state, &mut files, &repo)?;
    let seen = UpstreamSeen {
        timestamp_version,
        targets_version: repo.version(),
        at: chrono::Utc::now().to_rfc3339(),
    };
    state
        .update_status(move |status| status.upstream_seen = Some(seen))
        .await;
    let revoked = revocations(state, upstream, &repo, &mut files).await?;
    if mode == Mode::MetadataOnly
        && state
            .snapshots
            .info()
            .is_some_and(|i| i.timestamp_version == timestamp_version)
    {
        // The metadata served is the newest; a newer revocation list comes
        // into force at once.
        if let (Some(revoked), Some(bytes)) = (revoked, files.remove(REVOCATIONS_FILE))
            && revoked.version > state.revocations_version()
        {
            let keep = state.clone();
            blocking(move || keep.snapshots.replace_revocations(&bytes)).await?;
            tracing::info!(version = revoked.version, "new revocation list in force");
            state.set_revoked(revoked);
        }
        return Ok(Done::Backlog(0));
    }

    // What to keep: every signed target the rules select, except what the
    // quota evicted, and every pinned one.
    let rules = state
        .config
        .keep_rules()
        .map_err(|e| RelayError::DataDir(format!("[keep] packages: {e}")))?;
    let cache = crate::cache::load(state).await?;
    let wanted: Vec<(PackageName, semver::Version, ferry_trust::TargetInfo)> = repo
        .targets()
        .into_iter()
        .filter_map(|t| {
            let (name, version) = split_target(&t.name)?;
            let pinned = cache.pinned.contains(&t.name);
            let kept = keeps(&rules, &name, &version) && !cache.evicted.contains(&t.name);
            (kept || pinned).then_some((name, version, t))
        })
        .collect();

    let listing = listing(upstream).await;
    // Which kept versions are missing, or held with other content (the
    // same version withdrawn and published again: the signed one wins).
    let missing = {
        let catalog = state.catalog.clone();
        let wanted: Vec<(String, String)> = wanted
            .iter()
            .map(|(_, _, t)| (t.name.clone(), t.sha256.clone()))
            .collect();
        blocking(move || {
            let mut missing = Vec::new();
            for (i, (target, sha256)) in wanted.iter().enumerate() {
                match catalog.manifest_by_target(target)? {
                    Some(held) if ferry_content::Digest::of(&held).to_hex() == *sha256 => {}
                    held => missing.push((i, held.is_some())),
                }
            }
            Ok(missing)
        })
        .await?
    };
    if mode == Mode::MetadataOnly && !missing.is_empty() {
        let backlog = missing
            .iter()
            .map(|(i, _)| {
                let t = &wanted[*i].2;
                listing.get(&t.name).map_or(t.length, |v| v.total_size)
            })
            .sum::<u64>()
            .max(1);
        return Ok(Done::Backlog(backlog));
    }
    for (i, held_other) in missing {
        let (name, version, target) = &wanted[i];
        if held_other {
            let (catalog, n, v) = (state.catalog.clone(), name.clone(), version.clone());
            blocking(move || Ok(catalog.delete_version(&n, &v)?)).await?;
        }
        let fetched = fetch_version(
            state,
            upstream,
            &repo,
            name,
            version,
            listing.get(&target.name),
        )
        .await?;
        record.manifest_bytes += fetched.manifest.bytes_received;
        record.chunk_bytes += fetched.objects.bytes_downloaded;
        record.reused_bytes += fetched.objects.bytes_reused;
        record.resumed_bytes += fetched.objects.bytes_resumed;
        record.delta_bytes += fetched.objects.bytes_delta;
        record.files_by_delta += fetched.objects.files_by_delta;
        let t = traffic.entry(name.to_string()).or_default();
        t.wan_bytes += fetched.objects.bytes_downloaded
            + fetched.objects.bytes_delta
            + fetched.manifest.bytes_received;
        t.full_bytes += fetched.total_size;
        record.fetched.push(format!("{name}@{version}"));
    }

    // Versions got by pull-through stay while they are signed and held.
    let mut served: Vec<String> = wanted.iter().map(|(_, _, t)| t.name.clone()).collect();
    let pulled = {
        let catalog = state.catalog.clone();
        let earlier = state.snapshots.info().map(|i| i.pulled).unwrap_or_default();
        let signed: HashMap<String, String> = repo
            .targets()
            .into_iter()
            .filter(|t| !served.contains(&t.name))
            .map(|t| (t.name, t.sha256))
            .collect();
        blocking(move || {
            let mut kept = Vec::new();
            for target in earlier {
                let Some(sha256) = signed.get(&target) else {
                    continue;
                };
                if let Some(held) = catalog.manifest_by_target(&target)?
                    && ferry_content::Digest::of(&held).to_hex() == *sha256
                {
                    kept.push(target);
                }
            }
            Ok(kept)
        })
        .await?
    };
    let mut pulled = pulled;
    served.extend(pulled.iter().cloned());

    // Over the disk quota: the least recently asked-for versions go.
    let evicted = crate::cache::evict(state, &cache, &rules, &served).await?;
    if !evicted.is_empty() {
        served.retain(|t| !evicted.contains(t));
        pulled.retain(|t| !evicted.contains(t));
        tracing::info!(?evicted, "evicted for the disk quota");
    }

    // Everything served is stored: switch.
    let info = SnapshotInfo {
        timestamp_version,
        expires,
        targets_version: repo.version(),
        served: served.clone(),
        pulled,
        switched_at: String::new(),
    };
    let switched = {
        let state = state.clone();
        blocking(move || state.snapshots.switch(&files, info)).await?
    };
    if let Some(revoked) = revoked {
        state.set_revoked(revoked);
    }
    tracing::info!(
        timestamp = switched.timestamp_version,
        targets = switched.targets_version,
        served = switched.served.len(),
        "serving new metadata"
    );

    // Versions no longer kept leave the catalog now; their files go at
    // the next sync.
    let served: HashSet<String> = served.into_iter().collect();
    let catalog = state.catalog.clone();
    record.dropped = blocking(move || {
        let mut dropped = Vec::new();
        for v in catalog.list_versions(None)? {
            if !served.contains(&v.target) {
                let name = PackageName::new(&v.name).map_err(|e| {
                    RelayError::DataDir(format!("the catalog holds a bad name: {e}"))
                })?;
                catalog.delete_version(&name, &v.version)?;
                dropped.push(format!("{}@{}", v.name, v.version));
            }
        }
        Ok(dropped)
    })
    .await?;
    Ok(Done::Switched)
}

pub(crate) fn keeps(rules: &[KeepRule], name: &PackageName, version: &semver::Version) -> bool {
    rules.iter().any(|r| r.matches(name.as_str(), version))
}

/// `NAME@VERSION.json` → name and version.
pub(crate) fn split_target(target: &str) -> Option<(PackageName, semver::Version)> {
    let (name, version) = target.strip_suffix(".json")?.split_once('@')?;
    Some((
        PackageName::new(name).ok()?,
        semver::Version::parse(version).ok()?,
    ))
}

/// Keeps new root metadata files and makes sure every root version from 1
/// up is kept (agents enrolled long ago start from old roots).
async fn keep_roots(
    state: &Arc<RelayState>,
    upstream: &HubClient,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), RelayError> {
    let mut roots: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".root.json"))
        .map(|(n, b)| (n.clone(), b.clone()))
        .collect();
    // The root pinned at enrollment, which the TUF client starts from and
    // so never fetches.
    let pinned = serde_json::from_slice::<serde_json::Value>(&state.creds.tuf_root)
        .ok()
        .and_then(|doc| doc["signed"]["version"].as_u64());
    if let Some(version) = pinned {
        roots.push((format!("{version}.root.json"), state.creds.tuf_root.clone()));
    }
    files.retain(|n, _| !n.ends_with(".root.json"));
    let kept = {
        let state = state.clone();
        blocking(move || {
            for (name, bytes) in &roots {
                state.snapshots.keep_root(name, bytes)?;
            }
            state.snapshots.root_versions()
        })
        .await?
    };
    let newest = kept.last().copied().unwrap_or(1);
    let kept: HashSet<u64> = kept.into_iter().collect();
    for version in (1..=newest).filter(|v| !kept.contains(v)) {
        let file = format!("{version}.root.json");
        let url = upstream.url(&routes::tuf_metadata(&file))?;
        // Served as received: every agent verifies the chain of roots
        // itself from the one it pinned.
        let bytes = upstream.get_bytes(&url, MAX_ROOT_FILE).await?;
        let state = state.clone();
        blocking(move || state.snapshots.keep_root(&file, &bytes)).await?;
    }
    Ok(())
}

/// The timestamp's version and expiry, from the file the TUF client read.
fn timestamp_facts(
    files: &BTreeMap<String, Vec<u8>>,
    state: &RelayState,
) -> Result<(u64, String), RelayError> {
    let bytes = files
        .get("timestamp.json")
        .cloned()
        .or_else(|| state.snapshots.served_file("timestamp.json"))
        .ok_or_else(|| RelayError::DataDir("the TUF client read no timestamp metadata".into()))?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| RelayError::DataDir(format!("verified timestamp metadata: {e}")))?;
    Ok((
        doc["signed"]["version"].as_u64().unwrap_or_default(),
        doc["signed"]["expires"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

/// Makes sure the snapshot and targets files the timestamp names are
/// among `files`: the TUF client may not have fetched one unchanged since
/// the last sync, and then the served copy is the same file.
fn complete_files(
    state: &RelayState,
    files: &mut BTreeMap<String, Vec<u8>>,
    repo: &TrustedRepository,
) -> Result<(), RelayError> {
    let version_in = |file: &str, role: &str| -> Option<u64> {
        let doc: serde_json::Value = serde_json::from_slice(files.get(file)?).ok()?;
        doc["signed"]["meta"][role]["version"].as_u64()
    };
    let snapshot =
        version_in("timestamp.json", "snapshot.json").map(|v| format!("{v}.snapshot.json"));
    let targets = format!("{}.targets.json", repo.version());
    for name in snapshot
        .into_iter()
        .chain([targets, "timestamp.json".into()])
    {
        if files.contains_key(&name) {
            continue;
        }
        let bytes = state.snapshots.served_file(&name).ok_or_else(|| {
            RelayError::DataDir(format!(
                "{name} was neither fetched nor held; the next sync fetches it again"
            ))
        })?;
        files.insert(name, bytes);
    }
    Ok(())
}

/// Fetches the hub's signed revocation list and checks it against the
/// verified root; a list older than the one in force is refused. Returns
/// the list to put in force with the new snapshot.
async fn revocations(
    state: &Arc<RelayState>,
    upstream: &HubClient,
    repo: &TrustedRepository,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<Option<Revoked>, RelayError> {
    let url = upstream.url(routes::relative(routes::REVOCATIONS))?;
    let bytes = match upstream.get_bytes(&url, MAX_REVOCATIONS).await {
        Ok(bytes) => bytes.to_vec(),
        // A hub without a control key has no list; keep serving ours while
        // it is valid, so an upstream cannot withhold a newer list for
        // longer than the one in force lives.
        Err(e) if e.status() == Some(404) => {
            let held = state.snapshots.served_file(REVOCATIONS_FILE);
            return match held {
                Some(held) if repo.verify_document(&held, "revocations").is_ok() => {
                    files.insert(REVOCATIONS_FILE.into(), held);
                    Ok(None)
                }
                Some(_) => Err(RelayError::Trust(ferry_trust::TrustError::Tampered(
                    "the revocation list in force expired and the upstream serves none; \
                     check the upstream (a hub serves a fresh list while it runs)"
                        .into(),
                ))),
                None => Ok(None),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let doc = repo.verify_document(&bytes, "revocations")?;
    if doc.version < state.revocations_version() {
        return Err(RelayError::Trust(ferry_trust::TrustError::Tampered(
            format!(
                "the upstream served revocation list version {}, older than version {} in force",
                doc.version,
                state.revocations_version()
            ),
        )));
    }
    let revoked = Revoked::parse(&bytes);
    files.insert(REVOCATIONS_FILE.into(), bytes);
    Ok(revoked)
}

/// The upstream's listing (who published what, when), for the relay's own
/// listing; unsigned and only informative, so a failure costs nothing.
async fn listing(upstream: &HubClient) -> HashMap<String, VersionInfo> {
    match upstream
        .get_json::<Vec<VersionInfo>>(&routes::packages(None, None))
        .await
    {
        Ok(list) => list.into_iter().map(|v| (v.target.clone(), v)).collect(),
        Err(e) => {
            tracing::debug!("the upstream listing is unavailable: {e}");
            HashMap::new()
        }
    }
}

/// What fetching one version moved.
pub(crate) struct Fetched {
    pub manifest: ferry_transfer::ManifestFetch,
    pub objects: ferry_transfer::FetchReport,
    pub total_size: u64,
}

/// Fetches one signed version from upstream (its manifest as a delta of
/// one held, then only the chunks no held file has) and records it in the
/// catalog. Chunks that arrive before a failure stay spooled for the next
/// attempt. The caller holds `state.fetching`.
pub(crate) async fn fetch_version(
    state: &Arc<RelayState>,
    upstream: &HubClient,
    repo: &TrustedRepository,
    name: &PackageName,
    version: &semver::Version,
    listed: Option<&VersionInfo>,
) -> Result<Fetched, RelayError> {
    let upstream = &upstream.clone().for_package(name.as_str());
    let (manifest, bytes, manifest_fetch) =
        ferry_transfer::fetch_manifest(repo, upstream, &state.local, name, version).await?;
    let mut objects =
        ferry_transfer::fetch_objects(upstream, &state.local, &manifest, |_| {}).await?;
    objects.count_outline(&manifest_fetch);
    commit(state, &manifest, bytes, listed).await?;
    Ok(Fetched {
        manifest: manifest_fetch,
        objects,
        total_size: manifest.total_size(),
    })
}

/// Records a version whose files are all stored.
async fn commit(
    state: &Arc<RelayState>,
    manifest: &Manifest,
    bytes: Vec<u8>,
    info: Option<&VersionInfo>,
) -> Result<(), RelayError> {
    let mut objects = Vec::new();
    let mut seen = HashSet::new();
    for file in manifest.files.iter().filter(|f| f.symlink.is_none()) {
        let id = file.content_id();
        if !seen.insert(id) {
            continue;
        }
        objects.push(NewObject::new(id, &file.chunks));
    }
    let version = NewVersion {
        name: manifest.name.to_string(),
        version: manifest.version.clone(),
        target: manifest.target_name(),
        manifest: bytes,
        total_size: manifest.total_size(),
        file_count: manifest.files.len() as u64,
        published_at: info
            .and_then(|i| chrono::DateTime::parse_from_rfc3339(&i.published_at).ok())
            .map(|t| t.timestamp())
            .unwrap_or_else(|| chrono::Utc::now().timestamp()),
        published_by: info
            .map(|i| i.published_by.clone())
            .unwrap_or_else(|| "unknown".into()),
        objects,
    };
    let catalog = state.catalog.clone();
    blocking(move || Ok(catalog.commit_version(&version)?)).await
}

/// Removes stored files no kept version references.
async fn collect_garbage(state: &Arc<RelayState>) -> Result<(), RelayError> {
    let state = state.clone();
    blocking(move || {
        for id in state.catalog.unreferenced_objects()? {
            let path = state.local.store().object_path(&id)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RelayError::io(&path, e)),
            }
            state.catalog.delete_object(&id)?;
        }
        Ok(())
    })
    .await
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RelayError> + Send + 'static,
) -> Result<T, RelayError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RelayError::DataDir(format!("a blocking task failed: {e}")))?
}
