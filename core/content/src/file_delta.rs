//! A new version of a file as a byte-level delta of an older version both
//! sides hold: zstd with the old file as a reference prefix and long-range
//! matching (the library form of `zstd --patch-from`). Where chunk reuse
//! fails (a tar header's new mtime spoils each small chunk, an executable's
//! shifted addresses), this finds the shared bytes anyway. A delta is
//! untrusted input: whoever decodes it checks the result against the signed
//! manifest.

use std::io::{Read, Write};

use crate::ContentError;

/// Largest file a delta is made for or decoded to: both versions are held
/// in memory while it is worked on.
pub const MAX_DELTA_FILE: u64 = 1 << 30;

/// The zstd window, in bits, that covers `total` bytes (at most 2^31, as
/// zstd's long mode allows).
fn window_log(total: u64) -> u32 {
    let bits = u64::BITS - total.max(1 << 10).leading_zeros();
    bits.clamp(10, 31)
}

/// Compresses `new` against `base` at zstd `level` (1-22). Two gzip files
/// that zlib made are compared through their contents (see
/// `gzip_delta`).
pub fn encode_file_delta(base: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>, ContentError> {
    if let Some(delta) = crate::gzip_delta::encode(base, new, level) {
        return Ok(delta);
    }
    encode_plain(base, new, level)
}

/// A zstd patch-from frame turning `base` into `new`.
pub(crate) fn encode_plain(base: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>, ContentError> {
    if base.len() as u64 > MAX_DELTA_FILE || new.len() as u64 > MAX_DELTA_FILE {
        return Err(ContentError::TooLarge {
            what: "file to delta".into(),
            limit: MAX_DELTA_FILE,
        });
    }
    let failed =
        |e: std::io::Error| ContentError::InvalidDelta(format!("making a file delta: {e}"));
    let mut out = Vec::new();
    let mut encoder =
        zstd::stream::write::Encoder::with_ref_prefix(&mut out, level, base).map_err(failed)?;
    encoder
        .window_log(window_log((base.len() + new.len()) as u64))
        .map_err(failed)?;
    encoder.long_distance_matching(true).map_err(failed)?;
    encoder.write_all(new).map_err(failed)?;
    encoder.finish().map_err(failed)?;
    Ok(out)
}

/// Restores a file from `delta` and the `base` it was made against,
/// refusing output past `limit` bytes (the signed size) rather than
/// buffering it, with the decoder's window bounded by that size.
pub fn decode_file_delta(base: &[u8], delta: &[u8], limit: u64) -> Result<Vec<u8>, ContentError> {
    if delta.starts_with(crate::gzip_delta::MAGIC) {
        return crate::gzip_delta::decode(base, delta, limit);
    }
    decode_plain(base, delta, limit)
}

/// Restores a file from a zstd patch-from frame.
pub(crate) fn decode_plain(base: &[u8], delta: &[u8], limit: u64) -> Result<Vec<u8>, ContentError> {
    decode_bounded(
        base,
        delta,
        limit.min(MAX_DELTA_FILE),
        "decoded file delta",
        |e| ContentError::InvalidDelta(format!("the file delta is corrupt: {e}")),
    )
}

/// Decodes a zstd frame made against `base`, refusing output past `limit`
/// bytes, with the decoder's window bounded by what that output can need.
pub(crate) fn decode_bounded(
    base: &[u8],
    delta: &[u8],
    limit: u64,
    what: &str,
    corrupt: impl Fn(std::io::Error) -> ContentError,
) -> Result<Vec<u8>, ContentError> {
    let mut decoder =
        zstd::stream::read::Decoder::with_ref_prefix(delta, base).map_err(&corrupt)?;
    decoder
        .window_log_max(window_log(base.len() as u64 + limit))
        .map_err(&corrupt)?;
    let mut out = Vec::new();
    decoder
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(&corrupt)?;
    if out.len() as u64 > limit {
        return Err(ContentError::TooLarge {
            what: what.into(),
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_file_costs_about_its_change() {
        // Random data with 4 bytes inserted every 8 KiB: every small chunk
        // changes, the bytes barely do.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let base: Vec<u8> = (0..4 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut new = Vec::new();
        for piece in base.chunks(8 << 10) {
            new.extend_from_slice(b"SHFT");
            new.extend_from_slice(piece);
        }
        let delta = encode_file_delta(&base, &new, 12).unwrap();
        assert!(delta.len() < 64 << 10, "delta is {} bytes", delta.len());
        assert_eq!(
            decode_file_delta(&base, &delta, new.len() as u64).unwrap(),
            new
        );
        // Bounded: asking for less refuses, a wrong base does not restore it.
        assert!(decode_file_delta(&base, &delta, new.len() as u64 - 1).is_err());
        assert!(decode_file_delta(&new, &delta, new.len() as u64).map_or(true, |d| d != new));
    }
}
