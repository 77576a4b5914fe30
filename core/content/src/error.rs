use std::path::PathBuf;

/// Everything that can be wrong with a package, a path or a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A package name broke the naming rules.
    #[error(
        "invalid package name {name:?}: {reason} (use 1-64 characters: lowercase letters, digits, '-', '_' or '.', starting with a letter or digit)"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A path inside a package broke the path rules.
    #[error("invalid path {path:?} in package: {reason}")]
    InvalidPath {
        /// The rejected path.
        path: String,
        /// Which rule it broke.
        reason: String,
    },
    /// Two entries of one package have the same path.
    #[error("duplicate path {0:?} in package")]
    DuplicatePath(String),
    /// A symlink points outside the package.
    #[error(
        "symlink {path:?} points to {target:?}, which leaves the package; replace it with the file it points to"
    )]
    SymlinkEscape {
        /// The symlink's path inside the package.
        path: String,
        /// Where it points.
        target: String,
    },
    /// A file kind that a package cannot hold (device, socket, fifo).
    #[error(
        "{0:?} is not a regular file, directory or symlink; remove it from the package directory"
    )]
    UnsupportedFileType(String),
    /// The manifest is not acceptable.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// A chunk pack is malformed.
    #[error("invalid chunk pack: {0}")]
    InvalidPack(String),
    /// A byte-level delta that cannot be made or does not decode.
    #[error("{0}")]
    InvalidDelta(String),
    /// The manifest could not be parsed.
    #[error("manifest is not valid JSON for this format: {0}")]
    ManifestSyntax(#[from] serde_json::Error),
    /// A limit was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// The limit that applies.
        limit: u64,
    },
    /// Reading the package directory failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl ContentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ContentError::Io {
            path: path.into(),
            source,
        }
    }
}
