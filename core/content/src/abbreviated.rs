//! Abbreviated manifests: how a publisher names a manifest to a hub that
//! already holds every chunk, in a third of the bytes.
//!
//! A manifest spends 36 bytes on each ~1.3 KB chunk (its SHA-256 and its
//! length), close to 3% of all-new data. The hub has just hashed those
//! chunks itself, so a short prefix of each digest is enough for it to find
//! the chunk; the hub rebuilds the full manifest, and the publisher's SHA-256
//! of the manifest it meant proves the rebuild right (a prefix shared by two
//! chunks is found ambiguous or fails that check, and the publisher then
//! sends the full manifest).
//!
//! Layout: the magic `FMA1`, the prefix length (one byte, 1-32), the length
//! of a JSON header (u32 little-endian), the header (the manifest with every
//! chunk list empty), then for each regular file in order its chunk records,
//! each the digest prefix and the chunk length (u32 little-endian), until
//! their lengths add up to the file's size. Records have a fixed size so a
//! new version's abbreviation is a small zstd delta of the previous one's.

use crate::{ContentError, Digest, Manifest, ManifestLimits};

const MAGIC: &[u8; 4] = b"FMA1";

/// The digest prefix length publishers use: 8 bytes make an accidental
/// match among a billion stored chunks about a one-in-ten-billion event per
/// chunk, and cost 0.6% of the data.
pub const ABBREVIATED_PREFIX: usize = 8;

impl Manifest {
    /// The manifest with each chunk digest cut to its first `prefix_len`
    /// bytes (1-32).
    pub fn abbreviate(&self, prefix_len: usize) -> Vec<u8> {
        assert!((1..=32).contains(&prefix_len), "prefix of 1-32 bytes");
        let mut header = self.clone();
        for f in &mut header.files {
            f.chunks.clear();
        }
        let json = serde_json::to_vec(&header).expect("a manifest always serializes");
        let records: usize = self.files.iter().map(|f| f.chunks.len()).sum();
        let mut out = Vec::with_capacity(9 + json.len() + records * (prefix_len + 4));
        out.extend_from_slice(MAGIC);
        out.push(prefix_len as u8);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        for f in &self.files {
            for c in &f.chunks {
                out.extend_from_slice(&c.digest.0[..prefix_len]);
                out.extend_from_slice(&c.len.to_le_bytes());
            }
        }
        out
    }

    /// Rebuilds a manifest from its abbreviation, asking `resolve` for the
    /// full digest of each (prefix, length) record. The result is validated
    /// against `limits`.
    pub fn expand<E>(
        abbreviated: &[u8],
        limits: ManifestLimits,
        mut resolve: impl FnMut(&[u8], u32) -> Result<Digest, E>,
    ) -> Result<Manifest, ExpandError<E>> {
        let invalid = |m: &str| {
            ExpandError::Invalid(ContentError::InvalidManifest(format!(
                "abbreviated manifest: {m}"
            )))
        };
        let rest = abbreviated
            .strip_prefix(MAGIC)
            .ok_or_else(|| invalid("it does not start with FMA1"))?;
        let (&prefix_len, rest) = rest.split_first().ok_or_else(|| invalid("truncated"))?;
        let prefix_len = prefix_len as usize;
        if !(1..=32).contains(&prefix_len) {
            return Err(invalid("its digest prefix length is outside 1-32"));
        }
        let (json, mut records) = split_header(rest).map_err(invalid)?;
        let mut manifest: Manifest = serde_json::from_slice(json)
            .map_err(|e| ExpandError::Invalid(ContentError::ManifestSyntax(e)))?;
        manifest.chunking.validate().map_err(ExpandError::Invalid)?;
        let max_chunk = manifest.chunking.max;
        // Each chunk costs 48 bytes of the full manifest (36 in base64): a
        // few bytes of abbreviation must not expand past what a manifest
        // may be.
        let mut budget = (crate::MAX_MANIFEST_BYTES / 48) as usize;
        for f in &mut manifest.files {
            if !f.chunks.is_empty() {
                return Err(invalid("its header lists chunks"));
            }
            if f.symlink.is_some() {
                continue;
            }
            let mut left = f.size;
            while left > 0 {
                let (record, tail) = records
                    .split_at_checked(prefix_len + 4)
                    .ok_or_else(|| invalid("its chunk records end before its files do"))?;
                records = tail;
                let (prefix, len) = record.split_at(prefix_len);
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes"));
                if len == 0 || len > max_chunk || u64::from(len) > left {
                    return Err(invalid(&format!(
                        "{}: a chunk of {len} bytes does not fit (1..={max_chunk}, {left} left)",
                        f.path
                    )));
                }
                left -= u64::from(len);
                budget = budget
                    .checked_sub(1)
                    .ok_or_else(|| invalid("it names more chunks than a manifest may hold"))?;
                let digest = resolve(prefix, len).map_err(ExpandError::Resolve)?;
                f.chunks.push(crate::ChunkRef { digest, len });
            }
        }
        if !records.is_empty() {
            return Err(invalid("chunk records follow the last file"));
        }
        manifest.validate(limits).map_err(ExpandError::Invalid)?;
        Ok(manifest)
    }
}

