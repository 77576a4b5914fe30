use std::path::{Path, PathBuf};

/// Where a relay keeps what, under its data directory:
///
/// ```text
/// relay.toml          configuration (documented in place)
/// client.toml, ca.pem, client.pem, client.key, root.json
///                     the relay's enrollment: identity, pinned hub CA and root
/// tuf/                metadata the TUF client verified (refuses rollback)
/// catalog.db          synced versions and where each chunk lies
/// content/            whole files by content id, manifests, spooled chunks
/// metadata/roots/     every root metadata version, as the hub signed it
/// metadata/snapshots/ served metadata, one directory per synced snapshot
/// metadata/current    symlink to the snapshot agents are served
/// status.json         the last sync and what is served
/// relay.lock          held by `ferry relay run`
/// ```
#[derive(Debug, Clone)]
pub struct RelayLayout {
    data: PathBuf,
}

impl RelayLayout {
    /// The layout of `data`.
    pub fn new(data: &Path) -> Self {
        RelayLayout {
            data: data.to_owned(),
        }
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// `relay.toml`.
    pub fn config(&self) -> PathBuf {
        self.data.join("relay.toml")
    }

    /// The catalog database.
    pub fn catalog(&self) -> PathBuf {
        self.data.join("catalog.db")
    }

    /// Local content (store, manifests, spool).
    pub fn content(&self) -> PathBuf {
        self.data.join("content")
    }

    /// Root metadata files, every version.
    pub fn roots(&self) -> PathBuf {
        self.data.join("metadata").join("roots")
    }

    /// Served metadata snapshots.
    pub fn snapshots(&self) -> PathBuf {
        self.data.join("metadata").join("snapshots")
    }

    /// The symlink naming the served snapshot.
    pub fn current(&self) -> PathBuf {
        self.data.join("metadata").join("current")
    }

    /// The status file.
    pub fn status(&self) -> PathBuf {
        self.data.join("status.json")
    }

    /// Signed tasks heard from the upstream.
    pub fn tasks(&self) -> PathBuf {
        self.data.join("tasks.json")
    }

    /// The run lock.
    pub fn lock(&self) -> PathBuf {
        self.data.join("relay.lock")
    }
}
