//! Fetching a new version of a package of a few large files by outline:
//! the manifest without chunk lists, then each changed file as a
//! byte-level delta of its older version held here, chunked here. A file
//! whose bytes shifted has mostly new chunk records, which would cost more
//! than its delta; chunking is deterministic, so they need not cross the
//! link. The manifest assembled from the outline and the rebuilt files must
//! hash to what the hub signed; if anything does not fit, the caller falls
//! back to the whole manifest, keeping every file rebuilt and verified.

use std::collections::{HashMap, HashSet};

use ferry_content::{ChunkRef, Digest, FileEntry, Manifest, ManifestLimits, Outline};
use ferry_net::HubClient;
use ferry_net::api::routes;
use ferry_trust::TargetInfo;

use crate::TransferError;
use crate::delta::{DELTA_MIN_MISSING, get_delta, store_rebuilt};
use crate::local::LocalContent;

/// Packages with more regular files than this take the whole manifest: a
/// tree of many small files is better served by chunks in few batches
/// than by a request per changed file.
pub(crate) const OUTLINE_MAX_FILES: usize = 64;

/// Most files rebuilt by delta in one outline fetch (one request each).
const OUTLINE_MAX_DELTAS: usize = 16;

/// What an outline fetch moved.
pub(crate) struct OutlineFetch {
    /// The verified manifest's bytes.
    pub bytes: Vec<u8>,
    /// Bytes of the outline delta.
    pub outline_bytes: u64,
    /// Bytes of file deltas.
    pub delta_bytes: u64,
    /// Files rebuilt from deltas.
    pub files_by_delta: u64,
    /// Their total size.
    pub rebuilt_bytes: u64,
}

/// Why an outline fetch gave up: the caller takes the whole manifest.
#[derive(Debug)]
pub(crate) enum GiveUp {
    /// The outline route does not fit this package or this source.
    Unfit(String),
    /// What the source sent does not verify: worth a warning, and the
    /// whole manifest, which is checked as ever.
    Suspect(String),
    /// A network or local failure the whole-manifest path would meet too.
    Failed(TransferError),
}

impl From<TransferError> for GiveUp {
    fn from(e: TransferError) -> Self {
        GiveUp::Failed(e)
    }
}

/// Whether `base` is a package of a few files, worth an outline.
pub(crate) fn fits(base: &Manifest) -> bool {
    base.files.iter().filter(|f| f.symlink.is_none()).count() <= OUTLINE_MAX_FILES
}

