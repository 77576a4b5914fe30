//! Chunk packs: many chunks in one body, so an upload or a batch download
//! costs one request and one fsync instead of one per chunk.
//!
//! A pack is a sequence of records, each a 32-byte SHA-256 digest, the chunk
//! length as a little-endian `u32`, then the chunk's bytes. Nothing else: the
//! digest of every record is checked by whoever keeps the bytes.

use crate::{ContentError, Digest};

/// Bytes of a record's header (digest and length).
pub const PACK_RECORD_HEADER: usize = 36;

/// Appends one record to `pack`.
pub fn pack_push(pack: &mut Vec<u8>, digest: &Digest, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a chunk is shorter than 4 GiB");
    pack.extend_from_slice(&digest.0);
    pack.extend_from_slice(&len.to_le_bytes());
    pack.extend_from_slice(bytes);
}

/// One record of a pack, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRecord<'a> {
    /// The digest the record claims for its bytes (not yet checked).
    pub digest: Digest,
    /// Offset of the chunk's bytes inside the pack.
    pub offset: usize,
    /// The chunk's bytes.
    pub bytes: &'a [u8],
}

/// Splits a pack into records, refusing a truncated pack, an empty chunk or
/// a chunk longer than `max_chunk`. Digests are not checked here.
pub fn pack_records(pack: &[u8], max_chunk: u32) -> Result<Vec<PackRecord<'_>>, ContentError> {
    let bad =
        |index: usize, why: String| ContentError::InvalidPack(format!("record {index}: {why}"));
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < pack.len() {
        let index = out.len();
        let header = pack.get(at..at + PACK_RECORD_HEADER).ok_or_else(|| {
            bad(
                index,
                format!(
                    "truncated: {} byte(s) left where a {PACK_RECORD_HEADER}-byte header belongs",
                    pack.len() - at
                ),
            )
        })?;
        let digest = Digest(header[..32].try_into().expect("32 bytes"));
        let len = u32::from_le_bytes(header[32..].try_into().expect("4 bytes"));
        if len == 0 || len > max_chunk {
            return Err(bad(
                index,
                format!("declares {len} bytes, outside 1..={max_chunk}"),
            ));
        }
        let start = at + PACK_RECORD_HEADER;
        let bytes = pack.get(start..start + len as usize).ok_or_else(|| {
            bad(
                index,
                format!(
                    "truncated: declares {len} bytes but only {} remain",
                    pack.len() - start
                ),
            )
        })?;
        out.push(PackRecord {
            digest,
            offset: start,
            bytes,
        });
        at = start + len as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let mut pack = Vec::new();
        pack_push(&mut pack, &Digest::of(b"one"), b"one");
        pack_push(&mut pack, &Digest::of(b"three"), b"three");
        let records = pack_records(&pack, 100).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].bytes, b"three");
        assert_eq!(&pack[records[1].offset..records[1].offset + 5], b"three");
        for cut in 1..pack.len() {
            if cut == PACK_RECORD_HEADER + 3 {
                continue; // a whole first record is a valid pack
            }
            assert!(
                pack_records(&pack[..cut], 100).is_err(),
                "cut at {cut} accepted"
            );
        }
        assert!(pack_records(&pack, 4).is_err(), "over-long chunk accepted");
        assert!(pack_records(&[], 100).unwrap().is_empty());
    }
}
