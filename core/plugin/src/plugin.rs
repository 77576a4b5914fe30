//! One loaded plugin: its manifest, its compiled component, and calls into
//! it with the time and memory limits of its manifest, within the node's caps.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi::{FsPerms, WasiCtx};

use crate::bindings::{election, installer, schedule, transport};
use crate::budget::DiskBudget;
use crate::contract::{self, Interfaces};
use crate::engine::{Abandoned, CONCURRENT_CALLS, PluginEngine, TICK};
use crate::error::PluginError;
use crate::kind::Kind;
use crate::manifest::{EffectiveLimits, Manifest};
use crate::outward;
use crate::settings::{Grant, LimitCaps, UrlGrant};
use crate::state::{HostState, InstallerGrants, LogLine, ProgressSink};
use crate::text::{MAX_ERROR_TEXT, MAX_SHORT_TEXT, plugin_text};

pub use crate::bindings::election::exports::ferry::plugin::election::{Candidate, ElectionRequest};
pub use crate::bindings::installer::exports::ferry::plugin::install::{
    InstallReport, InstallRequest, StagedFile, VerifyReport,
};
pub use crate::bindings::schedule::exports::ferry::plugin::schedule::{
    LastSync, ScheduleDecision, ScheduleRequest, SyncOutcome,
};
pub use crate::bindings::transport::exports::ferry::plugin::transport::{
    PlannedSource, Source, SourceHealth, TaskOptions, TransportPlan, TransportRequest,
};

/// Where the staged package appears inside an installer.
pub const STAGED_DIR: &str = "/ferry/staged";
/// Idle instances kept per policy plugin for reuse.
const MAX_IDLE: usize = 8;
/// Largest instance (its linear memory) kept idle for reuse: at most
/// `MAX_IDLE` x 16 MiB per plugin.
const MAX_IDLE_MEMORY: usize = 16 << 20;
/// How much longer than its time limit a call waiting inside the host is
/// given before it is abandoned.
const HOST_WAIT_GRACE: Duration = Duration::from_millis(200);
/// The most data the host takes from a plugin in one call.
const MAX_HOSTCALL_BYTES: usize = 16 * 1024 * 1024;

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Embedded in the ferry binary.
    Builtin,
    /// Loaded from this directory.
    Directory(PathBuf),
}

/// The installer actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallAction {
    /// Put the package in place.
    Install,
    /// Remove it.
    Uninstall,
}

