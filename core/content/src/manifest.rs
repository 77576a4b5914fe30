use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::{ChunkParams, ChunkRef, ContentError, Digest, PackageName, RelPath};

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// Most entries (files and symlinks) one package may hold.
pub const MAX_FILES: usize = 1_000_000;
/// Largest serialized manifest accepted anywhere, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Limits applied when validating a manifest.
#[derive(Debug, Clone, Copy)]
pub struct ManifestLimits {
    /// Most entries.
    pub max_files: usize,
    /// Largest total file size, in bytes.
    pub max_total_bytes: u64,
}

impl Default for ManifestLimits {
    fn default() -> Self {
        ManifestLimits {
            max_files: MAX_FILES,
            max_total_bytes: 1 << 40,
        }
    }
}

/// How a package is installed: a plugin, the versions of it that will do,
/// and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallStep {
    /// The installer plugin's name, e.g. `copy`.
    pub plugin: String,
    /// Which versions of the plugin are acceptable.
    pub requirement: semver::VersionReq,
    /// Parameters handed to the plugin.
    #[serde(default)]
    pub params: toml::Table,
}

/// One entry of a package: a regular file (with its chunks) or a symlink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Where the entry lives inside the package.
    pub path: RelPath,
    /// Unix permission bits (at most `0o777`).
    pub mode: u32,
    /// File length in bytes (0 for symlinks).
    pub size: u64,
    /// For a symlink, its target, relative to the link's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink: Option<String>,
    /// The file's chunks in order.
    #[serde(with = "chunk_list", default)]
    pub chunks: Vec<ChunkRef>,
}

impl FileEntry {
    /// A digest of the file's chunk list: it names the file's content exactly
    /// and is what the content store files the assembled file under.
    pub fn content_id(&self) -> Digest {
        Digest::of(&chunk_list::encode(&self.chunks))
    }
}

/// A package version: what a TUF target points to. Every byte of every file
/// is named by a chunk digest, so any mirror's bytes can be checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The package name.
    pub name: PackageName,
    /// The package version.
    pub version: semver::Version,
    /// The chunking the publisher used, so a later version can chunk alike.
    pub chunking: ChunkParams,
    /// How to install the package, if it has an install step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallStep>,
    /// Files and symlinks, sorted by path.
    pub files: Vec<FileEntry>,
}

/// The TUF target name of a package version's manifest. `@` cannot occur in
/// a package name, so the name is unambiguous.
pub fn target_name(name: &PackageName, version: &semver::Version) -> String {
    format!("{name}@{version}.json")
}

impl Manifest {
    /// Parses and validates a serialized manifest.
    pub fn from_slice(bytes: &[u8], limits: ManifestLimits) -> Result<Self, ContentError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ContentError::TooLarge {
                what: format!("manifest of {} bytes", bytes.len()),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        manifest.validate(limits)?;
        Ok(manifest)
    }

    /// Serializes the manifest. The output is deterministic.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// This version's TUF target name.
    pub fn target_name(&self) -> String {
        target_name(&self.name, &self.version)
    }

    /// Sum of file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Every distinct chunk the package needs.
    pub fn unique_chunks(&self) -> Vec<ChunkRef> {
        let mut seen = HashSet::new();
        self.files
            .iter()
            .flat_map(|f| f.chunks.iter().copied())
            .filter(|c| seen.insert(c.digest))
            .collect()
    }

    /// Checks every rule a manifest must follow.
    pub fn validate(&self, limits: ManifestLimits) -> Result<(), ContentError> {
        self.check(limits, true)
    }

    /// Checks every rule but those on chunk lists (for an outline, whose
    /// chunk lists are left out).
    pub(crate) fn validate_entries(&self, limits: ManifestLimits) -> Result<(), ContentError> {
        self.check(limits, false)
    }

