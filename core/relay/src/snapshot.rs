//! The metadata a relay serves: one directory per synced snapshot holding
//! the hub's signed files byte for byte, and a `current` symlink replaced
//! atomically, so agents see either the old snapshot or the new one, never
//! a mix, and only once every target the relay keeps is stored.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::{RelayError, RelayLayout};

/// What one served snapshot is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Version of the timestamp metadata.
    pub timestamp_version: u64,
    /// When the timestamp metadata expires (RFC 3339).
    pub expires: String,
    /// Version of the targets metadata.
    pub targets_version: u64,
    /// Targets (manifests) served with it: those the relay keeps, and
    /// those got by pull-through.
    pub served: Vec<String>,
    /// Of `served`, those got by pull-through (agents asked for them;
    /// `[keep]` does not select them).
    #[serde(default)]
    pub pulled: Vec<String>,
    /// When the relay switched to it (RFC 3339).
    pub switched_at: String,
}

/// The served snapshot, shared by the serving side and the sync.
pub struct Snapshots {
    layout: RelayLayout,
    current: RwLock<Option<Current>>,
    version: tokio::sync::watch::Sender<u64>,
}

struct Current {
    dir: PathBuf,
    info: SnapshotInfo,
    served: Arc<HashSet<String>>,
}

/// The file in each snapshot directory describing it.
const INFO_FILE: &str = "snapshot-info.json";

