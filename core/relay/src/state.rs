use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use ferry_catalog::SqliteCatalog;
use ferry_net::{ClientCredentials, HubClient, Link, Rate};
use ferry_transfer::LocalContent;

use crate::snapshot::Snapshots;
use crate::status::{RelayStatus, Traffic};
use crate::{RelayConfig, RelayError, RelayLayout};

/// A relay's open data directory: what the serving side and the sync share.
pub struct RelayState {
    /// Where things are.
    pub layout: RelayLayout,
    /// `relay.toml`.
    pub config: RelayConfig,
    /// The relay's enrollment.
    pub creds: ClientCredentials,
    /// Synced versions and the chunk index (the hub's catalog block).
    pub catalog: Arc<SqliteCatalog>,
    /// Stored files, manifests and spooled chunks.
    pub local: LocalContent,
    /// The served metadata.
    pub snapshots: Snapshots,
    /// The WAN link: every upstream byte draws from its budget.
    pub link: Arc<Link>,
    /// The upstream, through `link`.
    pub upstream: HubClient,
    /// Held while content is fetched (a sync, a pull-through).
    pub(crate) fetching: tokio::sync::Mutex<()>,
    /// Pull-throughs in flight, by target: later requests for the same
    /// target wait for the same transfer.
    pub(crate) pulls: Mutex<std::collections::HashMap<String, crate::pull::InFlight>>,
    /// Versions asked for since the last sync, and when (unix seconds).
    uses: Mutex<std::collections::HashMap<String, i64>>,
    /// Signed tasks heard from the upstream, for this relay's agents.
    pub tasks: crate::tasks::RelayTasks,
    /// Woken when reports arrive in the outbox.
    pub reports_waiting: tokio::sync::Notify,
    /// Woken when the upstream answers again after failing.
    pub upstream_back: tokio::sync::Notify,
    revoked: RwLock<Revoked>,
    status: Mutex<RelayStatus>,
    /// WAN traffic of earlier runs, from the status file.
    wan_before: Traffic,
    /// LAN bytes served by earlier runs, from the status file.
    lan_before: u64,
    /// The same per package.
    lan_before_by_package: std::collections::HashMap<String, u64>,
    /// LAN bytes served by this run.
    lan_served: std::sync::atomic::AtomicU64,
    /// LAN bytes served by this run per package (only packages served).
    lan_by_package: Mutex<std::collections::HashMap<String, Arc<AtomicU64>>>,
    /// One status write at a time, each writing the newest status.
    writing: tokio::sync::Mutex<()>,
}

/// The certificates the hub's signed revocation list names.
#[derive(Debug, Default)]
pub(crate) struct Revoked {
    pub version: u64,
    pub certs: HashSet<[u8; 32]>,
}

impl Revoked {
    /// Reads a revocation list's body (its signature was checked when it
    /// was synced).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Revoked> {
        let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let signed = &doc["signed"];
        let certs = signed["body"]["revoked"]
            .as_array()?
            .iter()
            .filter_map(|r| {
                hex::decode(r["cert_sha256"].as_str()?)
                    .ok()?
                    .try_into()
                    .ok()
            })
            .collect();
        Some(Revoked {
            version: signed["version"].as_u64()?,
            certs,
        })
    }
}

