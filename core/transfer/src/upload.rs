//! Publishing: send only the chunks the hub lacks, then the manifest
//! abbreviated to digest prefixes (as a delta of the previous version's when
//! this client has that one cached).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_content::{
    ABBREVIATED_PREFIX, Digest, Manifest, ScannedPackage, encode_manifest_delta, pack_push,
    pack_record_header,
};
use ferry_net::HubClient;
use ferry_net::api::routes;
use ferry_net::api::{
    ErrorCode, PACK_CONTENT_TYPE, PackResponse, PublishResponse, VersionInfo, decode_missing_bitmap,
};
use futures_util::StreamExt;

use crate::TransferError;

/// How many pack uploads are in flight at once: enough to keep a long link
/// busy while the hub verifies and fsyncs the previous pack.
const PARALLEL_UPLOADS: usize = 4;
/// Digests per "which do you lack" request.
const QUERY_BATCH: usize = 65_536;
/// Bytes per uploaded pack: large enough that per-request costs (a round
/// trip, an fsync on the hub) vanish, small enough for a useful progress bar
/// and little work lost when a link drops.
const PACK_TARGET_BYTES: usize = 4 << 20;

/// What a publish moved.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UploadReport {
    /// The hub's answer.
    pub published: Option<PublishResponse>,
    /// Entries in the package.
    pub files: u64,
    /// Sum of file sizes.
    pub total_bytes: u64,
    /// Chunks in the package.
    pub chunks: u64,
    /// Chunks uploaded.
    pub chunks_sent: u64,
    /// Chunk payload bytes uploaded.
    pub chunk_bytes_sent: u64,
    /// Bytes of the chunk packs as sent (zstd-compressed where that saved).
    pub pack_bytes_sent: u64,
    /// Manifest bytes uploaded: abbreviated, and a delta when `delta_base`
    /// is set.
    pub manifest_bytes_sent: u64,
    /// A digest prefix matched another chunk on the hub, so the publish
    /// was repeated with full digests (rare; its bytes are counted).
    pub full_digest_retry: bool,
    /// This version was already published with exactly this content (a
    /// retried publish): nothing was sent, `published.metadata_version` is 0.
    pub already_published: bool,
    /// Published version the manifest was sent as a delta of.
    pub delta_base: Option<String>,
    /// Bytes of "which chunks do you lack" queries and their answers.
    pub query_bytes: u64,
    /// Everything sent and received as request and response bodies.
    pub bytes_moved: u64,
}

/// Manifests this client published or verified, kept to serve as delta bases
/// and to know which chunks the hub already holds.
#[derive(Debug, Clone)]
pub struct ManifestCache {
    dir: PathBuf,
}

impl ManifestCache {
    /// A cache in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        ManifestCache { dir }
    }

    fn path(&self, target: &str) -> PathBuf {
        self.dir.join(target)
    }

    /// A cached manifest, if present and still valid.
    pub fn get(&self, target: &str) -> Option<(Manifest, Vec<u8>)> {
        let bytes = std::fs::read(self.path(target)).ok()?;
        let manifest = Manifest::from_slice(&bytes, Default::default()).ok()?;
        (manifest.target_name() == target).then_some((manifest, bytes))
    }

    /// [`ManifestCache::put`] on a blocking thread.
    pub async fn put_async(&self, target: &str, bytes: &[u8]) -> Result<(), TransferError> {
        let (cache, target, bytes) = (self.clone(), target.to_owned(), bytes.to_vec());
        tokio::task::spawn_blocking(move || cache.put(&target, &bytes))
            .await
            .map_err(|e| TransferError::Refused(format!("manifest cache task failed: {e}")))?
    }

    /// Stores a manifest.
    pub fn put(&self, target: &str, bytes: &[u8]) -> Result<(), TransferError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| TransferError::io(&self.dir, e))?;
        let path = self.path(target);
        ferry_store::durable::write_file(&path, bytes, 0o644)
            .map_err(|e| TransferError::io(&path, e))
    }
}

/// Progress callbacks of a publish.
pub trait UploadProgress: Send + Sync {
    /// The number of bytes about to be uploaded is known.
    fn start(&self, total_bytes: u64, chunks: u64);
    /// A chunk of `bytes` was accepted by the hub.
    fn advance(&self, bytes: u64);
}