    fn check(&self, limits: ManifestLimits, chunks: bool) -> Result<(), ContentError> {
        let invalid = |m: String| Err(ContentError::InvalidManifest(m));
        if self.format != MANIFEST_FORMAT {
            return invalid(format!(
                "format {} is not supported (this Ferry reads format {MANIFEST_FORMAT}); upgrade Ferry",
                self.format
            ));
        }
        self.chunking.validate()?;
        if let Some(step) = &self.install {
            PackageName::new(&step.plugin)
                .map_err(|e| ContentError::InvalidManifest(format!("install plugin name: {e}")))?;
        }
        if self.files.len() > limits.max_files {
            return Err(ContentError::TooLarge {
                what: format!("package with {} entries", self.files.len()),
                limit: limits.max_files as u64,
            });
        }
        let total = self
            .files
            .iter()
            .try_fold(0u64, |acc, f| acc.checked_add(f.size));
        match total {
            Some(t) if t <= limits.max_total_bytes => {}
            _ => {
                return Err(ContentError::TooLarge {
                    what: "package size".into(),
                    limit: limits.max_total_bytes,
                });
            }
        }
        let mut paths = BTreeSet::new();
        for pair in self.files.windows(2) {
            if pair[0].path >= pair[1].path {
                if pair[0].path == pair[1].path {
                    return Err(ContentError::DuplicatePath(pair[0].path.to_string()));
                }
                return invalid("entries are not sorted by path".into());
            }
        }
        let links: HashMap<&str, &str> = self
            .files
            .iter()
            .filter_map(|f| Some((f.path.as_str(), f.symlink.as_deref()?)))
            .collect();
        let symlinks: HashSet<&str> = links.keys().copied().collect();
        for f in &self.files {
            paths.insert(f.path.as_str());
            if f.mode & !0o777 != 0 {
                return invalid(format!(
                    "{}: mode {:o} has bits beyond 0o777 (setuid, setgid and sticky bits are not carried)",
                    f.path, f.mode
                ));
            }
            // No entry may sit below another entry: that entry would have to be
            // both a file and a directory, or the write would go through a symlink.
            let mut prefix = f.path.as_str();
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                if paths.contains(parent) || symlinks.contains(parent) {
                    return invalid(format!(
                        "{} lies below {parent}, which is a file or symlink",
                        f.path
                    ));
                }
                prefix = parent;
            }
            match &f.symlink {
                Some(target) => {
                    if f.size != 0 || !f.chunks.is_empty() {
                        return invalid(format!("symlink {} carries data", f.path));
                    }
                    if target.len() > MAX_LINK_TARGET {
                        return invalid(format!(
                            "symlink {} has a target of {} bytes; at most {MAX_LINK_TARGET}",
                            f.path,
                            target.len()
                        ));
                    }
                    let dir: Vec<&str> = match f.path.as_str().rsplit_once('/') {
                        Some((parent, _)) => parent.split('/').collect(),
                        None => Vec::new(),
                    };
                    let mut budget = MAX_LINK_HOPS;
                    if resolve_on_disk(&links, dir, target, &mut budget).is_none() {
                        return Err(ContentError::SymlinkEscape {
                            path: f.path.to_string(),
                            target: target.clone(),
                        });
                    }
                }
                None if !chunks => {}
                None => {
                    let mut sum = 0u64;
                    for c in &f.chunks {
                        if c.len == 0 || c.len > self.chunking.max {
                            return invalid(format!(
                                "{}: a chunk of {} bytes is outside 1..={}",
                                f.path, c.len, self.chunking.max
                            ));
                        }
                        sum += c.len as u64;
                    }
                    if sum != f.size {
                        return invalid(format!(
                            "{}: size {} does not equal the sum of its chunks ({sum})",
                            f.path, f.size
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Longest symlink target (the kernel refuses PATH_MAX, 4096, and more).
const MAX_LINK_TARGET: usize = 4095;

/// Most symlinks one link's resolution may pass through (the kernel's own
/// limit is 40).
const MAX_LINK_HOPS: u32 = 40;

/// Resolves `target` from the package directory `dir` the way the kernel
/// will once the package is on disk: a component naming another of the
/// package's symlinks is replaced by that link's own resolution, so
/// `s -> .` followed by `e -> s/..` is seen to leave the package. Returns
/// the resolved path's components, or `None` if it leaves the package,
/// is absolute, or loops.
fn resolve_on_disk<'a>(
    links: &HashMap<&'a str, &'a str>,
    dir: Vec<&'a str>,
    target: &'a str,
    budget: &mut u32,
) -> Option<Vec<&'a str>> {
    if target.starts_with('/') {
        return None;
    }
    let mut cur = dir;
    // The joined form of `cur`, kept in step (no re-join per component).
    let mut joined = cur.join("/");
    let mut lens: Vec<usize> = Vec::new();
    let rebuild_lens = |cur: &[&str]| {
        let mut lens = Vec::with_capacity(cur.len());
        let mut len = 0usize;
        for (i, c) in cur.iter().enumerate() {
            lens.push(len);
            len += c.len() + usize::from(i > 0);
        }
        lens
    };
    lens.extend(rebuild_lens(&cur));
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                cur.pop()?;
                joined.truncate(lens.pop().expect("one length per component"));
            }
            name => {
                lens.push(joined.len());
                if !cur.is_empty() {
                    joined.push('/');
                }
                joined.push_str(name);
                cur.push(name);
                if let Some(next) = links.get(joined.as_str()) {
                    *budget = budget.checked_sub(1)?;
                    cur.pop();
                    cur = resolve_on_disk(links, cur, next, budget)?;
                    joined = cur.join("/");
                    lens = rebuild_lens(&cur);
                }
            }
        }
    }
    Some(cur)
}

/// Chunk lists are the bulk of a manifest, so they are stored compactly: one
/// base64 string of 36-byte records (32-byte digest, 4-byte little-endian
/// length) instead of a JSON object per chunk.
pub(crate) mod chunk_list {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::{ChunkRef, Digest};

    const RECORD: usize = 36;

    pub fn encode(chunks: &[ChunkRef]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunks.len() * RECORD);
        for c in chunks {
            out.extend_from_slice(&c.digest.0);
            out.extend_from_slice(&c.len.to_le_bytes());
        }
        out
    }

    pub fn serialize<S: Serializer>(chunks: &[ChunkRef], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(encode(chunks)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkRef>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let raw = STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("chunk list is not base64: {e}")))?;
        if raw.len() % RECORD != 0 {
            return Err(serde::de::Error::custom(
                "chunk list length is not a multiple of 36 bytes",
            ));
        }
        Ok(raw
            .chunks_exact(RECORD)
            .map(|r| ChunkRef {
                digest: Digest(r[..32].try_into().expect("32 bytes")),
                len: u32::from_le_bytes(r[32..].try_into().expect("4 bytes")),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, data: &[u8]) -> FileEntry {
        FileEntry {
            path: RelPath::new(path).unwrap(),
            mode: 0o644,
            size: data.len() as u64,
            symlink: None,
            chunks: if data.is_empty() {
                vec![]
            } else {
                vec![ChunkRef {
                    digest: Digest::of(data),
                    len: data.len() as u32,
                }]
            },
        }
    }

    fn link(path: &str, target: &str) -> FileEntry {
        FileEntry {
            path: RelPath::new(path).unwrap(),
            mode: 0o777,
            size: 0,
            symlink: Some(target.into()),
            chunks: vec![],
        }
    }

    #[test]
    fn links_are_checked_as_they_resolve_on_disk() {
        // Textually `s/..` stays inside; on disk `s` is the package root,
        // so `s/..` is its parent.
        let escape = manifest(vec![link("e", "s/.."), link("s", ".")]);
        let err = escape.validate(ManifestLimits::default()).unwrap_err();
        assert!(matches!(err, ContentError::SymlinkEscape { .. }), "{err}");
        let deep = manifest(vec![link("a/up", ".."), link("b", "a/up/..")]);
        assert!(deep.validate(ManifestLimits::default()).is_err());
        let looped = manifest(vec![link("x", "y/z"), link("y", "x")]);
        assert!(looped.validate(ManifestLimits::default()).is_err());
        let long = manifest(vec![link("l", &"a/".repeat(2100))]);
        let err = long.validate(ManifestLimits::default()).unwrap_err();
        assert!(err.to_string().contains("at most 4095"), "{err}");
        // Controls: links through links that stay inside are fine.
        let inside = manifest(vec![
            entry("d/file", b"x"),
            link("e", "s/d/file"),
            link("s", "."),
        ]);
        inside.validate(ManifestLimits::default()).unwrap();
        let sideways = manifest(vec![
            entry("a/f", b"x"),
            link("b/up", ".."),
            link("c", "b/up/a/f"),
        ]);
        sideways.validate(ManifestLimits::default()).unwrap();
    }

    fn manifest(files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            name: PackageName::new("demo").unwrap(),
            version: semver::Version::new(1, 0, 0),
            chunking: ChunkParams::default(),
            install: None,
            files,
        }
    }

    #[test]
    fn roundtrip() {
        let m = manifest(vec![entry("a", b"hello"), entry("b/c", b"")]);
        let bytes = m.to_vec();
        assert_eq!(Manifest::from_slice(&bytes, Default::default()).unwrap(), m);
    }

    #[test]
    fn rejects_bad_structure() {
        let dup = manifest(vec![entry("a", b"x"), entry("a", b"x")]);
        assert!(matches!(
            dup.validate(Default::default()),
            Err(ContentError::DuplicatePath(_))
        ));
        let nested = manifest(vec![entry("a", b"x"), entry("a/b", b"y")]);
        assert!(nested.validate(Default::default()).is_err());
        let mut wrong_size = manifest(vec![entry("a", b"xyz")]);
        wrong_size.files[0].size = 4;
        assert!(wrong_size.validate(Default::default()).is_err());
        let mut escape = manifest(vec![entry("l", b"")]);
        escape.files[0].symlink = Some("../../etc".into());
        assert!(matches!(
            escape.validate(Default::default()),
            Err(ContentError::SymlinkEscape { .. })
        ));
        let mut suid = manifest(vec![entry("a", b"x")]);
        suid.files[0].mode = 0o4755;
        assert!(suid.validate(Default::default()).is_err());
    }

    #[test]
    fn rejects_traversal_in_json() {
        let m = manifest(vec![entry("a", b"x")]);
        let text = String::from_utf8(m.to_vec())
            .unwrap()
            .replace("\"a\"", "\"../a\"");
        assert!(Manifest::from_slice(text.as_bytes(), Default::default()).is_err());
    }
}
