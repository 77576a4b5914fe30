//! The signed tasks and settings this relay passes on to its agents: heard
//! from the upstream through a held check-in, kept in `tasks.json` so
//! agents hear of them while the WAN is down, and answered from memory.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_net::api::{Role, routes};
use ferry_net::tasks::{CheckinRequest, CheckinResponse, MAX_CHECKIN_WAIT, Task};
use ferry_serve::ClientIdentity;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::RelayState;

/// Most signed tasks kept from the upstream: a bound against an upstream
/// that floods.
const MAX_TASKS: usize = 10_000;

/// What `tasks.json` holds: the upstream's check-in version, its signed
/// tasks and its signed settings.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Held {
    version: u64,
    tasks: Vec<String>,
    #[serde(default)]
    settings: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    task: Task,
    document: String,
    expires_at: i64,
}

/// The tasks held for this relay's agents.
pub struct RelayTasks {
    path: PathBuf,
    entries: RwLock<Arc<Vec<Entry>>>,
    /// The settings document with its version.
    settings: RwLock<Option<(u64, Arc<str>)>>,
    /// Woken when the settings document changes.
    pub(crate) settings_changed: tokio::sync::Notify,
    version: watch::Sender<u64>,
}

/// Reads what a document says without verifying it: the relay only uses
/// it to choose which agents to tell; each agent verifies its tasks.
fn entry(document: String) -> Option<Entry> {
    let doc = ferry_trust::documents::peek(document.as_bytes()).ok()?;
    let task: Task = serde_json::from_value(doc.body).ok()?;
    Some(Entry {
        task,
        expires_at: doc.expires.as_second(),
        document,
    })
}

impl RelayTasks {
    /// The tasks kept in `path`, if any.
    pub(crate) fn open(path: PathBuf) -> RelayTasks {
        let held: Held = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let entries = held.tasks.into_iter().filter_map(entry).collect();
        RelayTasks {
            path,
            entries: RwLock::new(Arc::new(entries)),
            settings: RwLock::new(held.settings.and_then(with_version)),
            settings_changed: tokio::sync::Notify::new(),
            version: watch::channel(held.version).0,
        }
    }

    /// The version of what check-ins answer (the upstream's).
    pub fn version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Unexpired signed tasks that may concern `caller`.
    pub fn for_caller(&self, caller: &ClientIdentity) -> Vec<String> {
        let now = chrono::Utc::now().timestamp();
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        entries
            .iter()
            .filter(|e| e.expires_at > now)
            .filter(|e| match caller.role {
                Role::Relay => e.task.may_target_site(caller.site.as_deref()),
                _ => e.task.targets(&caller.id, caller.site.as_deref()),
            })
            .map(|e| e.document.clone())
            .collect()
    }

    /// The hub's signed settings as last heard, with their version, passed
    /// on unchanged (each agent verifies them).
    pub fn settings(&self) -> Option<(u64, Arc<str>)> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replace(&self, held: Held) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&held).map_err(std::io::Error::other)?;
        ferry_store::durable::write_file(&self.path, &bytes, 0o644)?;
        let entries = held.tasks.into_iter().filter_map(entry).collect();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(entries);
        let settings = held.settings.and_then(with_version);
        let changed = {
            let mut held = self.settings.write().unwrap_or_else(|p| p.into_inner());
            let changed = *held != settings;
            *held = settings;
            changed
        };
        if changed {
            self.settings_changed.notify_one();
        }
        self.version.send_replace(held.version);
        Ok(())
    }
}

/// A settings document with the version it claims (the relay only uses it
/// to tell agents behind on settings; each agent verifies them).
fn with_version(document: String) -> Option<(u64, Arc<str>)> {
    let version = ferry_trust::documents::peek(document.as_bytes())
        .ok()?
        .version;
    Some((version, document.into()))
}

/// Holds a check-in open at the upstream and keeps what it answers.
pub(crate) async fn watch_tasks(state: Arc<RelayState>) {
    let mut failures = 0u32;
    loop {
        let after = *state.tasks.version.borrow();
        let held_settings = state.tasks.settings();
        let hold = MAX_CHECKIN_WAIT.min(state.config.sync.stall.as_secs().saturating_sub(5).max(1));
        let path = format!("{}?wait={hold}", routes::relative(routes::CHECKIN));
        let asked = std::time::Instant::now();
        let answer = state
            .upstream
            .post_json::<_, CheckinResponse>(
                &path,
                &CheckinRequest {
                    after,
                    settings: held_settings.as_ref().map_or(0, |(v, _)| *v),
                },
            )
            .await;
        match answer {
            Ok(mut answer) => {
                failures = 0;
                if answer.version == after && answer.settings.is_none() {
                    // An upstream that answers at once without news is not
                    // asked again in a tight loop.
                    if asked.elapsed() < Duration::from_secs(1) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
                if answer.tasks.len() > MAX_TASKS {
                    // The newest (highest version: new and cancelled
                    // tasks) are kept.
                    answer.tasks.sort_by_cached_key(|d| {
                        std::cmp::Reverse(
                            ferry_trust::documents::peek(d.as_bytes()).map_or(0, |d| d.version),
                        )
                    });
                    tracing::warn!(
                        count = answer.tasks.len(),
                        "the upstream sent more than {MAX_TASKS} tasks; keeping the newest"
                    );
                    answer.tasks.truncate(MAX_TASKS);
                }
                let held = Held {
                    version: answer.version,
                    tasks: answer.tasks,
                    // An answer without settings leaves the held ones.
                    settings: answer
                        .settings
                        .or(held_settings.map(|(_, d)| d.to_string())),
                };
                let count = held.tasks.len();
                let tasks = state.clone();
                match tokio::task::spawn_blocking(move || tasks.tasks.replace(held)).await {
                    Ok(Ok(())) => tracing::info!(version = answer.version, count, "tasks updated"),
                    Ok(Err(e)) => {
                        tracing::error!("cannot keep the tasks heard from the upstream: {e}");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Err(e) => tracing::error!("keeping tasks failed: {e}"),
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_secs(1)
                    .saturating_mul(1 << failures.min(5))
                    .min(Duration::from_secs(30))
                    .mul_f64(0.75 + rand::random::<f64>() * 0.5);
                tracing::debug!("task check-in at the upstream failed ({e}); again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