/// How a publish names chunks to the hub.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    /// Bytes of each digest prefix in the missing-chunks query and the
    /// abbreviated manifest (1-32). Shorter prefixes cost fewer bytes and
    /// make the full-digest retry more likely.
    pub prefix_len: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            prefix_len: ABBREVIATED_PREFIX,
        }
    }
}

/// Publishes a scanned package through `client`.
pub async fn publish(
    client: &HubClient,
    cache: &ManifestCache,
    scanned: &ScannedPackage,
    progress: &dyn UploadProgress,
) -> Result<UploadReport, TransferError> {
    publish_with(client, cache, scanned, progress, PublishOptions::default()).await
}

/// [`publish`] with explicit options.
///
/// All-new data costs about 1.5% above its size: the hub is asked which
/// chunks it lacks by short digest prefixes, hashes uploaded chunks itself
/// (packs carry only lengths), and rebuilds the manifest from an abbreviated
/// one. Should a prefix match a chunk the hub holds that is not this one
/// (the hub answers `chunks-missing` or `manifest-mismatch`), the publish
/// asks again with full digests and sends the full manifest.
pub async fn publish_with(
    client: &HubClient,
    cache: &ManifestCache,
    scanned: &ScannedPackage,
    progress: &dyn UploadProgress,
    options: PublishOptions,
) -> Result<UploadReport, TransferError> {
    if !(1..=32).contains(&options.prefix_len) {
        return Err(TransferError::Refused(format!(
            "a digest prefix of {} bytes: use 1-32",
            options.prefix_len
        )));
    }
    let manifest = &scanned.manifest;
    let new_bytes = manifest.to_vec();
    let unique = manifest.unique_chunks();
    let mut report = UploadReport {
        files: manifest.files.len() as u64,
        total_bytes: manifest.total_size(),
        chunks: unique.len() as u64,
        ..Default::default()
    };

    // The newest published version of this package that we hold a copy of:
    // its chunks are on the hub, and its manifest is a delta base.
    let listed: Vec<VersionInfo> = client
        .get_json(&routes::packages(Some(manifest.name.as_str()), None))
        .await?;
    report.query_bytes += serde_json::to_vec(&listed)
        .map(|v| v.len() as u64)
        .unwrap_or(0);
    let version = manifest.version.to_string();
    if let Some(existing) = listed.iter().find(|v| v.version == version) {
        // The same content published before (a retry after a publish whose
        // answer was lost): nothing to do. Other content: refused.
        if existing.manifest_sha256 == Digest::of(&new_bytes).to_string() {
            cache.put_async(&existing.target, &new_bytes).await?;
            report.already_published = true;
            report.bytes_moved = report.query_bytes;
            report.published = Some(PublishResponse {
                name: existing.name.clone(),
                version: existing.version.clone(),
                target: existing.target.clone(),
                files: existing.files,
                total_size: existing.total_size,
                metadata_version: 0,
                warnings: Vec::new(),
            });
            return Ok(report);
        }
        return Err(TransferError::Refused(format!(
            "{} {} is already published with other content; versions are immutable, publish a \
             new version instead",
            manifest.name, manifest.version
        )));
    }
    let base = {
        // Reading cached manifests is file work: off the async threads.
        let (cache, targets) = (cache.clone(), listed.iter().map(|v| v.target.clone()));
        let targets: Vec<String> = targets.collect();
        tokio::task::spawn_blocking(move || {
            targets
                .iter()
                .filter_map(|t| cache.get(t))
                .max_by(|a, b| a.0.version.cmp(&b.0.version))
        })
        .await
        .map_err(|e| TransferError::Refused(format!("manifest cache task failed: {e}")))?
    };
    let known: HashSet<Digest> = base
        .as_ref()
        .map(|(m, _)| {
            m.files
                .iter()
                .flat_map(|f| f.chunks.iter().map(|c| c.digest))
                .collect()
        })
        .unwrap_or_default();
    let candidates: Vec<Digest> = unique
        .iter()
        .map(|c| c.digest)
        .filter(|d| !known.contains(d))
        .collect();

    let missing = query_missing(client, &candidates, options.prefix_len, &mut report).await?;
    upload_chunks(client, scanned, &missing, progress, &mut report).await?;
    let abbreviated = publish_abbreviated(
        client,
        manifest,
        &new_bytes,
        base.as_ref().map(|(m, _)| m),
        options.prefix_len,
        &mut report,
    )
    .await;
    let published = match abbreviated {
        Ok(published) => published,
        Err(TransferError::Net(e))
            if e.code() == Some(ErrorCode::ChunksMissing.as_str())
                || e.code() == Some(ErrorCode::ManifestMismatch.as_str()) =>
        {
            tracing::info!(
                "a digest prefix matched another chunk on the hub; publishing with full digests"
            );
            report.full_digest_retry = true;
            let missing = query_missing(client, &candidates, 32, &mut report).await?;
            upload_chunks(client, scanned, &missing, progress, &mut report).await?;
            publish_full(client, &new_bytes, base.as_ref(), &mut report).await?
        }
        Err(e) => return Err(e),
    };
    cache.put_async(&published.target, &new_bytes).await?;
    report.bytes_moved = report.pack_bytes_sent + report.manifest_bytes_sent + report.query_bytes;
    report.published = Some(published);
    Ok(report)
}