/// Splits a JSON header with its length in front (u32 little-endian) from
/// what follows it.
pub(crate) fn split_header(bytes: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or("truncated")?;
    let json_len = u32::from_le_bytes(*len) as usize;
    if json_len > rest.len() {
        return Err("its header is longer than the whole");
    }
    Ok(rest.split_at(json_len))
}

/// Why an abbreviated manifest could not be expanded.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError<E> {
    /// The abbreviation is malformed or the manifest it names is invalid.
    #[error(transparent)]
    Invalid(ContentError),
    /// `resolve` failed for a record.
    #[error("resolving a chunk prefix failed")]
    Resolve(E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkParams, ChunkRef, FileEntry, PackageName, RelPath};
    use std::collections::HashMap;

    fn sample() -> Manifest {
        let file = |path: &str, chunks: &[&[u8]]| FileEntry {
            path: RelPath::new(path).unwrap(),
            mode: 0o644,
            size: chunks.iter().map(|c| c.len() as u64).sum(),
            symlink: None,
            chunks: chunks
                .iter()
                .map(|c| ChunkRef {
                    digest: Digest::of(c),
                    len: c.len() as u32,
                })
                .collect(),
        };
        Manifest {
            format: crate::manifest::MANIFEST_FORMAT,
            name: PackageName::new("tool").unwrap(),
            version: semver::Version::new(1, 2, 3),
            chunking: ChunkParams::default(),
            install: None,
            files: vec![
                file("a", &[b"alpha", b"beta"]),
                file("b", &[]),
                FileEntry {
                    path: RelPath::new("c").unwrap(),
                    mode: 0o777,
                    size: 0,
                    symlink: Some("a".into()),
                    chunks: vec![],
                },
                file("d", &[b"gamma", b"alpha"]),
            ],
        }
    }

    fn index(m: &Manifest) -> HashMap<Vec<u8>, Digest> {
        m.unique_chunks()
            .iter()
            .map(|c| (c.digest.0[..8].to_vec(), c.digest))
            .collect()
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        let known = index(&m);
        let abbreviated = m.abbreviate(8);
        let back = Manifest::expand(&abbreviated, ManifestLimits::default(), |p, _| {
            known.get(p).copied().ok_or("unknown")
        })
        .unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_vec(), m.to_vec());
        let records = 4 * 12;
        assert!(abbreviated.len() < 9 + m.to_vec().len() - 4 * 48 + records + 64);
    }

    #[test]
    fn refuses_malformed_input() {
        let m = sample();
        let known = index(&m);
        let resolve = |p: &[u8], _| known.get(p).copied().ok_or("unknown");
        let good = m.abbreviate(8);
        let limits = ManifestLimits::default();
        for cut in 0..good.len() {
            assert!(
                Manifest::expand(&good[..cut], limits, resolve).is_err(),
                "cut at {cut} accepted"
            );
        }
        let mut extra = good.clone();
        extra.extend_from_slice(&[0; 12]);
        assert!(Manifest::expand(&extra, limits, resolve).is_err());
        let mut zero_len = good.clone();
        let at = zero_len.len() - 4;
        zero_len[at..].copy_from_slice(&0u32.to_le_bytes());
        assert!(Manifest::expand(&zero_len, limits, resolve).is_err());
        let mut bad_prefix = good.clone();
        bad_prefix[4] = 0;
        assert!(Manifest::expand(&bad_prefix, limits, resolve).is_err());
        let failing = Manifest::expand(&good, limits, |_, _| Err::<Digest, _>("nope"));
        assert!(matches!(failing, Err(ExpandError::Resolve("nope"))));
    }
}
