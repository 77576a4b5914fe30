//! `ferry agent run`: check in, hear of tasks, work through them, report.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_net::api::routes;
use ferry_net::settings::{SETTINGS_DOCUMENT, Settings};
use ferry_net::tasks::{
    CheckinRequest, CheckinResponse, INVENTORY_REPORT, SourceKind, TASK_DOCUMENT, Task,
};
use ferry_net::{ClientCredentials, HubClient};
use ferry_plugin::{BuiltinPlugin, PluginEngine, Registry};

use crate::execute::Agent;
use crate::outbox::Outbox;
use crate::record::{Records, TaskRecord, load_installed};
use crate::settings::HeldSettings;
use crate::status::{AgentStatus, Refusal};
use crate::{AgentConfig, AgentError, AgentLayout};

/// How often an agent behind a relay also checks in at the hub.
const HUB_CHECK_EVERY: Duration = Duration::from_secs(15 * 60);

/// How often the machine's inventory is checked for changes.
const INVENTORY_EVERY: Duration = Duration::from_secs(600);

/// Most refusals kept in the status file.
const MAX_REFUSALS: usize = 16;

/// Options of one agent run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// The plugin engine to use; `None` makes one with its compiled-code
    /// cache in the data directory. Agents sharing a process (the demo)
    /// share one engine, as one node would.
    pub engine: Option<PluginEngine>,
}

/// Runs the agent in `data` until `shutdown` resolves. `builtins` are the
/// plugins embedded in the binary (the default transport and installers).
pub async fn run(
    data: &Path,
    options: RunOptions,
    builtins: &'static [BuiltinPlugin],
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let layout = AgentLayout::new(data);
    let opening = layout.clone();
    let Opened {
        lock: _lock,
        config,
        creds,
        records,
        held,
        installed,
        outbox,
        settings: held_settings,
    } = tokio::task::spawn_blocking(move || open(&opening))
        .await
        .map_err(|e| AgentError::DataDir(format!("opening the data directory failed: {e}")))??;
    let identity = Some((creds.cert_pem.as_str(), creds.key_pem.as_str()));
    let server = HubClient::new(config.server.clone(), &creds.ca_pem, identity)?
        .with_pace(config.transfer.pace());
    let hub = match &config.hub {
        Some(url) => Some(
            HubClient::new(url.clone(), &creds.ca_pem, identity)?.with_pace(config.transfer.pace()),
        ),
        None => None,
    };
    let mut settings = config.plugins.clone();
    settings.packages_dir = Some(layout.plugin_packages());
    let cache = layout.plugin_cache();
    let (registry, report) = tokio::task::spawn_blocking(move || {
        let engine = match options.engine {
            Some(engine) => engine,
            None => PluginEngine::new(Some(cache))?,
        };
        Registry::new(engine, settings, builtins)
    })
    .await
    .map_err(|e| AgentError::DataDir(format!("loading plugins failed: {e}")))??;
    for failed in &report.failed {
        tracing::warn!("site plugin not loaded: {failed}");
    }
    let registry = Arc::new(registry);
    let _watch = registry.watch();
    let local = ferry_transfer::LocalContent::open(&layout.content(), || {}).await?;
    let outbox = Arc::new(outbox);
    let agent = Arc::new(Agent::new(
        layout.clone(),
        config,
        creds,
        server.clone(),
        hub,
        registry,
        local,
        records,
        outbox.clone(),
        installed,
        held,
        held_settings,
    ));
    // A task interrupted mid-step resumes: downloads from the verified
    // chunks kept, installs from the start (installers are idempotent).
    let status = Arc::new(std::sync::Mutex::new(AgentStatus::start(
        &agent.creds,
        &agent.config,
    )));
    write_status(&agent, &status).await;
    // The settings held apply from the first task on.
    for note in agent.apply_held_settings(&agent.settings()).await {
        tracing::warn!("settings: {note}");
    }
    let inventory = tokio::spawn(report_inventory(agent.clone()));
    let forwarder = tokio::spawn(crate::outbox::forward(outbox, server, agent.hub.clone()));
    let checkins = tokio::spawn(check_in(agent.clone(), status.clone()));
    let settings = tokio::spawn(crate::settings::keep_applied(agent.clone(), status.clone()));
    let worker = tokio::spawn(work(agent.clone()));
    tracing::info!(id = %agent.creds.info.id, server = %agent.config.server, "agent running");
    shutdown.await;
    checkins.abort();
    settings.abort();
    inventory.abort();
    worker.abort();
    forwarder.abort();
    status.lock().unwrap_or_else(|p| p.into_inner()).pid = None;
    write_status(&agent, &status).await;
    Ok(())
}

