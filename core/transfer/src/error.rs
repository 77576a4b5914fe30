use std::path::PathBuf;

/// Errors while fetching or publishing content.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Metadata or a manifest failed verification.
    #[error(transparent)]
    Trust(#[from] ferry_trust::TrustError),
    /// A request failed.
    #[error(transparent)]
    Net(#[from] ferry_net::NetError),
    /// A manifest or path broke the content rules.
    #[error(transparent)]
    Content(#[from] ferry_content::ContentError),
    /// A chunk did not match the signed manifest.
    #[error(
        "chunk {index} of {path} from {source_url} does not match the signed manifest (expected {expected}); the source is serving tampered or corrupt data, nothing was kept"
    )]
    ChunkMismatch {
        /// File inside the package.
        path: String,
        /// Chunk number within the file.
        index: usize,
        /// Expected digest.
        expected: ferry_content::Digest,
        /// Where the bytes came from.
        source_url: String,
    },
    /// The source sent more or fewer bytes than the manifest signs.
    #[error("{path} from {source_url}: {detail}; nothing was kept")]
    WrongLength {
        /// File inside the package.
        path: String,
        /// Where the bytes came from.
        source_url: String,
        /// What was wrong.
        detail: String,
    },
    /// The connection broke off part-way; what arrived verified is kept.
    #[error(
        "downloading {path} from {source_url} was interrupted after {kept} verified bytes ({detail}); run the same command again to resume"
    )]
    Interrupted {
        /// File inside the package.
        path: String,
        /// Where the bytes came from.
        source_url: String,
        /// Verified bytes of the file kept for the next attempt.
        kept: u64,
        /// What went wrong.
        detail: String,
    },
    /// No published version matches the request.
    #[error("{0}")]
    NoSuchVersion(String),
    /// The hub refused or lacks something.
    #[error("{0}")]
    Refused(String),
    /// Local file I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl TransferError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TransferError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
