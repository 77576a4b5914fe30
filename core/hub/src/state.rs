use std::path::Path;
use std::sync::Arc;

use ferry_catalog::{HubCatalog, SqliteCatalog};
use ferry_net::CertificateAuthority;
use ferry_store::ContentStore;
use ferry_trust::{SigningRepository, TargetEntry};

use crate::{HubConfig, HubError, HubLayout};

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
        Ok(HubState {
            layout,
            config,
            catalog,
            store,
            tuf,
            ca,
            metadata_lock: tokio::sync::Mutex::new(()),
            staging_lock: tokio::sync::RwLock::new(()),
        })
    }

    /// Re-signs the metadata so it lists exactly the published versions.
    /// The caller holds `metadata_lock`.
    pub async fn resign(&self) -> Result<u64, HubError> {
        let targets: Vec<TargetEntry> = self
            .catalog
            .all_targets()?
            .into_iter()
            .map(|t| TargetEntry {
                name: t.name,
                length: t.length,
                sha256: t.sha256.0,
            })
            .collect();
        Ok(self.tuf.publish(&targets).await?)
    }
}
