use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ferry_content::{ChunkRef, Digest};

use crate::durable;

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bytes did not hash to the digest they were offered under.
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the bytes claimed.
        expected: Digest,
        /// What they hash to.
        actual: Digest,
    },
    /// The object or chunk is not in the store.
    #[error("{0} is not in the content store")]
    Missing(Digest),
    /// An uploaded pack is malformed.
    #[error(transparent)]
    BadPack(ferry_content::ContentError),
    /// A read past the end of an object.
    #[error("range {offset}+{len} is outside object {id} of {size} bytes")]
    OutOfRange {
        /// The object.
        id: Digest,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The object's size.
        size: u64,
    },
    /// A filesystem operation failed.
    #[error(
        "content store I/O on {path}: {source} (check the disk and the permissions of the data directory)"
    )]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A staged pack and where each of its chunks sits inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedPack {
    /// The pack's name: the digest of its bytes.
    pub id: Digest,
    /// Each chunk's digest, offset and length inside the pack.
    pub chunks: Vec<(Digest, u64, u32)>,
}

/// A content store rooted at one directory.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) a store under `root`, and removes temporary
    /// files a crash may have left.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["objects", "staging", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let entry = entry.map_err(io_err(&tmp))?;
            let _ = fs::remove_file(entry.path());
        }
        Ok(ContentStore {
            root: root.to_owned(),
        })
    }

    fn sharded(&self, area: &str, id: &Digest) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(area).join(&hex[..2]).join(hex)
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()))
    }

    /// Moves a finished temp file to `dest`, creating its shard directory.
    fn install(&self, tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        let shard = dest.parent().expect("sharded paths have a parent");
        if !shard.exists() {
            fs::create_dir_all(shard).map_err(io_err(shard))?;
            durable::sync_dir(shard.parent().expect("area dir")).map_err(io_err(shard))?;
        }
        durable::rename(tmp, dest).map_err(io_err(dest))
    }

    /// Hashes every chunk of an uploaded pack (see
    /// [`ferry_content::pack_records`]) and keeps the pack in the staging area
    /// until a publish assembles files from it. Either the whole pack is kept
    /// or nothing is: one malformed record refuses it.
    pub fn stage_pack(&self, pack: &[u8], max_chunk: u32) -> Result<StagedPack, StoreError> {
        let records = ferry_content::pack_records(pack, max_chunk).map_err(StoreError::BadPack)?;
        let chunks = records
            .iter()
            .map(|r| (Digest::of(r.bytes), r.offset as u64, r.bytes.len() as u32))
            .collect();
        // Named by its own digest, so a retried upload lands on the same file.
        let id = Digest::of(pack);
        let dest = self.sharded("staging", &id);
        if !dest.exists() {
            let tmp = self.temp_path();
            let write = || -> io::Result<()> {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o444)
                    .open(&tmp)?;
                f.write_all(pack)?;
                f.sync_all()
            };
            if let Err(e) = write() {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::Io {
                    path: tmp,
                    source: e,
                });
            }
            self.install(&tmp, &dest)?;
        }
        Ok(StagedPack { id, chunks })
    }

    /// Reads a chunk out of a staged pack, checking it against `digest`.
    pub fn read_staged(
        &self,
        pack: &Digest,
        offset: u64,
        len: u32,
        digest: &Digest,
    ) -> Result<Vec<u8>, StoreError> {
        let bytes = read_at(&self.sharded("staging", pack), *pack, offset, len as u64)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Removes a staged pack (after a publish, or by garbage collection).
    pub fn remove_pack(&self, id: &Digest) -> Result<(), StoreError> {
        remove_if_present(&self.sharded("staging", id))
    }

    /// Every staged pack.
    pub fn staged_packs(&self) -> Result<Vec<Digest>, StoreError> {
        Ok(self.list("staging")?.into_iter().map(|(d, _)| d).collect())
    }

    /// Writes the object `id` from `chunks`, taking each chunk's bytes from
    /// `fetch` and checking them against the chunk's digest. The object
    /// appears only once it is complete and durable. Returns its size.
    pub fn assemble(
        &self,
        id: &Digest,
        chunks: &[ChunkRef],
        mut fetch: impl FnMut(&ChunkRef) -> Result<Vec<u8>, StoreError>,
    ) -> Result<u64, StoreError> {
        let dest = self.sharded("objects", id);
        if dest.exists() {
            return Ok(fs::metadata(&dest).map_err(io_err(&dest))?.len());
        }
        let tmp = self.temp_path();
        let mut write = || -> Result<u64, StoreError> {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let mut size = 0u64;
            for chunk in chunks {
                let bytes = fetch(chunk)?;
                let actual = Digest::of(&bytes);
                if actual != chunk.digest || bytes.len() != chunk.len as usize {
                    return Err(StoreError::DigestMismatch {
                        expected: chunk.digest,
                        actual,
                    });
                }
                out.write_all(&bytes).map_err(io_err(&tmp))?;
                size += bytes.len() as u64;
            }
            let file = out.into_inner().map_err(|e| StoreError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(io_err(&tmp))?;
            Ok(size)
        };
        match write() {
            Ok(size) => {
                self.install(&tmp, &dest)?;
                Ok(size)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Whether the object `id` is stored.
    pub fn has_object(&self, id: &Digest) -> bool {
        self.sharded("objects", id).exists()
    }

    /// Path of a stored object, for serving it directly.
    pub fn object_path(&self, id: &Digest) -> Result<PathBuf, StoreError> {
        let path = self.sharded("objects", id);
        if path.exists() {
            Ok(path)
        } else {
            Err(StoreError::Missing(*id))
        }
    }

    /// Reads `len` bytes at `offset` of object `id`.
    pub fn read_range(&self, id: &Digest, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        read_at(&self.sharded("objects", id), *id, offset, len)
    }

    /// Deletes an object (garbage collection).
    pub fn remove_object(&self, id: &Digest) -> Result<(), StoreError> {
        remove_if_present(&self.sharded("objects", id))
    }

    /// Every stored object.
    pub fn objects(&self) -> Result<Vec<Digest>, StoreError> {
        Ok(self.list("objects")?.into_iter().map(|(d, _)| d).collect())
    }

    fn list(&self, area: &str) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
        let base = self.root.join(area);
        let mut out = Vec::new();
        for shard in fs::read_dir(&base).map_err(io_err(&base))? {
            let shard = shard.map_err(io_err(&base))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(io_err(&shard))? {
                let path = entry.map_err(io_err(&shard))?.path();
                if let Some(d) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<Digest>().ok())
                {
                    out.push((d, path));
                }
            }
        }
        Ok(out)
    }
}

/// Reads `len` bytes at `offset` of the stored file `path`, named `id`.
fn read_at(path: &Path, id: Digest, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing(id)),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source: e,
            });
        }
    };
    let size = file.metadata().map_err(io_err(path))?.len();
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(StoreError::OutOfRange {
            id,
            offset,
            len,
            size,
        });
    }
    file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf).map_err(io_err(path))?;
    Ok(buf)
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tag: &str) -> (ContentStore, tempfile::TempDir) {
        let d = tempfile::Builder::new()
            .prefix(&format!("ferry-store-{tag}"))
            .tempdir()
            .unwrap();
        (ContentStore::open(d.path()).unwrap(), d)
    }

    #[test]
    fn stage_verify_assemble_read() {
        let (s, dir) = store("flow");
        let a = b"first chunk".to_vec();
        let b = b"second".to_vec();
        let refs = [
            ChunkRef {
                digest: Digest::of(&a),
                len: a.len() as u32,
            },
            ChunkRef {
                digest: Digest::of(&b),
                len: b.len() as u32,
            },
        ];
        let mut bad = Vec::new();
        ferry_content::pack_push(&mut bad, &a);
        ferry_content::pack_push(&mut bad, &b);
        assert!(matches!(
            s.stage_pack(&bad[..bad.len() - 1], 100),
            Err(StoreError::BadPack(_))
        ));
        assert!(
            s.staged_packs().unwrap().is_empty(),
            "a refused pack was kept"
        );

        let mut pack = Vec::new();
        ferry_content::pack_push(&mut pack, &a);
        ferry_content::pack_push(&mut pack, &b);
        let staged = s.stage_pack(&pack, 100).unwrap();
        let hashed: Vec<Digest> = staged.chunks.iter().map(|c| c.0).collect();
        assert_eq!(
            hashed,
            vec![refs[0].digest, refs[1].digest],
            "chunks hashed by the store"
        );
        assert_eq!(
            s.stage_pack(&pack, 100).unwrap(),
            staged,
            "a retried upload is idempotent"
        );
        assert_eq!(s.staged_packs().unwrap(), vec![staged.id]);
        let id = Digest::of(b"object id");
        let size = s
            .assemble(&id, &refs, |c| {
                let (_, offset, len) = staged.chunks.iter().find(|e| e.0 == c.digest).unwrap();
                s.read_staged(&staged.id, *offset, *len, &c.digest)
            })
            .unwrap();
        assert_eq!(size, 17);
        assert_eq!(s.read_range(&id, 11, 6).unwrap(), b"second");
        assert!(s.read_range(&id, 12, 6).is_err());
        assert_eq!(s.objects().unwrap(), vec![id]);
        s.remove_pack(&staged.id).unwrap();
        assert!(s.staged_packs().unwrap().is_empty());
        drop(dir);
    }

    #[test]
    fn failed_assembly_leaves_nothing() {
        let (s, dir) = store("fail");
        let refs = [ChunkRef {
            digest: Digest::of(b"x"),
            len: 1,
        }];
        let id = Digest::of(b"id");
        assert!(s.assemble(&id, &refs, |_| Ok(b"y".to_vec())).is_err());
        assert!(!s.has_object(&id));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        drop(dir);
    }
}
