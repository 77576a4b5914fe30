/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
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
    /// Catalog (outbox) failure.
    #[error(transparent)]
    Catalog(#[from] ferry_catalog::CatalogError),
    /// Certificates, TLS or the server connection.
    #[error(transparent)]
    Net(#[from] ferry_net::NetError),
    /// Moving content.
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

impl AgentError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AgentError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
