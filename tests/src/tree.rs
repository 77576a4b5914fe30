//! Package directories for tests: generated from a seed, edited in place,
//! and compared file by file (bytes, permission bits, symlink targets).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a small application into `dir`: a binary, a nested config tree,
/// an executable script, an empty file and a symlink inside the package.
pub fn write_app(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::create_dir_all(dir.join("etc/app/conf.d")).expect("mkdir");
    std::fs::write(dir.join("bin/app"), random_bytes(3 << 20, seed)).expect("write");
    std::fs::write(
        dir.join("bin/start.sh"),
        b"#!/bin/sh\nexec \"$(dirname \"$0\")/app\" \"$@\"\n",
    )
    .expect("write");
    std::fs::set_permissions(
        dir.join("bin/start.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(dir.join("etc/app/app.toml"), b"port = 8080\n").expect("write");
    std::fs::write(dir.join("etc/app/conf.d/empty"), b"").expect("write");
    std::fs::write(dir.join("data.bin"), random_bytes(700_000, seed + 1)).expect("write");
    std::os::unix::fs::symlink("bin/start.sh", dir.join("start")).expect("symlink");
}

/// One entry of a tree as [`snapshot`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A file: its permission bits and bytes.
    File(u32, Vec<u8>),
    /// A symlink and its target.
    Link(String),
}

/// Every file and symlink under `dir` by relative path.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Entry> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for e in std::fs::read_dir(dir).expect("readable directory") {
            let e = e.expect("entry");
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .expect("below base")
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                walk(base, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("link");
                out.insert(rel, Entry::Link(target.to_string_lossy().into_owned()));
            } else {
                let mode = meta.permissions().mode() & 0o777;
                out.insert(rel, Entry::File(mode, std::fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Overwrites `len` bytes at `offset` of `path` with fresh random bytes.
pub fn overwrite(path: &Path, offset: usize, len: usize, seed: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset..offset + len].copy_from_slice(&random_bytes(len, seed));
    std::fs::write(path, bytes).expect("write");
}

/// Sum of the sizes of the regular files under `dir`.
pub fn total_bytes(dir: &Path) -> u64 {
    snapshot(dir)
        .values()
        .map(|e| match e {
            Entry::File(_, bytes) => bytes.len() as u64,
            Entry::Link(_) => 0,
        })
        .sum()
}
