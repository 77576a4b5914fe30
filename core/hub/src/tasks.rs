//! Tasks: created and cancelled by admins, signed with the control key,
//! kept in the catalog, and held in memory for check-ins.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_catalog::{ClientRecord, Role, TaskRecord};
use ferry_content::PackageName;
use ferry_net::api::Report;
use ferry_net::tasks::{
    TASK_DOCUMENT, TargetStatus, Task, TaskCreated, TaskDetail, TaskProgress, TaskSpec, TaskState,
    TaskSummary,
};
use ferry_serve::ClientIdentity;
use tokio::sync::watch;

use crate::state::blocking;
use crate::{HubError, HubState};

/// How long a task without a deadline stays valid for agents.
pub const TASK_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);

/// Most agents one task names by id (directly or through groups).
const MAX_TASK_AGENTS: usize = 10_000;

/// One signed task held for check-ins.
#[derive(Debug, Clone)]
struct Entry {
    task: Task,
    document: String,
    expires_at: i64,
    /// Sites of the agents it names by id: only those sites' relays are
    /// told of it.
    agent_sites: Vec<String>,
}

/// The signed settings held for check-ins.
#[derive(Debug, Clone, Default)]
struct HeldSettings {
    seq: u64,
    document: Option<Arc<str>>,
    expires_at: i64,
}

/// What agents hear at check-in: the tasks they may be told of and the
/// signed settings, with a version that grows with every change of either
/// (the task sequence plus the settings version), for held check-ins.
pub struct TaskBook {
    entries: RwLock<Arc<Vec<Entry>>>,
    task_seq: std::sync::atomic::AtomicU64,
    settings: RwLock<HeldSettings>,
    version: watch::Sender<u64>,
}

impl TaskBook {
    /// The book of `records` (as the catalog holds them).
    pub(crate) fn new(
        records: Vec<TaskRecord>,
        clients: &[ClientRecord],
        settings: Option<ferry_catalog::SettingsRecord>,
    ) -> Result<TaskBook, HubError> {
        let task_seq = records.iter().map(|r| r.seq).max().unwrap_or(0);
        let entries = records
            .iter()
            .map(|r| entry(r, clients))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = settings.map_or_else(HeldSettings::default, |r| HeldSettings {
            seq: r.seq,
            document: Some(r.document.into()),
            expires_at: r.expires_at,
        });
        Ok(TaskBook {
            entries: RwLock::new(Arc::new(entries)),
            version: watch::channel(task_seq + settings.seq).0,
            task_seq: task_seq.into(),
            settings: RwLock::new(settings),
        })
    }

    fn publish_version(&self) {
        let tasks = self.task_seq.load(std::sync::atomic::Ordering::SeqCst);
        let settings = self.settings.read().unwrap_or_else(|p| p.into_inner()).seq;
        self.version
            .send_modify(|v| *v = (*v).max(tasks + settings));
    }

    pub(crate) fn put_settings(&self, record: &ferry_catalog::SettingsRecord) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = HeldSettings {
            seq: record.seq,
            document: Some(record.document.as_str().into()),
            expires_at: record.expires_at,
        };
        self.publish_version();
    }

    /// When the signed settings expire, if there are any.
    pub(crate) fn settings_expiry(&self) -> Option<i64> {
        let held = self.settings.read().unwrap_or_else(|p| p.into_inner());
        held.document.as_ref().map(|_| held.expires_at)
    }

    /// The signed settings document with its version, if any.
    pub fn settings(&self) -> Option<(u64, Arc<str>)> {
        let held = self.settings.read().unwrap_or_else(|p| p.into_inner());
        held.document.clone().map(|d| (held.seq, d))
    }

    fn snapshot(&self) -> Arc<Vec<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn put(&self, record: &TaskRecord, clients: &[ClientRecord]) -> Result<(), HubError> {
        let new = entry(record, clients)?;
        {
            let mut guard = self.entries.write().unwrap_or_else(|p| p.into_inner());
            let mut entries: Vec<Entry> = guard.iter().cloned().collect();
            entries.retain(|e| e.task.id != new.task.id);
            entries.push(new);
            *guard = Arc::new(entries);
        }
        self.task_seq
            .fetch_max(record.seq, std::sync::atomic::Ordering::SeqCst);
        self.publish_version();
        Ok(())
    }

    /// The version of what check-ins answer, for held check-ins.
    pub fn version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Unexpired signed tasks that may concern `caller`.
    pub fn for_caller(&self, caller: &ClientIdentity) -> Vec<String> {
        let now = now();
        self.snapshot()
            .iter()
            .filter(|e| e.expires_at > now)
            .filter(|e| match caller.role {
                Role::Relay => caller.site.as_ref().is_some_and(|site| {
                    e.task.sites.contains(site) || e.agent_sites.contains(site)
                }),
                _ => e.task.targets(&caller.id, caller.site.as_deref()),
            })
            .map(|e| e.document.clone())
            .collect()
    }
}

