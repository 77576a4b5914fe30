//! A client's local content: whole files in a content store, the manifests
//! that describe them, and a spool of verified chunks of fetches not yet
//! finished. A new version is built from what is here plus what is missing.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferry_content::{ChunkParams, Digest, Manifest, ManifestLimits, PackageName};
use ferry_store::ContentStore;

use crate::TransferError;

/// What [`LocalContent::trim`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Files removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes the store holds afterwards (above the quota only when what
    /// open tasks need takes more).
    pub held: u64,
}

/// Where a chunk can be read locally.
#[derive(Debug, Clone)]
pub(crate) enum LocalChunk {
    /// Inside a stored object.
    Object { id: Digest, offset: u64, len: u32 },
    /// Inside a spool file of an unfinished fetch.
    Spool {
        file: PathBuf,
        offset: u64,
        len: u32,
    },
}

/// What the spool holds: where each verified chunk lies, and each file's
/// digests.
#[derive(Debug, Default)]
pub(crate) struct Spooled {
    pub chunks: HashMap<Digest, LocalChunk>,
    pub files: Vec<(PathBuf, Vec<Digest>)>,
}

/// Local content under one directory:
///
/// ```text
/// store/      whole files by content id (see ferry_store::ContentStore)
/// manifests/  manifests by TUF target name
/// spool/      verified chunks of fetches in progress, as records
/// lock        held while a fetch works here
/// ```
///
/// An open `LocalContent` holds the directory's lock: two processes sharing
/// a data directory take turns instead of racing on its files.
/// Clones share the lock, which is released when the last one is dropped.
#[derive(Debug, Clone)]
pub struct LocalContent {
    dir: PathBuf,
    store: ContentStore,
    _lock: std::sync::Arc<std::fs::File>,
}