impl RelayState {
    /// Opens the relay in `data` (enrolled by `ferry relay init`).
    pub async fn open(data: &Path) -> Result<RelayState, RelayError> {
        let layout = RelayLayout::new(data);
        if !layout.config().exists() {
            return Err(RelayError::DataDir(format!(
                "{} holds no relay; create one with `ferry relay init --server URL --token TOKEN --data {}`",
                data.display(),
                data.display()
            )));
        }
        let config = RelayConfig::load(&layout.config())?;
        // The status file's interrupted writes (the caller holds the run
        // lock).
        ferry_store::durable::remove_leftovers(data).map_err(|e| RelayError::io(data, e))?;
        let creds = ClientCredentials::load(data)?;
        if creds.info.role != "relay" {
            return Err(RelayError::DataDir(format!(
                "{} was enrolled as a {}, not a relay; enroll a relay with a token from \
                 `ferry token create --role relay --site SITE`",
                data.display(),
                creds.info.role
            )));
        }
        let catalog = Arc::new(SqliteCatalog::open(&layout.catalog())?);
        let content = layout.content();
        let local = LocalContent::open(&content, || {}).await?;
        let snapshots = Snapshots::open(&layout)?;
        let revoked = snapshots
            .served_file(crate::sync::REVOCATIONS_FILE)
            .and_then(|b| Revoked::parse(&b))
            .unwrap_or_default();
        let link = Arc::new(Link::new(Rate::Unlimited));
        let upstream = HubClient::new(
            config.upstream.clone(),
            &creds.ca_pem,
            Some((&creds.cert_pem, &creds.key_pem)),
        )?
        .with_link(link.clone())
        .with_pace(config.sync.pace());
        let mut status = RelayStatus::load(&layout.status())?;
        status.id = creds.info.id.clone();
        status.site = creds.info.site.clone();
        status.upstream = config.upstream.to_string();
        status.serving = snapshots.info();
        let wan_before = status.wan;
        let lan_before = status.lan_served;
        let lan_before_by_package = status
            .packages
            .iter()
            .map(|(name, t)| (name.clone(), t.lan_bytes))
            .collect();
        let tasks = crate::tasks::RelayTasks::open(layout.tasks());
        Ok(RelayState {
            layout,
            config,
            creds,
            catalog,
            local,
            snapshots,
            link,
            upstream,
            fetching: tokio::sync::Mutex::new(()),
            uses: Mutex::new(std::collections::HashMap::new()),
            pulls: Mutex::new(std::collections::HashMap::new()),
            tasks,
            reports_waiting: tokio::sync::Notify::new(),
            upstream_back: tokio::sync::Notify::new(),
            revoked: RwLock::new(revoked),
            status: Mutex::new(status),
            wan_before,
            lan_before,
            lan_before_by_package,
            lan_served: std::sync::atomic::AtomicU64::new(0),
            lan_by_package: Mutex::new(std::collections::HashMap::new()),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Counts bytes served to the LAN.
    pub(crate) fn count_lan(&self, n: u64) {
        self.lan_served
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The LAN byte counter of the package `name`, if this relay serves a
    /// version of it (a client naming anything else is not counted apart,
    /// so the map stays as small as the catalog).
    pub(crate) fn lan_counter(&self, name: &str) -> Option<Arc<AtomicU64>> {
        let mut map = self
            .lan_by_package
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = map.get(name) {
            return Some(counter.clone());
        }
        // Once per package and run: the served targets are looked through.
        let prefix = format!("{name}@");
        if !self
            .snapshots
            .served()
            .iter()
            .any(|t| t.starts_with(&prefix))
        {
            return None;
        }
        Some(map.entry(name.to_owned()).or_default().clone())
    }

    /// Notes that a version was asked for (kept in memory, written at the
    /// next sync: a request must not wait on the database).
    pub fn note_use(&self, target: &str) {
        let now = chrono::Utc::now().timestamp();
        let mut uses = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: versions are few; a flood of made-up names is not
        // noted (only served targets reach here).
        if uses.len() < 1 << 16 || uses.contains_key(target) {
            uses.insert(target.to_owned(), now);
        }
    }

    /// The uses noted since the last call.
    pub(crate) fn take_uses(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.uses.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    /// Whether the hub revoked the certificate with this SHA-256.
    pub fn is_revoked(&self, cert_sha256: &[u8; 32]) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .certs
            .contains(cert_sha256)
    }

    /// Version of the revocation list in force.
    pub(crate) fn revocations_version(&self) -> u64 {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .version
    }

    pub(crate) fn set_revoked(&self, revoked: Revoked) {
        *self.revoked.write().unwrap_or_else(|p| p.into_inner()) = revoked;
    }

    /// The status now.
    pub fn status(&self) -> RelayStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        status.wan = Traffic {
            received: self.wan_before.received + self.link.received(),
            sent: self.wan_before.sent + self.link.sent(),
        };
        status.lan_served =
            self.lan_before + self.lan_served.load(std::sync::atomic::Ordering::Relaxed);
        let by_package = self
            .lan_by_package
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (name, served) in by_package.iter() {
            let before = self.lan_before_by_package.get(name).copied().unwrap_or(0);
            status.packages.entry(name.clone()).or_default().lan_bytes =
                before + served.load(std::sync::atomic::Ordering::Relaxed);
        }
        status
    }

    /// Changes the status in memory only.
    pub(crate) fn change_status(&self, change: impl FnOnce(&mut RelayStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Changes the status and writes it to `status.json` (off the async
    /// threads). A failed write is logged: the status is for people, and
    /// the next change writes it again.
    pub async fn update_status(self: &Arc<Self>, change: impl FnOnce(&mut RelayStatus)) {
        self.change_status(change);
        let _writing = self.writing.lock().await;
        let snapshot = self.status();
        let path = self.layout.status();
        let written = tokio::task::spawn_blocking(move || snapshot.save(&path)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot write the status file: {e}"),
            Err(e) => tracing::warn!("status writer failed: {e}"),
        }
    }
}
