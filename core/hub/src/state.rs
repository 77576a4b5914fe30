use std::path::Path;
use std::sync::Arc;

use ferry_catalog::{HubCatalog, SqliteCatalog};
use ferry_net::CertificateAuthority;
use ferry_store::ContentStore;
use ferry_trust::SigningRepository;

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
    /// Serializes publishes and metadata re-signing, which both produce a
    /// new metadata version.
    pub publish_lock: tokio::sync::Mutex<()>,
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
            publish_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Re-signs the metadata so it lists exactly the published versions.
    pub async fn resign(&self) -> Result<u64, HubError> {
        let targets = self.catalog.all_targets()?;
        Ok(self.tuf.publish(targets).await?)
    }
}
