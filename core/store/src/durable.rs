//! Crash-safe file writes: write a temporary file in the same directory,
//! fsync it, rename it over the target, fsync the directory. After a crash
//! the target holds either the old content or the new, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A durable temporary file beside `path` holding `bytes`, with
/// permissions `mode`; removed again if it is dropped unpersisted.
fn written_beside(path: &Path, bytes: &[u8], mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let dir = parent(path)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".ferry-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

/// Writes `bytes` to `path` atomically and durably, with permissions `mode`.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    written_beside(path, bytes, mode)?
        .persist(path)
        .map_err(|e| e.error)?;
    sync_dir(parent(path)?)
}

/// Like [`write_file`] but refuses to replace an existing file, atomically
/// (no window between a check and the write).
pub fn create_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    written_beside(path, bytes, mode)?
        .persist_noclobber(path)
        .map_err(|e| e.error)?;
    sync_dir(parent(path)?)
}

/// Removes the temporary files that writes in `dir` interrupted by a crash
/// left (`.ferry-*`); returns how many. Only for a directory the caller
/// has to itself (under its lock), or it may remove a write in progress.
pub fn remove_leftovers(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".ferry-")
            && entry.file_type()?.is_file()
        {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Fsyncs a directory so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` and fsyncs the target's directory.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent(to)?)
}

fn parent(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        Some(_) => Ok(Path::new(".")),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let p = dir.join("f");
        write_file(&p, b"one", 0o600).unwrap();
        write_file(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(create_file(&p, b"three", 0o600).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let leftovers = fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files left behind");
    }
}