impl LocalContent {
    /// Opens (creating) local content under `dir`, waiting while another
    /// process has it open; `on_wait` is called once if it must wait.
    pub async fn open(dir: &Path, on_wait: impl FnOnce()) -> Result<Self, TransferError> {
        std::fs::create_dir_all(dir).map_err(|e| TransferError::io(dir, e))?;
        let path = dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| TransferError::io(&path, e))?;
        let file = match file.try_lock() {
            Ok(()) => file,
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                tokio::task::spawn_blocking(move || {
                    file.lock().map_err(|e| TransferError::io(&path, e))?;
                    Ok::<_, TransferError>(file)
                })
                .await
                .map_err(|e| {
                    TransferError::Refused(format!("waiting for the lock failed: {e}"))
                })??
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(TransferError::io(&path, e)),
        };
        for sub in ["manifests", "spool"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| TransferError::io(&d, e))?;
        }
        // Writes a crash interrupted; only under the lock.
        let manifests = dir.join("manifests");
        ferry_store::durable::remove_leftovers(&manifests)
            .map_err(|e| TransferError::io(&manifests, e))?;
        // Opening the store clears its temporary files: only under the lock.
        let store = ContentStore::open(&dir.join("store")).map_err(store_err)?;
        Ok(LocalContent {
            dir: dir.to_owned(),
            store,
            _lock: std::sync::Arc::new(file),
        })
    }

    /// The content store.
    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    fn manifest_path(&self, target: &str) -> PathBuf {
        self.dir.join("manifests").join(target)
    }

    /// A kept manifest, if its bytes hash to `sha256` (hex).
    pub fn manifest(&self, target: &str, sha256: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.manifest_path(target)).ok()?;
        (Digest::of(&bytes).to_hex() == sha256).then_some(bytes)
    }

    /// Keeps a verified manifest.
    pub fn put_manifest(&self, target: &str, bytes: &[u8]) -> Result<(), TransferError> {
        let path = self.manifest_path(target);
        ferry_store::durable::write_file(&path, bytes, 0o644)
            .map_err(|e| TransferError::io(&path, e))
    }

    /// Every kept manifest that parses: (target, bytes, manifest).
    fn manifests(&self) -> Vec<(String, Vec<u8>, Manifest)> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("manifests")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let e = e.ok()?;
                let target = e.file_name().into_string().ok()?;
                let bytes = std::fs::read(e.path()).ok()?;
                let manifest = Manifest::from_slice(&bytes, ManifestLimits::default()).ok()?;
                (manifest.target_name() == target).then_some((target, bytes, manifest))
            })
            .collect()
    }

    /// The newest kept manifest of `name` other than `except`, as a delta
    /// base: (target, bytes).
    pub fn newest_manifest_of(
        &self,
        name: &PackageName,
        except: &str,
    ) -> Option<(String, Vec<u8>)> {
        self.manifests()
            .into_iter()
            .filter(|(t, _, m)| &m.name == name && t != except)
            .max_by(|a, b| a.2.version.cmp(&b.2.version))
            .map(|(t, b, _)| (t, b))
    }

    /// Removes stored files, oldest first, until the store holds at most
    /// `quota` bytes, never one that a kept manifest of a target in `keep`
    /// lists (what open tasks need). Blocks; the caller makes sure no fetch
    /// runs meanwhile, as one may be reading an older file's chunks.
    pub fn trim(&self, quota: u64, keep: &HashSet<String>) -> Result<Trimmed, TransferError> {
        let pinned: HashSet<Digest> = self
            .manifests()
            .iter()
            .filter(|(target, _, _)| keep.contains(target))
            .flat_map(|(_, _, m)| m.files.iter().filter(|f| f.symlink.is_none()))
            .map(|f| f.content_id())
            .collect();
        let mut files = Vec::new();
        for id in self.store.objects().map_err(store_err)? {
            let path = self.store.object_path(&id).map_err(store_err)?;
            // A file removed meanwhile is simply not there.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            files.push((meta.modified().ok(), meta.len(), id));
        }
        files.sort();
        let mut held: u64 = files.iter().map(|(_, len, _)| len).sum();
        let mut trimmed = Trimmed::default();
        for (_, len, id) in files {
            if held <= quota {
                break;
            }
            if pinned.contains(&id) {
                continue;
            }
            self.store.remove_object(&id).map_err(store_err)?;
            held -= len;
            trimmed.files += 1;
            trimmed.bytes += len;
        }
        trimmed.held = held;
        Ok(trimmed)
    }

    /// Every chunk of every stored object whose manifest is kept here.
    pub(crate) fn chunk_index(&self) -> HashMap<Digest, LocalChunk> {
        let mut index = HashMap::new();
        for (_, _, manifest) in self.manifests() {
            for file in manifest.files.iter().filter(|f| f.symlink.is_none()) {
                let id = file.content_id();
                if !self.store.has_object(&id) {
                    continue;
                }
                let mut offset = 0u64;
                for c in &file.chunks {
                    index.entry(c.digest).or_insert(LocalChunk::Object {
                        id,
                        offset,
                        len: c.len,
                    });
                    offset += c.len as u64;
                }
            }
        }
        index
    }

    /// Verified chunks left in the spool by interrupted fetches, and the
    /// digests each spool file holds. A record that is cut off or does not
    /// hash to its digest ends its file's valid part; the file is cut back
    /// to it. Files are read record by record, never whole.
    pub(crate) fn spooled(&self) -> Result<Spooled, TransferError> {
        let dir = self.dir.join("spool");
        let mut found = Spooled::default();
        let entries = std::fs::read_dir(&dir).map_err(|e| TransferError::io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| TransferError::io(&dir, e))?.path();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| TransferError::io(&path, e))?;
            let size = file
                .metadata()
                .map_err(|e| TransferError::io(&path, e))?
                .len();
            let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
            let mut at = 0u64;
            let mut header = [0u8; 36];
            let mut data = Vec::new();
            let mut digests = Vec::new();
            while reader.read_exact(&mut header).is_ok() {
                let digest = Digest(header[..32].try_into().expect("32 bytes"));
                let len = u32::from_le_bytes(header[32..].try_into().expect("4 bytes"));
                if len == 0 || len > ChunkParams::MAX_CHUNK {
                    break;
                }
                data.resize(len as usize, 0);
                if reader.read_exact(&mut data).is_err() || Digest::of(&data) != digest {
                    break;
                }
                found.chunks.entry(digest).or_insert(LocalChunk::Spool {
                    file: path.clone(),
                    offset: at + 36,
                    len,
                });
                digests.push(digest);
                at += 36 + len as u64;
            }
            if at < size {
                file.set_len(at).map_err(|e| TransferError::io(&path, e))?;
            }
            found.files.push((path, digests));
        }
        Ok(found)
    }

    /// A new spool file for this fetch's chunks, written by a blocking
    /// task of its own.
    pub(crate) fn spool_writer(&self) -> SpoolWriter {
        let path = self
            .dir
            .join("spool")
            .join(format!("{:016x}", rand::random::<u64>()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(SPOOL_QUEUE);
        let file_path = path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let io = |e| TransferError::io(&file_path, e);
            let mut file = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&file_path)
                .map_err(io)?;
            while let Some(records) = rx.blocking_recv() {
                file.write_all(&records).map_err(io)?;
            }
            file.sync_data().map_err(io)
        });
        SpoolWriter {
            path,
            buffer: Vec::new(),
            len: 0,
            tx: Some(tx),
            writer,
        }
    }

    /// Removes the spool files all of whose chunks are now in stored
    /// objects; the others (an interrupted fetch of something else) stay
    /// for their next attempt.
    pub(crate) fn clear_spool(&self) -> Result<(), TransferError> {
        let held = self.chunk_index();
        for (path, digests) in self.spooled()?.files {
            if digests.iter().all(|d| held.contains_key(d)) {
                std::fs::remove_file(&path).map_err(|e| TransferError::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Reads one local chunk.
    pub(crate) fn read(&self, at: &LocalChunk) -> Result<Vec<u8>, ferry_store::StoreError> {
        match at {
            LocalChunk::Object { id, offset, len } => {
                self.store.read_range(id, *offset, *len as u64)
            }
            LocalChunk::Spool { file, offset, len } => {
                let io = |source| ferry_store::StoreError::Io {
                    path: file.clone(),
                    source,
                };
                let f = std::fs::File::open(file).map_err(io)?;
                let mut buf = vec![0u8; *len as usize];
                f.read_exact_at(&mut buf, *offset).map_err(io)?;
                Ok(buf)
            }
        }
    }
}

/// Bytes of records collected before they are handed to the spool's
/// writer task. Small: what a killed process held here is fetched again
/// (what the writer wrote is in the page cache and survives the process).
const SPOOL_BUFFER: usize = 64 << 10;
/// Buffers queued for the writer task before the fetch waits for it.
const SPOOL_QUEUE: usize = 2;

/// Appends verified chunks to a spool file, as records (digest, length,
/// bytes) that a later fetch can check again and reuse. Records are
/// collected in memory and written by a blocking task, so the async side
/// never waits on the disk except through [`SpoolWriter::settle`].
pub(crate) struct SpoolWriter {
    path: PathBuf,
    buffer: Vec<u8>,
    len: u64,
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    writer: tokio::task::JoinHandle<Result<(), TransferError>>,
}

impl SpoolWriter {
    /// Appends one verified chunk; returns where its bytes will lie once
    /// [`SpoolWriter::finish`] returned.
    pub fn append(&mut self, digest: Digest, bytes: &[u8]) -> LocalChunk {
        self.buffer.extend_from_slice(&digest.0);
        self.buffer
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.buffer.extend_from_slice(bytes);
        let offset = self.len + 36;
        self.len = offset + bytes.len() as u64;
        LocalChunk::Spool {
            file: self.path.clone(),
            offset,
            len: bytes.len() as u32,
        }
    }

    /// Hands a full buffer to the writer task, waiting while it is
    /// [`SPOOL_QUEUE`] buffers behind.
    pub async fn settle(&mut self) -> Result<(), TransferError> {
        if self.buffer.len() < SPOOL_BUFFER {
            return Ok(());
        }
        let records = std::mem::take(&mut self.buffer);
        let sent = match &self.tx {
            Some(tx) => tx.send(records).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped: its error says why.
            self.tx = None;
            match (&mut self.writer).await {
                Ok(Err(e)) => Err(e),
                _ => Err(TransferError::io(
                    &self.path,
                    std::io::Error::other("the spool writer stopped"),
                )),
            }
        }
    }

    /// Writes what is buffered and makes every record durable and readable.
    pub async fn finish(mut self) -> Result<(), TransferError> {
        let records = std::mem::take(&mut self.buffer);
        if let Some(tx) = self.tx.take()
            && !records.is_empty()
        {
            // A failed send means the writer stopped; its result says why.
            let _ = tx.send(records).await;
        }
        self.writer.await.map_err(|e| {
            TransferError::io(
                &self.path,
                std::io::Error::other(format!("spool writer: {e}")),
            )
        })?
    }
}

pub(crate) fn store_err(e: ferry_store::StoreError) -> TransferError {
    match e {
        ferry_store::StoreError::Io { path, source } => TransferError::Io { path, source },
        other => TransferError::Refused(other.to_string()),
    }
}
