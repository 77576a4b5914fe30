//! Working through one task: wait for its time, get the bytes from the
//! planned sources in order, install, report every step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_content::{Manifest, PackageName};
use ferry_net::api::{MetadataVersion, VersionInfo, routes};
use ferry_net::tasks::{ReasonCode, SourceKind, TASK_REPORT, TaskProgress, TaskState};
use ferry_net::window::{InstallWindow, WindowState};
use ferry_net::{ClientCredentials, HubClient};
use ferry_plugin::{
    InstallAction, InstallJob, InstallRequest, PluginError, Registry, Source, SourceHealth,
    StagedFile, TaskOptions, TransportRequest,
};
use ferry_transfer::{LocalContent, TransferError};

use crate::outbox::Outbox;
use crate::record::{Installed, Records, TaskRecord, save_installed};
use crate::{AgentConfig, AgentError, AgentLayout};

/// Everything the running agent works with.
pub(crate) struct Agent {
    pub(crate) layout: AgentLayout,
    pub(crate) config: AgentConfig,
    pub(crate) creds: ClientCredentials,
    /// Its server (relay or hub), paced as `[transfer]` says.
    pub(crate) server: HubClient,
    /// The hub, when the server is a relay and `hub` is configured.
    pub(crate) hub: Option<HubClient>,
    /// `relay` or `hub`, as the server said at check-in.
    pub(crate) server_kind: Mutex<String>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) local: LocalContent,
    pub(crate) records: Records,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) installed: Mutex<Installed>,
    /// Tasks held, by id.
    pub(crate) tasks: Mutex<BTreeMap<String, TaskRecord>>,
    /// Woken when a task arrives or changes.
    pub(crate) wake: tokio::sync::Notify,
    /// Woken when a task is cancelled.
    cancelled: tokio::sync::Notify,
    /// Tasks cancelled while they may be running.
    cancels: Mutex<std::collections::HashSet<String>>,
    /// An installer is running (it is not interrupted by a cancellation).
    installing: std::sync::atomic::AtomicBool,
    /// Record changes, one at a time.
    writing: tokio::sync::Mutex<()>,
    /// What is known of each source kind.
    health: Mutex<BTreeMap<SourceKind, SourceHealth>>,
    /// The settings set centrally.
    pub(crate) central: Mutex<crate::settings::Central>,
    /// Woken when the settings change.
    pub(crate) settings_changed: tokio::sync::Notify,
    /// Held by whatever fetches into or trims the local content (a task's
    /// download, a plugin package, the cache trim), one at a time: a trim
    /// must not remove a file a fetch reads chunks from.
    pub(crate) content_lock: tokio::sync::Mutex<()>,
}

/// Why a step failed, and whether trying again later may help.
struct Failure {
    reason: ReasonCode,
    message: String,
    retry: bool,
}

impl Failure {
    fn local(e: impl std::fmt::Display, full: bool) -> Failure {
        Failure {
            reason: if full {
                ReasonCode::DiskFull
            } else {
                ReasonCode::LocalError
            },
            message: e.to_string(),
            retry: true,
        }
    }
}

