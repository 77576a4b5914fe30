use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use ferry_catalog::{Enrollment, HubCatalog, SqliteCatalog, TaskStore};
use ferry_net::CertificateAuthority;
use ferry_store::ContentStore;
use ferry_trust::{SigningRepository, TargetEntry};

use crate::{HubConfig, HubError, HubLayout};

/// Runs blocking work (SQLite, files) off the async worker threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HubError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HubError::DataDir(format!("a blocking task failed: {e}")))
}

/// Everything a running hub works with, shared by all requests.
pub struct HubState {
    /// Where the data lives.
    pub layout: HubLayout,
    /// The configuration in force.
    pub config: HubConfig,
    /// Packages, chunk index, tokens, clients.
    pub catalog: Arc<dyn HubCatalog>,
    /// Files and staged chunks.
    pub store: ContentStore,
    /// Signed metadata.
    pub tuf: SigningRepository,
    /// Signs client certificates.
    pub ca: CertificateAuthority,
    /// Serializes everything that produces a new metadata version or
    /// changes which objects exist: publish, withdraw, re-sign, collection.
    /// Taken before `staging_lock` when both are needed.
    pub metadata_lock: tokio::sync::Mutex<()>,
    /// Uploads and publishes hold it shared while they write or read staged
    /// packs; removing packs holds it exclusively, so a pack is never removed
    /// between being written and being indexed, or while a publish reads it.
    pub staging_lock: tokio::sync::RwLock<()>,
    /// Target names of the metadata served now: listings show only versions
    /// in it, so nothing is listed before it is signed (a version committed
    /// a moment ago becomes visible with the metadata that signs it).
    signed: std::sync::RwLock<Arc<HashSet<String>>>,
    /// The served metadata's version, for long-polls.
    metadata_version: tokio::sync::watch::Sender<u64>,
    /// Signed tasks, for check-ins.
    pub tasks: crate::tasks::TaskBook,
    /// Serializes task changes, so each takes the next sequence number.
    pub(crate) task_lock: tokio::sync::Mutex<()>,
}