/// A loaded plugin, ready to call. Calls may run concurrently.
pub struct Plugin {
    manifest: Manifest,
    origin: Origin,
    sha256: String,
    interfaces: Interfaces,
    config_text: Arc<str>,
    grant: Grant,
    url_grants: Vec<UrlGrant>,
    limits: EffectiveLimits,
    engine: PluginEngine,
    pre: Pre,
    idle: Mutex<Vec<PolicyInstance>>,
    capture_logs: bool,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("label", &self.label())
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

enum Pre {
    Transport(transport::TransportPolicyPre<HostState>),
    Schedule(schedule::SyncSchedulePre<HostState>),
    Election(election::ElectionPolicyPre<HostState>),
    Installer(installer::InstallerPre<HostState>),
}

enum Bound {
    Transport(transport::TransportPolicy),
    Schedule(schedule::SyncSchedule),
    Election(election::ElectionPolicy),
}

struct PolicyInstance {
    store: Store<HostState>,
    bound: Bound,
}

/// The answer of a call and the log lines the plugin wrote during it (when
/// captured, see [`Plugin::capture_logs`]).
#[derive(Debug)]
pub struct Answer<T> {
    /// What the plugin returned.
    pub value: T,
    /// What it logged.
    pub logs: Vec<LogLine>,
}

/// A package staged for an installer.
#[derive(Clone)]
pub struct InstallJob {
    /// The directory holding the verified files, on the host.
    pub staged_dir: PathBuf,
    /// What the plugin is told (its `staged-dir` is replaced by
    /// [`STAGED_DIR`]).
    pub request: InstallRequest,
    /// Receives progress reports.
    pub progress: Option<ProgressSink>,
}

impl Plugin {
    /// Loads a plugin from its manifest text and component bytes. `config`
    /// is the node's override of the manifest's `[config]`, `grant` what the
    /// node grants it.
    pub fn load(
        engine: &PluginEngine,
        manifest: Manifest,
        origin: Origin,
        wasm: &[u8],
        config: Option<&toml::Table>,
        grant: Option<&Grant>,
    ) -> Result<Plugin, PluginError> {
        let name = manifest.name.clone();
        let component = engine.compile(&name, wasm)?;
        let interfaces = contract::interfaces(engine.engine(), &component);
        contract::check(&name, manifest.kind, &interfaces)?;
        let pre = link(engine, &name, manifest.kind, &component)?;
        let mut merged = manifest.config.clone();
        if let Some(config) = config {
            for (key, value) in config {
                merged.insert(key.clone(), value.clone());
            }
        }
        let config_text: Arc<str> = toml::to_string(&merged)
            .map_err(|e| PluginError::Manifest {
                path: name.clone(),
                reason: format!("configuration cannot be written as TOML: {e}"),
            })?
            .into();
        let grant = effective_grant(&manifest, grant.cloned().unwrap_or_default());
        check_command_grants(&grant).map_err(|reason| PluginError::Grant {
            plugin: name.clone(),
            reason,
        })?;
        let url_grants = grant
            .urls
            .iter()
            .map(|u| UrlGrant::parse(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| PluginError::Grant {
                plugin: name.clone(),
                reason,
            })?;
        let limits = EffectiveLimits::new(&manifest.limits, &LimitCaps::default_for(manifest.kind));
        Ok(Plugin {
            url_grants,
            limits,
            sha256: hex::encode(Sha256::digest(wasm)),
            manifest,
            origin,
            interfaces,
            config_text,
            grant,
            engine: engine.clone(),
            pre,
            idle: Mutex::new(Vec::new()),
            capture_logs: false,
        })
    }

    /// Applies the node's caps for this plugin's kind (without this, the
    /// kind's defaults apply): a plugin gets what its manifest asks for,
    /// never more than the cap.
    pub fn with_caps(mut self, caps: &LimitCaps) -> Plugin {
        self.limits = EffectiveLimits::new(&self.manifest.limits, caps);
        self.clear_instances();
        self
    }

    /// The limits calls run with, and who set each.
    pub fn limits(&self) -> &EffectiveLimits {
        &self.limits
    }

    /// Keeps what the plugin logs in each [`Answer`] (it goes to `tracing`
    /// either way).
    pub fn capture_logs(mut self, capture: bool) -> Plugin {
        self.capture_logs = capture;
        self
    }

    /// Drops the idle instances kept for reuse, so the next policy call
    /// instantiates afresh (benchmarks measure instantiation with it).
    pub fn clear_instances(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// The plugin's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Where it came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// SHA-256 of its component, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// What it imports and exports.
    pub fn interfaces(&self) -> &Interfaces {
        &self.interfaces
    }

    /// The configuration it sees, TOML text.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    /// What it was granted, bounded by what it asked for.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Decides a transport plan.
    pub fn plan(&self, request: &TransportRequest) -> Result<Answer<TransportPlan>, PluginError> {
        let answer = self.call_policy("plan", async |store, bound| match bound {
            Bound::Transport(b) => b.ferry_plugin_transport().call_plan(store, request).await,
            _ => Ok(Err(wrong_kind())),
        })?;
        let mut answer = answer;
        check_plan(self, &mut answer.value)?;
        Ok(answer)
    }

    /// Decides the next sync.
    pub fn schedule(
        &self,
        request: &ScheduleRequest,
    ) -> Result<Answer<ScheduleDecision>, PluginError> {
        let answer = self.call_policy("decide", async |store, bound| match bound {
            Bound::Schedule(b) => b.ferry_plugin_schedule().call_decide(store, request).await,
            _ => Ok(Err(wrong_kind())),
        })?;
        check_schedule(self, request, &answer.value)?;
        Ok(answer)
    }

    /// Elects a representative.
    pub fn elect(&self, request: &ElectionRequest) -> Result<Answer<String>, PluginError> {
        let answer = self.call_policy("elect", async |store, bound| match bound {
            Bound::Election(b) => b.ferry_plugin_election().call_elect(store, request).await,
            _ => Ok(Err(wrong_kind())),
        })?;
        if !request.volunteers.iter().any(|c| c.id == answer.value) {
            return Err(PluginError::Nonsense {
                plugin: self.label(),
                call: "elect",
                reason: format!(
                    "the winner \"{}\" is not among the volunteers",
                    plugin_text(&answer.value, MAX_SHORT_TEXT)
                ),
            });
        }
        Ok(answer)
    }

    /// Installs or uninstalls a staged package.
    pub fn install(
        &self,
        action: InstallAction,
        job: &InstallJob,
    ) -> Result<Answer<InstallReport>, PluginError> {
        let call = match action {
            InstallAction::Install => "install",
            InstallAction::Uninstall => "uninstall",
        };
        self.call_installer(call, job, async |store, bindings, request| {
            let guest = bindings.ferry_plugin_install();
            match action {
                InstallAction::Install => guest.call_install(store, request).await,
                InstallAction::Uninstall => guest.call_uninstall(store, request).await,
            }
        })
    }

    /// Checks what an install put in place.
    pub fn verify(&self, job: &InstallJob) -> Result<Answer<VerifyReport>, PluginError> {
        self.call_installer("verify", job, async |store, bindings, request| {
            bindings
                .ferry_plugin_install()
                .call_verify(store, request)
                .await
        })
    }

    /// Runs a policy call on a reused instance (or a new one), within the
    /// plugin's time budget. A trapped or abandoned instance is dropped,
    /// never reused.
    fn call_policy<T>(
        &self,
        call: &'static str,
        f: impl AsyncFnOnce(&mut Store<HostState>, &Bound) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<Answer<T>, PluginError> {
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let waited = self.engine.run_within(self.wait_limit(), async {
            let mut instance = match reused {
                Some(instance) => instance,
                None => self.instantiate_policy(call).await?,
            };
            instance.store.set_epoch_deadline(self.ticks());
            instance.store.data_mut().begin_call();
            let outcome = f(&mut instance.store, &instance.bound).await;
            instance.store.data_mut().end_call();
            let logs = std::mem::take(&mut instance.store.data_mut().logs);
            Ok::<_, PluginError>((instance, outcome, logs))
        });
        let (instance, outcome, logs) = waited.map_err(|why| self.abandoned(call, why))??;
        match outcome {
            Ok(result) => {
                // Kept for reuse only while small: a plugin that grew its
                // memory gives it back rather than holding it idle.
                let memory = instance.store.data().limiter.used_bytes();
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < MAX_IDLE
                    && memory <= MAX_IDLE_MEMORY
                {
                    idle.push(instance);
                }
                match result {
                    Ok(value) => Ok(Answer { value, logs }),
                    Err(reason) => Err(self.failed(
                        call,
                        format!(
                            "returned an error: {}{}",
                            plugin_text(&reason, MAX_ERROR_TEXT),
                            log_tail(&logs)
                        ),
                    )),
                }
            }
            Err(trap) => Err(self.with_logs(self.trapped(call, &instance.store, trap), &logs)),
        }
    }

    async fn instantiate_policy(&self, call: &'static str) -> Result<PolicyInstance, PluginError> {
        let mut wasi = WasiCtx::builder();
        self.allow_hosts(&mut wasi);
        let mut store = self.store(wasi.build(), self.capture_logs);
        store.set_epoch_deadline(self.ticks());
        let bound = match &self.pre {
            Pre::Transport(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(Bound::Transport),
            Pre::Schedule(pre) => pre.instantiate_async(&mut store).await.map(Bound::Schedule),
            Pre::Election(pre) => pre.instantiate_async(&mut store).await.map(Bound::Election),
            Pre::Installer(_) => {
                return Err(self.failed(call, "an installer has no policy calls".into()));
            }
        };
        match bound {
            Ok(bound) => Ok(PolicyInstance { store, bound }),
            Err(trap) => Err(self.trapped(call, &store, trap)),
        }
    }

    fn call_installer<T>(
        &self,
        call: &'static str,
        job: &InstallJob,
        f: impl AsyncFnOnce(
            &mut Store<HostState>,
            &installer::Installer,
            &InstallRequest,
        ) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<Answer<T>, PluginError> {
        let Pre::Installer(pre) = &self.pre else {
            return Err(self.failed(
                call,
                format!("a {} plugin cannot install", self.manifest.kind),
            ));
        };
        let mut wasi = WasiCtx::builder();
        wasi.preopened_dir(&job.staged_dir, STAGED_DIR, FsPerms::ReadOnly)
            .map_err(|e| {
                self.failed(
                    call,
                    format!(
                        "cannot open the staged directory {}: {e}",
                        job.staged_dir.display()
                    ),
                )
            })?;
        for dir in &self.grant.directories {
            let guest = dir.to_string_lossy();
            wasi.preopened_dir(dir, guest.as_ref(), FsPerms::ReadWrite)
                .map_err(|e| {
                    self.failed(
                        call,
                        format!("cannot open granted directory {}: {e}", dir.display()),
                    )
                })?;
        }
        self.allow_hosts(&mut wasi);
        let mut store = self.store(wasi.build(), self.capture_logs);
        let timeout = Duration::from_millis(self.limits.timeout_ms);
        let outward_before = outward::before_call(&self.grant.directories);
        let budget = Arc::new(DiskBudget::start(
            &self.grant.directories,
            self.limits.write_mib,
            self.limits.write_files,
        ));
        store.data_mut().installer = Some(InstallerGrants {
            directories: self.grant.directories.clone(),
            commands: self.grant.commands.clone(),
            deadline: Instant::now() + timeout,
            progress: job.progress.clone(),
            budget: budget.clone(),
        });
        store.set_epoch_deadline(self.ticks());
        let mut request = job.request.clone();
        request.staged_dir = STAGED_DIR.to_string();
        let waited = self.engine.run_within(self.wait_limit(), async {
            let installing = async {
                let bindings = match pre.instantiate_async(&mut store).await {
                    Ok(b) => b,
                    Err(trap) => return Err(self.trapped(call, &store, trap)),
                };
                store.data_mut().begin_call();
                let outcome = f(&mut store, &bindings, &request).await;
                store.data_mut().end_call();
                let logs = std::mem::take(&mut store.data_mut().logs);
                Ok((outcome, logs))
            };
            tokio::select! {
                done = installing => done,
                over = budget.watch() => Err(self.failed(call, format!("{over}; it was stopped"))),
            }
        });
        let removed = outward::remove_new(&self.grant.directories, &outward_before);
        // Over budget however the call ended (a command it ran may have
        // written past it): the call failed.
        if let Some(over) = budget.exceeded() {
            return Err(self.failed(call, format!("{over}; it was stopped")));
        }
        let (outcome, logs) = waited.map_err(|why| self.abandoned(call, why))??;
        match removed {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => {
                return Err(self.failed(
                    call,
                    format!(
                        "left symlinks pointing outside its granted directories (removed): {}",
                        plugin_text(&removed.join(", "), MAX_ERROR_TEXT)
                    ),
                ));
            }
            Err(reason) => return Err(self.failed(call, plugin_text(&reason, MAX_ERROR_TEXT))),
        }
        match outcome {
            Ok(Ok(value)) => Ok(Answer { value, logs }),
            Ok(Err(reason)) => Err(self.failed(
                call,
                format!(
                    "returned an error: {}{}",
                    plugin_text(&reason, MAX_ERROR_TEXT),
                    log_tail(&logs)
                ),
            )),
            Err(trap) => Err(self.with_logs(self.trapped(call, &store, trap), &logs)),
        }
    }

    /// How long a call may take before it is abandoned: its time limit,
    /// and a little more so a running plugin is stopped by its epoch
    /// deadline (with a clearer reason) before this.
    fn wait_limit(&self) -> Duration {
        Duration::from_millis(self.limits.timeout_ms) + HOST_WAIT_GRACE
    }

    /// The error of a call given up at its deadline: it waited inside the
    /// host (where the epoch deadline cannot stop it), or for a free slot.
    fn abandoned(&self, call: &'static str, why: Abandoned) -> PluginError {
        let reason = match why {
            Abandoned::TimedOut => format!(
                "did not return within its time limit of {} ms (set by {}): it was waiting \
                 inside the host (on a file, pipe or socket) and the call was abandoned",
                self.limits.timeout_ms, self.limits.timeout_set_by
            ),
            Abandoned::Busy => format!(
                "not started within its time limit of {} ms: the node was already running \
                 {CONCURRENT_CALLS} plugin calls (too many calls at once)",
                self.limits.timeout_ms
            ),
        };
        self.failed(call, reason)
    }

    /// Adds the last captured log lines to a failed call's reason.
    fn with_logs(&self, err: PluginError, logs: &[LogLine]) -> PluginError {
        match err {
            PluginError::Call {
                plugin,
                call,
                reason,
            } => PluginError::Call {
                plugin,
                call,
                reason: format!("{reason}{}", log_tail(logs)),
            },
            other => other,
        }
    }

    fn store(&self, wasi: WasiCtx, capture_logs: bool) -> Store<HostState> {
        let state = HostState::new(
            self.manifest.name.as_str().into(),
            self.config_text.clone(),
            wasi,
            self.limits.memory_mib as usize * 1024 * 1024,
            capture_logs,
            (self.limits.log_lines, self.limits.progress_events),
        );
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // What the host copies out of the plugin per call (strings, lists)
        // is bounded by the plugin's own memory, not wasmtime's 128 MiB.
        store.set_hostcall_fuel(
            (self.limits.memory_mib as usize * 1024 * 1024).min(MAX_HOSTCALL_BYTES),
        );
        store
    }

    fn allow_hosts(&self, wasi: &mut wasmtime_wasi::WasiCtxBuilder) {
        if self.grant.hosts.is_empty() {
            return;
        }
        let allowed: Arc<Vec<std::net::SocketAddr>> = Arc::new(
            self.grant
                .hosts
                .iter()
                .filter_map(|h| h.parse().ok())
                .collect(),
        );
        wasi.allow_tcp(true).socket_addr_check(move |addr, use_| {
            use wasmtime_wasi::sockets::SocketAddrUse;
            let ok = match use_ {
                SocketAddrUse::TcpConnect => allowed.contains(&addr),
                // A connect first binds to the unspecified address, port 0.
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            };
            Box::pin(async move { ok })
        });
    }

    /// The epoch ticks a call may run: its timeout rounded up, plus one so a
    /// tick landing right after the deadline is set does not cut it short.
    fn ticks(&self) -> u64 {
        self.limits.timeout_ms.div_ceil(TICK.as_millis() as u64) + 1
    }

    fn failed(&self, call: &'static str, reason: String) -> PluginError {
        PluginError::Call {
            plugin: self.label(),
            call,
            reason,
        }
    }

    fn trapped(
        &self,
        call: &'static str,
        store: &Store<HostState>,
        trap: wasmtime::Error,
    ) -> PluginError {
        let reason = if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            format!(
                "ran past its time limit of {} ms (set by {}) and was stopped",
                self.limits.timeout_ms, self.limits.timeout_set_by
            )
        } else if store.data().limiter.hit {
            format!(
                "hit its memory limit of {} MiB (set by {}) and was stopped",
                self.limits.memory_mib, self.limits.memory_set_by
            )
        } else if format!("{trap:#}").contains("maximum concurrent") {
            "not started: the node's pool of plugin instances is exhausted (too many calls at \
             once)"
                .to_string()
        } else {
            format!(
                "trapped: {}",
                plugin_text(&format!("{trap:#}"), MAX_ERROR_TEXT)
            )
        };
        self.failed(call, reason)
    }

    /// `name@version (kind, origin)` for messages.
    pub fn label(&self) -> String {
        let origin = match &self.origin {
            Origin::Builtin => "built-in".to_string(),
            Origin::Directory(dir) => dir.display().to_string(),
        };
        format!(
            "{} {}@{} ({origin})",
            self.manifest.kind, self.manifest.name, self.manifest.version
        )
    }
}

/// The last lines a failed call logged (when captured), to say what it was
/// doing.
fn log_tail(logs: &[LogLine]) -> String {
    const LINES: usize = 5;
    let start = logs.len().saturating_sub(LINES);
    logs[start..]
        .iter()
        .map(|l| {
            format!(
                "\n  plugin log: {}: {}",
                crate::level_name(l.level),
                l.message
            )
        })
        .collect()
}

/// What a policy call on a plugin of another kind returns.
fn wrong_kind() -> String {
    "this plugin is of another kind".to_string()
}

fn link(
    engine: &PluginEngine,
    name: &str,
    kind: Kind,
    component: &Component,
) -> Result<Pre, PluginError> {
    let invalid = |e: wasmtime::Error| PluginError::Invalid {
        plugin: name.to_string(),
        reason: format!("its imports cannot be satisfied: {e:#}"),
    };
    let mut linker: Linker<HostState> = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(invalid)?;
    forbid_timers(&mut linker).map_err(invalid)?;
    use wasmtime::component::HasSelf;
    let pre = match kind {
        Kind::Transport => {
            transport::TransportPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(invalid)?;
            Pre::Transport(
                transport::TransportPolicyPre::new(
                    linker.instantiate_pre(component).map_err(invalid)?,
                )
                .map_err(invalid)?,
            )
        }
        Kind::Schedule => {
            schedule::SyncSchedule::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(invalid)?;
            Pre::Schedule(
                schedule::SyncSchedulePre::new(linker.instantiate_pre(component).map_err(invalid)?)
                    .map_err(invalid)?,
            )
        }
        Kind::Election => {
            election::ElectionPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(invalid)?;
            Pre::Election(
                election::ElectionPolicyPre::new(
                    linker.instantiate_pre(component).map_err(invalid)?,
                )
                .map_err(invalid)?,
            )
        }
        Kind::Installer => {
            installer::Installer::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(invalid)?;
            Pre::Installer(
                installer::InstallerPre::new(linker.instantiate_pre(component).map_err(invalid)?)
                    .map_err(invalid)?,
            )
        }
    };
    Ok(pre)
}

/// Replaces WASI's timers with ones that trap: decisions have no reason to
/// sleep, and installers wait for things through `run-command`, which has a
/// timeout. (A call waiting in the host anyway is abandoned at its deadline.)
fn forbid_timers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock.func_new(name, |_, _, _, _| {
            Err(wasmtime::format_err!(
                "plugins may not sleep or wait on timers (Ferry gives each call a deadline)"
            ))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// What the plugin gets: what it asked for in its manifest and the node
/// granted in its configuration.
fn effective_grant(manifest: &Manifest, granted: Grant) -> Grant {
    let asked = &manifest.permissions;
    Grant {
        directories: if asked.directories {
            granted.directories
        } else {
            Vec::new()
        },
        commands: granted
            .commands
            .into_iter()
            .filter(|c| {
                let file_name = Path::new(c).file_name().and_then(|n| n.to_str());
                asked
                    .commands
                    .iter()
                    .any(|a| a == "*" || a == c || Some(a.as_str()) == file_name)
            })
            .collect(),
        hosts: granted
            .hosts
            .into_iter()
            .filter(|h| asked.hosts.contains(h))
            .collect(),
        // Mirrors are the node's to name; a plugin only chooses among them.
        urls: granted.urls,
    }
}

/// Refuses a grant that would let an installer run code of its own choosing:
/// commands must be absolute paths, and neither a granted command nor any
/// directory on the commands' search path may lie inside a directory the
/// plugin may write (it could replace the program, or plant one that a
/// granted program runs by name, and it would run as the node's user).
fn check_command_grants(grant: &Grant) -> Result<(), String> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    // Each granted directory as written and as resolved.
    let writable: Vec<PathBuf> = grant
        .directories
        .iter()
        .flat_map(|d| [d.clone(), real(d)])
        .collect();
    // A path is writable through a grant if it, or any directory on the way
    // to it (a symlink the plugin could swap), lies in a granted directory,
    // as written or as resolved.
    let inside = |p: &Path| {
        p.ancestors()
            .flat_map(|a| [a.to_path_buf(), real(a)])
            .find_map(|a| writable.iter().find(|d| a.starts_with(d)).cloned())
    };
    for command in &grant.commands {
        let path = Path::new(command);
        if !path.is_absolute() {
            let found = crate::state::COMMAND_PATH
                .split(':')
                .map(|dir| Path::new(dir).join(command))
                .find(|p| p.is_file());
            let hint = match found {
                Some(p) => format!("write {:?}", p.display().to_string()),
                None => "write its absolute path".to_string(),
            };
            return Err(format!(
                "commands are granted by absolute path, not by name: for {command:?}, {hint}"
            ));
        }
        if let Some(dir) = inside(path).or_else(|| inside(&real(path))) {
            return Err(format!(
                "the command {command} lies inside the granted directory {} (as written or \
                 through a symlink), so the plugin could replace it with a program of its own; \
                 grant a directory that holds no granted command",
                dir.display()
            ));
        }
    }
    if !grant.commands.is_empty() {
        for dir in crate::state::COMMAND_PATH.split(':') {
            if let Some(granted) = inside(Path::new(dir)) {
                return Err(format!(
                    "{dir}, where commands find the programs they run, lies inside the granted \
                     directory {}, so the plugin could plant a program a granted command runs; \
                     grant narrower directories",
                    granted.display()
                ));
            }
        }
    }
    Ok(())
}

/// Checks a plan; drops URL sources the node did not grant (bytes from any
/// source are verified, but a plugin must not make agents fetch from
/// wherever it likes), logging each.
fn check_plan(plugin: &Plugin, plan: &mut TransportPlan) -> Result<(), PluginError> {
    let nonsense = |reason: String| PluginError::Nonsense {
        plugin: plugin.label(),
        call: "plan",
        reason,
    };
    for source in &plan.sources {
        if source.rate_cap_bps == Some(0) {
            return Err(nonsense("a rate cap of 0 bit/s would never finish".into()));
        }
        if let Source::Url(url) = &source.source
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(nonsense(format!(
                "\"{}\" is not an http(s) URL",
                plugin_text(url, MAX_SHORT_TEXT)
            )));
        }
    }
    plan.sources.retain(|source| match &source.source {
        Source::Url(url) => {
            let granted = plugin.url_grants.iter().any(|g| g.allows(url));
            if !granted {
                tracing::warn!(
                    plugin = %plugin.label(),
                    url = plugin_text(url, MAX_SHORT_TEXT),
                    "URL source left out of the plan: not granted (list the mirrors a transport \
                     plugin may name under [plugins.grants.NAME] urls)"
                );
            }
            granted
        }
        _ => true,
    });
    if plan.sources.is_empty() {
        return Err(nonsense("the plan has no usable sources".into()));
    }
    Ok(())
}

/// The furthest ahead a schedule may put the next sync or the cap's end.
const MAX_SCHEDULE_AHEAD_SECS: u64 = 366 * 24 * 3600;

fn check_schedule(
    plugin: &Plugin,
    request: &ScheduleRequest,
    d: &ScheduleDecision,
) -> Result<(), PluginError> {
    let nonsense = |reason: String| PluginError::Nonsense {
        plugin: plugin.label(),
        call: "decide",
        reason,
    };
    let horizon = request.now.saturating_add(MAX_SCHEDULE_AHEAD_SECS);
    if d.cap_until <= request.now {
        return Err(nonsense(format!(
            "cap-until {} is not after now ({}); the node would ask again at once",
            d.cap_until, request.now
        )));
    }
    if d.next_sync > horizon || d.cap_until > horizon {
        return Err(nonsense(
            "next-sync or cap-until is more than a year ahead".into(),
        ));
    }
    Ok(())
}
