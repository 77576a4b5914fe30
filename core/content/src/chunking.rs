use std::fs::File;
use std::path::Path;

use fastcdc::v2020::{FastCDC, Normalization};
use serde::{Deserialize, Serialize};

use crate::{ContentError, Digest};

/// Content-defined chunking parameters (FastCDC 2020, normalization level 1).
///
/// The defaults were picked with `bench/delta`: a 100 MiB file with 1% of its
/// bytes changed either as 10 contiguous 100 KiB edits or as 1,024 scattered
/// 1 KiB edits. Small chunks keep the scattered case cheap; the per-chunk
/// metadata they cost is mostly avoided by sending the new manifest as a delta
/// of the previous one (see [`crate::encode_manifest_delta`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    /// No chunk is shorter than this, except a file's last one.
    pub min: u32,
    /// The average chunk length the cut points aim for.
    pub avg: u32,
    /// No chunk is longer than this.
    pub max: u32,
    /// FastCDC normalization level, 0-3: how tightly chunk lengths gather
    /// around `avg`. Tighter means a small edit re-sends less of the chunks
    /// around it.
    pub normalization: u8,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            min: 256,
            avg: 1024,
            max: 8192,
            normalization: 1,
        }
    }
}

impl ChunkParams {
    /// The largest chunk any parameters allow (FastCDC's maximum).
    pub const MAX_CHUNK: u32 = fastcdc::v2020::MAXIMUM_MAX;

    /// Checks the parameters against FastCDC's bounds.
    pub fn validate(&self) -> Result<(), ContentError> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MINIMUM_MIN};
        let ok = self.min >= MINIMUM_MIN
            && self.avg >= AVERAGE_MIN
            && self.avg <= AVERAGE_MAX
            && self.max <= MAXIMUM_MAX
            && self.min <= self.avg
            && self.avg <= self.max
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(ContentError::InvalidManifest(format!(
                "chunk parameters {self:?} are out of range (need 64 <= min <= avg <= max <= 16 MiB, avg >= 256, normalization 0-3)"
            )))
        }
    }
}

/// One chunk of a file: its digest and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// SHA-256 of the chunk's bytes.
    pub digest: Digest,
    /// The chunk's length in bytes.
    pub len: u32,
}

/// Bytes per batch handed to the hashing threads: large enough to amortise
/// scheduling, small enough that cut-point search and hashing overlap.
const BATCH_BYTES: usize = 4 << 20;

/// Splits `data` into content-defined chunks and hashes each one.
///
/// The cut-point search is sequential by nature, so it runs on the calling
/// thread while batches of finished chunks are hashed on rayon's pool. The
/// calling thread never blocks on the pool: it may itself be a pool worker
/// (a directory scan chunks files in parallel), and waiting on a worker's
/// own queue would deadlock.
pub fn chunk_bytes(data: &[u8], params: ChunkParams) -> Vec<ChunkRef> {
    if data.is_empty() {
        return Vec::new();
    }
    let level = match params.normalization {
        0 => Normalization::Level0,
        1 => Normalization::Level1,
        2 => Normalization::Level2,
        _ => Normalization::Level3,
    };
    let cuts = FastCDC::with_level(data, params.min, params.avg, params.max, level);
    let done: std::sync::Mutex<Vec<(usize, Vec<ChunkRef>)>> = Default::default();
    rayon::in_place_scope(|scope| {
        let done = &done;
        let mut pending: Vec<(usize, usize)> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut batch_count = 0usize;
        let mut flush = |pending: &mut Vec<(usize, usize)>| {
            let spans = std::mem::take(pending);
            let index = batch_count;
            batch_count += 1;
            scope.spawn(move |_| {
                let refs = spans
                    .iter()
                    .map(|&(offset, len)| ChunkRef {
                        digest: Digest::of(&data[offset..offset + len]),
                        len: len as u32,
                    })
                    .collect();
                done.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((index, refs));
            });
        };
        for cut in cuts {
            pending.push((cut.offset, cut.length));
            pending_bytes += cut.length;
            if pending_bytes >= BATCH_BYTES {
                flush(&mut pending);
                pending_bytes = 0;
            }
        }
        if !pending.is_empty() {
            flush(&mut pending);
        }
    });
    let mut batches = done.into_inner().unwrap_or_else(|p| p.into_inner());
    batches.sort_unstable_by_key(|(i, _)| *i);
    batches.into_iter().flat_map(|(_, b)| b).collect()
}

/// Chunks a file on disk, reading it through a memory map.
pub fn chunk_file(path: &Path, params: ChunkParams) -> Result<Vec<ChunkRef>, ContentError> {
    let file = File::open(path).map_err(|e| ContentError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| ContentError::io(path, e))?
        .len();
    if len == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the map is read-only and lives only for this call. A concurrent
    // writer could change bytes under us; the resulting digests would then not
    // match what is uploaded, and the hub refuses such chunks.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ContentError::io(path, e))?;
    Ok(chunk_bytes(&map, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_input_in_order() {
        let data = pseudo_random(10 << 20, 7);
        let params = ChunkParams::default();
        let chunks = chunk_bytes(&data, params);
        let total: u64 = chunks.iter().map(|c| c.len as u64).sum();
        assert_eq!(total, data.len() as u64);
        let mut offset = 0usize;
        for c in &chunks {
            assert!(c.len <= params.max);
            assert_eq!(c.digest, Digest::of(&data[offset..offset + c.len as usize]));
            offset += c.len as usize;
        }
    }

    #[test]
    fn an_insertion_changes_few_chunks() {
        let data = pseudo_random(4 << 20, 9);
        let mut edited = data.clone();
        edited.splice(2_000_000..2_000_000, pseudo_random(100, 3));
        let a: std::collections::HashSet<_> = chunk_bytes(&data, ChunkParams::default())
            .into_iter()
            .collect();
        let b = chunk_bytes(&edited, ChunkParams::default());
        let new = b.iter().filter(|c| !a.contains(c)).count();
        assert!(new <= 4, "{new} chunks changed for one 100-byte insertion");
    }

    #[test]
    fn chunking_inside_the_pool_does_not_deadlock() {
        use rayon::prelude::*;
        let files: Vec<Vec<u8>> = (0..8).map(|i| pseudo_random(9 << 20, i + 1)).collect();
        let counts: Vec<usize> = files
            .par_iter()
            .map(|f| chunk_bytes(f, ChunkParams::default()).len())
            .collect();
        assert!(counts.iter().all(|&n| n > 1000));
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(chunk_bytes(&[], ChunkParams::default()).is_empty());
    }
}
