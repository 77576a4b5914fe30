use std::path::PathBuf;
use std::sync::Arc;

use ferry_content::{Digest, PackageName};
use ferry_net::api::VersionInfo;
use ferry_serve::{ApiError, Authorizer, ChunkPlace, ClientIdentity, ContentSource, Lookup};

use crate::HubState;

/// The hub as a [`ContentSource`] (its catalog, store and signed metadata)
/// and an [`Authorizer`] (its enrolled clients).
pub struct HubSource {
    state: Arc<HubState>,
}

impl HubSource {
    /// The source over a running hub's state.
    pub fn new(state: Arc<HubState>) -> Self {
        HubSource { state }
    }
}

impl ContentSource for HubSource {
    fn metadata_dir(&self) -> PathBuf {
        self.state.tuf.metadata_dir().to_owned()
    }

    fn manifest(&self, target: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.state.catalog.manifest_by_target(target)?)
    }

    fn serves(&self, target: &str) -> bool {
        self.state.signed_targets().contains(target)
    }

    fn object(&self, id: &Digest) -> Result<Option<PathBuf>, ApiError> {
        if !self.state.catalog.object_known(id)? {
            return Ok(None);
        }
        Ok(Some(self.state.store.object_path(id)?))
    }

    fn chunks(&self, digests: &[Digest]) -> Result<Vec<Option<ChunkPlace>>, ApiError> {
        let locations = self.state.catalog.chunk_locations(digests)?;
        locations
            .into_iter()
            .map(|at| {
                at.map(|at| {
                    Ok(ChunkPlace {
                        file: self.state.store.object_path(&at.object)?,
                        offset: at.offset,
                        len: at.len,
                    })
                })
                .transpose()
            })
            .collect()
    }

    fn revocations(&self) -> Option<PathBuf> {
        Some(self.state.layout.revocations())
    }

    fn metadata_version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.metadata_version()
    }

    fn versions(&self, name: Option<&PackageName>) -> Result<Vec<VersionInfo>, ApiError> {
        let signed = self.state.signed_targets();
        Ok(self
            .state
            .catalog
            .list_versions(name)?
            .into_iter()
            .filter(|v| signed.contains(&v.target))
            .map(ferry_serve::version_info)
            .collect())
    }
}

impl ferry_serve::reports::ReportSink for HubSource {
    fn keep(&self, reports: Vec<ferry_net::api::Report>) -> Result<usize, ApiError> {
        let now = chrono::Utc::now().timestamp();
        Ok(self.state.catalog.store_reports(&reports, now)?)
    }
}

impl Authorizer for HubSource {
    fn lookup(&self, cert_sha256: &[u8; 32], _cert_der: &[u8]) -> Result<Lookup, ApiError> {
        Ok(match self.state.catalog.client_by_cert(cert_sha256)? {
            None => Lookup::Unknown,
            Some(c) if c.revoked_at.is_some() => Lookup::Revoked(c.id),
            Some(c) => Lookup::Client(ClientIdentity {
                id: c.id,
                role: c.role,
                site: c.site,
            }),
        })
    }
}

impl ferry_serve::checkin::TaskSource for HubSource {
    fn server_kind(&self) -> &'static str {
        "hub"
    }

    fn task_version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.tasks.version()
    }

    fn tasks_for(&self, caller: &ClientIdentity) -> Vec<String> {
        self.state.tasks.for_caller(caller)
    }

    fn settings(&self) -> Option<(u64, std::sync::Arc<str>)> {
        self.state.tasks.settings()
    }
}
