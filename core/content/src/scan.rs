use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::manifest::MANIFEST_FORMAT;
use crate::{
    ChunkParams, ContentError, Digest, FileEntry, InstallStep, Manifest, ManifestLimits,
    PackageName, RelPath, chunk_file,
};

/// Where a chunk's bytes can be read back from on the publisher's disk.
#[derive(Debug, Clone)]
pub struct ChunkSource {
    /// The file holding the chunk.
    pub path: PathBuf,
    /// Offset of the chunk in that file.
    pub offset: u64,
    /// Chunk length.
    pub len: u32,
}

/// A directory turned into a manifest, plus where each chunk came from.
#[derive(Debug)]
pub struct ScannedPackage {
    /// The validated manifest.
    pub manifest: Manifest,
    /// One source per distinct chunk.
    pub sources: HashMap<Digest, ChunkSource>,
}

/// Walks `dir`, validates every path, chunks every file and builds the
/// manifest. Empty directories are not carried; device files, sockets and
/// FIFOs, non-UTF-8 names and symlinks that leave `dir` are refused.
pub fn scan_directory(
    dir: &Path,
    name: PackageName,
    version: semver::Version,
    install: Option<InstallStep>,
    chunking: ChunkParams,
) -> Result<ScannedPackage, ContentError> {
    chunking.validate()?;
    let meta = std::fs::metadata(dir).map_err(|e| ContentError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(ContentError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mut found = Vec::new();
    walk(dir, "", &mut found)?;
    found.sort_by(|a, b| a.0.cmp(&b.0));

    let entries: Vec<(FileEntry, Option<PathBuf>)> = found
        .into_par_iter()
        .map(|(rel, disk, kind)| -> Result<_, ContentError> {
            match kind {
                Found::Symlink(target) => Ok((
                    FileEntry {
                        path: rel,
                        mode: 0o777,
                        size: 0,
                        symlink: Some(target),
                        chunks: Vec::new(),
                    },
                    None,
                )),
                Found::File(mode) => {
                    let chunks = chunk_file(&disk, chunking)?;
                    let size = chunks.iter().map(|c| c.len as u64).sum();
                    Ok((
                        FileEntry {
                            path: rel,
                            mode,
                            size,
                            symlink: None,
                            chunks,
                        },
                        Some(disk),
                    ))
                }
            }
        })
        .collect::<Result<_, _>>()?;

    let mut sources = HashMap::new();
    let mut files = Vec::with_capacity(entries.len());
    for (entry, disk) in entries {
        if let Some(disk) = disk {
            let mut offset = 0u64;
            for c in &entry.chunks {
                sources.entry(c.digest).or_insert_with(|| ChunkSource {
                    path: disk.clone(),
                    offset,
                    len: c.len,
                });
                offset += c.len as u64;
            }
        }
        files.push(entry);
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name,
        version,
        chunking,
        install,
        files,
    };
    manifest.validate(ManifestLimits::default())?;
    Ok(ScannedPackage { manifest, sources })
}

enum Found {
    File(u32),
    Symlink(String),
}

fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(RelPath, PathBuf, Found)>,
) -> Result<(), ContentError> {
    let reader = std::fs::read_dir(dir).map_err(|e| ContentError::io(dir, e))?;
    for item in reader {
        let item = item.map_err(|e| ContentError::io(dir, e))?;
        let disk = item.path();
        let file_name = item.file_name();
        let Some(file_name) = file_name.to_str() else {
            return Err(ContentError::InvalidPath {
                path: disk.display().to_string(),
                reason: "the name is not valid UTF-8".into(),
            });
        };
        let rel_text = if prefix.is_empty() {
            file_name.to_owned()
        } else {
            format!("{prefix}/{file_name}")
        };
        let rel = RelPath::new(&rel_text)?;
        if out.len() >= crate::MAX_FILES {
            return Err(ContentError::TooLarge {
                what: format!("directory {}", dir.display()),
                limit: crate::MAX_FILES as u64,
            });
        }
        let meta = std::fs::symlink_metadata(&disk).map_err(|e| ContentError::io(&disk, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            walk(&disk, &rel_text, out)?;
        } else if ft.is_file() {
            out.push((rel, disk, Found::File(meta.permissions().mode() & 0o777)));
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&disk).map_err(|e| ContentError::io(&disk, e))?;
            let target = target.to_str().map(str::to_owned).unwrap_or_default();
            if rel.resolve_link(&target).is_none() {
                return Err(ContentError::SymlinkEscape {
                    path: rel_text,
                    target,
                });
            }
            out.push((rel, disk, Found::Symlink(target)));
        } else {
            return Err(ContentError::UnsupportedFileType(rel_text));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(dir: &Path) -> Result<ScannedPackage, ContentError> {
        scan_directory(
            dir,
            PackageName::new("t").unwrap(),
            semver::Version::new(1, 0, 0),
            None,
            ChunkParams::default(),
        )
    }

    fn tempdir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("ferry-scan-{tag}"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn scans_files_and_inner_symlinks() {
        let tmp = tempdir("ok");
        let d = tmp.path();
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/tool"), vec![5u8; 100_000]).unwrap();
        std::fs::write(d.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("bin/tool", d.join("link")).unwrap();
        let p = scan(d).unwrap();
        let paths: Vec<_> = p.manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["bin/tool", "empty", "link"]);
        assert_eq!(p.manifest.total_size(), 100_000);
        assert!(!p.sources.is_empty());
    }

    #[test]
    fn refuses_escaping_symlink() {
        let tmp = tempdir("escape");
        let d = tmp.path();
        std::os::unix::fs::symlink("../../etc/passwd", d.join("evil")).unwrap();
        let err = scan(d).unwrap_err();
        assert!(matches!(err, ContentError::SymlinkEscape { .. }), "{err}");
    }
}
