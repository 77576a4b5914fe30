//! Publishing: send only the chunks the hub lacks, then the manifest (as a
//! delta of the previous version's when this client has that one cached).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_content::{Digest, Manifest, ScannedPackage, encode_manifest_delta};
use ferry_net::HubClient;
use ferry_net::api::{MissingChunksRequest, MissingChunksResponse, PublishResponse, VersionInfo};
use futures_util::StreamExt;

use crate::TransferError;

/// How many chunk uploads are in flight at once.
const PARALLEL_UPLOADS: usize = 8;
/// Digests per "which do you lack" request.
const QUERY_BATCH: usize = 20_000;

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
    /// Manifest bytes uploaded (a delta when `delta_base` is set).
    pub manifest_bytes_sent: u64,
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

    /// Stores a manifest.
    pub fn put(&self, target: &str, bytes: &[u8]) -> Result<(), TransferError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| TransferError::io(&self.dir, e))?;
        let path = self.path(target);
        ferry_store::durable::write_file(&path, bytes, 0o644).map_err(|e| TransferError::io(&path, e))
    }
}

/// Progress callbacks of a publish.
pub trait UploadProgress: Send + Sync {
    /// The number of bytes about to be uploaded is known.
    fn start(&self, total_bytes: u64, chunks: u64);
    /// A chunk of `bytes` was accepted by the hub.
    fn advance(&self, bytes: u64);
}

/// Publishes a scanned package through `client`.
pub async fn publish(
    client: &HubClient,
    cache: &ManifestCache,
    scanned: &ScannedPackage,
    progress: &dyn UploadProgress,
) -> Result<UploadReport, TransferError> {
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
        .get_json(&format!("v1/packages?name={}", manifest.name))
        .await?;
    report.query_bytes += serde_json::to_vec(&listed).map(|v| v.len() as u64).unwrap_or(0);
    let version = manifest.version.to_string();
    if listed.iter().any(|v| v.version == version) {
        return Err(TransferError::Refused(format!(
            "{} {} is already published; versions are immutable, publish a new version instead",
            manifest.name, manifest.version
        )));
    }
    let base = listed
        .iter()
        .filter_map(|v| cache.get(&v.target))
        .max_by(|a, b| a.0.version.cmp(&b.0.version));
    let known: HashSet<Digest> = base
        .as_ref()
        .map(|(m, _)| m.files.iter().flat_map(|f| f.chunks.iter().map(|c| c.digest)).collect())
        .unwrap_or_default();

    let candidates: Vec<Digest> = unique
        .iter()
        .map(|c| c.digest)
        .filter(|d| !known.contains(d))
        .collect();
    let mut missing = Vec::new();
    for batch in candidates.chunks(QUERY_BATCH) {
        let request = MissingChunksRequest {
            chunks: batch.to_vec(),
        };
        report.query_bytes += serde_json::to_vec(&request).map(|v| v.len() as u64).unwrap_or(0);
        let answer: MissingChunksResponse = client.post_json("v1/chunks/missing", &request).await?;
        report.query_bytes += serde_json::to_vec(&answer).map(|v| v.len() as u64).unwrap_or(0);
        missing.extend(answer.missing);
    }

    let sizes: u64 = missing
        .iter()
        .map(|d| scanned.sources.get(d).map_or(0, |s| s.len as u64))
        .sum();
    progress.start(sizes, missing.len() as u64);
    let sent = Arc::new(AtomicU64::new(0));
    let uploads = futures_util::stream::iter(missing.iter().copied().map(|digest| {
        let sent = sent.clone();
        async move {
            let source = scanned.sources.get(&digest).ok_or_else(|| {
                TransferError::Refused(format!("the hub asked for chunk {digest}, which this package does not have"))
            })?;
            let bytes = read_chunk(&source.path, source.offset, source.len)?;
            if Digest::of(&bytes) != digest {
                return Err(TransferError::Refused(format!(
                    "{} changed while publishing; publish again from a directory nothing writes to",
                    source.path.display()
                )));
            }
            let len = bytes.len() as u64;
            client.put_bytes(&format!("v1/chunks/{digest}"), bytes).await?;
            sent.fetch_add(len, Ordering::Relaxed);
            progress.advance(len);
            Ok::<_, TransferError>(())
        }
    }))
    .buffer_unordered(PARALLEL_UPLOADS);
    futures_util::pin_mut!(uploads);
    while let Some(result) = uploads.next().await {
        result?;
    }
    report.chunks_sent = missing.len() as u64;
    report.chunk_bytes_sent = sent.load(Ordering::Relaxed);

    let published = match &base {
        Some((base_manifest, base_bytes)) => {
            let delta = encode_manifest_delta(base_bytes, &new_bytes);
            let target = base_manifest.target_name();
            let result: Result<PublishResponse, _> = client
                .post_bytes(
                    &format!("v1/publish?base={target}"),
                    "application/zstd",
                    delta.clone(),
                )
                .await;
            match result {
                Ok(r) => {
                    report.manifest_bytes_sent = delta.len() as u64;
                    report.delta_base = Some(target);
                    r
                }
                // The base was withdrawn meanwhile: fall back to the full manifest.
                Err(ferry_net::NetError::Status { status: 409, ref message, .. })
                    if message.contains("delta base") =>
                {
                    report.manifest_bytes_sent = new_bytes.len() as u64;
                    client
                        .post_bytes("v1/publish", "application/json", new_bytes.clone())
                        .await?
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => {
            report.manifest_bytes_sent = new_bytes.len() as u64;
            client
                .post_bytes("v1/publish", "application/json", new_bytes.clone())
                .await?
        }
    };
    cache.put(&published.target, &new_bytes)?;
    report.bytes_moved = report.chunk_bytes_sent + report.manifest_bytes_sent + report.query_bytes;
    report.published = Some(published);
    Ok(report)
}

fn read_chunk(path: &Path, offset: u64, len: u32) -> Result<Vec<u8>, TransferError> {
    let mut file = std::fs::File::open(path).map_err(|e| TransferError::io(path, e))?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| TransferError::io(path, e))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf).map_err(|e| TransferError::io(path, e))?;
    Ok(buf)
}