/// Asks the hub which of `candidates` it lacks, naming each by its first
/// `prefix_len` bytes.
async fn query_missing(
    client: &HubClient,
    candidates: &[Digest],
    prefix_len: usize,
    report: &mut UploadReport,
) -> Result<Vec<Digest>, TransferError> {
    let mut missing = Vec::new();
    for batch in candidates.chunks(QUERY_BATCH) {
        let query: Vec<u8> = batch
            .iter()
            .flat_map(|d| d.0[..prefix_len].iter().copied())
            .collect();
        report.query_bytes += query.len() as u64;
        let url = client.url(&routes::missing_chunks(prefix_len))?;
        let response = client
            .post_streaming(&url, "application/octet-stream", query, false)
            .await?;
        let bitmap = client
            .read_limited(&url, response, batch.len().div_ceil(8) as u64)
            .await?;
        report.query_bytes += bitmap.len() as u64;
        let answer = decode_missing_bitmap(&bitmap, batch.len()).ok_or_else(|| {
            TransferError::Refused(format!(
                "the hub answered a query about {} chunks with {} bytes",
                batch.len(),
                bitmap.len()
            ))
        })?;
        missing.extend(
            batch
                .iter()
                .zip(answer)
                .filter(|(_, m)| *m)
                .map(|(d, _)| *d),
        );
    }
    Ok(missing)
}

/// Uploads the chunks `missing` in packs, several at once.
async fn upload_chunks(
    client: &HubClient,
    scanned: &ScannedPackage,
    missing: &[Digest],
    progress: &dyn UploadProgress,
    report: &mut UploadReport,
) -> Result<(), TransferError> {
    let mut packs: Vec<Vec<Digest>> = Vec::new();
    let mut pack_bytes = 0usize;
    let mut total = 0u64;
    for digest in missing {
        let source = scanned.sources.get(digest).ok_or_else(|| {
            TransferError::Refused(format!("chunk {digest} is not part of this package"))
        })?;
        let record = pack_record_header(source.len) + source.len as usize;
        if packs.is_empty() || pack_bytes + record > PACK_TARGET_BYTES {
            packs.push(Vec::new());
            pack_bytes = 0;
        }
        packs.last_mut().expect("a pack was started").push(*digest);
        pack_bytes += record;
        total += source.len as u64;
    }
    progress.start(total, missing.len() as u64);
    let sent = AtomicU64::new(0);
    let wire = AtomicU64::new(0);
    let uploads = futures_util::stream::iter(packs.iter().map(|digests| {
        let sent = &sent;
        let wire = &wire;
        async move {
            let pack = build_pack(scanned, digests)?;
            // Compressed on the wire when that saves at least 1/64: source
            // trees and tars shrink several times, random data is sent as is.
            let compressed = zstd::bulk::compress(&pack, PACK_ZSTD_LEVEL)
                .ok()
                .filter(|c| c.len() < pack.len() - pack.len() / 64);
            let (body, encoding) = match compressed {
                Some(c) => (c, Some("zstd")),
                None => (pack, None),
            };
            wire.fetch_add(body.len() as u64, Ordering::Relaxed);
            let answer: PackResponse = client
                .post_bytes_encoded(
                    routes::relative(routes::CHUNKS),
                    PACK_CONTENT_TYPE,
                    encoding,
                    body,
                    std::time::Duration::ZERO,
                )
                .await?;
            if answer.chunks != digests.len() {
                return Err(TransferError::Refused(format!(
                    "the hub kept {} of the {} chunks of a pack",
                    answer.chunks,
                    digests.len()
                )));
            }
            sent.fetch_add(answer.bytes, Ordering::Relaxed);
            progress.advance(answer.bytes);
            Ok::<_, TransferError>(())
        }
    }))
    .buffer_unordered(PARALLEL_UPLOADS);
    futures_util::pin_mut!(uploads);
    while let Some(result) = uploads.next().await {
        result?;
    }
    report.chunks_sent += missing.len() as u64;
    report.chunk_bytes_sent += sent.load(Ordering::Relaxed);
    report.pack_bytes_sent += wire.load(Ordering::Relaxed);
    Ok(())
}

