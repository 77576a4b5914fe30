use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::schema::{Hashes, KeyHolder, RoleKeys as TufRoleKeys, RoleType, Root, Signed, Target};
use tough::sign::Sign;

use crate::keys::ROLES;
use crate::{RoleKeys, TrustError};

/// How long each role's metadata stays valid after it is signed. Missing
/// fields take their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lifetimes {
    /// Root metadata.
    #[serde(with = "humantime_serde")]
    pub root: Duration,
    /// Targets metadata.
    #[serde(with = "humantime_serde")]
    pub targets: Duration,
    /// Snapshot metadata.
    #[serde(with = "humantime_serde")]
    pub snapshot: Duration,
    /// Timestamp metadata: how long a client keeps trusting the hub's last
    /// word when it cannot reach it (freeze protection).
    #[serde(with = "humantime_serde")]
    pub timestamp: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Lifetimes {
            // humantime's year (365.25 days), so hub.toml reads "1year".
            root: Duration::from_secs(31_557_600),
            targets: Duration::from_secs(30 * DAY),
            snapshot: Duration::from_secs(7 * DAY),
            timestamp: Duration::from_secs(DAY),
        }
    }
}

/// A file the targets metadata lists: its name, length and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    /// TUF target name.
    pub name: String,
    /// Length in bytes.
    pub length: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

/// Versions and expiry of the metadata currently served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataState {
    /// Version of the newest root.
    pub root_version: u64,
    /// Version shared by targets, snapshot and timestamp (they move together).
    pub version: u64,
    /// When the timestamp expires.
    pub timestamp_expires: Timestamp,
}

/// The hub's signed TUF repository: keys under `DIR/keys`, metadata under
/// `DIR/metadata` laid out with consistent snapshots (`N.root.json`,
/// `N.targets.json`, `N.snapshot.json`, `timestamp.json`).
#[derive(Debug, Clone)]
pub struct SigningRepository {
    keys: RoleKeys,
    metadata: PathBuf,
    lifetimes: Lifetimes,
}

fn after(d: Duration) -> Timestamp {
    Timestamp::now() + SignedDuration::try_from(d).unwrap_or(SignedDuration::from_hours(24))
}

fn other(e: impl std::fmt::Display) -> TrustError {
    TrustError::Other(e.to_string())
}

impl SigningRepository {
    /// Creates keys, root version 1 and empty version-1 targets, snapshot and
    /// timestamp under `dir`.
    pub async fn create(dir: &Path, lifetimes: Lifetimes) -> Result<Self, TrustError> {
        let keys = RoleKeys::generate(&dir.join("keys"))?;
        let metadata = dir.join("metadata");
        std::fs::create_dir_all(&metadata).map_err(|e| TrustError::io(&metadata, e))?;
        let one = NonZeroU64::MIN;
        let mut root = Root {
            spec_version: "1.0.0".into(),
            consistent_snapshot: true,
            version: one,
            expires: after(lifetimes.root),
            keys: HashMap::new(),
            roles: HashMap::new(),
            _extra: HashMap::new(),
        };
        for (role, name) in [
            RoleType::Root,
            RoleType::Targets,
            RoleType::Snapshot,
            RoleType::Timestamp,
        ]
        .into_iter()
        .zip(ROLES)
        {
            let key = keys
                .source(name)?
                .as_sign()
                .await
                .map_err(|e| TrustError::Keys(e.to_string()))?
                .tuf_key();
            let id = key.key_id().map_err(other)?;
            root.keys.insert(id.clone(), key);
            root.roles.insert(
                role,
                TufRoleKeys {
                    keyids: vec![id],
                    threshold: one,
                    _extra: HashMap::new(),
                },
            );
        }
        let signed = SignedRole::new(
            root.clone(),
            &KeyHolder::Root(root),
            &[keys.source("root")?],
            &SystemRandom::new(),
        )
        .await
        .map_err(TrustError::from_tough)?;
        let path = metadata.join("1.root.json");
        ferry_store::durable::create_file(&path, signed.buffer(), 0o644)
            .map_err(|e| TrustError::io(&path, e))?;
        let repo = SigningRepository {
            keys,
            metadata,
            lifetimes,
        };
        repo.publish(&[]).await?;
        Ok(repo)
    }

    /// Opens the repository created by [`SigningRepository::create`].
    pub fn open(dir: &Path, lifetimes: Lifetimes) -> Result<Self, TrustError> {
        let metadata = dir.join("metadata");
        let (root_path, _) = latest_root_in(&metadata)?;
        let root = read_root(&root_path)?;
        let keys = RoleKeys::open(&dir.join("keys"), &root.signed)?;
        Ok(SigningRepository {
            keys,
            metadata,
            lifetimes,
        })
    }

