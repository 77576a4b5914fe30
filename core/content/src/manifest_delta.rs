//! Sending a new manifest as a delta of one both sides already hold.
//!
//! With small chunks a manifest is ~2% of the data it describes, too much to
//! resend for a 1% change. A new version's manifest shares almost all of its
//! chunk records with the previous version's, so zstd with the old manifest
//! as a reference prefix (the library form of `zstd --patch-from`) shrinks it
//! to roughly the size of the changed records. With an empty base the same
//! code is plain zstd compression, which takes a manifest's base64 chunk
//! lists back to about their binary size.

use std::io::Write;

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

/// Restores a manifest from `delta` and the same `base` it was encoded
/// with, refusing output beyond `limit` bytes (at most
/// [`MAX_MANIFEST_BYTES`]) rather than buffering it. The decoder's window is
/// bounded by what a frame of that size can need, so a hostile frame cannot
/// make the decoder allocate more than the manifest it claims to be.
pub fn decode_manifest_delta(
    base: &[u8],
    delta: &[u8],
    limit: u64,
) -> Result<Vec<u8>, ContentError> {
    crate::file_delta::decode_bounded(
        base,
        delta,
        limit.min(MAX_MANIFEST_BYTES),
        "decoded manifest delta",
        |e| ContentError::InvalidManifest(format!("manifest delta is corrupt: {e}")),
    )
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
        assert_eq!(
            decode_manifest_delta(&base, &delta, MAX_MANIFEST_BYTES).unwrap(),
            new
        );
        assert!(
            decode_manifest_delta(b"other base", &delta, MAX_MANIFEST_BYTES).is_err() || {
                decode_manifest_delta(b"other base", &delta, MAX_MANIFEST_BYTES).unwrap() != new
            }
        );
        assert!(decode_manifest_delta(&base, b"garbage", MAX_MANIFEST_BYTES).is_err());
    }

    #[test]
    fn a_frame_wanting_a_window_beyond_its_claimed_size_is_refused() {
        let data = vec![0u8; 1 << 20];
        let mut out = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut out, 3).unwrap();
        encoder.window_log(24).unwrap();
        encoder.write_all(&data).unwrap();
        encoder.finish().unwrap();
        // For a 1 MiB manifest a 16 MiB window is refused before the
        // decoder allocates it.
        let err = decode_manifest_delta(&[], &out, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        // Control: the frame Ferry's own encoder makes of the same data
        // decodes within the same limit.
        let ours = encode_manifest_delta(&[], &data);
        assert_eq!(decode_manifest_delta(&[], &ours, 1 << 20).unwrap(), data);
    }
}