fn disk_full(e: &TransferError) -> bool {
    match e {
        TransferError::Io { source, .. } => {
            source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28)
        }
        _ => e.to_string().contains("No space left"),
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn fresh_health() -> SourceHealth {
    SourceHealth {
        reachable: true,
        rtt_ms: None,
        recent_throughput_bps: None,
        consecutive_failures: 0,
    }
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        layout: AgentLayout,
        config: AgentConfig,
        creds: ClientCredentials,
        server: HubClient,
        hub: Option<HubClient>,
        registry: Arc<Registry>,
        local: LocalContent,
        records: Records,
        outbox: Arc<Outbox>,
        installed: Installed,
        tasks: BTreeMap<String, TaskRecord>,
        settings: Option<crate::settings::HeldSettings>,
    ) -> Agent {
        let kind = if hub.is_some() { "relay" } else { "hub" };
        Agent {
            layout,
            config,
            creds,
            server,
            hub,
            server_kind: Mutex::new(kind.into()),
            registry,
            local,
            records,
            outbox,
            installed: Mutex::new(installed),
            tasks: Mutex::new(tasks),
            wake: tokio::sync::Notify::new(),
            cancelled: tokio::sync::Notify::new(),
            cancels: Mutex::new(std::collections::HashSet::new()),
            installing: std::sync::atomic::AtomicBool::new(false),
            writing: tokio::sync::Mutex::new(()),
            health: Mutex::new(BTreeMap::new()),
            central: Mutex::new(crate::settings::Central::new(settings)),
            settings_changed: tokio::sync::Notify::new(),
            content_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn server_is_relay(&self) -> bool {
        *self.server_kind.lock().unwrap_or_else(|p| p.into_inner()) == "relay"
    }

    /// Saves `record`, reports it, and updates the in-memory copy: the one
    /// way a task's record changes, one at a time, so the newest state is
    /// what lies on disk. What the signed task says (and its version) is
    /// taken from whichever copy is newer, so a change heard at check-in
    /// (a cancellation) is never undone; a record already done is not
    /// replaced by one that is not. Returns `false` when the held record
    /// was done already (the caller's copy is then that record). A report
    /// that cannot be kept is logged: the next report carries the state.
    pub(crate) async fn commit(self: &Arc<Self>, record: &mut TaskRecord) -> bool {
        let _order = self.writing.lock().await;
        {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = tasks.get(&record.task.id) {
                if held.is_done() && !record.is_done() {
                    *record = held.clone();
                    return false;
                }
                if held.seq > record.seq {
                    record.task = held.task.clone();
                    record.document = held.document.clone();
                    record.seq = held.seq;
                }
                record.report_seq = record.report_seq.max(held.report_seq);
            }
            record.report_seq += 1;
            tasks.insert(record.task.id.clone(), record.clone());
        }
        let progress = TaskProgress {
            task: record.task.id.clone(),
            seq: record.report_seq,
            state: record.state,
            percent: record.percent,
            source: record.source,
            bytes: record.bytes.clone(),
            reason: record.reason,
            incidents: record.incidents.clone(),
            message: record.message.clone(),
        };
        let agent = self.clone();
        let saved = record.clone();
        let done = tokio::task::spawn_blocking(move || {
            agent.records.save(&saved)?;
            let body = serde_json::to_value(&progress)
                .map_err(|e| AgentError::DataDir(format!("a report: {e}")))?;
            agent
                .outbox
                .keep(TASK_REPORT, &saved.task.id, saved.report_seq, body)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(task = %record.task.id, "cannot keep the task's state: {e}")
            }
            Err(e) => tracing::error!("keeping a task's state failed: {e}"),
        }
        tracing::info!(
            task = %record.task.id,
            state = %record.state,
            reason = record.reason.map(|r| r.as_str()).unwrap_or(""),
            "{}",
            record.message
        );
        true
    }

    /// Takes a newer signed version of a held task (heard at check-in)
    /// without touching where the agent is with it; returns whether the
    /// task became cancelled.
    pub(crate) async fn update_task(
        self: &Arc<Self>,
        task: ferry_net::tasks::Task,
        document: String,
        seq: u64,
    ) -> bool {
        let _order = self.writing.lock().await;
        let saved = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            let Some(held) = tasks.get_mut(&task.id) else {
                return false;
            };
            if held.seq >= seq {
                return false;
            }
            held.task = task;
            held.document = document;
            held.seq = seq;
            held.clone()
        };
        let cancelled = saved.task.cancelled;
        let agent = self.clone();
        let id = saved.task.id.clone();
        match tokio::task::spawn_blocking(move || agent.records.save(&saved)).await {
            Ok(Ok(())) => {}
            other => tracing::error!(task = %id, "cannot keep the task's new version: {other:?}"),
        }
        if cancelled {
            self.cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id);
            self.cancelled.notify_waiters();
        }
        cancelled
    }

    /// Resolves once task `id` is asked to be cancelled.
    async fn cancel_requested(&self, id: &str) {
        loop {
            let notified = self.cancelled.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancellation between the
            // two is not missed.
            notified.as_mut().enable();
            if self
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(id)
            {
                return;
            }
            notified.await;
        }
    }

    /// When the next waiting task is due, if any.
    pub(crate) fn next_due(&self) -> Option<i64> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks
            .values()
            .filter(|r| !r.is_done())
            .map(|r| self.due_at(r))
            .min()
    }

    /// When `r` is due: at once when cancelled, else when its wait or its
    /// retry ends (every wait sets `next_attempt_at`).
    fn due_at(&self, r: &TaskRecord) -> i64 {
        if r.task.cancelled {
            return 0;
        }
        r.next_attempt_at.unwrap_or(0)
    }

    /// The first task due now.
    pub(crate) fn due_now(&self) -> Option<TaskRecord> {
        let now = now();
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: Vec<&TaskRecord> = tasks
            .values()
            .filter(|r| !r.is_done() && self.due_at(r) <= now)
            .collect();
        due.sort_by_key(|r| r.task.created_at);
        due.first().map(|r| (*r).clone())
    }

    /// Takes `record` as far as it can go now.
    pub(crate) async fn drive(self: &Arc<Self>, record: TaskRecord) {
        let id = record.task.id.clone();
        // The newest record: a change may have arrived since it was picked.
        let mut record = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or(record);
        self.installing.store(false, Ordering::SeqCst);
        let outcome = {
            let step = self.step(&mut record);
            tokio::pin!(step);
            loop {
                tokio::select! {
                    outcome = &mut step => break Some(outcome),
                    _ = self.cancel_requested(&id) => {
                        // An installer running is let finish: stopping it
                        // half-way would leave the machine half-installed.
                        if self.installing.load(Ordering::SeqCst) {
                            self.cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                            continue;
                        }
                        break None;
                    }
                }
            }
        };
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match outcome {
            Some(Ok(())) => {}
            Some(Err(failure)) => self.failed(&mut record, failure).await,
            None => {
                let latest = self
                    .tasks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned();
                let mut latest = latest.unwrap_or(record);
                self.cancel(&mut latest).await;
            }
        }
    }

    async fn failed(self: &Arc<Self>, record: &mut TaskRecord, failure: Failure) {
        record.attempts += 1;
        record.reason = Some(failure.reason);
        record.source = None;
        if !failure.retry || record.attempts >= self.config.retry.attempts {
            record.state = TaskState::Failed;
            record.next_attempt_at = None;
            record.message = format!(
                "failed after {} attempt(s): {}",
                record.attempts, failure.message
            );
        } else {
            let wait = self.config.retry.backoff(record.attempts);
            record.state = TaskState::Waiting;
            record.next_attempt_at = Some(now() + wait.as_secs() as i64);
            record.message = format!(
                "attempt {} failed ({}); retrying in {}s",
                record.attempts,
                failure.message,
                wait.as_secs()
            );
        }
        self.commit(record).await;
    }

    pub(crate) async fn cancel(self: &Arc<Self>, record: &mut TaskRecord) {
        if record.is_done() {
            return;
        }
        record.state = TaskState::Cancelled;
        record.source = None;
        record.reason = None;
        record.next_attempt_at = None;
        record.message = "cancelled by the admin; nothing more happens".into();
        let staging = self.layout.staging().join(&record.task.id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staging)).await;
        self.commit(record).await;
    }

    async fn step(self: &Arc<Self>, record: &mut TaskRecord) -> Result<(), Failure> {
        let task = record.task.clone();
        if task.cancelled {
            self.cancel(record).await;
            return Ok(());
        }
        let now = now();
        if task.deadline.is_some_and(|d| d <= now) {
            return Err(Failure {
                reason: ReasonCode::DeadlinePassed,
                message: "the task's deadline passed before it was done".into(),
                retry: false,
            });
        }
        let installed_now = self
            .installed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&task.package)
            .cloned();
        if !task.precache_only && installed_now.as_deref() == Some(task.version.as_str()) {
            record.state = TaskState::Installed;
            record.percent = 100;
            record.reason = None;
            record.message = format!("{} {} is installed already", task.package, task.version);
            self.commit(record).await;
            return Ok(());
        }
        let window = match task
            .install_window
            .as_deref()
            .map(str::parse::<InstallWindow>)
        {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                return Err(Failure {
                    reason: ReasonCode::TaskRefused,
                    message: e.to_string(),
                    retry: false,
                });
            }
        };
        let name = PackageName::new(&task.package).map_err(|e| Failure {
            reason: ReasonCode::TaskRefused,
            message: e.to_string(),
            retry: false,
        })?;
        let version = semver::Version::parse(&task.version).map_err(|e| Failure {
            reason: ReasonCode::TaskRefused,
            message: format!("version {:?}: {e}", task.version),
            retry: false,
        })?;
        let started = task.not_before.is_none_or(|nb| now >= nb);
        if task.precache_only {
            if !started {
                let at = task.not_before.unwrap_or(now);
                self.wait(record, at, ReasonCode::NotBefore, "to start".into())
                    .await;
                return Ok(());
            }
            self.download(record, &name, &version, false, task.deadline)
                .await?;
            return Ok(());
        }
        let fetched = match Phase::of(&task, window.as_ref(), now)? {
            Phase::Closed { opens, .. } => {
                // Normal tasks download ahead from their not-before on;
                // install-from-cache-only ones only until they may install.
                let ahead = task.install_from_cache_only || started;
                if ahead && !record.content_ready {
                    let until = task.install_from_cache_only.then_some(opens);
                    let limit = [until, task.deadline].into_iter().flatten().min();
                    self.download(record, &name, &version, false, limit)
                        .await
                        .map(|_| None)
                } else {
                    Ok(None)
                }
            }
            Phase::Open { .. } => self
                .download(
                    record,
                    &name,
                    &version,
                    task.install_from_cache_only,
                    task.deadline,
                )
                .await
                .map(Some),
        };
        // Where the task stands now that the download (which may have
        // taken long) is over.
        let phase = Phase::of(&task, window.as_ref(), self::now())?;
        let manifest = match (fetched, phase) {
            (Ok(Some(manifest)), Phase::Open { .. }) => manifest,
            (Ok(_), Phase::Closed { opens, reason }) => {
                let what = match (reason, &window, record.content_ready) {
                    (ReasonCode::WindowClosed, Some(w), true) => {
                        format!("for the install window {w}; downloaded ahead")
                    }
                    (ReasonCode::WindowClosed, Some(w), false) => {
                        format!("for the install window {w}")
                    }
                    (_, _, true) => "to install; downloaded ahead".to_owned(),
                    (_, _, false) => "to start".to_owned(),
                };
                self.wait(record, opens, reason, what).await;
                return Ok(());
            }
            // The window opened during the download: the step runs again
            // (and installs what is cached).
            (Ok(None), Phase::Open { .. }) => return Ok(()),
            // An install-from-cache-only task whose window opened before
            // its content was cached: a recurring window comes again, so
            // it downloads once this one closes.
            (Err(f), Phase::Open { until: Some(until) })
                if f.reason == ReasonCode::NotCached && window.is_some() =>
            {
                let what = format!("to download, when the install window closes: {}", f.message);
                self.wait(record, until, ReasonCode::NotCached, what).await;
                return Ok(());
            }
            (Err(f), _) => return Err(f),
        };
        self.install(record, &manifest).await
    }

    /// Records that `record` waits until `at` for `reason`, once: the step
    /// runs again then.
    async fn wait(
        self: &Arc<Self>,
        record: &mut TaskRecord,
        at: i64,
        reason: ReasonCode,
        what: String,
    ) {
        let message = format!(
            "waiting until {} {what}",
            chrono::DateTime::from_timestamp(at, 0)
                .map(|t| t.with_timezone(&chrono::Local).to_rfc3339())
                .unwrap_or_default()
        );
        let changed = record.state != TaskState::Waiting
            || record.reason != Some(reason)
            || record.next_attempt_at != Some(at)
            || record.message != message;
        record.state = TaskState::Waiting;
        record.reason = Some(reason);
        record.source = None;
        record.next_attempt_at = Some(at);
        record.message = message;
        if changed {
            self.commit(record).await;
        } else {
            // Not reported again, but the in-memory copy says when it is due.
            self.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(record.task.id.clone())
                .and_modify(|r| r.next_attempt_at = Some(at));
        }
    }

    /// Every source in order: the metadata and manifest from the server,
    /// then the hub; without the relay when `skip_relay`.
    pub(crate) fn metadata_sources(&self, skip_relay: bool) -> Vec<(SourceKind, HubClient)> {
        let relay = self.server_is_relay();
        let mut out = Vec::new();
        if !relay {
            out.push((SourceKind::Hub, self.server.clone()));
        } else if !skip_relay {
            out.push((SourceKind::Relay, self.server.clone()));
        }
        if let Some(hub) = &self.hub {
            out.push((SourceKind::Hub, hub.clone()));
        }
        out
    }

    /// Whether the relay serves `name` `version`, waiting for its syncs
    /// (through its metadata long-poll) up to `relay-patience`. `false`:
    /// the relay is unreachable or did not get it in time (recorded).
    async fn wait_for_relay(
        self: &Arc<Self>,
        record: &mut TaskRecord,
        name: &PackageName,
        version: &semver::Version,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + self.config.transfer.relay_patience;
        let exact: String =
            url::form_urlencoded::byte_serialize(format!("={version}").as_bytes()).collect();
        let listing = routes::packages(Some(name.as_str()), Some(&exact));
        let mut pace = self.config.transfer.pace();
        pace.grace += Duration::from_secs(ferry_net::tasks::MAX_CHECKIN_WAIT);
        let held = self.server.clone().with_pace(pace);
        let mut after = 0;
        let mut told = false;
        loop {
            match self.server.get_json::<Vec<VersionInfo>>(&listing).await {
                Ok(list) if list.iter().any(|v| v.version == version.to_string()) => {
                    if told {
                        record.reason = None;
                    }
                    return true;
                }
                Ok(_) => {}
                Err(e) => {
                    self.note_health(SourceKind::Relay, false, None);
                    record.incident(
                        ReasonCode::RelayUnreachable,
                        Some(SourceKind::Relay),
                        e.to_string(),
                    );
                    return false;
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                record.incident(
                    ReasonCode::RelaySyncing,
                    Some(SourceKind::Relay),
                    format!(
                        "the relay did not get {name} {version} within relay-patience ({}s)",
                        self.config.transfer.relay_patience.as_secs()
                    ),
                );
                return false;
            }
            if !told {
                told = true;
                record.reason = Some(ReasonCode::RelaySyncing);
                record.message = format!("waiting for the relay to sync {name} {version}");
                self.commit(record).await;
            }
            let hold = left.as_secs().clamp(1, ferry_net::tasks::MAX_CHECKIN_WAIT);
            match held
                .get_json::<MetadataVersion>(&routes::metadata_wait(after, hold))
                .await
            {
                Ok(v) => after = v.version,
                Err(_) => tokio::time::sleep(Duration::from_secs(2).min(left)).await,
            }
        }
    }

    fn unreachable_reason(kind: SourceKind) -> ReasonCode {
        match kind {
            SourceKind::Relay => ReasonCode::RelayUnreachable,
            SourceKind::Hub => ReasonCode::HubUnreachable,
            _ => ReasonCode::MirrorUnreachable,
        }
    }

    fn fault_reason(kind: SourceKind, e: &TransferError) -> ReasonCode {
        use ferry_trust::TrustError as T;
        match e {
            TransferError::ChunkMismatch { .. }
            | TransferError::WrongLength { .. }
            | TransferError::Trust(T::Tampered(_) | T::TooLarge { .. } | T::Rollback { .. }) => {
                ReasonCode::BadBytesFromSource
            }
            TransferError::Net(n) if n.to_string().contains("too slow") => {
                ReasonCode::SourceTooSlow
            }
            _ => Self::unreachable_reason(kind),
        }
    }

    fn note_health(&self, kind: SourceKind, ok: bool, bps: Option<u64>) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = health.entry(kind).or_insert_with(fresh_health);
        h.reachable = ok;
        if ok {
            h.consecutive_failures = 0;
            if bps.is_some() {
                h.recent_throughput_bps = bps;
            }
        } else {
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        }
    }

    /// A source answered (a check-in): reachable again.
    pub(crate) fn note_reachable(&self, kind: SourceKind) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = health.entry(kind).or_insert_with(fresh_health);
        h.reachable = true;
        h.consecutive_failures = 0;
    }

    fn health_of(&self, kind: SourceKind) -> SourceHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&kind)
            .cloned()
            .unwrap_or_else(fresh_health)
    }

    /// Makes the package's content present and verified in the local
    /// cache, from the planned sources in order.
    async fn download(
        self: &Arc<Self>,
        record: &mut TaskRecord,
        name: &PackageName,
        version: &semver::Version,
        cache_only: bool,
        until: Option<i64>,
    ) -> Result<Manifest, Failure> {
        let Some(at) = until else {
            return self.download_now(record, name, version, cache_only).await;
        };
        let left = Duration::from_secs((at - now()).max(0) as u64);
        match tokio::time::timeout(left, self.download_now(record, name, version, cache_only)).await
        {
            Ok(done) => done,
            Err(_) if Some(at) == record.task.deadline => Err(Failure {
                reason: ReasonCode::DeadlinePassed,
                message: "the deadline passed during the download".into(),
                retry: false,
            }),
            Err(_) => Err(Failure {
                reason: ReasonCode::NotCached,
                message: "the install window opened before the content was cached; an \
                          install-from-cache-only task never downloads inside its window"
                    .into(),
                retry: false,
            }),
        }
    }

    /// [`Agent::download`] without a time limit.
    async fn download_now(
        self: &Arc<Self>,
        record: &mut TaskRecord,
        name: &PackageName,
        version: &semver::Version,
        cache_only: bool,
    ) -> Result<Manifest, Failure> {
        let first_time = record.state < TaskState::Downloading;
        record.state = TaskState::Downloading;
        record.reason = None;
        record.message = format!("getting {name} {version}");
        if first_time || record.attempts > 0 {
            self.commit(record).await;
        }
        // A relay still syncing the version is waited for: it will have it
        // soon, and the hub is across the WAN.
        let skip_relay =
            self.server_is_relay() && !self.wait_for_relay(record, name, version).await;
        // Metadata and manifest: small, from the server, else the hub.
        let mut manifest = None;
        for (kind, client) in self.metadata_sources(skip_relay) {
            let client = client.sharing_pace().for_package(name.as_str());
            let got = async {
                let repo = ferry_transfer::load_repository(&self.creds, &client).await?;
                let (m, _, _) =
                    ferry_transfer::fetch_manifest(&repo, &client, &self.local, name, version)
                        .await?;
                Ok::<_, TransferError>(m)
            }
            .await;
            match got {
                Ok(m) => {
                    manifest = Some(m);
                    break;
                }
                Err(TransferError::Trust(ferry_trust::TrustError::UnknownTarget(_))) => {
                    return Err(Failure {
                        reason: ReasonCode::PackageNotFound,
                        message: format!("the signed metadata lists no {name} {version}"),
                        retry: true,
                    });
                }
                Err(e) if e.is_source_fault() => {
                    self.note_health(kind, false, None);
                    record.incident(Self::fault_reason(kind, &e), Some(kind), e.to_string());
                }
                Err(e) => return Err(Failure::local(&e, disk_full(&e))),
            }
        }
        let Some(manifest) = manifest else {
            return Err(Failure {
                reason: record
                    .incidents
                    .last()
                    .map(|i| i.reason)
                    .unwrap_or(ReasonCode::NoSourceLeft),
                message: "no source answered for the package's metadata".into(),
                retry: true,
            });
        };
        let missing: u64 = {
            let local = self.local.clone();
            let m = manifest.clone();
            tokio::task::spawn_blocking(move || {
                m.files
                    .iter()
                    .filter(|f| f.symlink.is_none() && !local.store().has_object(&f.content_id()))
                    .map(|f| f.size)
                    .sum()
            })
            .await
            .unwrap_or(manifest.total_size())
        };
        if missing == 0 {
            return Ok(self.downloaded(record, &manifest).await);
        }
        if cache_only {
            return Err(Failure {
                reason: ReasonCode::NotCached,
                message: format!(
                    "the install window is open and {missing} byte(s) are not cached; an \
                     install-from-cache-only task never downloads inside its window"
                ),
                retry: false,
            });
        }
        let mut plan = self.plan(record, &manifest, missing).await;
        if skip_relay {
            plan.retain(|(kind, _)| *kind != SourceKind::Relay);
        }
        let mut last_reason = ReasonCode::NoSourceLeft;
        for (kind, client) in plan {
            let Some(client) = client else {
                let reason = match kind {
                    SourceKind::Multicast => ReasonCode::MulticastUnavailable,
                    _ => ReasonCode::PeerUnavailable,
                };
                record.incident(
                    reason,
                    Some(kind),
                    format!(
                        "no {} source on this agent yet; trying the next",
                        kind.as_str()
                    ),
                );
                continue;
            };
            record.source = Some(kind);
            record.message = format!("downloading {name} {version} from the {}", kind.as_str());
            self.commit(record).await;
            match self.fetch_from(record, kind, client, &manifest).await {
                Ok(()) => return Ok(self.downloaded(record, &manifest).await),
                Err(Ok(e)) => {
                    last_reason = Self::fault_reason(kind, &e);
                    self.note_health(kind, false, None);
                    tracing::warn!(task = %record.task.id, source = kind.as_str(), "source failed: {e}");
                    record.incident(last_reason, Some(kind), e.to_string());
                }
                Err(Err(failure)) => return Err(failure),
            }
        }
        Err(Failure {
            reason: last_reason,
            message: "every planned source failed; see the incidents".into(),
            retry: true,
        })
    }

    async fn downloaded(
        self: &Arc<Self>,
        record: &mut TaskRecord,
        manifest: &Manifest,
    ) -> Manifest {
        record.state = TaskState::Downloaded;
        record.percent = 100;
        record.source = None;
        record.reason = None;
        record.content_ready = true;
        record.message = if record.task.precache_only {
            "downloaded and verified; kept in the cache (pre-cache task)".into()
        } else {
            "downloaded and verified".into()
        };
        self.commit(record).await;
        manifest.clone()
    }

    /// The transport plugin's plan, as clients in order; `None` for a
    /// source kind this agent cannot use yet (multicast, peers).
    async fn plan(
        &self,
        record: &mut TaskRecord,
        manifest: &Manifest,
        missing: u64,
    ) -> Vec<(SourceKind, Option<HubClient>)> {
        let relay = self.server_is_relay();
        let request = TransportRequest {
            package: manifest.name.to_string(),
            version: manifest.version.to_string(),
            size_bytes: manifest.total_size(),
            missing_bytes: missing,
            options: TaskOptions {
                // The task's word, else the settings'.
                multicast_allowed: record
                    .task
                    .multicast_choice()
                    .or(self.settings().multicast)
                    .unwrap_or(false),
                deadline: record.task.deadline.map(|d| d.max(0) as u64),
            },
            subnet_peers: 0,
            peers_with_content: 0,
            relay: relay.then(|| self.health_of(SourceKind::Relay)),
            hub: self.health_of(SourceKind::Hub),
            now: now().max(0) as u64,
        };
        let registry = self.registry.clone();
        let decided = tokio::task::spawn_blocking(move || registry.plan(&request)).await;
        let sources = match decided {
            Ok(Ok(decision)) => {
                if let Some(why) = &decision.fallback {
                    tracing::warn!("transport plan by the built-in default: {why}");
                }
                decision.value.sources
            }
            other => {
                tracing::error!("no transport plan ({other:?}); using server, then hub");
                Vec::new()
            }
        };
        let mut out = Vec::new();
        for planned in sources {
            let pace = |c: &HubClient| match planned.rate_cap_bps {
                // A cap from the policy is held by the source's own link.
                Some(bps) => c.clone().with_link(Arc::new(ferry_net::Link::new(
                    ferry_net::Rate::from_bits_per_second(Some(bps)),
                ))),
                None => c.clone(),
            };
            match planned.source {
                Source::Multicast => out.push((SourceKind::Multicast, None)),
                Source::Peer => out.push((SourceKind::Peer, None)),
                Source::Relay if relay => out.push((SourceKind::Relay, Some(pace(&self.server)))),
                Source::Relay => {}
                Source::Hub if relay => {
                    if let Some(hub) = &self.hub {
                        out.push((SourceKind::Hub, Some(pace(hub))));
                    }
                }
                Source::Hub => out.push((SourceKind::Hub, Some(pace(&self.server)))),
                Source::Url(u) => match url::Url::parse(&u) {
                    Ok(u) => out.push((SourceKind::Mirror, Some(pace(&self.server.with_base(u))))),
                    Err(e) => tracing::warn!("the plan names a malformed URL {u:?}: {e}"),
                },
            }
        }
        if out.iter().all(|(_, c)| c.is_none()) {
            for (kind, client) in self.metadata_sources(false) {
                out.push((kind, Some(client)));
            }
        }
        out
    }

    /// Fetches the chunks the cache lacks from one source. `Err(Ok(e))`:
    /// the source failed, try the next; `Err(Err(f))`: stop.
    async fn fetch_from(
        self: &Arc<Self>,
        record: &mut TaskRecord,
        kind: SourceKind,
        client: HubClient,
        manifest: &Manifest,
    ) -> Result<(), Result<TransferError, Failure>> {
        let client = client.sharing_pace().for_package(manifest.name.as_str());
        let total = manifest.total_size().max(1);
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let started = std::time::Instant::now();
        let fetch = ferry_transfer::fetch_objects(&client, &self.local, manifest, move |n| {
            counter.fetch_add(n, Ordering::Relaxed);
        });
        tokio::pin!(fetch);
        // Progress is reported every 2 s while bytes arrive, from this same
        // future: nothing outlives the fetch.
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        let mut last = 0;
        let fetched = loop {
            tokio::select! {
                fetched = &mut fetch => break fetched,
                _ = tick.tick() => {
                    let now = seen.load(Ordering::Relaxed);
                    if now != last {
                        last = now;
                        record.percent = ((now.min(total) * 100) / total) as u8;
                        self.commit(record).await;
                    }
                }
            }
        };
        match fetched {
            Ok(report) => {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let bps = (report.bytes_downloaded as f64 * 8.0 / secs) as u64;
                self.note_health(kind, true, Some(bps));
                let got = record.bytes.entry(kind).or_default();
                *got =
                    got.saturating_add(report.bytes_downloaded.saturating_add(report.bytes_delta));
                let local = report.bytes_reused.saturating_add(report.bytes_resumed);
                if local > 0 {
                    let held = record.bytes.entry(SourceKind::Local).or_default();
                    *held = held.saturating_add(local);
                }
                Ok(())
            }
            Err(e) if e.is_source_fault() => Err(Ok(e)),
            Err(e) => {
                let full = disk_full(&e);
                Err(Err(Failure::local(e, full)))
            }
        }
    }

    async fn install(
        self: &Arc<Self>,
        record: &mut TaskRecord,
        manifest: &Manifest,
    ) -> Result<(), Failure> {
        let Some(step) = manifest.install.clone() else {
            return Err(Failure {
                reason: ReasonCode::InstallerMissing,
                message: format!(
                    "{} {} names no install step; publish it with --install copy (or another installer)",
                    manifest.name, manifest.version
                ),
                retry: false,
            });
        };
        self.installing.store(true, Ordering::SeqCst);
        record.state = TaskState::Installing;
        record.percent = 0;
        record.reason = None;
        record.message = format!("installing with {}@{}", step.plugin, step.requirement);
        self.commit(record).await;
        let staged = self.layout.staging().join(&record.task.id);
        {
            // What an interrupted install left is staged again.
            let staged = staged.clone();
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&staged);
                match staged.parent() {
                    Some(parent) => std::fs::create_dir_all(parent),
                    None => Ok(()),
                }
            })
            .await
            .map_err(|e| Failure::local(e, false))?
            .map_err(|e| Failure::local(e, false))?;
        }
        ferry_transfer::materialize(&self.local, manifest, &staged)
            .await
            .map_err(|e| {
                let full = disk_full(&e);
                Failure::local(e, full)
            })?;
        let mut params = step.params.clone();
        for (key, value) in &record.task.params {
            match toml::Value::try_from(value) {
                Ok(v) => {
                    params.insert(key.clone(), v);
                }
                Err(e) => tracing::warn!("task parameter {key} is not TOML-able: {e}"),
            }
        }
        // A relative target lies under this agent's install root.
        if let Some(toml::Value::String(target)) = params.get("target")
            && !target.starts_with('/')
        {
            let at: PathBuf = self.config.install_root.join(target);
            params.insert(
                "target".into(),
                toml::Value::String(at.display().to_string()),
            );
        }
        let previous = self
            .installed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&manifest.name.to_string())
            .cloned();
        let files = manifest
            .files
            .iter()
            .filter(|f| f.symlink.is_none())
            .map(|f| StagedFile {
                path: f.path.to_string(),
                mode: f.mode,
                size: f.size,
            })
            .collect();
        let job = InstallJob {
            staged_dir: staged.clone(),
            request: InstallRequest {
                package: manifest.name.to_string(),
                version: manifest.version.to_string(),
                staged_dir: String::new(),
                files,
                params: toml::to_string(&params).unwrap_or_default(),
                previous_version: previous,
            },
            progress: None,
        };
        let registry = self.registry.clone();
        let requirement = step.requirement.clone();
        let plugin = step.plugin.clone();
        let result = tokio::task::spawn_blocking(move || {
            registry.install(&plugin, &requirement, InstallAction::Install, &job)
        })
        .await
        .map_err(|e| Failure::local(e, false))?;
        {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staged)).await;
        }
        match result {
            Ok(decision) => {
                let path = self.layout.installed();
                let snapshot = {
                    let mut installed = self.installed.lock().unwrap_or_else(|p| p.into_inner());
                    installed.insert(manifest.name.to_string(), manifest.version.to_string());
                    installed.clone()
                };
                tokio::task::spawn_blocking(move || save_installed(&path, &snapshot))
                    .await
                    .map_err(|e| Failure::local(e, false))?
                    .map_err(|e| Failure::local(e, false))?;
                record.state = TaskState::Installed;
                record.percent = 100;
                record.reason = None;
                record.message = format!(
                    "installed by {}: {}",
                    decision.plugin, decision.value.message
                );
                self.commit(record).await;
                Ok(())
            }
            Err(e @ PluginError::NotFound { .. }) => Err(Failure {
                reason: ReasonCode::InstallerMissing,
                message: e.to_string(),
                retry: false,
            }),
            Err(e) => Err(Failure {
                reason: ReasonCode::InstallerFailed,
                message: e.to_string(),
                retry: true,
            }),
        }
    }
}