/// Reports the machine's inventory now, then again whenever it changes
/// (checked every 10 minutes): group settings select by it, so a machine
/// that moved to another subnet takes that group's settings.
async fn report_inventory(agent: Arc<Agent>) {
    let mut last: Option<ferry_net::tasks::Inventory> = None;
    loop {
        let gathering = agent.clone();
        let inventory = tokio::task::spawn_blocking(move || {
            crate::inventory::gather(&gathering.layout.content(), &gathering.config.server)
        })
        .await;
        if let Ok(inventory) = inventory {
            // Free disk changes all the time; it alone is no news.
            let same = last.as_ref().is_some_and(|l| {
                ferry_net::tasks::Inventory {
                    free_disk: inventory.free_disk,
                    ..l.clone()
                } == inventory
            });
            if !same {
                let keeping = agent.clone();
                let body = serde_json::to_value(&inventory).unwrap_or_default();
                let _ = tokio::task::spawn_blocking(move || {
                    // One inventory report per run and state of the machine.
                    let key = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp());
                    if let Err(e) = keeping.outbox.keep(INVENTORY_REPORT, &key, 0, body) {
                        tracing::error!("cannot keep the inventory report: {e}");
                    }
                })
                .await;
                agent
                    .central
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .set_inventory(inventory.clone());
                agent.settings_changed.notify_one();
                last = Some(inventory);
            }
        }
        tokio::time::sleep(INVENTORY_EVERY).await;
    }
}

pub(crate) async fn write_status(agent: &Arc<Agent>, status: &Arc<std::sync::Mutex<AgentStatus>>) {
    let path = agent.layout.status();
    let mut snapshot = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let outbox = agent.outbox.clone();
    let _ = tokio::task::spawn_blocking(move || {
        snapshot.outbox_pending = outbox.pending();
        if let Err(e) = snapshot.save(&path) {
            tracing::warn!("cannot write the status file: {e}");
        }
    })
    .await;
}

/// Works through tasks as they become due, one at a time.
async fn work(agent: Arc<Agent>) {
    loop {
        if let Some(record) = agent.due_now() {
            let _content = agent.content_lock.lock().await;
            agent.drive(record).await;
            continue;
        }
        agent.trim_cache().await;
        let wait = match agent.next_due() {
            Some(at) => {
                Duration::from_secs((at - chrono::Utc::now().timestamp()).clamp(0, 3600) as u64)
            }
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = agent.wake.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
        }
    }
}

