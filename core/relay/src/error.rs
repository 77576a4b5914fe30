/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
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
    /// Certificates, TLS or the upstream connection.
    #[error(transparent)]
    Net(#[from] ferry_net::NetError),
    /// Moving content from upstream.
    #[error(transparent)]
    Transfer(#[from] ferry_transfer::TransferError),
    /// Plugins.
    #[error(transparent)]
    Plugin(#[from] ferry_plugin::PluginError),
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl RelayError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        RelayError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
