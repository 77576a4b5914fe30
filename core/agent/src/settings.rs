//! Settings set centrally, as this agent holds and applies them: the hub's
//! signed settings document, verified at check-in, kept in `settings.json`
//! so they hold across restarts and while the server is away, resolved for
//! this agent (its id, site and inventory), and applied without a restart:
//! the check-in wait, the multicast defaults, the policy plugins, and the
//! plugins delivered as Ferry packages.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_content::PackageName;
use ferry_net::settings::{AgentSettings, Resolved, Settings};
use ferry_net::tasks::Inventory;
use ferry_plugin::Kind;
use serde::{Deserialize, Serialize};

use crate::AgentError;
use crate::execute::Agent;

/// What `settings.json` holds: the newest signed settings that verified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct HeldSettings {
    /// The document's version.
    pub version: u64,
    /// Unix time it expires.
    pub expires_at: i64,
    /// The signed document as received.
    pub document: String,
}

impl HeldSettings {
    /// What `path` holds; nothing if there is no file yet.
    pub(crate) fn load(path: &Path) -> Result<Option<HeldSettings>, AgentError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                AgentError::DataDir(format!(
                    "{} is damaged ({e}); remove it and the agent takes the settings again at \
                     its next check-in",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::io(path, e)),
        }
    }

    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        ferry_store::durable::write_file(path, &bytes, 0o644)
    }

    /// The settings body. The document verified when it was kept.
    fn body(&self) -> Option<Settings> {
        let doc = ferry_trust::documents::peek(self.document.as_bytes()).ok()?;
        serde_json::from_value(doc.body).ok()
    }
}

/// The settings in force on this agent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Central {
    held: Option<HeldSettings>,
    body: Settings,
    inventory: Option<Inventory>,
}

impl Central {
    pub(crate) fn new(held: Option<HeldSettings>) -> Central {
        let body = held
            .as_ref()
            .and_then(HeldSettings::body)
            .unwrap_or_default();
        Central {
            held,
            body,
            inventory: None,
        }
    }

    /// The version held (0: none).
    pub(crate) fn version(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.version)
    }

    /// The document held, as received.
    pub(crate) fn document(&self) -> Option<&str> {
        self.held.as_ref().map(|h| h.document.as_str())
    }

    pub(crate) fn replace(&mut self, held: HeldSettings, body: Settings) {
        self.held = Some(held);
        self.body = body;
    }

    pub(crate) fn set_inventory(&mut self, inventory: Inventory) {
        self.inventory = Some(inventory);
    }

    /// This agent's values, each with the scope that set it; none once the
    /// document expired (a server withholding newer settings cannot keep
    /// old ones in force past their expiry: `agent.toml` applies then).
    pub(crate) fn resolve(&self, id: &str, site: Option<&str>) -> BTreeMap<String, Resolved> {
        match &self.held {
            Some(h) if h.expires_at > chrono::Utc::now().timestamp() => {
                self.body.resolve(id, site, self.inventory.as_ref())
            }
            _ => BTreeMap::new(),
        }
    }

    /// When the held settings expire, if any are held.
    pub(crate) fn expires_at(&self) -> Option<i64> {
        self.held.as_ref().map(|h| h.expires_at)
    }

    /// Whether settings are held but expired.
    pub(crate) fn expired(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.expires_at <= chrono::Utc::now().timestamp())
    }
}

/// What `plugin-packages.json` holds: the version of each plugin package
/// laid out in the plugin packages directory.
type LaidOut = BTreeMap<String, String>;

