use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_content::{Digest, FileEntry, Manifest};
use ferry_net::HubClient;
use futures_util::StreamExt;

use crate::TransferError;

/// What a download did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownloadReport {
    /// Entries written.
    pub files: u64,
    /// Verified bytes received.
    pub bytes: u64,
}

/// Downloads every file of `manifest` from `client`'s base URL (hub or
/// mirror) into the new directory `out`, verifying each chunk against the
/// manifest as it arrives. The package is assembled in a temporary sibling
/// directory and renamed to `out` only when complete, so a failure leaves
/// nothing behind. `progress` is called with each verified chunk's length.
pub async fn download_package(
    client: &HubClient,
    manifest: &Manifest,
    out: &Path,
    mut progress: impl FnMut(u64),
) -> Result<DownloadReport, TransferError> {
    if out.exists() {
        return Err(TransferError::Refused(format!(
            "{} already exists; choose a new output directory",
            out.display()
        )));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| TransferError::io(&parent, e))?;
    let staging = parent.join(format!(".ferry-fetch-{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&staging).map_err(|e| TransferError::io(&staging, e))?;
    let result = async {
        let mut report = DownloadReport::default();
        for entry in &manifest.files {
            let dest = staging.join(entry.path.as_str());
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(|e| TransferError::io(dir, e))?;
            }
            match &entry.symlink {
                Some(target) => {
                    std::os::unix::fs::symlink(target, &dest)
                        .map_err(|e| TransferError::io(&dest, e))?;
                }
                None => {
                    report.bytes += fetch_file(client, entry, &dest, &mut progress).await?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(entry.mode))
                        .map_err(|e| TransferError::io(&dest, e))?;
                }
            }
            report.files += 1;
        }
        ferry_store::durable::rename(&staging, out).map_err(|e| TransferError::io(out, e))?;
        Ok(report)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

async fn fetch_file(
    client: &HubClient,
    entry: &FileEntry,
    dest: &Path,
    progress: &mut impl FnMut(u64),
) -> Result<u64, TransferError> {
    let mut file = std::fs::File::create(dest).map_err(|e| TransferError::io(dest, e))?;
    if entry.chunks.is_empty() {
        return Ok(0);
    }
    let url = client.url(&format!("v1/objects/{}", entry.content_id()))?;
    let source_url = url.to_string();
    let wrong_length = |detail: String| TransferError::WrongLength {
        path: entry.path.to_string(),
        source_url: source_url.clone(),
        detail,
    };
    let response = client.get(&url, None).await?;
    let mut stream = response.bytes_stream();
    let mut chunks = entry.chunks.iter().enumerate();
    let mut current = chunks.next();
    let mut buffer: Vec<u8> = Vec::new();
    let mut written = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| {
            TransferError::Net(ferry_net::NetError::Request {
                url: source_url.clone(),
                detail: e.to_string(),
            })
        })?;
        let mut piece = &piece[..];
        while !piece.is_empty() {
            let Some((index, chunk)) = current else {
                return Err(wrong_length(format!(
                    "the source sent more than the signed {} bytes",
                    entry.size
                )));
            };
            let want = chunk.len as usize - buffer.len();
            let take = want.min(piece.len());
            buffer.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if buffer.len() == chunk.len as usize {
                if Digest::of(&buffer) != chunk.digest {
                    return Err(TransferError::ChunkMismatch {
                        path: entry.path.to_string(),
                        index,
                        expected: chunk.digest,
                        source_url: source_url.clone(),
                    });
                }
                file.write_all(&buffer)
                    .map_err(|e| TransferError::io(dest, e))?;
                written += buffer.len() as u64;
                progress(buffer.len() as u64);
                buffer.clear();
                current = chunks.next();
            }
        }
    }
    if current.is_some() {
        return Err(wrong_length(format!(
            "the source ended after {written} of {} bytes",
            entry.size
        )));
    }
    file.sync_all().map_err(|e| TransferError::io(dest, e))?;
    Ok(written)
}