fn parse(record: &TaskRecord) -> Result<Task, HubError> {
    serde_json::from_str(&record.body)
        .map_err(|e| HubError::DataDir(format!("task {} in the catalog: {e}", record.id)))
}

fn entry(record: &TaskRecord, clients: &[ClientRecord]) -> Result<Entry, HubError> {
    let task = parse(record)?;
    let mut agent_sites: Vec<String> = clients
        .iter()
        .filter(|c| task.agents.contains(&c.id))
        .filter_map(|c| c.site.clone())
        .collect();
    agent_sites.sort();
    agent_sites.dedup();
    Ok(Entry {
        task,
        document: record.document.clone(),
        expires_at: record.expires_at,
        agent_sites,
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Why a task request is refused, for the API's answer.
#[derive(Debug)]
pub enum TaskRefusal {
    /// The request is wrong; the text says how.
    Invalid(String),
    /// No such task.
    NotFound(String),
}

impl HubState {
    /// Creates, signs and keeps a task; `by` is the admin's client id.
    pub async fn create_task(
        &self,
        spec: TaskSpec,
        by: &str,
    ) -> Result<Result<TaskCreated, TaskRefusal>, HubError> {
        let refuse = |m: String| Ok(Err(TaskRefusal::Invalid(m)));
        let Ok(name) = PackageName::new(&spec.package) else {
            return refuse(format!("{:?} is not a package name", spec.package));
        };
        let Ok(req) = semver::VersionReq::parse(&spec.requirement) else {
            return refuse(format!(
                "{:?} is not a version requirement (try ^1.2, =1.2.3, *)",
                spec.requirement
            ));
        };
        if spec.targets.is_empty() {
            return refuse("name at least one target: --target site:NAME or agent:ID".into());
        }
        // Groups, agents and inventories are read only for a group target:
        // the rest of task creation does not need them.
        let directory = if spec.targets.iter().any(|t| t.starts_with("group:")) {
            let catalog = self.catalog.clone();
            Some(blocking(move || crate::groups::Directory::read(catalog.as_ref())).await??)
        } else {
            None
        };
        let mut sites = Vec::new();
        let mut agents = Vec::new();
        let mut groups = Vec::new();
        for target in &spec.targets {
            match target.split_once(':') {
                Some(("site", s)) if crate::tokens::validate_site(s).is_ok() => {
                    sites.push(s.to_owned())
                }
                Some(("agent", a)) if !a.is_empty() && a.len() <= 64 => agents.push(a.to_owned()),
                Some(("group", g)) => {
                    let found = directory.as_ref().and_then(|d| Some((d, d.groups.get(g)?)));
                    let Some((directory, selectors)) = found else {
                        return refuse(format!("no group {g}; see `ferry group list`"));
                    };
                    // A site stays a site (its later agents are in); the
                    // rest is resolved to the agents it selects now.
                    let mut selected = 0;
                    for s in selectors {
                        if let ferry_net::tasks::Selector::Site(site) = s {
                            sites.push(site.clone());
                            selected += 1;
                        }
                    }
                    let members = crate::groups::members(
                        selectors,
                        &directory.clients,
                        &directory.inventories,
                    );
                    selected += members.len();
                    agents.extend(members);
                    if selected == 0 {
                        return refuse(format!(
                            "group {g} selects no agent now; see `ferry group list`"
                        ));
                    }
                    groups.push(g.to_owned());
                }
                _ => {
                    return refuse(format!(
                        "target {target:?} is not site:NAME, agent:ID or group:NAME"
                    ));
                }
            }
        }
        sites.sort();
        sites.dedup();
        agents.sort();
        agents.dedup();
        // Every agent and relay concerned receives the signed task with its
        // list of agents at each check-in: a list this long belongs in a
        // site (or a group of sites).
        if agents.len() > MAX_TASK_AGENTS {
            return refuse(format!(
                "the targets name {} agents, more than {MAX_TASK_AGENTS}; target their sites \
                 (site:NAME, or a group with site selectors) instead",
                agents.len()
            ));
        }
        let now = now();
        if let Some(deadline) = spec.deadline
            && deadline <= now
        {
            return refuse("the deadline is in the past".into());
        }
        if let (Some(nb), Some(dl)) = (spec.not_before, spec.deadline)
            && nb >= dl
        {
            return refuse("--not-before must be earlier than --deadline".into());
        }
        if spec.precache_only && spec.install_from_cache_only {
            return refuse(
                "--precache-only and --install-from-cache-only exclude each other".into(),
            );
        }
        if let Some(window) = &spec.install_window {
            if let Err(e) = window.parse::<ferry_net::window::InstallWindow>() {
                return refuse(e.to_string());
            }
            if spec.precache_only {
                return refuse(
                    "a pre-cache task installs nothing: it takes no --install-window".into(),
                );
            }
        }
        if spec.install_from_cache_only
            && spec.not_before.is_none()
            && spec.install_window.is_none()
        {
            return refuse(
                "--install-from-cache-only needs --not-before or --install-window: the time \
                 from which it installs only what is cached"
                    .into(),
            );
        }
        // The newest signed version matching the requirement.
        let signed = self.signed_targets();
        let catalog = self.catalog.clone();
        let lookup = name.clone();
        let versions = blocking(move || catalog.list_versions(Some(&lookup))).await??;
        let Some(chosen) = versions
            .into_iter()
            .filter(|v| signed.contains(&v.target) && req.matches(&v.version))
            .max_by(|a, b| a.version.cmp(&b.version))
        else {
            return refuse(format!(
                "no published version of {name} matches {req}; see `ferry packages {name}`"
            ));
        };
        // Valid from creation to its deadline, or for the task lifetime
        // from when it may start.
        let expires_at = spec.deadline.unwrap_or_else(|| {
            spec.not_before
                .unwrap_or(now)
                .max(now)
                .saturating_add(TASK_LIFETIME.as_secs() as i64)
        });
        let _serial = self.task_lock.lock().await;
        let catalog = self.catalog.clone();
        let seq = blocking(move || catalog.last_task_seq()).await?? + 1;
        let task = Task {
            id: format!("t{seq}"),
            package: name.to_string(),
            version: chosen.version.to_string(),
            requirement: req.to_string(),
            sites,
            agents,
            groups,
            not_before: spec.not_before,
            deadline: spec.deadline,
            multicast: spec.multicast == Some(true),
            multicast_forbidden: spec.multicast == Some(false),
            multicast_delay_s: spec.multicast_delay_s,
            precache_only: spec.precache_only,
            install_from_cache_only: spec.install_from_cache_only,
            install_window: spec.install_window,
            params: spec.params,
            cancelled: false,
            created_at: now,
            created_by: by.to_owned(),
        };
        self.keep_task(&task, seq, expires_at).await?;
        Ok(Ok(TaskCreated {
            id: task.id,
            version: task.version,
            expires_at,
        }))
    }

    /// Cancels a task: signs it again, cancelled, under a new sequence
    /// number. Cancelling a cancelled task changes nothing.
    pub async fn cancel_task(&self, id: &str) -> Result<Result<Task, TaskRefusal>, HubError> {
        let _serial = self.task_lock.lock().await;
        let catalog = self.catalog.clone();
        let lookup = id.to_owned();
        let Some(record) = blocking(move || catalog.task(&lookup)).await?? else {
            return Ok(Err(TaskRefusal::NotFound(format!("no task {id}"))));
        };
        let mut task = parse(&record)?;
        if task.cancelled {
            return Ok(Ok(task));
        }
        task.cancelled = true;
        let catalog = self.catalog.clone();
        let seq = blocking(move || catalog.last_task_seq()).await?? + 1;
        self.keep_task(&task, seq, record.expires_at).await?;
        Ok(Ok(task))
    }

    async fn keep_task(&self, task: &Task, seq: u64, expires_at: i64) -> Result<(), HubError> {
        let lifetime = Duration::from_secs((expires_at - now()).max(1) as u64);
        let body = serde_json::to_value(task).map_err(|e| HubError::DataDir(e.to_string()))?;
        let tuf = self.tuf.clone();
        let document =
            blocking(move || tuf.sign_document(TASK_DOCUMENT, seq, lifetime, body)).await??;
        let record = TaskRecord {
            id: task.id.clone(),
            seq,
            created_at: task.created_at,
            expires_at,
            body: serde_json::to_string(task).map_err(|e| HubError::DataDir(e.to_string()))?,
            document: String::from_utf8(document)
                .map_err(|e| HubError::DataDir(format!("a signed task is not text: {e}")))?,
        };
        let catalog = self.catalog.clone();
        let kept = record.clone();
        let clients = blocking(move || {
            catalog.put_task(&kept)?;
            catalog.list_clients()
        })
        .await??;
        self.tasks.put(&record, &clients)?;
        tracing::info!(task = %task.id, seq, cancelled = task.cancelled, "task signed");
        Ok(())
    }

    /// Every task with its targets counted by state.
    pub async fn task_summaries(&self) -> Result<Vec<TaskSummary>, HubError> {
        let catalog = self.catalog.clone();
        blocking(move || {
            let clients = catalog.list_clients()?;
            let mut out = Vec::new();
            for record in catalog.tasks()? {
                let reports = catalog.latest_task_reports(&record.id)?;
                out.push(detail(parse(&record)?, record.expires_at, &reports, &clients).summary);
            }
            Ok(out)
        })
        .await?
    }

    /// One task with each target's state.
    pub async fn task_detail(&self, id: &str) -> Result<Option<TaskDetail>, HubError> {
        let catalog = self.catalog.clone();
        let lookup = id.to_owned();
        let Some(record) = blocking(move || catalog.task(&lookup)).await?? else {
            return Ok(None);
        };
        Ok(Some(self.task_detail_of(&record).await?))
    }

    async fn task_detail_of(&self, record: &TaskRecord) -> Result<TaskDetail, HubError> {
        let task = parse(record)?;
        let catalog = self.catalog.clone();
        let id = task.id.clone();
        let (reports, clients) = blocking(move || {
            Ok::<_, HubError>((catalog.latest_task_reports(&id)?, catalog.list_clients()?))
        })
        .await??;
        Ok(detail(task, record.expires_at, &reports, &clients))
    }
}

/// Each target's newest report, and the totals: targets are the enrolled
/// agents the task names (by site or id) and any agent that reported on it.
fn detail(task: Task, expires_at: i64, reports: &[Report], clients: &[ClientRecord]) -> TaskDetail {
    let mut targets: BTreeMap<String, TargetStatus> = BTreeMap::new();
    for c in clients {
        if c.role == Role::Agent && c.revoked_at.is_none() && task.targets(&c.id, c.site.as_deref())
        {
            targets.insert(
                c.id.clone(),
                TargetStatus {
                    agent: c.id.clone(),
                    site: c.site.clone(),
                    updated_at: None,
                    progress: None,
                },
            );
        }
    }
    for id in &task.agents {
        targets.entry(id.clone()).or_insert_with(|| TargetStatus {
            agent: id.clone(),
            site: None,
            updated_at: None,
            progress: None,
        });
    }
    for report in reports {
        let Ok(progress) = serde_json::from_value::<TaskProgress>(report.body.clone()) else {
            continue;
        };
        // Only targets count: an agent cannot add itself to a task.
        let Some(target) = targets.get_mut(&report.agent) else {
            continue;
        };
        if target
            .progress
            .as_ref()
            .is_none_or(|p| p.seq < progress.seq)
        {
            target.updated_at = Some(report.created_at);
            target.progress = Some(progress);
        }
    }
    let mut states: BTreeMap<TaskState, u64> = BTreeMap::new();
    let mut bytes = BTreeMap::new();
    for t in targets.values() {
        let state = t.progress.as_ref().map_or(TaskState::Pending, |p| p.state);
        *states.entry(state).or_default() += 1;
        for (source, n) in t.progress.iter().flat_map(|p| p.bytes.iter()) {
            let sum = bytes.entry(*source).or_default();
            *sum = n.saturating_add(*sum);
        }
    }
    TaskDetail {
        summary: TaskSummary {
            task,
            expires_at,
            states,
            bytes,
        },
        targets: targets.into_values().collect(),
    }
}