fn load_laid_out(path: &Path) -> LaidOut {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

impl Agent {
    /// Keeps the cache within the `cache-size` setting: files no open task
    /// needs are removed, oldest first. Runs between tasks, as a fetch may
    /// read an older file's chunks.
    pub(crate) async fn trim_cache(self: &Arc<Self>) {
        let Some(quota) = self.settings().cache_size else {
            return;
        };
        let _content = self.content_lock.lock().await;
        let state = self.layout.plugin_packages_state();
        let laid = tokio::task::spawn_blocking(move || load_laid_out(&state))
            .await
            .unwrap_or_default();
        // What open tasks need, and the plugin packages laid out (kept so
        // a package is not fetched again).
        let mut keep: HashSet<String> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| !r.state.is_final())
            .filter_map(|r| {
                let name = PackageName::new(&r.task.package).ok()?;
                let version = semver::Version::parse(&r.task.version).ok()?;
                Some(ferry_content::target_name(&name, &version))
            })
            .collect();
        keep.extend(laid.iter().filter_map(|(name, version)| {
            let name = PackageName::new(name).ok()?;
            let version = semver::Version::parse(version).ok()?;
            Some(ferry_content::target_name(&name, &version))
        }));
        let local = self.local.clone();
        match tokio::task::spawn_blocking(move || local.trim(quota, &keep)).await {
            Ok(Ok(trimmed)) => {
                if trimmed.files > 0 {
                    tracing::info!(
                        files = trimmed.files,
                        bytes = trimmed.bytes,
                        held = trimmed.held,
                        quota,
                        "cache trimmed to its cache-size"
                    );
                }
                if trimmed.held > quota {
                    tracing::warn!(
                        held = trimmed.held,
                        quota,
                        "open tasks need more than cache-size; the cache stays above it until they end"
                    );
                }
            }
            Ok(Err(e)) => tracing::warn!("cannot trim the cache: {e}"),
            Err(e) => tracing::warn!("trimming the cache failed: {e}"),
        }
    }

    /// The settings that apply to this agent now, typed.
    pub(crate) fn settings(&self) -> AgentSettings {
        AgentSettings::from_resolved(&self.resolved_settings())
    }

    /// The settings that apply to this agent now, with their scopes.
    pub(crate) fn resolved_settings(&self) -> BTreeMap<String, Resolved> {
        self.central
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resolve(&self.creds.info.id, self.creds.info.site.as_deref())
    }

    /// Takes verified settings `body` of `version`: kept on disk first, then
    /// in force. An older version than held is refused as a replay;
    /// `Err(None)`: they could not be kept (retried at the next check-in).
    pub(crate) async fn take_settings(
        self: &Arc<Self>,
        held: HeldSettings,
        body: Settings,
    ) -> Result<bool, Option<String>> {
        let current = self
            .central
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .version();
        if held.version == current {
            return Ok(false);
        }
        if held.version < current {
            return Err(Some(format!(
                "settings came in an older version ({} < {current}): a replay, or the hub \
                 was restored from an older backup (then set any value with `ferry settings \
                 set` until its version passes {current})",
                held.version
            )));
        }
        let path = self.layout.settings();
        let saving = held.clone();
        let saved = tokio::task::spawn_blocking(move || saving.save(&path)).await;
        if let Err(e) = saved
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            tracing::error!("cannot keep the settings ({e}); they are taken at the next check-in");
            return Err(None);
        }
        tracing::info!(version = held.version, "settings taken");
        self.central
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(held, body);
        self.settings_changed.notify_one();
        Ok(true)
    }

    /// Lays out the plugin packages the settings name, then makes the
    /// policies they choose current. Returns notes for the status: what
    /// failed and why.
    async fn apply_settings(self: &Arc<Self>) -> Vec<String> {
        let settings = self.settings();
        let mut notes = settings.ignored.clone();
        notes.extend(self.apply_held_settings(&settings).await);
        notes.extend(self.lay_out_plugin_packages(&settings).await);
        // Loading a built-in compiles it: off the async threads.
        let registry = self.registry.clone();
        let chosen = [
            (Kind::Transport, settings.transport.clone()),
            (Kind::Election, settings.election.clone()),
        ];
        let missing = tokio::task::spawn_blocking(move || {
            chosen
                .into_iter()
                .filter_map(|(kind, name)| {
                    let name = name?;
                    let e = registry.get(kind, &name).err()?;
                    Some(format!(
                        "{kind} plugin {name} is not available ({e}); the built-in default decides"
                    ))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        notes.extend(missing);
        notes
    }

    /// Applies what needs no fetch, the grants and the policy choices:
    /// before the agent's first task, and before plugin packages are laid
    /// out at every change.
    pub(crate) async fn apply_held_settings(
        self: &Arc<Self>,
        settings: &AgentSettings,
    ) -> Vec<String> {
        let mut notes = self.apply_grants(settings).await;
        for (kind, name) in [
            (Kind::Transport, &settings.transport),
            (Kind::Election, &settings.election),
        ] {
            if let Err(e) = self.registry.choose(kind, name.as_deref()) {
                notes.push(e.to_string());
            }
        }
        notes
    }

    /// Grants plugins what the settings say, as agent.toml's
    /// `settings-grants` allows; notes an installer that does not load
    /// with its new grants (its installs fail until that is fixed).
    async fn apply_grants(self: &Arc<Self>, settings: &AgentSettings) -> Vec<String> {
        let policy = self.config.settings_grants;
        let wanted = settings.grants.clone();
        let agent = self.clone();
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || {
            let grants: BTreeMap<String, ferry_plugin::Grant> = wanted
                .iter()
                .map(|(name, setting)| {
                    let base = agent
                        .config
                        .plugins
                        .grants
                        .get(name)
                        .cloned()
                        .unwrap_or_default();
                    (name.clone(), policy.apply(&base, setting))
                })
                .collect();
            let names: Vec<String> = grants.keys().cloned().collect();
            if registry.set_grants(grants) {
                tracing::info!("plugin grants changed by the settings ({policy:?})");
            }
            names
                .iter()
                .filter_map(|name| match registry.get(Kind::Installer, name) {
                    Ok(_) | Err(ferry_plugin::PluginError::NotFound { .. }) => None,
                    Err(e) => Some(format!("installer {name} with the grants set: {e}")),
                })
                .collect()
        })
        .await
        .unwrap_or_else(|e| vec![format!("applying grants failed: {e}")])
    }

    /// Fetches each plugin package's newest matching version (verified like
    /// any package), lays it out in its own directory, removes packages no
    /// longer named, and reloads the plugins. A package that fails keeps
    /// its previous version in use.
    async fn lay_out_plugin_packages(self: &Arc<Self>, settings: &AgentSettings) -> Vec<String> {
        let dir = self.layout.plugin_packages();
        let state = self.layout.plugin_packages_state();
        let laid = {
            let state = state.clone();
            tokio::task::spawn_blocking(move || load_laid_out(&state))
                .await
                .unwrap_or_default()
        };
        if settings.plugin_packages.is_empty() && laid.is_empty() {
            return Vec::new();
        }
        let mut notes = Vec::new();
        let mut now_laid = LaidOut::new();
        let content = self.content_lock.lock().await;
        for (name, req) in &settings.plugin_packages {
            match self.lay_out_one(name, req, laid.get(name)).await {
                Ok(version) => {
                    now_laid.insert(name.clone(), version);
                }
                Err(e) => {
                    notes.push(format!("plugin package {name}@{req}: {e}"));
                    if let Some(v) = laid.get(name) {
                        now_laid.insert(name.clone(), v.clone());
                    }
                }
            }
        }
        drop(content);
        let gone: Vec<String> = laid
            .keys()
            .filter(|n| !settings.plugin_packages.iter().any(|(w, _)| w == *n))
            .cloned()
            .collect();
        let registry = self.registry.clone();
        let kept = now_laid.clone();
        let done = tokio::task::spawn_blocking(move || {
            for name in &gone {
                let _ = std::fs::remove_dir_all(dir.join(name));
                tracing::info!(package = %name, "plugin package removed: the settings no longer name it");
            }
            let bytes = serde_json::to_vec(&kept).map_err(std::io::Error::other)?;
            ferry_store::durable::write_file(&state, &bytes, 0o644)?;
            Ok::<_, std::io::Error>(registry.reload())
        })
        .await;
        match done {
            Ok(Ok(report)) => notes.extend(report.failed),
            Ok(Err(e)) => notes.push(format!("cannot keep the plugin packages' state: {e}")),
            Err(e) => notes.push(format!("reloading plugins failed: {e}")),
        }
        notes
    }

    /// Lays out the newest version of `name` matching `req`, unless
    /// `laid` is that version already; returns the version laid out.
    async fn lay_out_one(
        self: &Arc<Self>,
        name: &str,
        req: &semver::VersionReq,
        laid: Option<&String>,
    ) -> Result<String, String> {
        let package = PackageName::new(name).map_err(|e| e.to_string())?;
        let mut last = String::from("no source to fetch it from");
        for (kind, client) in self.metadata_sources(false) {
            let client = client.sharing_pace().for_package(name);
            let attempt = async {
                let repo = ferry_transfer::load_repository(&self.creds, &client)
                    .await
                    .map_err(|e| e.to_string())?;
                let version = ferry_transfer::resolve_version(&repo, &package, req)
                    .map_err(|e| e.to_string())?;
                if laid == Some(&version.to_string()) {
                    return Ok(version.to_string());
                }
                let (manifest, _, _) =
                    ferry_transfer::fetch_manifest(&repo, &client, &self.local, &package, &version)
                        .await
                        .map_err(|e| e.to_string())?;
                ferry_transfer::fetch_objects(&client, &self.local, &manifest, |_| {})
                    .await
                    .map_err(|e| e.to_string())?;
                self.place_plugin_package(name, &manifest).await?;
                tracing::info!(package = %name, %version, "plugin package laid out");
                Ok::<_, String>(version.to_string())
            }
            .await;
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) => last = format!("from the {}: {e}", kind.as_str()),
            }
        }
        Err(last)
    }

    /// Writes the verified `manifest`'s files to a staging directory and
    /// swaps it in as the package's plugin directory, so the plugin watcher
    /// never sees half a plugin.
    async fn place_plugin_package(
        &self,
        name: &str,
        manifest: &ferry_content::Manifest,
    ) -> Result<(), String> {
        let staged = self.layout.staging().join(format!("plugin-{name}"));
        let target = self.layout.plugin_packages().join(name);
        {
            let staged = staged.clone();
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&staged);
                std::fs::create_dir_all(staged.parent().unwrap_or(Path::new(".")))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot stage it: {e}"))?;
        }
        ferry_transfer::materialize(&self.local, manifest, &staged)
            .await
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || {
            if !staged.join("plugin.toml").is_file() {
                let _ = std::fs::remove_dir_all(&staged);
                return Err(
                    "the package is not a plugin directory: it has no plugin.toml at its top; \
                     publish the directory that holds plugin.toml and NAME.wasm"
                        .to_string(),
                );
            }
            let parent = target.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            if target.exists() {
                // One step, so the plugin watcher never finds the directory
                // missing (it would unload the plugin meanwhile); two on a
                // filesystem that cannot exchange.
                if exchange(&staged, &target).is_err() {
                    let _ = std::fs::remove_dir_all(&target);
                    std::fs::rename(&staged, &target).map_err(|e| e.to_string())?;
                }
                let _ = std::fs::remove_dir_all(&staged);
            } else {
                std::fs::rename(&staged, &target).map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Swaps two directories atomically (`renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths for the call's duration.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Applies the settings whenever they change, and again every minute while
/// something failed (a plugin package not fetched yet), keeping the
/// status's account of them current.
pub(crate) async fn keep_applied(
    agent: Arc<Agent>,
    status: Arc<std::sync::Mutex<crate::status::AgentStatus>>,
) {
    loop {
        let notes = agent.apply_settings().await;
        // The worker trims the cache to a new cache-size between tasks.
        agent.wake.notify_one();
        let trouble = !notes.is_empty();
        let state = agent.layout.plugin_packages_state();
        let laid = tokio::task::spawn_blocking(move || load_laid_out(&state))
            .await
            .unwrap_or_default();
        for note in &notes {
            tracing::warn!("settings: {note}");
        }
        {
            let central = agent.central.lock().unwrap_or_else(|p| p.into_inner());
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.settings_version = central.version();
            s.settings = central.resolve(&agent.creds.info.id, agent.creds.info.site.as_deref());
            s.settings_notes = notes;
            if central.expired() {
                s.settings_notes.push(
                    "the settings held expired and no newer ones came: agent.toml applies".into(),
                );
            }
            s.policies = [Kind::Transport, Kind::Election]
                .into_iter()
                .filter_map(|k| Some((k.to_string(), agent.registry.policy_name(k)?)))
                .collect();
            s.plugin_packages = laid;
        }
        crate::run::write_status(&agent, &status).await;
        let mut retry = if trouble {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(3600)
        };
        // Held settings stop applying at their expiry: applied again then.
        let expires_at = agent
            .central
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expires_at();
        if let Some(at) = expires_at {
            let left = at - chrono::Utc::now().timestamp();
            if left > 0 {
                retry = retry.min(Duration::from_secs(left as u64 + 1));
            }
        }
        tokio::select! {
            _ = agent.settings_changed.notified() => {}
            _ = tokio::time::sleep(retry) => {}
        }
    }
}
