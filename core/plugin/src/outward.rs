//! Symlinks an installer leaves that lead out of its granted directories.
//!
//! Inside the sandbox a symlink out of a grant is harmless: WASI will not
//! follow it. But the node, the operator's tools and other programs running
//! as root later do, so a plugin must not be able to leave one behind (a
//! `p-shadow -> ../../../../etc/shadow` that a backup or a later copy
//! follows). After each installer call the host removes every symlink the
//! call created or changed whose target, resolved by its text, lies outside
//! all granted directories, and fails the call saying so. Symlinks that were
//! there before the call (an operator's own) are left alone.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most entries looked at per call; a grant larger than this is only
/// partly checked (and a warning says so).
const MAX_ENTRIES: usize = 1_000_000;

/// Removes symlinks under `dirs` changed at or after `since` that point
/// outside every directory of `dirs`; returns each as "link -> target".
pub(crate) fn remove_outward_symlinks(dirs: &[PathBuf], since: SystemTime) -> Vec<String> {
    let since = since.duration_since(UNIX_EPOCH).map_or((0, 0), |d| {
        (d.as_secs() as i64, i64::from(d.subsec_nanos()))
    });
    let mut removed = Vec::new();
    let mut seen = 0usize;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                tracing::warn!(
                    "granted directories hold more than {MAX_ENTRIES} entries; symlinks beyond were not checked"
                );
                return removed;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() && (meta.ctime(), meta.ctime_nsec()) >= since {
                let Ok(target) = std::fs::read_link(&path) else {
                    continue;
                };
                let resolved = normalize(&path.parent().unwrap_or(Path::new("/")).join(&target));
                if !dirs.iter().any(|d| resolved.starts_with(normalize(d))) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            removed.push(format!("{} -> {}", path.display(), target.display()))
                        }
                        Err(e) => {
                            tracing::warn!(link = %path.display(), error = %e, "cannot remove a symlink out of a grant")
                        }
                    }
                }
            }
        }
    }
    removed
}

/// `path` with `.` and `..` resolved by text (a `..` above the root stays
/// at the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_by_text() {
        assert_eq!(
            normalize(Path::new("/a/b/../../../../etc/x")),
            PathBuf::from("/etc/x")
        );
        assert_eq!(normalize(Path::new("/a/./b/c/..")), PathBuf::from("/a/b"));
    }
}
