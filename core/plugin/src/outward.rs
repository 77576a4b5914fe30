//! Symlinks an installer leaves that lead out of its granted directories.
//!
//! Inside the sandbox a symlink out of a grant is harmless: WASI will not
//! follow it. But the node, the operator's tools and other programs running
//! as root later do, so a plugin must not be able to leave one behind (a
//! `p-shadow -> ../../../../etc/shadow` that a backup or a later copy
//! follows). Before an installer call the host notes the symlinks under the
//! grants that already lead out (an operator's own); after it, every other
//! symlink that leads out, resolved as the kernel resolves it (through the
//! other links), is removed and the call fails, naming them.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Most entries looked at per scan; a grant with more cannot be checked and
/// fails the call.
const MAX_ENTRIES: usize = 1_000_000;

/// Symlinks that lead out of the grants, by (device, inode).
pub(crate) type Outward = HashSet<(u64, u64)>;

/// A symlink found leading out: where it is, its target, its identity.
type Found = (PathBuf, PathBuf, (u64, u64));

/// The symlinks under `dirs` that lead outside all of them, or `Err` when
/// the grants hold more than can be checked.
fn scan(dirs: &[PathBuf]) -> Result<Vec<Found>, String> {
    let roots: Vec<PathBuf> = dirs
        .iter()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        .collect();
    let mut found = Vec::new();
    let mut seen = 0usize;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(format!(
                    "its granted directories hold more than {MAX_ENTRIES} entries, too many to \
                     check for symlinks leading out of them"
                ));
            }
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                let Ok(target) = std::fs::read_link(&path) else {
                    continue;
                };
                let resolved = resolve(&path.parent().unwrap_or(Path::new("/")).join(&target));
                if !roots.iter().any(|r| resolved.starts_with(r)) {
                    found.push((path, target, (meta.dev(), meta.ino())));
                }
            }
        }
    }
    Ok(found)
}

/// Notes the symlinks that lead out of `dirs` before a call.
pub(crate) fn before_call(dirs: &[PathBuf]) -> Outward {
    scan(dirs)
        .map(|found| found.into_iter().map(|(_, _, id)| id).collect())
        .unwrap_or_default()
}

/// Removes the symlinks under `dirs` that lead out of them and were not
/// there (leading out) before the call; returns each as "link -> target",
/// or why the grants could not be checked.
pub(crate) fn remove_new(dirs: &[PathBuf], before: &Outward) -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    for (path, target, id) in scan(dirs)? {
        if before.contains(&id) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(format!("{} -> {}", path.display(), target.display())),
            Err(e) => {
                return Err(format!(
                    "cannot remove its symlink {} -> {}: {e}",
                    path.display(),
                    target.display()
                ));
            }
        }
    }
    Ok(removed)
}

/// Where `path` leads: its longest existing prefix resolved by the kernel
/// (through symlinks), the rest resolved by text.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return normalize(&out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return normalize(path),
        }
    }
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
    fn resolves_through_links_like_the_kernel() {
        assert_eq!(
            normalize(Path::new("/a/b/../../../../etc/x")),
            PathBuf::from("/etc/x")
        );
        let tmp = tempfile::tempdir().unwrap();
        let grant = tmp.path().canonicalize().unwrap().join("grant");
        std::fs::create_dir_all(grant.join("a/b")).unwrap();
        // c -> ../.. leads to the grant itself; y goes three levels up
        // through it: by text it stays inside, by the kernel it leaves.
        std::os::unix::fs::symlink("../..", grant.join("a/b/c")).unwrap();
        std::os::unix::fs::symlink("a/b/c/../../../outside", grant.join("y")).unwrap();
        std::os::unix::fs::symlink("a/b", grant.join("inner")).unwrap();
        let before = Outward::new();
        let removed = remove_new(std::slice::from_ref(&grant), &before).unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(removed[0].contains("/y -> "), "{removed:?}");
        assert!(grant.join("inner").symlink_metadata().is_ok());
        assert!(grant.join("a/b/c").symlink_metadata().is_ok());
    }
}