impl Snapshots {
    /// The snapshot `current` names, if any.
    pub fn open(layout: &RelayLayout) -> Result<Snapshots, RelayError> {
        for dir in [layout.roots(), layout.snapshots()] {
            std::fs::create_dir_all(&dir).map_err(|e| RelayError::io(&dir, e))?;
            ferry_store::durable::remove_leftovers(&dir).map_err(|e| RelayError::io(&dir, e))?;
        }
        // Snapshots and symlinks a crash left half made (the caller holds
        // the run lock).
        for dir in [layout.snapshots(), layout.current().with_file_name("")] {
            let entries = std::fs::read_dir(&dir).map_err(|e| RelayError::io(&dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let removed = if name.starts_with(".current-") {
                    std::fs::remove_file(&path)
                } else if name.starts_with('.') && dir == layout.snapshots() {
                    std::fs::remove_dir_all(&path)
                } else {
                    continue;
                };
                removed.map_err(|e| RelayError::io(&path, e))?;
            }
        }
        let current = match std::fs::read_link(layout.current()) {
            Ok(target) => {
                let dir = layout
                    .snapshots()
                    .join(target.file_name().unwrap_or_default());
                let path = dir.join(INFO_FILE);
                let bytes = std::fs::read(&path).map_err(|e| RelayError::io(&path, e))?;
                let info: SnapshotInfo = serde_json::from_slice(&bytes).map_err(|e| {
                    RelayError::DataDir(format!("{} is damaged: {e}", path.display()))
                })?;
                Some(Current {
                    dir,
                    served: Arc::new(info.served.iter().cloned().collect()),
                    info,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(RelayError::io(&layout.current(), e)),
        };
        let version = current.as_ref().map_or(0, |c| c.info.timestamp_version);
        Ok(Snapshots {
            layout: layout.clone(),
            current: RwLock::new(current),
            version: tokio::sync::watch::channel(version).0,
        })
    }

    /// The served snapshot's directory; before the first sync, a directory
    /// that does not exist (every metadata request is then "not found").
    pub fn dir(&self) -> PathBuf {
        self.read(|c| c.dir.clone())
            .unwrap_or_else(|| self.layout.snapshots().join("none"))
    }

    /// The served snapshot's description.
    pub fn info(&self) -> Option<SnapshotInfo> {
        self.read(|c| c.info.clone())
    }

    /// A version that grows at each switch and each new revocation list
    /// (at least the served timestamp version).
    pub fn version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self, version: u64) {
        self.version.send_modify(|v| *v = (*v + 1).max(version));
    }

    /// Puts a newer revocation list in the served snapshot (whose metadata
    /// did not change). Blocks (a file).
    pub fn replace_revocations(&self, bytes: &[u8]) -> Result<(), RelayError> {
        let dir = self
            .read(|c| c.dir.clone())
            .ok_or_else(|| RelayError::DataDir("nothing is served yet".into()))?;
        write(&dir.join(crate::sync::REVOCATIONS_FILE), bytes)?;
        self.changed(0);
        Ok(())
    }

    /// The targets served now.
    pub fn served(&self) -> Arc<HashSet<String>> {
        self.read(|c| c.served.clone()).unwrap_or_default()
    }

    fn read<T>(&self, f: impl FnOnce(&Current) -> T) -> Option<T> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(f)
    }

    /// Builds a snapshot from `files` (the signed metadata a TUF load read,
    /// by file name, plus the revocation list if any) and every root kept,
    /// then makes it the served one. Blocks (files). The previous snapshot
    /// stays on disk for requests that already looked it up; older ones
    /// are removed.
    pub fn switch(
        &self,
        files: &BTreeMap<String, Vec<u8>>,
        mut info: SnapshotInfo,
    ) -> Result<SnapshotInfo, RelayError> {
        let snapshots = self.layout.snapshots();
        let name = format!(
            "{:020}-{:016x}",
            info.timestamp_version,
            rand::random::<u64>()
        );
        let building = snapshots.join(format!(".{name}"));
        let result = (|| {
            std::fs::create_dir(&building).map_err(|e| RelayError::io(&building, e))?;
            for (file, bytes) in files {
                write(&building.join(file), bytes)?;
            }
            // The previous snapshot's own files too: a client that read the
            // old timestamp just before the switch still finds the
            // snapshot and targets files it names.
            if let Some((dir, version)) = self.read(|c| (c.dir.clone(), c.info.targets_version)) {
                for role in ["snapshot", "targets"] {
                    let file = format!("{version}.{role}.json");
                    let (from, to) = (dir.join(&file), building.join(&file));
                    if from.exists() && !to.exists() {
                        std::fs::hard_link(&from, &to).map_err(|e| RelayError::io(&to, e))?;
                    }
                }
            }
            let roots = self.layout.roots();
            for entry in std::fs::read_dir(&roots).map_err(|e| RelayError::io(&roots, e))? {
                let entry = entry.map_err(|e| RelayError::io(&roots, e))?;
                let to = building.join(entry.file_name());
                std::fs::hard_link(entry.path(), &to).map_err(|e| RelayError::io(&to, e))?;
            }
            info.switched_at = chrono::Utc::now().to_rfc3339();
            let described = serde_json::to_vec_pretty(&info).expect("snapshot info serializes");
            write(&building.join(INFO_FILE), &described)?;
            ferry_store::durable::rename(&building, &snapshots.join(&name))
                .map_err(|e| RelayError::io(&building, e))
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&building);
            return Err(e);
        }
        // The switch itself: a new symlink renamed over `current`.
        let link = self.layout.current();
        let temporary = link.with_file_name(format!(".current-{name}"));
        std::os::unix::fs::symlink(Path::new("snapshots").join(&name), &temporary)
            .map_err(|e| RelayError::io(&temporary, e))?;
        ferry_store::durable::rename(&temporary, &link).map_err(|e| RelayError::io(&link, e))?;
        let previous = {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            let previous = current.as_ref().map(|c| c.dir.clone());
            *current = Some(Current {
                dir: snapshots.join(&name),
                served: Arc::new(info.served.iter().cloned().collect()),
                info: info.clone(),
            });
            previous
        };
        self.changed(info.timestamp_version);
        self.remove_old(&name, previous.as_deref());
        Ok(info)
    }

    /// Removes snapshot directories other than `keep` and `previous`
    /// (failures only cost disk space, and are retried at the next switch).
    fn remove_old(&self, keep: &str, previous: Option<&Path>) {
        let Ok(entries) = std::fs::read_dir(self.layout.snapshots()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name() == keep || Some(path.as_path()) == previous {
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!("cannot remove old snapshot {}: {e}", path.display());
            }
        }
    }

    /// Keeps a root metadata file (`N.root.json`) for every later snapshot.
    pub fn keep_root(&self, file: &str, bytes: &[u8]) -> Result<(), RelayError> {
        write(&self.layout.roots().join(file), bytes)
    }

    /// Versions of the root metadata files kept.
    pub fn root_versions(&self) -> Result<Vec<u64>, RelayError> {
        let roots = self.layout.roots();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&roots).map_err(|e| RelayError::io(&roots, e))? {
            let entry = entry.map_err(|e| RelayError::io(&roots, e))?;
            if let Some(v) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".root.json"))
                .and_then(|v| v.parse().ok())
            {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Adds a target got by pull-through to the served snapshot, in
    /// memory and in its description on disk. Blocks (a file).
    pub fn add_pulled(&self, target: &str) -> Result<(), RelayError> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let Some(c) = current.as_mut() else {
            return Err(RelayError::DataDir(
                "nothing is served yet; the first sync must finish before pull-through".into(),
            ));
        };
        if c.served.contains(target) {
            return Ok(());
        }
        let mut info = c.info.clone();
        info.served.push(target.to_owned());
        info.pulled.push(target.to_owned());
        let described = serde_json::to_vec_pretty(&info).expect("snapshot info serializes");
        write(&c.dir.join(INFO_FILE), &described)?;
        c.served = Arc::new(info.served.iter().cloned().collect());
        c.info = info;
        Ok(())
    }

    /// A file of the served snapshot, if it has it (a file unchanged since
    /// the last sync that the TUF client did not fetch again).
    pub fn served_file(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir().join(file)).ok()
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), RelayError> {
    ferry_store::durable::write_file(path, bytes, 0o644).map_err(|e| RelayError::io(path, e))
}
