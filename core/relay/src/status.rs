//! What `ferry relay status` shows: kept in `status.json`, rewritten
//! atomically whenever it changes, so it can be read while the relay runs
//! and after it stopped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::RelayError;
use crate::snapshot::SnapshotInfo;

/// The relay's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// This relay's client id.
    pub id: String,
    /// Its site.
    pub site: Option<String>,
    /// Where it syncs from.
    pub upstream: String,
    /// The address it serves agents on, while it runs.
    pub address: Option<String>,
    /// The process serving, while it runs.
    pub pid: Option<u32>,
    /// The snapshot agents are served.
    pub serving: Option<SnapshotInfo>,
    /// The newest upstream metadata seen, which may be ahead of what is
    /// served while its content is still syncing.
    pub upstream_seen: Option<UpstreamSeen>,
    /// The last sync attempt.
    pub last_sync: Option<SyncRecord>,
    /// The last failed sync.
    pub last_failure: Option<Failure>,
    /// The next sync, as the schedule decided it.
    pub next_sync: Option<NextSync>,
    /// Bytes over the upstream (WAN) link since the data directory was
    /// created: everything the relay sent and received there.
    pub wan: Traffic,
    /// Body bytes served to the office's agents since the data directory
    /// was created (against `wan`: the bandwidth saved).
    #[serde(default)]
    pub lan_served: u64,
    /// Agents' reports waiting in the outbox and forwarded upstream.
    #[serde(default)]
    pub outbox: Outbox,
    /// Per package: chunk and manifest bytes fetched over the WAN, and the
    /// package's size (what one download from upstream costs), so the
    /// saving is visible.
    pub packages: BTreeMap<String, PackageTraffic>,
}

/// The report outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    /// Reports kept, waiting for the upstream to hold them.
    pub pending: u64,
    /// Reports the upstream acknowledged since the data directory was
    /// created.
    pub forwarded: u64,
    /// When reports were last forwarded (RFC 3339).
    pub last_forwarded_at: Option<String>,
    /// Why the last attempt to forward failed, until one succeeds.
    pub last_error: Option<String>,
}

/// The newest upstream metadata seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSeen {
    /// Version of its timestamp metadata.
    pub timestamp_version: u64,
    /// Version of its targets metadata.
    pub targets_version: u64,
    /// When it was seen (RFC 3339).
    pub at: String,
}

/// How a sync went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Everything kept is stored and served.
    Succeeded,
    /// Some content arrived before it stopped.
    Partial,
    /// Nothing was fetched (what is served may still have changed if it
    /// failed after the switch, while dropping versions).
    Failed,
}

/// One sync attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// Start (RFC 3339).
    pub started: String,
    /// End (RFC 3339).
    pub finished: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed.
    pub error: Option<String>,
    /// What started it: `schedule`, `request` (`ferry relay sync`) or
    /// `upstream-changed` (new upstream metadata whose content was all held
    /// already).
    pub trigger: String,
    /// Versions fetched, `NAME@VERSION`.
    pub fetched: Vec<String>,
    /// Versions no longer kept (withdrawn upstream or no longer selected).
    pub dropped: Vec<String>,
    /// Chunk bytes received.
    pub chunk_bytes: u64,
    /// Chunk bytes found in content the relay already held.
    pub reused_bytes: u64,
    /// Chunk bytes kept from an interrupted earlier attempt.
    pub resumed_bytes: u64,
    /// Manifest bytes received (deltas where possible).
    pub manifest_bytes: u64,
    /// Bytes of byte-level file deltas received.
    #[serde(default)]
    pub delta_bytes: u64,
    /// Files rebuilt from byte-level deltas.
    #[serde(default)]
    pub files_by_delta: u64,
    /// All bytes over the WAN during the attempt, both directions.
    pub wan_bytes: u64,
}

/// A failed sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When (RFC 3339).
    pub at: String,
    /// Why.
    pub reason: String,
}

/// The next sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextSync {
    /// When (RFC 3339).
    pub at: String,
    /// Which plugin decided, `schedule NAME@VERSION (origin)`.
    pub decided_by: String,
    /// Why the configured plugin did not decide, if it did not.
    pub fallback: Option<String>,
    /// The WAN cap until the next decision.
    pub cap: String,
    /// Why the sync waits: `schedule`, `requested`, or `retry after N
    /// failed sync(s)`.
    pub reason: String,
}

/// Bytes over a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Received.
    pub received: u64,
    /// Sent.
    pub sent: u64,
}

/// One package's WAN traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageTraffic {
    /// Bytes fetched over the WAN for it (chunks and manifests).
    pub wan_bytes: u64,
    /// Sum of the sizes of its versions fetched: what fetching them whole
    /// would have cost.
    pub full_bytes: u64,
    /// Bytes served for it on the LAN (requests that name it; agents' and
    /// downstream relays' fetches do).
    #[serde(default)]
    pub lan_bytes: u64,
}

impl RelayStatus {
    /// Reads `path`; a missing file is an empty status.
    pub fn load(path: &Path) -> Result<RelayStatus, RelayError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                RelayError::DataDir(format!(
                    "{} is damaged ({e}); remove it, the relay writes a new one",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RelayStatus::default()),
            Err(e) => Err(RelayError::io(path, e)),
        }
    }

    /// Writes `path` atomically. Blocks.
    pub fn save(&self, path: &Path) -> Result<(), RelayError> {
        let bytes = serde_json::to_vec_pretty(self).expect("status serializes");
        ferry_store::durable::write_file(path, &bytes, 0o644).map_err(|e| RelayError::io(path, e))
    }
}
