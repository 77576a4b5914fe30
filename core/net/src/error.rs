use std::path::PathBuf;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Certificate or key generation, parsing or signing failed.
    #[error("certificate error: {0}")]
    Certificate(String),
    /// TLS configuration failed.
    #[error("TLS configuration error: {0}")]
    Tls(String),
    /// An enrollment token could not be parsed.
    #[error(
        "malformed enrollment token: {0}; copy the whole token printed by `ferry token create`"
    )]
    BadToken(String),
    /// The server's CA does not match the fingerprint in the token.
    #[error(
        "the server at {url} presented a CA with fingerprint {actual}, but the token pins {expected}; you may be talking to the wrong hub or to an impostor"
    )]
    CaMismatch {
        /// The server URL.
        url: String,
        /// Fingerprint from the token.
        expected: String,
        /// Fingerprint presented.
        actual: String,
    },
    /// The server answered with an error status.
    #[error("{status} from {url}: {message}")]
    Status {
        /// URL of the request.
        url: String,
        /// HTTP status.
        status: u16,
        /// The stable error code (see [`crate::api::ErrorCode`]), when the
        /// server sent one; clients match on it, never on the message.
        code: Option<String>,
        /// The server's explanation.
        message: String,
    },
    /// The source answered too slowly: no headers in time, a stall, or an
    /// average rate below the client's minimum.
    #[error("{url} is too slow: {detail}; trying it again later or another source may help")]
    TooSlow {
        /// URL of the request.
        url: String,
        /// What was measured.
        detail: String,
    },
    /// The request did not complete.
    #[error("request to {url} failed: {detail}")]
    Request {
        /// URL of the request.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// A response body longer than allowed.
    #[error("response from {url} is longer than the {limit} bytes expected")]
    TooLarge {
        /// URL of the request.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// Client credentials are missing or unreadable.
    #[error("{0}")]
    Credentials(String),
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl NetError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        NetError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// HTTP status of a [`NetError::Status`], if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            NetError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's stable error code, if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            NetError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether the fault lies with the source (unreachable, slow, endless,
    /// failing, or lacking the content), so another source or a later try
    /// may succeed; `false` for what no source can fix (bad credentials,
    /// a refused request, local files).
    pub fn is_source_fault(&self) -> bool {
        match self {
            NetError::Request { .. } | NetError::TooSlow { .. } | NetError::TooLarge { .. } => true,
            NetError::Status { status, .. } => {
                *status >= 500 || matches!(*status, 404 | 408 | 416 | 429)
            }
            _ => false,
        }
    }
}

pub(crate) fn cert_err(e: impl std::fmt::Display) -> NetError {
    NetError::Certificate(e.to_string())
}