    /// Replaces the key of `role` (`root`, `targets`, `snapshot` or
    /// `timestamp`) with a new one, and publishes root metadata version N+1
    /// that names it, signed by the current root key (and by the new one when
    /// the root key itself is replaced), as TUF requires of a root rotation.
    /// Clients walk from the root they trust to the new one on their next
    /// update. Returns the new root version. The caller re-signs targets,
    /// snapshot and timestamp afterwards so they carry the new keys.
    pub async fn rotate_key(&self, role: &str) -> Result<u64, TrustError> {
        let role_type = match role {
            "root" => RoleType::Root,
            "targets" => RoleType::Targets,
            "snapshot" => RoleType::Snapshot,
            "timestamp" => RoleType::Timestamp,
            other => {
                return Err(TrustError::Keys(format!(
                    "unknown role {other:?}: use root, targets, snapshot or timestamp"
                )));
            }
        };
        let (path, version) = self.latest_root()?;
        let old = read_root(&path)?;
        let root_key = self.keys.source("root").map_err(|e| {
            TrustError::Keys(format!(
                "{e}; rotating a key needs the root key: put root.der back into the keys directory for the rotation, then move it offline again"
            ))
        })?;
        let root_signer = root_key
            .as_sign()
            .await
            .map_err(|e| TrustError::Keys(e.to_string()))?;
        let new_signer = self.keys.generate_next(role)?;
        let new_key = new_signer.tuf_key();
        let new_id = new_key.key_id().map_err(other)?;

        let mut root = old.signed.clone();
        root.version = NonZeroU64::new(version + 1).expect("above zero");
        root.expires = after(self.lifetimes.root);
        let retired = root
            .roles
            .get(&role_type)
            .map(|r| r.keyids.clone())
            .unwrap_or_default();
        root.roles
            .get_mut(&role_type)
            .ok_or_else(|| TrustError::Keys(format!("root metadata has no {role} role")))?
            .keyids = vec![new_id.clone()];
        for id in retired {
            if !root.roles.values().any(|r| r.keyids.contains(&id)) {
                root.keys.remove(&id);
            }
        }
        root.keys.insert(new_id, new_key);

        let mut message = Vec::new();
        root.serialize(&mut serde_json::Serializer::with_formatter(
            &mut message,
            olpc_cjson::CanonicalFormatter::new(),
        ))
        .map_err(other)?;
        let mut signers: Vec<&dyn Sign> = vec![root_signer.as_ref()];
        if role_type == RoleType::Root {
            signers.push(new_signer.as_ref());
        }
        let rng = SystemRandom::new();
        let mut signatures = Vec::new();
        for signer in signers {
            let sig = signer
                .sign(&message, &rng)
                .await
                .map_err(|e| TrustError::Keys(format!("signing the new root failed: {e}")))?;
            signatures.push(tough::schema::Signature {
                keyid: signer.tuf_key().key_id().map_err(other)?,
                sig: sig.into(),
            });
        }
        let signed = Signed {
            signed: root,
            signatures,
        };
        // What every client will check: the old root and the new one both
        // accept the new root's signatures.
        old.signed.verify_role(&signed).map_err(|e| {
            TrustError::Keys(format!(
                "the new root does not verify against the old one: {e}"
            ))
        })?;
        signed.signed.verify_role(&signed).map_err(|e| {
            TrustError::Keys(format!("the new root does not verify against itself: {e}"))
        })?;
        let bytes = serde_json::to_vec_pretty(&signed).map_err(other)?;
        let next = self.metadata.join(format!("{}.root.json", version + 1));
        ferry_store::durable::create_file(&next, &bytes, 0o644)
            .map_err(|e| TrustError::io(&next, e))?;
        self.keys.commit_next(role)?;
        Ok(version + 1)
    }

    /// Directory holding the metadata files, served as-is to clients.
    pub fn metadata_dir(&self) -> &Path {
        &self.metadata
    }

    /// Path and version of the newest `N.root.json`.
    pub fn latest_root(&self) -> Result<(PathBuf, u64), TrustError> {
        latest_root_in(&self.metadata)
    }

    /// The newest root metadata, as clients pin it at enrollment.
    pub fn root_bytes(&self) -> Result<Vec<u8>, TrustError> {
        let (path, _) = self.latest_root()?;
        std::fs::read(&path).map_err(|e| TrustError::io(&path, e))
    }

    /// Versions and expiry of what is served now.
    pub fn state(&self) -> Result<MetadataState, TrustError> {
        let (_, root_version) = self.latest_root()?;
        let path = self.metadata.join("timestamp.json");
        let bytes = std::fs::read(&path).map_err(|e| TrustError::io(&path, e))?;
        let ts: Signed<tough::schema::Timestamp> = serde_json::from_slice(&bytes).map_err(other)?;
        Ok(MetadataState {
            root_version,
            version: ts.signed.version.get(),
            timestamp_expires: ts.signed.expires,
        })
    }

