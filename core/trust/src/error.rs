/// Why metadata or a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Metadata older than what this client already trusts.
    #[error(
        "rollback refused: the server offered {role} metadata older than what this client already trusts ({detail}); the server or a mirror is serving stale or replayed metadata"
    )]
    Rollback {
        /// The role involved.
        role: String,
        /// tough's description.
        detail: String,
    },
    /// Metadata whose expiry has passed.
    #[error(
        "{role} metadata has expired; the hub must be running to re-sign it, or a mirror is serving frozen metadata"
    )]
    Expired {
        /// The role involved.
        role: String,
    },
    /// Bytes that do not match their signed hash or signatures.
    #[error("tampered content refused: {0}")]
    Tampered(String),
    /// A response longer than its signed length.
    #[error("response exceeds its signed length of {max} bytes ({what}); refused as endless data")]
    TooLarge {
        /// The signed length.
        max: u64,
        /// What was fetched.
        what: String,
    },
    /// No such target in the signed metadata.
    #[error("{0} is not in the hub's signed metadata")]
    UnknownTarget(String),
    /// The server could not be reached or answered with an error.
    #[error("fetching {url} failed: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// Key files missing or unreadable.
    #[error("signing key problem: {0}")]
    Keys(String),
    /// Reading or writing metadata on disk failed.
    #[error("TUF metadata I/O on {path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Any other TUF failure.
    #[error("TUF error: {0}")]
    Other(String),
}

impl TrustError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TrustError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Maps tough's error to what an operator should see, looking inside
    /// transport errors for the hash and size checks tough performs while
    /// streaming.
    pub(crate) fn from_tough(err: tough::error::Error) -> Self {
        use tough::error::Error as E;
        match err {
            E::ExpiredMetadata { role, .. } => TrustError::Expired {
                role: role.to_string(),
            },
            e @ (E::OlderMetadata { .. }
            | E::OlderSnapshotInTimestamp { .. }
            | E::SnapshotRoleRollback { .. }
            | E::SnapshotRoleMissing { .. }) => {
                let role = match &e {
                    E::OlderMetadata { role, .. } => role.to_string(),
                    E::OlderSnapshotInTimestamp { .. } => "timestamp".into(),
                    _ => "snapshot".into(),
                };
                TrustError::Rollback {
                    role,
                    detail: e.to_string(),
                }
            }
            E::HashMismatch { context, .. } => {
                TrustError::Tampered(format!("{context} does not match its signed hash"))
            }
            E::MaxSizeExceeded {
                max_size,
                specifier,
                ..
            } => TrustError::TooLarge {
                max: max_size,
                what: specifier.to_string(),
            },
            e @ (E::VerifyMetadata { .. }
            | E::VerifyTrustedMetadata { .. }
            | E::VersionMismatch { .. }
            | E::ParseMetadata { .. }) => TrustError::Tampered(e.to_string()),
            E::Transport { url, source, .. } => {
                let inner = std::error::Error::source(&source)
                    .and_then(|s| s.downcast_ref::<tough::error::Error>());
                match inner {
                    Some(E::HashMismatch { context, .. }) => {
                        TrustError::Tampered(format!("{context} does not match its signed hash"))
                    }
                    Some(E::MaxSizeExceeded {
                        max_size,
                        specifier,
                        ..
                    }) => TrustError::TooLarge {
                        max: *max_size,
                        what: format!("{specifier} from {url}"),
                    },
                    _ => TrustError::Unreachable {
                        url: url.to_string(),
                        detail: error_chain(&source),
                    },
                }
            }
            other => TrustError::Other(error_chain(&other)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        cur = s.source();
    }
    text
}