/// Fetches `target` by outline against the held manifest `base` (its
/// target name, SHA-256 and bytes).
pub(crate) async fn fetch_by_outline(
    client: &HubClient,
    local: &LocalContent,
    target: &str,
    info: &TargetInfo,
    base: (&str, &str, &[u8]),
) -> Result<OutlineFetch, GiveUp> {
    let (btarget, bsha, bbytes) = base;
    let (bytes, store) = (bbytes.to_vec(), local.clone());
    let (base_manifest, base_outline, held) = blocking(move || {
        let m = Manifest::from_slice(&bytes, ManifestLimits::default())
            .map_err(|e| GiveUp::Unfit(format!("the held manifest does not parse: {e}")))?;
        let outline = m.outline();
        // Which of its files are in the store, to rebuild others from.
        let held: HashSet<Digest> = m
            .files
            .iter()
            .filter(|f| f.symlink.is_none())
            .map(|f| f.content_id())
            .filter(|id| store.store().has_object(id))
            .collect();
        Ok((m, outline, held))
    })
    .await?;
    if !fits(&base_manifest) {
        return Err(GiveUp::Unfit(format!(
            "{btarget} has more than {OUTLINE_MAX_FILES} files"
        )));
    }
    let url = client
        .url(&routes::outline(&info.sha256, target, (bsha, btarget)))
        .map_err(TransferError::from)?;
    // An outline is smaller than its manifest but for empty files.
    let limit = (info.length * 2 + 4096).min(ferry_content::MAX_MANIFEST_BYTES);
    let frame = match client.get_bytes(&url, limit).await {
        Ok(frame) => frame,
        // A source without outlines, or without the base.
        Err(e @ ferry_net::NetError::Status { .. }) => return Err(GiveUp::Unfit(e.to_string())),
        Err(e) => return Err(GiveUp::Failed(e.into())),
    };
    let source = client.base().to_string();
    let received = frame.clone();
    let outline = blocking(move || {
        ferry_content::decode_manifest_delta(&base_outline, &received, limit)
            .and_then(|bytes| Outline::parse(&bytes, ManifestLimits::default()))
            .map_err(|e| GiveUp::Suspect(format!("the outline from {source}: {e}")))
    })
    .await?;
    if outline.header.target_name() != target {
        return Err(GiveUp::Suspect(format!(
            "the outline from {} is of {}",
            client.base(),
            outline.header.target_name()
        )));
    }
    // The sizes are not signed, but the manifest's length is: each chunk
    // of at most `chunking.max` bytes costs 48 bytes of it (base64 of a
    // digest and a length). A larger claim would only make this client
    // accept larger deltas.
    let most = (info.length / 48 + 1).saturating_mul(u64::from(outline.header.chunking.max));
    if outline.header.total_size() > most {
        return Err(GiveUp::Suspect(format!(
            "the outline from {} claims more bytes than the signed manifest can describe",
            client.base()
        )));
    }

    // Chunk lists known from the base, and the changed files to rebuild.
    let known: HashMap<Digest, &[ChunkRef]> = base_manifest
        .files
        .iter()
        .filter(|f| f.symlink.is_none())
        .map(|f| (f.content_id(), f.chunks.as_slice()))
        .collect();
    let bases =
        crate::delta::bases_by_path(&base_manifest, &outline.header, |id| held.contains(id));
    let mut lists: HashMap<usize, Vec<ChunkRef>> = HashMap::new();
    let mut rebuild = Vec::new();
    for (i, (file, id)) in outline.header.files.iter().zip(&outline.ids).enumerate() {
        let Some(id) = id else { continue };
        if let Some(chunks) = known.get(id) {
            lists.insert(i, chunks.to_vec());
        } else if file.size == 0 {
            lists.insert(i, Vec::new());
        } else if let Some(from) = bases.get(file.path.as_str())
            && file.size >= DELTA_MIN_MISSING
        {
            rebuild.push((i, *id, *from));
        } else {
            return Err(GiveUp::Unfit(format!(
                "{} has no older version here to rebuild it from",
                file.path
            )));
        }
    }
    if rebuild.len() > OUTLINE_MAX_DELTAS {
        return Err(GiveUp::Unfit(format!(
            "{} changed files, more than {OUTLINE_MAX_DELTAS} requests are worth",
            rebuild.len()
        )));
    }

    let mut done = OutlineFetch {
        bytes: Vec::new(),
        outline_bytes: frame.len() as u64,
        delta_bytes: 0,
        files_by_delta: 0,
        rebuilt_bytes: 0,
    };
    let chunking = outline.header.chunking;
    for (i, id, from) in rebuild {
        let file: &FileEntry = &outline.header.files[i];
        // A delta larger than the file is worth nothing.
        let Some(delta) = get_delta(client, &id, &from, file.size).await? else {
            return Err(GiveUp::Unfit(format!(
                "no delta worth taking for {}",
                file.path
            )));
        };
        let (keep, mut entry) = (local.clone(), file.clone());
        let delta_len = delta.len() as u64;
        let chunks = blocking(move || {
            let path = entry.path.to_string();
            let rebuilt = crate::delta::rebuild(&keep, &from, &delta, entry.size, &path)?;
            entry.chunks = ferry_content::chunk_bytes(&rebuilt, chunking);
            if entry.content_id() != id {
                return Ok(None);
            }
            store_rebuilt(&keep, &entry, &rebuilt)?;
            Ok(Some(entry.chunks))
        })
        .await?;
        let Some(chunks) = chunks else {
            return Err(GiveUp::Suspect(format!(
                "{} rebuilt from the delta is not the content the outline names",
                file.path
            )));
        };
        done.delta_bytes += delta_len;
        done.files_by_delta += 1;
        done.rebuilt_bytes += file.size;
        lists.insert(i, chunks);
    }

    let (signed, source) = (info.clone(), client.base().to_string());
    done.bytes = blocking(move || {
        let manifest = outline
            .complete(ManifestLimits::default(), |i| lists.remove(&i))
            .map_err(|e| GiveUp::Suspect(format!("the outline from {source}: {e}")))?;
        let bytes = manifest.to_vec();
        if bytes.len() as u64 != signed.length || Digest::of(&bytes).to_hex() != signed.sha256 {
            return Err(GiveUp::Suspect(format!(
                "the manifest assembled from the outline from {source} is not the one the hub signed"
            )));
        }
        Ok(bytes)
    })
    .await?;
    Ok(done)
}

/// Runs CPU-heavy work (parsing, hashing) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, GiveUp> + Send + 'static,
) -> Result<T, GiveUp> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| GiveUp::Failed(TransferError::Refused(format!("outline task failed: {e}"))))?
}