/// Publishes the abbreviated manifest, as a delta of the base's
/// abbreviation when there is a base.
async fn publish_abbreviated(
    client: &HubClient,
    manifest: &Manifest,
    full: &[u8],
    base: Option<&Manifest>,
    prefix_len: usize,
    report: &mut UploadReport,
) -> Result<PublishResponse, TransferError> {
    let sha = Digest::of(full).to_string();
    let base = base.map(|b| (b.target_name(), b.abbreviate(prefix_len)));
    send_manifest(
        client,
        &manifest.abbreviate(prefix_len),
        base,
        |base| routes::publish_abbreviated(base, &sha, prefix_len),
        report,
    )
    .await
}

/// Publishes the full manifest, as a delta of the base's when there is a
/// base.
async fn publish_full(
    client: &HubClient,
    full: &[u8],
    base: Option<&(Manifest, Vec<u8>)>,
    report: &mut UploadReport,
) -> Result<PublishResponse, TransferError> {
    let base = base.map(|(m, bytes)| (m.target_name(), bytes.clone()));
    send_manifest(client, full, base, routes::publish, report).await
}

/// Sends `body` zstd-compressed to the URL `url` makes: as a delta of the
/// base's form (`base`: its target and bytes) when there is one, alone if
/// there is none or the hub no longer has it.
async fn send_manifest(
    client: &HubClient,
    body: &[u8],
    base: Option<(String, Vec<u8>)>,
    url: impl Fn(Option<&str>) -> String,
    report: &mut UploadReport,
) -> Result<PublishResponse, TransferError> {
    if let Some((target, base_bytes)) = base {
        let delta = encode_manifest_delta(&base_bytes, body);
        report.manifest_bytes_sent += delta.len() as u64;
        let result: Result<PublishResponse, _> = client
            .post_bytes_within(
                &url(Some(&target)),
                "application/zstd",
                delta,
                PUBLISH_PROCESSING,
            )
            .await;
        match result {
            Ok(r) => {
                report.delta_base = Some(target);
                return Ok(r);
            }
            // The base was withdrawn meanwhile: send the manifest alone.
            Err(e) if e.code() == Some(ErrorCode::UnknownBase.as_str()) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let compressed = encode_manifest_delta(&[], body);
    report.manifest_bytes_sent += compressed.len() as u64;
    Ok(client
        .post_bytes_within(
            &url(None),
            "application/zstd",
            compressed,
            PUBLISH_PROCESSING,
        )
        .await?)
}

/// zstd level for chunk packs: fast enough not to slow an upload down.
const PACK_ZSTD_LEVEL: i32 = 3;

/// How long the hub may work on a publish before it answers: it assembles
/// and fsyncs every new file of the package first.
const PUBLISH_PROCESSING: std::time::Duration = std::time::Duration::from_secs(3600);

/// Reads the chunks `digests` from the publisher's files into one pack,
/// checking each again: a file that changed since it was scanned must not
/// be published under its old digests.
fn build_pack(scanned: &ScannedPackage, digests: &[Digest]) -> Result<Vec<u8>, TransferError> {
    let mut pack = Vec::new();
    let mut open: Option<(&Path, std::fs::File)> = None;
    let mut buf = Vec::new();
    for digest in digests {
        let source = &scanned.sources[digest];
        let file = match &mut open {
            Some((path, file)) if *path == source.path.as_path() => file,
            _ => {
                let file = std::fs::File::open(&source.path)
                    .map_err(|e| TransferError::io(&source.path, e))?;
                &mut open.insert((source.path.as_path(), file)).1
            }
        };
        buf.resize(source.len as usize, 0);
        file.seek(SeekFrom::Start(source.offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| TransferError::io(&source.path, e))?;
        if Digest::of(&buf) != *digest {
            return Err(TransferError::Refused(format!(
                "{} changed while publishing; publish again from a directory nothing writes to",
                source.path.display()
            )));
        }
        pack_push(&mut pack, &buf);
    }
    Ok(pack)
}
