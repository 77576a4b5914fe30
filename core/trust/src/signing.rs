use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::schema::{Hashes, KeyHolder, RoleKeys as TufRoleKeys, RoleType, Root, Signed, Target};
use tough::sign::Sign;

use crate::documents::{CONTROL_FIELD, ControlKey, DocumentBody};
use crate::keys::{CONTROL, ROLES};
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

impl Lifetimes {
    /// Shortest lifetime accepted: the hub re-signs each role when half of
    /// its lifetime is gone, checking several times per shortest half-life,
    /// so anything shorter leaves clients no margin for a slow signature or
    /// clock skew.
    pub const MIN: Duration = Duration::from_secs(2);
    /// Longest lifetime accepted (an expiry must stay a valid timestamp).
    pub const MAX: Duration = Duration::from_secs(100 * 31_557_600);

    /// Refuses lifetimes that cannot work, naming the role.
    pub fn validate(&self) -> Result<(), String> {
        for (role, d) in [
            ("root", self.root),
            ("targets", self.targets),
            ("snapshot", self.snapshot),
            ("timestamp", self.timestamp),
        ] {
            if d < Self::MIN || d > Self::MAX {
                return Err(format!(
                    "tuf.{role} = {:?} is outside {:?}..={}; metadata must live long enough to be re-signed before it expires",
                    d,
                    Self::MIN,
                    "100years"
                ));
            }
        }
        Ok(())
    }

    /// The shortest of the four lifetimes.
    pub fn shortest(&self) -> Duration {
        self.root
            .min(self.targets)
            .min(self.snapshot)
            .min(self.timestamp)
    }
}

/// Versions and expiry of the metadata currently served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataState {
    /// Version of the newest root.
    pub root_version: u64,
    /// When the newest root expires.
    pub root_expires: Timestamp,
    /// Version shared by targets, snapshot and timestamp (they move together).
    pub version: u64,
    /// When the targets metadata expires.
    pub targets_expires: Timestamp,
    /// When the snapshot metadata expires.
    pub snapshot_expires: Timestamp,
    /// When the timestamp expires.
    pub timestamp_expires: Timestamp,
}

/// What a re-signing check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshNeeds {
    /// Targets, snapshot or timestamp have less than half their lifetime left.
    pub metadata: bool,
    /// Root has less than half its lifetime left.
    pub root: bool,
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

/// Now plus `d`, in whole seconds: the TUF specification's format for
/// `expires` is `YYYY-MM-DDTHH:MM:SSZ`, and strict clients (python-tuf)
/// refuse fractional seconds.
fn after(d: Duration) -> Timestamp {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let at = Timestamp::now().as_second().saturating_add(secs);
    Timestamp::from_second(at).unwrap_or(Timestamp::MAX)
}