/// Holds a check-in open at the server; each answer with a newer task list
/// is verified and merged.
async fn check_in(agent: Arc<Agent>, status: Arc<std::sync::Mutex<AgentStatus>>) {
    let mut after = 0u64;
    let mut failures = 0u32;
    // A check-in is held open by design: its answer may take the whole
    // wait, at most the longest a server holds one.
    let mut pace = agent.config.transfer.pace();
    pace.grace = Duration::from_secs(ferry_net::tasks::MAX_CHECKIN_WAIT) + pace.grace;
    let server = agent.server.clone().with_pace(pace);
    // Past a relay that does not answer, the hub (when configured) tells
    // the agent its tasks, so a dead relay does not hide new work.
    let hub = agent.hub.clone().map(|h| h.with_pace(pace));
    let mut hub_heard = tokio::time::Instant::now();
    loop {
        // The settings may change the wait at every check-in.
        let wait = agent
            .settings()
            .checkin_wait
            .unwrap_or(agent.config.checkin_wait)
            .as_secs();
        // Now and then the hub itself is asked, so a relay cannot withhold
        // a cancellation (or a task) for longer than that.
        if let Some(hub) = &hub
            && hub_heard.elapsed() >= HUB_CHECK_EVERY
        {
            hub_heard = tokio::time::Instant::now();
            let quick = format!("{}?wait=0", routes::relative(routes::CHECKIN));
            match hub
                .post_json::<_, CheckinResponse>(&quick, &CheckinRequest::default())
                .await
            {
                Ok(answer) => {
                    merge(&agent, &status, answer.tasks, answer.settings).await;
                }
                Err(e) => tracing::debug!("the periodic check-in at the hub failed: {e}"),
            }
        }
        let path = format!("{}?wait={wait}", routes::relative(routes::CHECKIN));
        let held_settings = agent
            .central
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .version();
        let request = CheckinRequest {
            after,
            settings: held_settings,
        };
        let quick = std::time::Instant::now();
        let answer = match server
            .post_json::<_, CheckinResponse>(&path, &request)
            .await
        {
            Ok(answer) => {
                let relay = answer.server == "relay";
                *agent.server_kind.lock().unwrap_or_else(|p| p.into_inner()) =
                    if relay { "relay" } else { "hub" }.into();
                // A relay that answers is worth planning first again.
                agent.note_reachable(if relay {
                    SourceKind::Relay
                } else {
                    SourceKind::Hub
                });
                Ok(answer)
            }
            Err(e) => match &hub {
                Some(hub) if failures > 0 => {
                    // Held only briefly: the relay is tried again soon.
                    let quick = format!("{}?wait=0", routes::relative(routes::CHECKIN));
                    hub.post_json::<_, CheckinResponse>(&quick, &request)
                        .await
                        .map_err(|e2| format!("{e}; the hub: {e2}"))
                }
                _ => Err(e.to_string()),
            },
        };
        match answer {
            Ok(answer) => {
                failures = 0;
                {
                    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
                    s.last_checkin_at = Some(chrono::Utc::now().timestamp());
                    s.server_kind = agent
                        .server_kind
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    s.task_version = answer.version;
                }
                let news = answer.version != after || answer.settings.is_some();
                if news && !merge(&agent, &status, answer.tasks, answer.settings).await {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                } else {
                    after = answer.version;
                }
                // Answers that come at once (a server that does not hold
                // check-ins, or one passing settings this agent refuses):
                // never a tight loop.
                if quick.elapsed() < Duration::from_secs(1) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                write_status(&agent, &status).await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_secs(1)
                    .saturating_mul(1 << failures.min(4))
                    .min(Duration::from_secs(15))
                    .mul_f64(0.75 + rand::random::<f64>() * 0.5);
                tracing::warn!(
                    "check-in at {} failed ({e}); again in {pause:?}",
                    agent.config.server
                );
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Most task documents taken from one answer: a bound against a server
/// that floods.
const MAX_DOCUMENTS: usize = 1000;

/// Verifies each signed task and the signed settings against the hub's
/// control key (from the root pinned at enrollment, as updated through
/// TUF) and takes the tasks that are for this agent and newer than what it
/// holds, and settings newer than those it holds. Returns `false` when the
/// signed metadata could not be loaded to check them: the caller asks
/// again later.
async fn merge(
    agent: &Arc<Agent>,
    status: &Arc<std::sync::Mutex<AgentStatus>>,
    mut documents: Vec<String>,
    settings: Option<String>,
) -> bool {
    // Settings held already need no second check.
    let settings = settings.filter(|doc| {
        agent
            .central
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .document()
            != Some(doc.as_str())
    });
    if documents.is_empty() && settings.is_none() {
        return true;
    }
    documents.truncate(MAX_DOCUMENTS);
    let repo =
        match ferry_transfer::load_repository(&agent.creds, &agent.server.clone().sharing_pace())
            .await
        {
            Ok(r) => r,
            Err(e) => match &agent.hub {
                Some(hub) => match ferry_transfer::load_repository(&agent.creds, hub).await {
                    Ok(r) => r,
                    Err(e2) => {
                        tracing::warn!(
                            "cannot load the signed metadata to check tasks ({e}; {e2}); later"
                        );
                        return false;
                    }
                },
                None => {
                    tracing::warn!("cannot load the signed metadata to check tasks ({e}); later");
                    return false;
                }
            },
        };
    let me = agent.creds.info.id.clone();
    let site = agent.creds.info.site.clone();
    let server = agent.config.server.clone();
    // Signature checks are CPU work: off the async threads.
    let checked = tokio::task::spawn_blocking(move || {
        let mut refusals = Vec::new();
        let mut good = Vec::new();
        let settings = settings.map(|document| {
            let doc = repo
                .verify_document(document.as_bytes(), SETTINGS_DOCUMENT)
                .map_err(|e| format!("settings from {server} did not verify: {e}"))?;
            let body: Settings = serde_json::from_value(doc.body)
                .map_err(|e| format!("the signed settings are malformed: {e}"))?;
            let held = HeldSettings {
                version: doc.version,
                expires_at: doc.expires.as_second(),
                document,
            };
            Ok::<_, String>((held, body))
        });
        for document in documents {
            let doc = match repo.verify_document(document.as_bytes(), TASK_DOCUMENT) {
                Ok(d) => d,
                Err(e) => {
                    refusals.push(format!("a task from {server} did not verify: {e}"));
                    continue;
                }
            };
            let task: Task = match serde_json::from_value(doc.body.clone()) {
                Ok(t) => t,
                Err(e) => {
                    refusals.push(format!("a signed task is malformed: {e}"));
                    continue;
                }
            };
            if !task.targets(&me, site.as_deref()) {
                refusals.push(format!("task {} is not for this agent", task.id));
                continue;
            }
            good.push((task, document, doc.version));
        }
        (good, settings, refusals)
    })
    .await;
    let Ok((good, settings, mut refusals)) = checked else {
        return false;
    };
    let mut retry = false;
    match settings {
        Some(Ok((held, body))) => match agent.take_settings(held, body).await {
            Ok(_) => {}
            Err(Some(refusal)) => refusals.push(refusal),
            Err(None) => retry = true,
        },
        Some(Err(refusal)) => refusals.push(refusal),
        None => {}
    }
    for (task, document, seq) in good {
        let held = agent
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&task.id)
            .map(|h| h.seq);
        match held {
            Some(h) if h == seq => {}
            Some(h) if h > seq => refusals.push(format!(
                "task {} came in an older version ({seq} < {h}): a replay",
                task.id
            )),
            Some(_) => {
                agent.update_task(task, document, seq).await;
            }
            None => {
                let mut record = TaskRecord::new(task, document, seq);
                record.message = format!(
                    "heard of task {}: {} {}",
                    record.task.id, record.task.package, record.task.version
                );
                agent.commit(&mut record).await;
            }
        }
    }
    for refusal in &refusals {
        tracing::warn!("refused: {refusal}");
    }
    if !refusals.is_empty() {
        let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
        for r in refusals {
            s.refused.push(Refusal {
                at: chrono::Utc::now().timestamp(),
                message: r,
            });
        }
        let excess = s.refused.len().saturating_sub(MAX_REFUSALS);
        s.refused.drain(..excess);
    }
    agent.wake.notify_one();
    !retry
}

/// What a run opens in its data directory.
struct Opened {
    lock: std::fs::File,
    config: AgentConfig,
    creds: ClientCredentials,
    records: Records,
    held: BTreeMap<String, TaskRecord>,
    installed: crate::record::Installed,
    outbox: Outbox,
    settings: Option<HeldSettings>,
}

/// Opens the data directory: lock, configuration, credentials, task
/// records, installed packages, outbox. Blocks.
fn open(layout: &AgentLayout) -> Result<Opened, AgentError> {
    if !layout.config().exists() {
        return Err(AgentError::DataDir(format!(
            "{} is not an agent data directory (no agent.toml); create one with `ferry agent init`",
            layout.data().display()
        )));
    }
    let lock = lock(layout)?;
    let config = AgentConfig::load(&layout.config())?;
    // Installers are granted the install root; it must exist to be opened.
    std::fs::create_dir_all(&config.install_root)
        .map_err(|e| AgentError::io(&config.install_root, e))?;
    let creds = ClientCredentials::load(layout.data())?;
    let records = Records::open(&layout.tasks())?;
    let held = records
        .load_all()?
        .into_iter()
        .map(|r| (r.task.id.clone(), r))
        .collect();
    let installed = load_installed(&layout.installed())?;
    let outbox = Outbox::open(&layout.outbox(), &creds.info.id)?;
    let settings = HeldSettings::load(&layout.settings())?;
    Ok(Opened {
        lock,
        config,
        creds,
        records,
        held,
        installed,
        outbox,
        settings,
    })
}

/// Keeps two agents from working on one data directory; released when the
/// file closes (also when the process dies).
fn lock(layout: &AgentLayout) -> Result<std::fs::File, AgentError> {
    let path = layout.lock();
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AgentError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AgentError::DataDir(format!(
            "another `ferry agent run` is using {} (it holds {})",
            layout.data().display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(AgentError::io(&path, e)),
    }
}
