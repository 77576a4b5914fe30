/// Errors of the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The data directory is not usable.
    #[error("{0}")]
    DataDir(String),
    /// The configuration file is invalid.
    #[error("invalid configuration {path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Catalog failure.
    #[error(transparent)]
    Catalog(#[from] ferry_catalog::CatalogError),
    /// Content store failure.
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
    /// TUF failure.
    #[error(transparent)]
    Trust(#[from] ferry_trust::TrustError),
    /// Certificates or TLS.
    #[error(transparent)]
    Net(#[from] ferry_net::NetError),
    /// Content model violation.
    #[error(transparent)]
    Content(#[from] ferry_content::ContentError),
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
