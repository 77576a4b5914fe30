//! What can go wrong loading or calling a plugin.

use std::path::PathBuf;

/// An error of the plugin runtime. Each names the plugin and says what an
/// operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A file of the plugin could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (not a `source`: the message already says it).
        cause: std::io::Error,
    },
    /// plugin.toml is malformed or inconsistent.
    #[error("{path}: {reason}")]
    Manifest {
        /// The manifest file (or the built-in's name).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin was built against a contract this node does not speak.
    #[error(
        "plugin {plugin} was built against ferry:plugin@{found}, but this Ferry provides \
         ferry:plugin@{supported}: {hint}"
    )]
    IncompatibleContract {
        /// The plugin.
        plugin: String,
        /// The contract version the plugin declares or was built against.
        found: String,
        /// The contract version of this node.
        supported: String,
        /// What to do about it.
        hint: String,
    },
    /// The component is not a valid plugin of its declared kind.
    #[error("plugin {plugin}: {reason}")]
    Invalid {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// What the node grants a plugin is unusable or unsafe.
    #[error("[plugins.grants.{plugin}]: {reason}")]
    Grant {
        /// The plugin.
        plugin: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A call trapped, ran out of time or memory, or returned an error.
    #[error("plugin {plugin} failed in {call}: {reason}")]
    Call {
        /// The plugin.
        plugin: String,
        /// The function called.
        call: &'static str,
        /// What happened.
        reason: String,
    },
    /// A call returned something the node cannot act on.
    #[error("plugin {plugin} returned nonsense from {call}: {reason}")]
    Nonsense {
        /// The plugin.
        plugin: String,
        /// The function called.
        call: &'static str,
        /// What is wrong with the answer.
        reason: String,
    },
    /// No plugin of that kind and name is known.
    #[error("no {kind} plugin named {name:?}{requirement}; known: {known}")]
    NotFound {
        /// The kind.
        kind: String,
        /// The name asked for.
        name: String,
        /// The version requirement, if any, as text ("" or " matching ^1").
        requirement: String,
        /// The plugins of that kind that exist.
        known: String,
    },
    /// The WebAssembly engine could not be set up.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

impl PluginError {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        PluginError::Io {
            path: path.into(),
            cause,
        }
    }
}
