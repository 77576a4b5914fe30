use std::path::Path;

use tough::{ExpirationEnforcement, IntoVec, Limits, Repository, RepositoryLoader, TargetName};
use url::Url;

use crate::TrustError;

/// A signed target as listed in the targets metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// TUF target name.
    pub name: String,
    /// Signed length in bytes.
    pub length: u64,
    /// Signed SHA-256, hex.
    pub sha256: String,
}

/// Metadata a client verified against its pinned root, fresh from one load.
#[derive(Debug)]
pub struct TrustedRepository {
    repo: Repository,
}

impl TrustedRepository {
    /// Runs the TUF client workflow: walks root rotations from the newest root
    /// this client trusts, then fetches and verifies timestamp, snapshot and
    /// targets, comparing versions with those kept in `datastore` so rollback
    /// is refused across runs.
    ///
    /// `pinned_root` is the root received at enrollment; a newer root stored
    /// in `datastore` by an earlier load takes precedence.
    pub async fn load<T>(
        pinned_root: &[u8],
        datastore: &Path,
        metadata_url: Url,
        targets_url: Url,
        transport: T,
    ) -> Result<Self, TrustError>
    where
        T: tough::Transport + Send + Sync + 'static,
    {
        std::fs::create_dir_all(datastore).map_err(|e| TrustError::io(datastore, e))?;
        let stored_root = datastore.join("root.json");
        let root = match std::fs::read(&stored_root) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => pinned_root.to_vec(),
            Err(e) => return Err(TrustError::io(&stored_root, e)),
        };
        let repo = RepositoryLoader::new(&root, metadata_url, targets_url)
            .transport(transport)
            .datastore(datastore)
            .expiration_enforcement(ExpirationEnforcement::Safe)
            .limits(Limits {
                max_root_size: 1 << 20,
                max_targets_size: 64 << 20,
                max_timestamp_size: 1 << 20,
                max_snapshot_size: 16 << 20,
                max_root_updates: 1024,
            })
            .load()
            .await
            .map_err(TrustError::from_tough)?;
        Ok(TrustedRepository { repo })
    }

    /// Every signed target.
    pub fn targets(&self) -> Vec<TargetInfo> {
        let mut out: Vec<TargetInfo> = self
            .repo
            .targets()
            .signed
            .targets
            .iter()
            .map(|(name, t)| TargetInfo {
                name: name.raw().to_owned(),
                length: t.length,
                sha256: hex::encode(&t.hashes.sha256),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// One signed target, by name.
    pub fn target(&self, name: &str) -> Option<TargetInfo> {
        let target = TargetName::new(name).ok()?;
        let t = self.repo.targets().signed.targets.get(&target)?;
        Some(TargetInfo {
            name: name.to_owned(),
            length: t.length,
            sha256: hex::encode(&t.hashes.sha256),
        })
    }

    /// Checks a signed document of `kind` (see [`crate::documents`])
    /// against the control key this repository's verified root names.
    pub fn verify_document(
        &self,
        bytes: &[u8],
        kind: &str,
    ) -> Result<crate::documents::DocumentBody, TrustError> {
        let key = crate::documents::control_key(&self.repo.root().signed).ok_or_else(|| {
            TrustError::Keys(
                "the hub's root metadata names no control key; the hub's admin adds one with \
                 `ferry hub rotate-key --role control`"
                    .into(),
            )
        })?;
        crate::documents::verify(&key, bytes, kind, jiff::Timestamp::now())
    }

    /// Version of the targets metadata.
    pub fn version(&self) -> u64 {
        self.repo.targets().signed.version.get()
    }

    /// Downloads a target and returns its bytes only if its length and
    /// SHA-256 match the signed metadata.
    pub async fn read_target(&self, name: &str) -> Result<Vec<u8>, TrustError> {
        let target = TargetName::new(name).map_err(|e| TrustError::Other(e.to_string()))?;
        let stream = self
            .repo
            .read_target(&target)
            .await
            .map_err(TrustError::from_tough)?
            .ok_or_else(|| TrustError::UnknownTarget(name.to_owned()))?;
        stream.into_vec().await.map_err(TrustError::from_tough)
    }
}