    /// Target names listed by the targets metadata served now.
    pub fn current_targets(&self) -> Result<Vec<String>, TrustError> {
        let state = self.state()?;
        let path = self
            .metadata
            .join(format!("{}.targets.json", state.version));
        let bytes = std::fs::read(&path).map_err(|e| TrustError::io(&path, e))?;
        let targets: Signed<tough::schema::Targets> =
            serde_json::from_slice(&bytes).map_err(other)?;
        let mut names: Vec<String> = targets
            .signed
            .targets
            .keys()
            .map(|n| n.raw().to_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Whether the metadata should be re-signed now: less than half of the
    /// timestamp's lifetime is left.
    pub fn needs_refresh(&self) -> Result<bool, TrustError> {
        let state = self.state()?;
        let half = SignedDuration::try_from(self.lifetimes.timestamp / 2).map_err(other)?;
        Ok(Timestamp::now() + half >= state.timestamp_expires)
    }

    /// Signs a new version of targets, snapshot and timestamp listing exactly
    /// `targets`. The new targets and snapshot files
    /// appear first; `timestamp.json` is replaced last, by an atomic rename,
    /// so a client never sees a timestamp pointing at files not yet written.
    pub async fn publish(&self, targets: &[TargetEntry]) -> Result<u64, TrustError> {
        let (root_path, _) = self.latest_root()?;
        let next = match self.state() {
            Ok(s) => s.version + 1,
            Err(TrustError::Io { .. }) => 1,
            Err(e) => return Err(e),
        };
        let version = NonZeroU64::new(next).expect("next version is at least 1");
        let mut editor = RepositoryEditor::new(&root_path)
            .await
            .map_err(TrustError::from_tough)?;
        editor
            .targets_version(version)
            .map_err(TrustError::from_tough)?
            .targets_expires(after(self.lifetimes.targets))
            .map_err(TrustError::from_tough)?
            .snapshot_version(version)
            .snapshot_expires(after(self.lifetimes.snapshot))
            .timestamp_version(version)
            .timestamp_expires(after(self.lifetimes.timestamp));
        for entry in targets {
            let target = Target {
                length: entry.length,
                hashes: Hashes {
                    sha256: entry.sha256.to_vec().into(),
                    _extra: HashMap::new(),
                },
                custom: HashMap::new(),
                _extra: HashMap::new(),
            };
            editor
                .add_target(entry.name.as_str(), target)
                .map_err(TrustError::from_tough)?;
        }
        let keys = [
            self.keys.source("targets")?,
            self.keys.source("snapshot")?,
            self.keys.source("timestamp")?,
        ];
        let signed = editor.sign(&keys).await.map_err(TrustError::from_tough)?;
        let staging = self
            .metadata
            .with_file_name(format!("metadata.staging-{next}"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| TrustError::io(&staging, e))?;
        let result = async {
            signed
                .write(&staging)
                .await
                .map_err(TrustError::from_tough)?;
            for name in [
                format!("{next}.targets.json"),
                format!("{next}.snapshot.json"),
                "timestamp.json".to_owned(),
            ] {
                let from = staging.join(&name);
                let file = std::fs::File::open(&from).map_err(|e| TrustError::io(&from, e))?;
                file.sync_all().map_err(|e| TrustError::io(&from, e))?;
                ferry_store::durable::rename(&from, &self.metadata.join(&name))
                    .map_err(|e| TrustError::io(&from, e))?;
            }
            Ok::<_, TrustError>(())
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        result?;
        Ok(next)
    }
}

/// Path and version of the newest `N.root.json` in `metadata`.
fn latest_root_in(metadata: &Path) -> Result<(PathBuf, u64), TrustError> {
    let entries = std::fs::read_dir(metadata).map_err(|e| TrustError::io(metadata, e))?;

    let mut best: Option<u64> = None;
    for entry in entries {
        let entry = entry.map_err(|e| TrustError::io(metadata, e))?;
        let name = entry.file_name();
        if let Some(v) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".root.json"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            best = best.max(Some(v));
        }
    }
    let v = best.ok_or_else(|| {
        TrustError::Keys(format!(
            "no N.root.json in {}; is this a hub data directory?",
            metadata.display()
        ))
    })?;
    Ok((metadata.join(format!("{v}.root.json")), v))
}

/// Reads and parses a root metadata file.
fn read_root(path: &Path) -> Result<Signed<Root>, TrustError> {
    let bytes = std::fs::read(path).map_err(|e| TrustError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TrustError::Other(format!("{} is not root metadata: {e}", path.display())))
}
