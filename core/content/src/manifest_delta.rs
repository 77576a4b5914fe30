//! Sending a new manifest as a delta of one both sides already hold.
//!
//! With small chunks a manifest is ~2% of the data it describes, too much to
//! resend for a 1% change. A new version's manifest shares almost all of its
//! chunk records with the previous version's, so zstd with the old manifest
//! as a reference prefix (the library form of `zstd --patch-from`) shrinks it
//! to roughly the size of the changed records. With an empty base the same
//! code is plain zstd compression, which takes a manifest's base64 chunk
//! lists back to about their binary size.

use std::io::{Read, Write};

use crate::{ContentError, MAX_MANIFEST_BYTES};

/// A delta is small and worth squeezing; a manifest without a base is
/// mostly random digests that only the base64 layer makes compressible.
const DELTA_LEVEL: i32 = 19;
const PLAIN_LEVEL: i32 = 3;

fn window_log(total: usize) -> u32 {
    let bits = usize::BITS - total.max(1 << 10).leading_zeros();
    bits.clamp(10, 30)
}

/// Compresses `new` against `base` (which may be empty).
pub fn encode_manifest_delta(base: &[u8], new: &[u8]) -> Vec<u8> {
    let level = if base.is_empty() {
        PLAIN_LEVEL
    } else {
        DELTA_LEVEL
    };
    let mut out = Vec::new();
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(&mut out, level, base)
        .expect("zstd encoder with a reference prefix");
    let wlog = window_log(base.len() + new.len());
    encoder.window_log(wlog).expect("valid window log");
    encoder
        .long_distance_matching(true)
        .expect("long-distance matching is supported");
    encoder
        .write_all(new)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail");
    out
}

/// Restores a manifest from `delta` and the same `base` it was encoded with.
/// Output beyond [`MAX_MANIFEST_BYTES`] is refused rather than buffered.
pub fn decode_manifest_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, ContentError> {
    let corrupt = |e: std::io::Error| {
        ContentError::InvalidManifest(format!("manifest delta is corrupt: {e}"))
    };
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(delta, base).map_err(corrupt)?;
    decoder.window_log_max(30).map_err(corrupt)?;
    let mut out = Vec::new();
    decoder
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ContentError::TooLarge {
            what: "decoded manifest delta".into(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_is_small_for_similar_inputs() {
        let base: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
            .collect();
        let mut new = base.clone();
        new[400_000..400_036].copy_from_slice(&[7u8; 36]);
        let delta = encode_manifest_delta(&base, &new);
        assert!(delta.len() < 500, "delta is {} bytes", delta.len());
        assert_eq!(decode_manifest_delta(&base, &delta).unwrap(), new);
        assert!(
            decode_manifest_delta(b"other base", &delta).is_err() || {
                decode_manifest_delta(b"other base", &delta).unwrap() != new
            }
        );
        assert!(decode_manifest_delta(&base, b"garbage").is_err());
    }
}
