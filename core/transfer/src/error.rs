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
        "downloading {path} from {source_url} was interrupted after {kept} verified bytes ({detail}); they are kept: run the same command again to resume"
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
    /// The source does not hold a chunk it was asked for.
    #[error("{source_url} does not hold chunk {digest}; another source may")]
    SourceLacks {
        /// Where it was asked for.
        source_url: String,
        /// The chunk.
        digest: ferry_content::Digest,
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
    /// Whether the fault lies with the source (tampered, stale, endless,
    /// slow, unreachable or failing), so the next source in a plan, or a
    /// later try, may succeed. `false` means stop: local disk trouble, a
    /// request no source can satisfy, or a refusal by the hub itself.
    pub fn is_source_fault(&self) -> bool {
        use ferry_trust::TrustError as T;
        match self {
            TransferError::ChunkMismatch { .. }
            | TransferError::WrongLength { .. }
            | TransferError::Interrupted { .. }
            | TransferError::SourceLacks { .. } => true,
            TransferError::Net(e) => e.is_source_fault(),
            TransferError::Trust(t) => matches!(
                t,
                T::Rollback { .. }
                    | T::Expired { .. }
                    | T::Tampered(_)
                    | T::TooLarge { .. }
                    | T::Unreachable { .. }
            ),
            TransferError::Content(_)
            | TransferError::NoSuchVersion(_)
            | TransferError::Refused(_)
            | TransferError::Io { .. } => false,
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TransferError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_of_the_source_are_told_from_local_ones() {
        let net = |status| {
            TransferError::Net(ferry_net::NetError::Status {
                url: "https://relay/".into(),
                status,
                code: None,
                message: String::new(),
            })
        };
        assert!(net(503).is_source_fault());
        assert!(net(404).is_source_fault());
        assert!(!net(403).is_source_fault());
        assert!(!net(400).is_source_fault());
        let slow = TransferError::Net(ferry_net::NetError::TooSlow {
            url: "u".into(),
            detail: "d".into(),
        });
        assert!(slow.is_source_fault());
        let tampered = TransferError::ChunkMismatch {
            path: "f".into(),
            index: 0,
            expected: ferry_content::Digest::of(b""),
            source_url: "u".into(),
        };
        assert!(tampered.is_source_fault());
        let disk = TransferError::io(
            std::path::Path::new("/x"),
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(!disk.is_source_fault());
        assert!(
            TransferError::Trust(ferry_trust::TrustError::Tampered("x".into())).is_source_fault()
        );
        assert!(!TransferError::NoSuchVersion("x".into()).is_source_fault());
    }
}
