use std::path::PathBuf;
use std::sync::Arc;

use ferry_catalog::{ChunkIndex, ReportStore, VersionCatalog};
use ferry_content::{Digest, PackageName};
use ferry_net::api::VersionInfo;
use ferry_serve::{ApiError, Authorizer, ChunkPlace, ClientIdentity, ContentSource, Lookup};

use crate::RelayState;

/// What the relay serves (the versions it synced and verified, under the
/// hub's signed metadata it switched to last) and whom (any certificate
/// the hub's CA issued that the hub's signed revocation list does not
/// name: the relay has no client list of its own).
pub struct RelaySource {
    state: Arc<RelayState>,
}

impl RelaySource {
    /// The source over a relay's state.
    pub fn new(state: Arc<RelayState>) -> Self {
        RelaySource { state }
    }
}

impl ContentSource for RelaySource {
    fn metadata_dir(&self) -> PathBuf {
        self.state.snapshots.dir()
    }

    fn manifest(&self, target: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.state.catalog.manifest_by_target(target)?)
    }

    fn serves(&self, target: &str) -> bool {
        self.state.snapshots.served().contains(target)
    }

    fn object(&self, id: &Digest) -> Result<Option<PathBuf>, ApiError> {
        if !self.state.catalog.object_known(id)? {
            return Ok(None);
        }
        Ok(Some(self.state.local.store().object_path(id)?))
    }

    fn chunks(&self, digests: &[Digest]) -> Result<Vec<Option<ChunkPlace>>, ApiError> {
        let store = self.state.local.store();
        self.state
            .catalog
            .chunk_locations(digests)?
            .into_iter()
            .map(|at| {
                at.map(|at| {
                    Ok(ChunkPlace {
                        file: store.object_path(&at.object)?,
                        offset: at.offset,
                        len: at.len,
                    })
                })
                .transpose()
            })
            .collect()
    }

    fn revocations(&self) -> Option<PathBuf> {
        Some(
            self.state
                .snapshots
                .dir()
                .join(crate::sync::REVOCATIONS_FILE),
        )
    }

    fn note_use(&self, target: &str) {
        self.state.note_use(target);
    }

    fn pull(&self, target: &str) -> Option<ferry_serve::Pull> {
        let state = self.state.clone();
        let target = target.to_owned();
        Some(Box::pin(
            async move { crate::pull::pull(&state, &target).await },
        ))
    }

    fn metadata_version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.snapshots.version()
    }

    fn versions(&self, name: Option<&PackageName>) -> Result<Vec<VersionInfo>, ApiError> {
        let served = self.state.snapshots.served();
        Ok(self
            .state
            .catalog
            .list_versions(name)?
            .into_iter()
            .filter(|v| served.contains(&v.target))
            .map(ferry_serve::version_info)
            .collect())
    }
}

impl ferry_serve::reports::ReportSink for RelaySource {
    /// Into the outbox; the forwarder is woken to pass them upstream.
    fn keep(&self, reports: Vec<ferry_net::api::Report>) -> Result<usize, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let new = self.state.catalog.store_reports(&reports, now)?;
        self.state.reports_waiting.notify_one();
        Ok(new)
    }
}

impl Authorizer for RelaySource {
    fn lookup(&self, cert_sha256: &[u8; 32], cert_der: &[u8]) -> Result<Lookup, ApiError> {
        // TLS checked the certificate against the hub's CA: the names in
        // it are the hub's.
        let Ok(who) = ferry_net::certificate_identity(cert_der) else {
            return Ok(Lookup::Unknown);
        };
        if self.state.is_revoked(cert_sha256) {
            return Ok(Lookup::Revoked(who.id));
        }
        Ok(Lookup::Client(ClientIdentity {
            id: who.id,
            role: who.role,
            site: who.site,
        }))
    }
}

impl ferry_serve::checkin::TaskSource for RelaySource {
    fn server_kind(&self) -> &'static str {
        "relay"
    }

    fn task_version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.tasks.version()
    }

    fn tasks_for(&self, caller: &ferry_serve::ClientIdentity) -> Vec<String> {
        self.state.tasks.for_caller(caller)
    }

    fn settings(&self) -> Option<(u64, std::sync::Arc<str>)> {
        self.state.tasks.settings()
    }
}
