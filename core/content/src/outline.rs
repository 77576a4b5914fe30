//! Manifest outlines: a manifest without its chunk lists, for a client
//! that will rebuild the changed files from byte-level deltas and can then
//! chunk them itself.
//!
//! A file whose bytes shifted (relinked code, a tar with new headers) has
//! mostly new chunk records: 36 bytes per ~1.3 KB chunk, far more than its
//! byte-level delta. Chunking is deterministic, so a client that rebuilt
//! the file derives the records; the outline only names each file's
//! content (the digest of its chunk list) so the client can check its
//! rebuild, and the SHA-256 the hub signed for the full manifest proves
//! the assembled manifest right.
//!
//! Layout: the magic `FMO1`, the length of a JSON header (u32
//! little-endian), the header (the manifest with every chunk list empty),
//! then the 32-byte content id of each regular file in order. Unchanged
//! files keep their ids, so a new version's outline is a tiny zstd delta
//! of the previous one's.

use crate::{ContentError, Digest, Manifest, ManifestLimits};

const MAGIC: &[u8; 4] = b"FMO1";

/// A manifest whose regular files are named by content id only.
#[derive(Debug, Clone, PartialEq)]
pub struct Outline {
    /// The manifest with every chunk list empty.
    pub header: Manifest,
    /// For each entry of `header.files`, its content id (`None` for
    /// symlinks).
    pub ids: Vec<Option<Digest>>,
}

impl Manifest {
    /// This manifest's outline, serialized.
    pub fn outline(&self) -> Vec<u8> {
        let mut header = self.clone();
        for f in &mut header.files {
            f.chunks.clear();
        }
        let json = serde_json::to_vec(&header).expect("a manifest always serializes");
        let mut out = Vec::with_capacity(8 + json.len() + 32 * self.files.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        for f in self.files.iter().filter(|f| f.symlink.is_none()) {
            out.extend_from_slice(&f.content_id().0);
        }
        out
    }
}

impl Outline {
    /// Parses a serialized outline; its header must be a valid manifest
    /// (within `limits`) whose chunk lists are empty.
    pub fn parse(bytes: &[u8], limits: ManifestLimits) -> Result<Outline, ContentError> {
        let invalid = |m: &str| ContentError::InvalidManifest(format!("manifest outline: {m}"));
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| invalid("it does not start with FMO1"))?;
        let (json, mut ids) = crate::abbreviated::split_header(rest).map_err(invalid)?;
        let header: Manifest = serde_json::from_slice(json)?;
        if header.files.iter().any(|f| !f.chunks.is_empty()) {
            return Err(invalid("its header lists chunks"));
        }
        let mut out = Vec::with_capacity(header.files.len());
        for f in &header.files {
            if f.symlink.is_some() {
                out.push(None);
                continue;
            }
            let (id, tail) = ids
                .split_first_chunk::<32>()
                .ok_or_else(|| invalid("its content ids end before its files do"))?;
            ids = tail;
            out.push(Some(Digest(*id)));
        }
        if !ids.is_empty() {
            return Err(invalid("content ids follow the last file"));
        }
        // Sizes, paths, modes and names are checked as for any manifest
        // (an empty chunk list is allowed by the rules checked here).
        header.validate_entries(limits)?;
        Ok(Outline { header, ids: out })
    }

    /// The manifest with each regular file's chunk list from `chunks`
    /// (called with the file's index in `header.files`). Fails if a list
    /// does not name the content id the outline gives, or does not add up
    /// to the file's size.
    pub fn complete(
        &self,
        limits: ManifestLimits,
        mut chunks: impl FnMut(usize) -> Option<Vec<crate::ChunkRef>>,
    ) -> Result<Manifest, ContentError> {
        let mut manifest = self.header.clone();
        for (i, (f, id)) in manifest.files.iter_mut().zip(&self.ids).enumerate() {
            let Some(id) = id else { continue };
            let list = chunks(i).ok_or_else(|| {
                ContentError::InvalidManifest(format!("no chunk list for {}", f.path))
            })?;
            f.chunks = list;
            if f.content_id() != *id
                || f.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>() != f.size
            {
                return Err(ContentError::InvalidManifest(format!(
                    "the chunks of {} do not name the content the outline gives",
                    f.path
                )));
            }
        }
        manifest.validate(limits)?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkParams, FileEntry, PackageName, RelPath, chunk_bytes};

    fn manifest(files: &[(&str, &[u8])]) -> Manifest {
        let chunking = ChunkParams::default();
        Manifest {
            format: crate::manifest::MANIFEST_FORMAT,
            name: PackageName::new("app").unwrap(),
            version: "1.0.0".parse().unwrap(),
            chunking,
            install: None,
            files: files
                .iter()
                .map(|(path, data)| FileEntry {
                    path: RelPath::new(path).unwrap(),
                    mode: 0o644,
                    size: data.len() as u64,
                    symlink: None,
                    chunks: chunk_bytes(data, chunking),
                })
                .chain([FileEntry {
                    path: RelPath::new("z-link").unwrap(),
                    mode: 0o777,
                    size: 0,
                    symlink: Some("a.bin".into()),
                    chunks: Vec::new(),
                }])
                .collect(),
        }
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
            .collect()
    }

    #[test]
    fn a_manifest_is_rebuilt_from_its_outline_and_chunked_files() {
        let (a, b) = (data(300_000, 1), data(0, 2));
        let m = manifest(&[("a.bin", &a), ("b.empty", &b)]);
        let outline = Outline::parse(&m.outline(), ManifestLimits::default()).unwrap();
        assert_eq!(outline.ids.len(), 3);
        assert!(outline.ids[2].is_none());
        let files = [a, b];
        let rebuilt = outline
            .complete(ManifestLimits::default(), |i| {
                Some(chunk_bytes(&files[i], m.chunking))
            })
            .unwrap();
        assert_eq!(rebuilt.to_vec(), m.to_vec());
        // A file that is not the one the outline names is refused.
        let err = outline
            .complete(ManifestLimits::default(), |i| {
                Some(chunk_bytes(&data(300_000, 9)[..files[i].len()], m.chunking))
            })
            .unwrap_err();
        assert!(err.to_string().contains("a.bin"), "{err}");
    }

    #[test]
    fn malformed_outlines_are_refused() {
        let m = manifest(&[("a.bin", &data(5_000, 1))]);
        let good = m.outline();
        let limits = ManifestLimits::default();
        for (bad, why) in [
            (b"FMA1".to_vec(), "FMO1"),
            (good[..good.len() - 1].to_vec(), "end before"),
            ([good.clone(), vec![0; 32]].concat(), "follow the last"),
            (m.abbreviate(8), "FMO1"),
        ] {
            let err = Outline::parse(&bad, limits).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        // A header with chunk lists is not an outline.
        let json = m.to_vec();
        let mut listed = b"FMO1".to_vec();
        listed.extend_from_slice(&(json.len() as u32).to_le_bytes());
        listed.extend_from_slice(&json);
        listed.extend_from_slice(&m.files[0].content_id().0);
        let err = Outline::parse(&listed, limits).unwrap_err().to_string();
        assert!(err.contains("lists chunks"), "{err}");
    }
}
