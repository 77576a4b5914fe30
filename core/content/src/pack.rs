//! Chunk packs: many chunks in one body, so an upload costs one request and
//! one fsync instead of one per chunk.
//!
//! A pack is a sequence of records, each the chunk's length as an unsigned
//! LEB128 varint (2 bytes for chunks of up to 16 KiB) followed by the chunk's
//! bytes. Nothing else: whoever keeps the bytes hashes them itself, so a
//! pack carries no digest that could lie and costs no 32 bytes per chunk.

use crate::ContentError;

/// Bytes of the header of a record of `len` bytes.
pub fn pack_record_header(len: u32) -> usize {
    let bits = (u32::BITS - len.leading_zeros()).max(1) as usize;
    bits.div_ceil(7)
}

/// Appends one record to `pack`.
pub fn pack_push(pack: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = u32::try_from(bytes.len()).expect("a chunk is shorter than 4 GiB");
    loop {
        let low = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            pack.push(low);
            break;
        }
        pack.push(low | 0x80);
    }
    pack.extend_from_slice(bytes);
}

/// One record of a pack, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRecord<'a> {
    /// Offset of the chunk's bytes inside the pack.
    pub offset: usize,
    /// The chunk's bytes.
    pub bytes: &'a [u8],
}

/// Splits a pack into records, refusing a truncated pack, an empty chunk, a
/// length written in more bytes than it needs, or a chunk longer than
/// `max_chunk`.
pub fn pack_records(pack: &[u8], max_chunk: u32) -> Result<Vec<PackRecord<'_>>, ContentError> {
    let bad =
        |index: usize, why: String| ContentError::InvalidPack(format!("record {index}: {why}"));
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < pack.len() {
        let index = out.len();
        let mut len: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = *pack
                .get(at)
                .ok_or_else(|| bad(index, "truncated inside its length".into()))?;
            at += 1;
            len |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 7 {
                    return Err(bad(index, "its length has a redundant byte".into()));
                }
                break;
            }
            if shift >= 35 {
                return Err(bad(index, "its length runs past 5 bytes".into()));
            }
        }
        if len == 0 || len > u64::from(max_chunk) {
            return Err(bad(
                index,
                format!("declares {len} bytes, outside 1..={max_chunk}"),
            ));
        }
        let bytes = pack.get(at..at + len as usize).ok_or_else(|| {
            bad(
                index,
                format!(
                    "truncated: declares {len} bytes but only {} remain",
                    pack.len() - at
                ),
            )
        })?;
        out.push(PackRecord { offset: at, bytes });
        at += len as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let big = vec![9u8; 300];
        let mut pack = Vec::new();
        pack_push(&mut pack, b"one");
        pack_push(&mut pack, &big);
        pack_push(&mut pack, b"three");
        assert_eq!(pack.len(), 1 + 3 + 2 + 300 + 1 + 5);
        let records = pack_records(&pack, 1000).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].bytes, &big[..]);
        assert_eq!(records[2].bytes, b"three");
        assert_eq!(&pack[records[2].offset..records[2].offset + 5], b"three");
        let whole_records = [1 + 3, 1 + 3 + 2 + 300];
        for cut in 1..pack.len() {
            if whole_records.contains(&cut) {
                continue; // whole leading records are a valid pack
            }
            assert!(
                pack_records(&pack[..cut], 1000).is_err(),
                "cut at {cut} accepted"
            );
        }
        assert!(pack_records(&pack, 4).is_err(), "over-long chunk accepted");
        assert!(pack_records(&[], 100).unwrap().is_empty());
        assert!(pack_records(&[0], 100).is_err(), "empty chunk accepted");
        assert!(
            pack_records(&[0x83, 0x00, 1, 2, 3], 100).is_err(),
            "padded length accepted"
        );
        assert!(
            pack_records(&[0xff; 9], u32::MAX).is_err(),
            "endless length accepted"
        );
    }

    #[test]
    fn header_sizes() {
        for len in [1u32, 127, 128, 16_383, 16_384, 1 << 24] {
            let mut pack = Vec::new();
            pack_push(&mut pack, &vec![0; len as usize]);
            assert_eq!(pack.len() - len as usize, pack_record_header(len), "{len}");
        }
    }
}