/// Whether less than half of `lifetime` is left before `expires`.
fn half_gone(expires: Timestamp, lifetime: Duration) -> bool {
    let half = i64::try_from((lifetime / 2).as_secs()).unwrap_or(i64::MAX);
    Timestamp::now().as_second().saturating_add(half) >= expires.as_second()
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
        let control = ControlKey::of(&keys.control()?)?;
        root._extra.insert(
            CONTROL_FIELD.to_owned(),
            serde_json::to_value(control).map_err(other)?,
        );
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
        if role == CONTROL {
            return self.next_root(None, true).await;
        }
        let role_type = role_type(role)?;
        self.next_root(Some((role, role_type)), false).await
    }

    /// The control key the newest root names, if any.
    pub fn control_key(&self) -> Result<Option<ControlKey>, TrustError> {
        let (path, _) = self.latest_root()?;
        Ok(crate::documents::control_key(&read_root(&path)?.signed))
    }

    /// Signs a document of `kind` (see [`crate::documents`]) valid for
    /// `lifetime`; `version` must grow with every document of the kind.
    pub fn sign_document(
        &self,
        kind: &str,
        version: u64,
        lifetime: Duration,
        body: serde_json::Value,
    ) -> Result<Vec<u8>, TrustError> {
        let now = Timestamp::now().as_second();
        let doc = DocumentBody {
            kind: format!("ferry-{kind}"),
            version,
            issued: Timestamp::from_second(now).map_err(other)?,
            expires: after(lifetime),
            body,
        };
        crate::documents::sign(&self.keys.control()?, doc)
    }

    /// Signs root N+1: a copy of root N with a fresh expiry and, when
    /// `rotate` names a role, a new key for it; with `new_control`, a new
    /// control key.
    async fn next_root(
        &self,
        rotate: Option<(&str, RoleType)>,
        new_control: bool,
    ) -> Result<u64, TrustError> {
        let (path, version) = self.latest_root()?;
        let old = read_root(&path)?;
        let root_key = self.keys.source("root").map_err(|e| {
            TrustError::Keys(format!(
                "{e}; signing new root metadata needs the root key: put root.der back into the keys directory, then move it offline again"
            ))
        })?;
        let root_signer = root_key
            .as_sign()
            .await
            .map_err(|e| TrustError::Keys(e.to_string()))?;

        let mut root = old.signed.clone();
        root.version = NonZeroU64::new(version + 1).expect("above zero");
        root.expires = after(self.lifetimes.root);
        let mut new_signer = None;
        if let Some((role, role_type)) = rotate {
            let signer = self.keys.generate_next(role)?;
            let new_key = signer.tuf_key();
            let new_id = new_key.key_id().map_err(other)?;
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
            new_signer = Some((role, role_type, signer));
        }
        if new_control {
            let der = self.keys.generate_next_control()?;
            root._extra.insert(
                CONTROL_FIELD.to_owned(),
                serde_json::to_value(ControlKey::of(&der)?).map_err(other)?,
            );
        }

        let mut message = Vec::new();
        root.serialize(&mut serde_json::Serializer::with_formatter(
            &mut message,
            olpc_cjson::CanonicalFormatter::new(),
        ))
        .map_err(other)?;
        let mut signers: Vec<&dyn Sign> = vec![root_signer.as_ref()];
        if let Some((_, RoleType::Root, signer)) = &new_signer {
            signers.push(signer.as_ref());
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
        if let Some((role, _, _)) = new_signer {
            self.keys.commit_next(role)?;
        }
        if new_control {
            self.keys.commit_next(CONTROL)?;
        }
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
        let (root_path, root_version) = self.latest_root()?;
        let root = read_root(&root_path)?;
        let ts: Signed<tough::schema::Timestamp> = self.read_signed("timestamp.json")?;
        let version = ts.signed.version.get();
        let targets: Signed<tough::schema::Targets> =
            self.read_signed(&format!("{version}.targets.json"))?;
        let snapshot: Signed<tough::schema::Snapshot> =
            self.read_signed(&format!("{version}.snapshot.json"))?;
        Ok(MetadataState {
            root_version,
            root_expires: root.signed.expires,
            version,
            targets_expires: targets.signed.expires,
            snapshot_expires: snapshot.signed.expires,
            timestamp_expires: ts.signed.expires,
        })
    }

    fn read_signed<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, TrustError> {
        let path = self.metadata.join(name);
        let bytes = std::fs::read(&path).map_err(|e| TrustError::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| TrustError::Other(format!("{} is unreadable: {e}", path.display())))
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

    /// What should be re-signed now: every role is re-signed once less than
    /// half of its lifetime is left.
    pub fn needs_refresh(&self) -> Result<RefreshNeeds, TrustError> {
        let s = self.state()?;
        let l = &self.lifetimes;
        Ok(RefreshNeeds {
            metadata: half_gone(s.targets_expires, l.targets)
                || half_gone(s.snapshot_expires, l.snapshot)
                || half_gone(s.timestamp_expires, l.timestamp),
            root: half_gone(s.root_expires, l.root),
        })
    }

    /// Whether the root key is in the keys directory (it may be kept
    /// offline, and is then needed only to rotate keys or renew root).
    pub fn root_key_online(&self) -> bool {
        self.keys.source("root").is_ok()
    }

    /// Publishes root metadata version N+1 with the same keys and a fresh
    /// expiry, signed by the root key. Needs the root key online. Returns the
    /// new root version; the caller re-signs the other roles afterwards.
    pub async fn renew_root(&self) -> Result<u64, TrustError> {
        self.next_root(None, false).await
    }

    /// Signs a new version of targets, snapshot and timestamp listing exactly
    /// `targets`. The new targets and snapshot files
    /// appear first; `timestamp.json` is replaced last, by an atomic rename,
    /// so a client never sees a timestamp pointing at files not yet written.
    pub async fn publish(&self, targets: &[TargetEntry]) -> Result<u64, TrustError> {
        let (root_path, _) = self.latest_root()?;
        // Only a repository that never published has no timestamp; any
        // other failure to read it must stop signing, since version 1 would
        // be refused by every client as a rollback.
        let next = match self.state() {
            Ok(s) => s.version + 1,
            Err(TrustError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                1
            }
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

fn role_type(role: &str) -> Result<RoleType, TrustError> {
    match role {
        "root" => Ok(RoleType::Root),
        "targets" => Ok(RoleType::Targets),
        "snapshot" => Ok(RoleType::Snapshot),
        "timestamp" => Ok(RoleType::Timestamp),
        other => Err(TrustError::Keys(format!(
            "unknown role {other:?}: use root, targets, snapshot or timestamp"
        ))),
    }
}

/// Path and version of the newest `N.root.json` in `metadata`.
/// The newest root metadata of the signing repository in `dir` (as
/// [`SigningRepository::root_bytes`] gives it), without opening the
/// repository: what a token pins.
pub fn latest_root_bytes(dir: &Path) -> Result<Vec<u8>, TrustError> {
    let (path, _) = latest_root_in(&dir.join("metadata"))?;
    std::fs::read(&path).map_err(|e| TrustError::io(&path, e))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> Lifetimes {
        Lifetimes {
            root: Lifetimes::MIN,
            targets: Lifetimes::MIN,
            snapshot: Lifetimes::MIN,
            timestamp: Lifetimes::MIN,
        }
    }

    fn expires_fields(dir: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir.join("metadata")).unwrap() {
            let path = entry.unwrap().path();
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let expires = doc["signed"]["expires"].as_str().unwrap().to_owned();
            out.push((path.file_name().unwrap().to_string_lossy().into(), expires));
        }
        out
    }

    #[tokio::test]
    async fn expiry_is_written_in_whole_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let repo = SigningRepository::create(dir.path(), Lifetimes::default())
            .await
            .unwrap();
        repo.publish(&[]).await.unwrap();
        let fields = expires_fields(dir.path());
        assert!(fields.len() >= 4, "{fields:?}");
        for (file, expires) in fields {
            // The spec's format, exactly: YYYY-MM-DDTHH:MM:SSZ.
            let ok = expires.len() == 20
                && expires.ends_with('Z')
                && expires.as_bytes()[10] == b'T'
                && !expires.contains('.');
            assert!(
                ok,
                "{file}: expires {expires:?} is not YYYY-MM-DDTHH:MM:SSZ"
            );
        }
    }

    #[tokio::test]
    async fn unreadable_timestamp_stops_signing_instead_of_restarting_at_one() {
        let dir = tempfile::tempdir().unwrap();
        let repo = SigningRepository::create(dir.path(), Lifetimes::default())
            .await
            .unwrap();
        assert_eq!(repo.publish(&[]).await.unwrap(), 2);
        let metadata = dir.path().join("metadata");
        let first = std::fs::read(metadata.join("1.targets.json")).unwrap();
        // Any error but "not found": here the timestamp is a directory.
        let ts = metadata.join("timestamp.json");
        std::fs::rename(&ts, metadata.join("ts.saved")).unwrap();
        std::fs::create_dir(&ts).unwrap();
        let err = repo.publish(&[]).await.unwrap_err();
        assert!(matches!(err, TrustError::Io { .. }), "{err}");
        assert_eq!(
            std::fs::read(metadata.join("1.targets.json")).unwrap(),
            first,
            "version 1 was signed again over the old one"
        );
        // A repository that truly never published starts at 1.
        std::fs::remove_dir(&ts).unwrap();
        std::fs::remove_file(metadata.join("1.targets.json")).unwrap();
        assert_eq!(repo.publish(&[]).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn every_role_is_renewed_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        SigningRepository::create(dir.path(), short())
            .await
            .unwrap();
        // Reopened with year-long lifetimes, the two-second metadata is
        // past half of what it should have: every role needs re-signing.
        let repo = SigningRepository::open(dir.path(), Lifetimes::default()).unwrap();
        let needs = repo.needs_refresh().unwrap();
        assert!(needs.root && needs.metadata, "{needs:?}");
        assert!(repo.root_key_online());
        assert_eq!(repo.renew_root().await.unwrap(), 2);
        repo.publish(&[]).await.unwrap();
        let needs = repo.needs_refresh().unwrap();
        assert!(!needs.root && !needs.metadata, "{needs:?}");
        let state = repo.state().unwrap();
        assert_eq!(state.root_version, 2);
        assert!(state.root_expires > Timestamp::now() + jiff::SignedDuration::from_hours(24 * 300));
        // Root 2 keeps the keys, so the targets key signed it validly.
        let root2 = read_root(&dir.path().join("metadata/2.root.json")).unwrap();
        let root1 = read_root(&dir.path().join("metadata/1.root.json")).unwrap();
        assert_eq!(root1.signed.keys, root2.signed.keys);
        root1.signed.verify_role(&root2).unwrap();
    }

    #[tokio::test]
    async fn root_renewal_needs_the_root_key() {
        let dir = tempfile::tempdir().unwrap();
        let repo = SigningRepository::create(dir.path(), Lifetimes::default())
            .await
            .unwrap();
        let key = dir.path().join("keys/root.der");
        std::fs::rename(&key, dir.path().join("root.der.offline")).unwrap();
        let repo2 = SigningRepository::open(dir.path(), Lifetimes::default()).unwrap();
        assert!(!repo2.root_key_online());
        let err = repo2.renew_root().await.unwrap_err();
        assert!(err.to_string().contains("root key"), "{err}");
        assert_eq!(repo.latest_root().unwrap().1, 1);
    }

    #[test]
    fn lifetimes_that_cannot_work_are_refused() {
        assert!(Lifetimes::default().validate().is_ok());
        let mut l = Lifetimes {
            snapshot: Duration::from_millis(500),
            ..Default::default()
        };
        let err = l.validate().unwrap_err();
        assert!(err.contains("tuf.snapshot"), "{err}");
        l.snapshot = Duration::from_secs(200 * 31_557_600);
        assert!(l.validate().is_err());
    }
}
