use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_content::{Digest, FileEntry, Manifest};
use ferry_net::HubClient;
use futures_util::StreamExt;

use crate::TransferError;

/// What a download did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DownloadReport {
    /// Entries written.
    pub files: u64,
    /// Verified bytes received over the network.
    pub bytes_downloaded: u64,
    /// Verified bytes taken from an earlier, interrupted download.
    pub bytes_resumed: u64,
}

/// Downloads every file of `manifest` from `client`'s base URL (hub or
/// mirror) into the new directory `out`, verifying each chunk against the
/// manifest as it arrives.
///
/// Each file is received into `partial_dir` under its content id and holds
/// only verified chunks; if a download is interrupted, the next one checks
/// what is there again and asks only for the rest (HTTP `Range`). The
/// package is assembled in a temporary sibling of `out` and renamed to `out`
/// only when complete, so a failure never leaves a half-written `out`.
/// `progress` is called with each verified chunk's length.
pub async fn download_package(
    client: &HubClient,
    manifest: &Manifest,
    out: &Path,
    partial_dir: &Path,
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
    std::fs::create_dir_all(partial_dir).map_err(|e| TransferError::io(partial_dir, e))?;
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
                    let part = partial_dir.join(format!("{}.part", entry.content_id()));
                    let got = fetch_file(client, entry, &part, &mut progress).await?;
                    report.bytes_downloaded += got.downloaded;
                    report.bytes_resumed += got.resumed;
                    std::fs::set_permissions(&part, std::fs::Permissions::from_mode(entry.mode))
                        .map_err(|e| TransferError::io(&part, e))?;
                    std::fs::rename(&part, &dest).map_err(|e| TransferError::io(&dest, e))?;
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

/// Bytes of one file by where they came from.
struct FileBytes {
    downloaded: u64,
    resumed: u64,
}

/// Completes `part` so it holds exactly `entry`'s bytes, every chunk checked.
async fn fetch_file(
    client: &HubClient,
    entry: &FileEntry,
    part: &Path,
    progress: &mut impl FnMut(u64),
) -> Result<FileBytes, TransferError> {
    let (mut file, first, resumed) = resume_point(entry, part)?;
    progress(resumed);
    let mut got = FileBytes {
        downloaded: 0,
        resumed,
    };
    if first == entry.chunks.len() {
        file.sync_all().map_err(|e| TransferError::io(part, e))?;
        return Ok(got);
    }
    let url = client.url(&format!("v1/objects/{}", entry.content_id()))?;
    let source_url = url.to_string();
    let wrong_length = |detail: String| TransferError::WrongLength {
        path: entry.path.to_string(),
        source_url: source_url.clone(),
        detail,
    };
    let range = (resumed > 0).then_some((resumed, None));
    let response = client.get(&url, range).await?;
    // A source may ignore the range and send the whole file: skip what we
    // already hold rather than trusting it blindly.
    let mut skip = if response.status().as_u16() == 206 {
        0
    } else {
        resumed
    };
    let mut stream = response.bytes_stream();
    let mut chunks = entry.chunks.iter().enumerate().skip(first);
    let mut current = chunks.next();
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| TransferError::Interrupted {
            path: entry.path.to_string(),
            source_url: source_url.clone(),
            kept: got.resumed + got.downloaded,
            detail: ferry_net::describe_error(&e),
        })?;
        let mut piece = &piece[..];
        let skipped = skip.min(piece.len() as u64);
        piece = &piece[skipped as usize..];
        skip -= skipped;
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
                    .map_err(|e| TransferError::io(part, e))?;
                got.downloaded += buffer.len() as u64;
                progress(buffer.len() as u64);
                buffer.clear();
                current = chunks.next();
            }
        }
    }
    if current.is_some() {
        return Err(wrong_length(format!(
            "the source ended after {} of {} bytes",
            got.resumed + got.downloaded,
            entry.size
        )));
    }
    file.sync_all().map_err(|e| TransferError::io(part, e))?;
    Ok(got)
}

/// Opens `part` for appending after its longest prefix of whole chunks that
/// still match `entry`; anything after that prefix is cut off. Returns the
/// file, the index of the first chunk still needed and the bytes kept.
fn resume_point(
    entry: &FileEntry,
    part: &Path,
) -> Result<(std::fs::File, usize, u64), TransferError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(part)
        .map_err(|e| TransferError::io(part, e))?;
    let mut kept = 0u64;
    let mut first = 0usize;
    let mut buf = Vec::new();
    for chunk in &entry.chunks {
        buf.resize(chunk.len as usize, 0);
        if file.read_exact(&mut buf).is_err() || Digest::of(&buf) != chunk.digest {
            break;
        }
        kept += chunk.len as u64;
        first += 1;
    }
    file.set_len(kept).map_err(|e| TransferError::io(part, e))?;
    file.seek(std::io::SeekFrom::Start(kept))
        .map_err(|e| TransferError::io(part, e))?;
    Ok((file, first, kept))
}