impl HubState {
    /// Opens the hub in `data`.
    pub fn open(data: &Path) -> Result<Self, HubError> {
        let layout = HubLayout::new(data);
        if !layout.config().exists() {
            return Err(HubError::DataDir(format!(
                "{} is not a hub data directory (no hub.toml); create one with `ferry hub init --data {}`",
                data.display(),
                data.display()
            )));
        }
        let config = HubConfig::load(&layout.config())?;
        let catalog = Arc::new(SqliteCatalog::open(&layout.catalog())?);
        let store = ContentStore::open(&layout.store())?;
        let tuf = SigningRepository::open(&layout.tuf(), config.tuf)?;
        let ca = CertificateAuthority::load(&layout.tls())?;
        let signed = tuf.current_targets()?.into_iter().collect();
        let version = tuf.state()?.version;
        let tasks = crate::tasks::TaskBook::new(
            catalog.tasks()?,
            &catalog.list_clients()?,
            catalog.settings()?,
        )?;
        Ok(HubState {
            layout,
            config,
            catalog,
            store,
            tuf,
            ca,
            metadata_lock: tokio::sync::Mutex::new(()),
            staging_lock: tokio::sync::RwLock::new(()),
            signed: std::sync::RwLock::new(Arc::new(signed)),
            metadata_version: tokio::sync::watch::channel(version).0,
            tasks,
            task_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// A version that grows whenever the hub signs new metadata or a new
    /// revocation list (at least the metadata version).
    pub fn metadata_version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.metadata_version.subscribe()
    }

    /// Target names the served metadata signs.
    pub fn signed_targets(&self) -> Arc<HashSet<String>> {
        self.signed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-signs the metadata so it lists exactly the published versions.
    /// The caller holds `metadata_lock`.
    pub async fn resign(&self) -> Result<u64, HubError> {
        let catalog = self.catalog.clone();
        let targets: Vec<TargetEntry> = blocking(move || catalog.all_targets())
            .await??
            .into_iter()
            .map(|t| TargetEntry {
                name: t.name,
                length: t.length,
                sha256: t.sha256.0,
            })
            .collect();
        // Signing writes and fsyncs files: on a blocking thread, driving
        // tough's async editor there.
        let tuf = self.tuf.clone();
        let (version, targets) = blocking(move || {
            let version = tokio::runtime::Handle::current().block_on(tuf.publish(&targets));
            (version, targets)
        })
        .await?;
        let version = version?;
        let names = targets.into_iter().map(|t| t.name).collect();
        *self.signed.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(names);
        self.metadata_changed(version);
        Ok(version)
    }

    /// Re-signs whatever is past half of its lifetime: root (when its key is
    /// online; otherwise [`HubState::expiry_warnings`] says so) and then
    /// targets, snapshot and timestamp, also when the signed targets differ
    /// from the catalog's versions (a crash or a failed signature between a
    /// catalog change and its signing). Returns the new metadata version if
    /// one was signed. The caller holds `metadata_lock`.
    pub async fn refresh(&self) -> Result<Option<u64>, HubError> {
        let catalog = self.catalog.clone();
        let tuf = self.tuf.clone();
        let (force, needs, root_online) = blocking(move || {
            let listed: Vec<String> = catalog.all_targets()?.into_iter().map(|t| t.name).collect();
            Ok::<_, HubError>((
                tuf.current_targets()? != listed,
                tuf.needs_refresh()?,
                tuf.root_key_online(),
            ))
        })
        .await??;
        let mut renewed_root = false;
        if needs.root && root_online {
            let tuf = self.tuf.clone();
            let version =
                blocking(move || tokio::runtime::Handle::current().block_on(tuf.renew_root()))
                    .await??;
            tracing::info!(version, "root metadata renewed before expiry");
            renewed_root = true;
        }
        if force || renewed_root || needs.metadata {
            return Ok(Some(self.resign().await?));
        }
        Ok(None)
    }

    /// Signs a new revocation list if the revoked clients changed or the
    /// current list is past half of its lifetime (the timestamp's). Relays
    /// fetch it and refuse the certificates it names. Returns the new
    /// list's version if one was written; without a control key (a hub
    /// created before they existed) it does nothing.
    pub async fn refresh_revocations(&self) -> Result<Option<u64>, HubError> {
        let Some(control) = self.tuf.control_key()? else {
            return Ok(None);
        };
        let catalog = self.catalog.clone();
        let clients = blocking(move || catalog.list_clients()).await??;
        let revoked: Vec<serde_json::Value> = clients
            .iter()
            .filter_map(|c| {
                Some(serde_json::json!({
                    "id": c.id,
                    "cert_sha256": hex::encode(c.cert_sha256),
                    "revoked_at": c.revoked_at?,
                }))
            })
            .collect();
        let body = serde_json::json!({ "revoked": revoked });
        let path = self.layout.revocations();
        let lifetime = self.config.tuf.timestamp;
        // The list as served now, if it still verifies (a rotated control
        // key, or a damaged file, means signing anew).
        let now_ts = jiff::Timestamp::now();
        let read_path = path.clone();
        let bytes = blocking(move || std::fs::read(read_path).ok()).await?;
        let current = bytes
            .as_ref()
            .and_then(|b| ferry_trust::documents::verify(&control, b, "revocations", now_ts).ok());
        // Versions only grow, even past a list that no longer verifies.
        let last_version = bytes
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["signed"]["version"].as_u64())
            .unwrap_or(0);
        let now = now_ts.as_second();
        let half = i64::try_from((lifetime / 2).as_secs()).unwrap_or(i64::MAX);
        if let Some(c) = &current
            && c.body == body
            && now.saturating_add(half) < c.expires.as_second()
        {
            return Ok(None);
        }
        let version = last_version + 1;
        let bytes = self
            .tuf
            .sign_document("revocations", version, lifetime, body)?;
        blocking(move || {
            ferry_store::durable::write_file(&path, &bytes, 0o644)
                .map_err(|e| HubError::io(&path, e))
        })
        .await??;
        // Relays learn of the new list through the long-poll too.
        self.metadata_changed(0);
        Ok(Some(version))
    }

    /// Moves the long-poll's version on: past the new metadata version, or
    /// by one for a new revocation list (it grows with every change).
    fn metadata_changed(&self, version: u64) {
        self.metadata_version
            .send_modify(|v| *v = (*v + 1).max(version));
    }

    /// Warnings an operator must act on: root metadata past half of its
    /// lifetime while its key is offline. Empty when all is well.
    pub fn expiry_warnings(&self) -> Vec<String> {
        let Ok(needs) = self.tuf.needs_refresh() else {
            return vec!["the hub cannot read its own signed metadata; check the log".into()];
        };
        if !needs.root || self.tuf.root_key_online() {
            return Vec::new();
        }
        let expires = self
            .tuf
            .state()
            .map(|s| s.root_expires.to_string())
            .unwrap_or_else(|_| "soon".into());
        vec![format!(
            "root metadata expires at {expires} and the root key is offline: every client stops \
             trusting this hub then. Copy root.der into {} for a minute (the running hub renews \
             root and logs it), then move it offline again; see docs/security.md",
            self.layout.tuf().join("keys").display()
        )]
    }
}