/// Where a task stands with its not-before and its install window.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// It may install now, until `until` (when a window closes).
    Open { until: Option<i64> },
    /// It may not install before `opens`, for `reason` (not-before or
    /// window-closed).
    Closed { opens: i64, reason: ReasonCode },
}

impl Phase {
    /// The phase of `task` at `now`, in this machine's local time; a window
    /// that does not open again (before the deadline, or within a year)
    /// fails the task.
    fn of(
        task: &ferry_net::tasks::Task,
        window: Option<&InstallWindow>,
        now: i64,
    ) -> Result<Phase, Failure> {
        let local = |t: i64| {
            chrono::DateTime::from_timestamp(t, 0)
                .unwrap_or_default()
                .with_timezone(&chrono::Local)
        };
        let from = task.not_before.map_or(now, |nb| nb.max(now));
        let phase = match window.map(|w| w.state_at(&local(from))) {
            None if from > now => Phase::Closed {
                opens: from,
                reason: ReasonCode::NotBefore,
            },
            None => Phase::Open { until: None },
            Some(WindowState::Open { .. }) if from > now => Phase::Closed {
                opens: from,
                reason: ReasonCode::NotBefore,
            },
            Some(WindowState::Open { until }) => Phase::Open { until: Some(until) },
            Some(WindowState::Closed { opens }) => {
                let reason = if from > now {
                    ReasonCode::NotBefore
                } else {
                    ReasonCode::WindowClosed
                };
                let Some(opens) = opens else {
                    return Err(Failure {
                        reason: ReasonCode::WindowClosed,
                        message: format!(
                            "the install window {} does not open within a year",
                            window.map(|w| w.as_str()).unwrap_or_default()
                        ),
                        retry: false,
                    });
                };
                Phase::Closed { opens, reason }
            }
        };
        if let (Phase::Closed { opens, .. }, Some(deadline)) = (phase, task.deadline)
            && opens >= deadline
        {
            return Err(Failure {
                reason: ReasonCode::WindowClosed,
                message: "the task may not install before its deadline (its not-before and \
                          install window open too late)"
                    .into(),
                retry: false,
            });
        }
        Ok(phase)
    }
}
