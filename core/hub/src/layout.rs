use std::path::{Path, PathBuf};

/// Where everything lives inside a hub data directory.
#[derive(Debug, Clone)]
pub struct HubLayout {
    /// The data directory.
    pub root: PathBuf,
}

impl HubLayout {
    /// The layout of `root`.
    pub fn new(root: &Path) -> Self {
        HubLayout {
            root: root.to_owned(),
        }
    }
    /// `hub.toml`, the configuration; its presence marks an initialized hub.
    pub fn config(&self) -> PathBuf {
        self.root.join("hub.toml")
    }
    /// Held by the process serving or changing this hub.
    pub fn lock(&self) -> PathBuf {
        self.root.join("hub.lock")
    }
    /// The SQLite catalog.
    pub fn catalog(&self) -> PathBuf {
        self.root.join("catalog.db")
    }
    /// The content store.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    /// TUF keys and metadata.
    pub fn tuf(&self) -> PathBuf {
        self.root.join("tuf")
    }
    /// The signed revocation list, served to relays.
    pub fn revocations(&self) -> PathBuf {
        self.tuf().join("revocations.json")
    }
    /// CA and server certificate.
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
}
