//! The plugins a node uses: built-ins, overridden by a site's plugin
//! directory, swapped while the node runs, with a fallback to the built-in
//! whenever a site plugin fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use semver::VersionReq;

use crate::engine::PluginEngine;
use crate::error::PluginError;
use crate::kind::Kind;
use crate::manifest::Manifest;
use crate::plugin::{
    Answer, ElectionRequest, InstallAction, InstallJob, InstallReport, Origin, Plugin,
    ScheduleDecision, ScheduleRequest, TransportPlan, TransportRequest, VerifyReport,
};
use crate::settings::{Grant, PluginSettings};
use crate::state::LogLine;

/// A plugin shipped inside the ferry binary.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinPlugin {
    /// Its `plugin.toml`.
    pub manifest: &'static str,
    /// Its component.
    pub wasm: &'static [u8],
}

/// What a node decided and who decided it.
#[derive(Debug, Clone)]
pub struct Decision<T> {
    /// The decision.
    pub value: T,
    /// The plugin that made it, `kind name@version (origin)`.
    pub plugin: String,
    /// Why the configured plugin was not used, when the built-in decided
    /// instead.
    pub fallback: Option<String>,
    /// What the deciding plugin logged, if it captures logs.
    pub logs: Vec<LogLine>,
}

/// The outcome of checking the plugin directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Plugins loaded or replaced, `kind/name@version`.
    pub loaded: Vec<String>,
    /// Plugins removed from the directory (the built-in is back, if any).
    pub removed: Vec<String>,
    /// Plugins that could not be loaded, and why; the previous version, if
    /// any, stays in use.
    pub failed: Vec<String>,
}

type Key = (Kind, String);

/// The shortest interval between checks of the plugin directory.
const MIN_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// A site plugin, the directory and the file stamps it was loaded from.
struct Site {
    plugin: Arc<Plugin>,
    stamp: Stamp,
    dir: PathBuf,
}

/// Modification times and sizes of a plugin's two files.
type Stamp = [(Option<SystemTime>, u64); 2];

/// The node's plugins.
pub struct Registry {
    engine: PluginEngine,
    settings: PluginSettings,
    builtins: BTreeMap<Key, BuiltinPlugin>,
    builtin_loaded: Mutex<BTreeMap<Key, Arc<Plugin>>>,
    site: RwLock<BTreeMap<Key, Site>>,
    /// Directories whose last load failed, with the stamp seen then, so a
    /// broken file is reported once, not at every check.
    failed: Mutex<BTreeMap<PathBuf, (Option<Stamp>, String)>>,
    reloading: Mutex<()>,
    /// Policies chosen at run time over the settings' (see
    /// [`Registry::choose`]).
    chosen: RwLock<BTreeMap<Kind, String>>,
    /// Grants set at run time over the settings' (see
    /// [`Registry::set_grants`]).
    grants: RwLock<BTreeMap<String, Grant>>,
    /// Grows with every change of `grants`, so a built-in compiled with
    /// grants changed meanwhile is not cached.
    grants_generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// Creates the registry and loads the site plugin directory, if any.
    /// Built-ins are compiled on first use.
    pub fn new(
        engine: PluginEngine,
        settings: PluginSettings,
        builtins: &[BuiltinPlugin],
    ) -> Result<(Registry, ReloadReport), PluginError> {
        if settings.reload_every < MIN_RELOAD_EVERY {
            return Err(PluginError::Manifest {
                path: "[plugins]".into(),
                reason: format!(
                    "reload-every = {:?} is too often; at least {:?}",
                    settings.reload_every, MIN_RELOAD_EVERY
                ),
            });
        }
        let mut table = BTreeMap::new();
        for builtin in builtins {
            let manifest = Manifest::parse(builtin.manifest, "built-in plugin.toml")?;
            table.insert((manifest.kind, manifest.name.clone()), *builtin);
        }
        for (kind, name) in [
            (Kind::Transport, &settings.transport),
            (Kind::Schedule, &settings.schedule),
            (Kind::Election, &settings.election),
        ] {
            crate::manifest::valid_name(name)
                .then_some(())
                .ok_or_else(|| PluginError::Manifest {
                    path: "[plugins]".into(),
                    reason: format!("{kind} = {name:?} is not a plugin name"),
                })?;
        }
        let registry = Registry {
            engine,
            settings,
            builtins: table,
            builtin_loaded: Mutex::new(BTreeMap::new()),
            site: RwLock::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            reloading: Mutex::new(()),
            chosen: RwLock::new(BTreeMap::new()),
            grants: RwLock::new(BTreeMap::new()),
            grants_generation: std::sync::atomic::AtomicU64::new(0),
        };
        let report = registry.reload();
        for kind in [Kind::Transport, Kind::Schedule, Kind::Election] {
            registry
                .policy(kind)
                .map_err(|e| match report.failed.is_empty() {
                    true => e,
                    false => PluginError::Manifest {
                        path: "[plugins]".into(),
                        reason: format!(
                            "{e}; plugins that did not load: {}",
                            report.failed.join("; ")
                        ),
                    },
                })?;
        }
        Ok((registry, report))
    }

    /// The node's settings.
    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    /// Checks the plugin directory and loads what changed. A plugin whose
    /// files fail to load keeps its previous version in use, so an operator
    /// copying a file over a running node never breaks it; calls in flight
    /// finish on the version they started with.
    pub fn reload(&self) -> ReloadReport {
        // One reload at a time: each removes what it did not see.
        let _reloading = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = ReloadReport::default();
        let dirs: Vec<&PathBuf> = [&self.settings.dir, &self.settings.packages_dir]
            .into_iter()
            .flatten()
            .collect();
        if dirs.is_empty() {
            return report;
        }
        // The configured directory first: it wins over delivered packages.
        let mut found = Vec::new();
        for dir in dirs {
            match scan(dir) {
                Ok(more) => found.extend(more),
                // The packages directory appears with the first package.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && Some(dir) == self.settings.packages_dir.as_ref() => {}
                Err(e) => {
                    report.failed.push(format!("{}: {e}", dir.display()));
                    tracing::error!(dir = %dir.display(), error = %e, "cannot read the plugin directory");
                    return report;
                }
            }
        }
        // Which directory provides each (kind, name) after this reload.
        let mut present: BTreeMap<Key, PathBuf> = BTreeMap::new();
        for (plugin_dir, stamp) in &found {
            let stamp = match stamp {
                Ok(stamp) => *stamp,
                Err(e) => {
                    let why = format!("{}: {e}", plugin_dir.display());
                    self.fail(plugin_dir, None, why, &mut report);
                    self.keep_loaded(plugin_dir, &mut present);
                    continue;
                }
            };
            let loaded = self.loaded_from(plugin_dir);
            if let Some((old_stamp, key)) = &loaded
                && *old_stamp == stamp
            {
                self.failed_lock().remove(plugin_dir);
                present.insert(key.clone(), plugin_dir.clone());
                continue;
            }
            if self.failed_lock().get(plugin_dir).map(|f| f.0) == Some(Some(stamp)) {
                self.keep_loaded(plugin_dir, &mut present);
                continue;
            }
            // Two directories providing one plugin: the first (by name) wins,
            // checked on the manifest alone so the other is not compiled at
            // every check.
            if let Some((key, other)) = manifest_key(plugin_dir)
                .and_then(|key| present.get(&key).map(|other| (key, other.clone())))
            {
                let why = format!(
                    "{}: {} plugin {:?} is already provided by {}; remove one of them",
                    plugin_dir.display(),
                    key.0,
                    key.1,
                    other.display()
                );
                self.fail(plugin_dir, None, why, &mut report);
                continue;
            }
            let plugin = match self.load_dir(plugin_dir) {
                Ok(plugin) => plugin,
                Err(e) => {
                    self.fail(plugin_dir, Some(stamp), e.to_string(), &mut report);
                    self.keep_loaded(plugin_dir, &mut present);
                    continue;
                }
            };
            let key = (plugin.manifest().kind, plugin.name().to_string());
            let label = format!("{}/{}@{}", key.0, key.1, plugin.manifest().version);
            tracing::info!(plugin = %label, dir = %plugin_dir.display(), "plugin loaded");
            self.failed_lock().remove(plugin_dir);
            let mut site = self.site_write();
            // A plugin that changed its name or kind leaves its old key.
            let renamed: Vec<Key> = site
                .iter()
                .filter(|(k, s)| **k != key && s.dir == *plugin_dir)
                .map(|(k, _)| k.clone())
                .collect();
            for old in renamed {
                site.remove(&old);
                report.removed.push(format!("{}/{}", old.0, old.1));
            }
            site.insert(
                key.clone(),
                Site {
                    plugin: Arc::new(plugin),
                    stamp,
                    dir: plugin_dir.clone(),
                },
            );
            present.insert(key, plugin_dir.clone());
            report.loaded.push(label);
        }
        let mut site = self.site_write();
        let gone: Vec<Key> = site
            .iter()
            .filter(|(k, s)| present.get(*k) != Some(&s.dir))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            site.remove(&key);
            tracing::info!(kind = %key.0, name = %key.1, "plugin removed from the plugin directory");
            report.removed.push(format!("{}/{}", key.0, key.1));
        }
        drop(site);
        // Problems of directories that are gone are gone too.
        self.failed_lock()
            .retain(|d, _| found.iter().any(|(f, _)| f == d));
        report
    }

    /// The stamp and key of the plugin loaded from `dir`, if any.
    fn loaded_from(&self, dir: &Path) -> Option<(Stamp, Key)> {
        self.site_read()
            .iter()
            .find(|(_, s)| s.dir == dir)
            .map(|(k, s)| (s.stamp, k.clone()))
    }

    /// Keeps what `dir` provided before, if anything, when its files now fail.
    fn keep_loaded(&self, dir: &Path, present: &mut BTreeMap<Key, PathBuf>) {
        if let Some((_, key)) = self.loaded_from(dir) {
            present.entry(key).or_insert_with(|| dir.to_path_buf());
        }
    }

    /// Records that `dir` does not load; logged once per change of its files.
    fn fail(&self, dir: &Path, stamp: Option<Stamp>, why: String, report: &mut ReloadReport) {
        let mut failed = self.failed_lock();
        let known = failed
            .get(dir)
            .is_some_and(|(s, w)| *s == stamp && *w == why);
        if !known {
            tracing::error!(dir = %dir.display(), error = %why, "plugin not loaded; the previous version, if any, stays in use");
        }
        failed.insert(dir.to_path_buf(), (stamp, why.clone()));
        report.failed.push(why);
    }

    /// Plugin directories whose current files do not load, and why. Their
    /// previous version, if any, is still in use.
    pub fn problems(&self) -> Vec<String> {
        self.failed_lock()
            .values()
            .map(|(_, why)| why.clone())
            .collect()
    }

    /// Checks the plugin directory every `reload-every` on a thread of its
    /// own, until the returned handle is dropped.
    pub fn watch(self: &Arc<Self>) -> WatchHandle {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let weak = Arc::downgrade(self);
        let every = self.settings.reload_every;
        let thread = std::thread::Builder::new()
            .name("ferry-plugin-reload".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let Some(registry) = weak.upgrade() else {
                        break;
                    };
                    registry.reload();
                }
            })
            .ok();
        WatchHandle {
            stop: Some(stop),
            thread,
        }
    }

    /// The plugin of `kind` named `name`: the site's if it has one, else the
    /// built-in.
    pub fn get(&self, kind: Kind, name: &str) -> Result<Arc<Plugin>, PluginError> {
        self.find(kind, name, None)
    }

    /// Uses the policy plugin `name` for `kind` from now on, over what the
    /// node's settings name (`None`: back to those). Calls in flight finish
    /// with the plugin they started with; a chosen plugin that is missing
    /// makes calls fall back to the built-in default, saying why.
    pub fn choose(&self, kind: Kind, name: Option<&str>) -> Result<(), PluginError> {
        if kind == Kind::Installer {
            return Err(PluginError::Manifest {
                path: "settings".into(),
                reason: "installers are chosen by each package, not by settings".into(),
            });
        }
        let mut chosen = self.chosen.write().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(name) if crate::manifest::valid_name(name) => {
                chosen.insert(kind, name.to_owned());
            }
            Some(name) => {
                return Err(PluginError::Manifest {
                    path: "settings".into(),
                    reason: format!("{kind} = {name:?} is not a plugin name"),
                });
            }
            None => {
                chosen.remove(&kind);
            }
        }
        Ok(())
    }

    /// Grants plugins by name from now on, each over what the node's
    /// settings grant it (`grants` holds the whole grant of every plugin
    /// it names; an empty map: back to the settings). Plugins loaded with
    /// other grants are loaded again; calls in flight finish with the
    /// grants they started with. Returns whether anything changed.
    pub fn set_grants(&self, grants: BTreeMap<String, Grant>) -> bool {
        // No reload runs meanwhile: it could keep a copy loaded with the
        // old grants.
        let _reloading = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let changed: Vec<String> = {
            let mut held = self.grants.write().unwrap_or_else(|p| p.into_inner());
            if *held == grants {
                return false;
            }
            let changed = held
                .keys()
                .chain(grants.keys())
                .filter(|name| held.get(*name) != grants.get(*name))
                .cloned()
                .collect();
            *held = grants;
            self.grants_generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            changed
        };
        self.builtin_lock().clear();
        // Site plugins whose grants changed are loaded again now; one that
        // does not load with its new grants is unloaded, never kept with
        // the old ones. Failures are forgotten, so each is tried again.
        self.failed_lock().clear();
        let regrant: Vec<(Key, PathBuf)> = self
            .site_read()
            .iter()
            .filter(|(key, _)| changed.contains(&key.1))
            .map(|(key, site)| (key.clone(), site.dir.clone()))
            .collect();
        for (key, dir) in regrant {
            let stamp = std::fs::metadata(dir.join("plugin.toml"))
                .ok()
                .and_then(|meta| stamp(&dir, &meta).ok());
            match self.load_dir(&dir) {
                Ok(plugin) => {
                    if let Some(site) = self.site_write().get_mut(&key) {
                        site.plugin = Arc::new(plugin);
                    }
                }
                Err(e) => {
                    self.site_write().remove(&key);
                    tracing::error!(dir = %dir.display(), error = %e, "plugin unloaded: it does not load with its new grants");
                    self.failed_lock()
                        .insert(dir, (stamp, format!("with its new grants: {e}")));
                }
            }
        }
        true
    }

    /// What plugin `name` is granted now.
    fn grant(&self, name: &str) -> Option<Grant> {
        self.grants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .or_else(|| self.settings.grants.get(name))
            .cloned()
    }

    /// The name of the policy plugin used for `kind` now.
    pub fn policy_name(&self, kind: Kind) -> Option<String> {
        if let Some(name) = self
            .chosen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&kind)
        {
            return Some(name.clone());
        }
        match kind {
            Kind::Transport => Some(self.settings.transport.clone()),
            Kind::Schedule => Some(self.settings.schedule.clone()),
            Kind::Election => Some(self.settings.election.clone()),
            Kind::Installer => None,
        }
    }

    /// The policy plugin this node uses for `kind`: the one chosen at run
    /// time, else the one its settings name.
    pub fn policy(&self, kind: Kind) -> Result<Arc<Plugin>, PluginError> {
        let name = match self.policy_name(kind) {
            Some(name) => name,
            None => {
                return Err(PluginError::NotFound {
                    kind: kind.to_string(),
                    name: String::new(),
                    requirement: String::new(),
                    known: "installers are chosen by each package".into(),
                });
            }
        };
        self.get(kind, &name)
    }

    /// Every plugin the node can use, site plugins first.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        let mut all: Vec<Arc<Plugin>> = self
            .site_read()
            .values()
            .map(|s| s.plugin.clone())
            .collect();
        for (kind, name) in self.builtins.keys() {
            if let Ok(p) = self.builtin(*kind, name) {
                all.push(p);
            }
        }
        all
    }

    /// Decides a transport plan, falling back to the built-in default.
    pub fn plan(&self, request: &TransportRequest) -> Result<Decision<TransportPlan>, PluginError> {
        self.decide(Kind::Transport, |p| p.plan(request))
    }

    /// Decides the next sync, falling back to the built-in default.
    pub fn schedule(
        &self,
        request: &ScheduleRequest,
    ) -> Result<Decision<ScheduleDecision>, PluginError> {
        self.decide(Kind::Schedule, |p| p.schedule(request))
    }

    /// Elects a representative, falling back to the built-in default.
    pub fn elect(&self, request: &ElectionRequest) -> Result<Decision<String>, PluginError> {
        self.decide(Kind::Election, |p| p.elect(request))
    }

    /// Runs the installer `name` matching `requirement`. When a site
    /// installer fails and a built-in of the same name matches, the
    /// built-in runs instead (installers must be idempotent, as any
    /// interrupted install is run again).
    pub fn install(
        &self,
        name: &str,
        requirement: &VersionReq,
        action: InstallAction,
        job: &InstallJob,
    ) -> Result<Decision<InstallReport>, PluginError> {
        self.installer_call(name, requirement, |p| p.install(action, job))
    }

    /// Verifies an install with the installer `name`.
    pub fn verify(
        &self,
        name: &str,
        requirement: &VersionReq,
        job: &InstallJob,
    ) -> Result<Decision<VerifyReport>, PluginError> {
        self.installer_call(name, requirement, |p| p.verify(job))
    }

    fn installer_call<T>(
        &self,
        name: &str,
        requirement: &VersionReq,
        call: impl Fn(&Plugin) -> Result<Answer<T>, PluginError>,
    ) -> Result<Decision<T>, PluginError> {
        let chosen = self.find(Kind::Installer, name, Some(requirement))?;
        match call(&chosen) {
            Ok(answer) => Ok(decision(&chosen, answer, None)),
            Err(err) if *chosen.origin() != Origin::Builtin => {
                let Ok(builtin) = self.builtin(Kind::Installer, name) else {
                    return Err(err);
                };
                if !requirement.matches(&builtin.manifest().version) {
                    return Err(err);
                }
                tracing::warn!(error = %err, "site installer failed; running the built-in");
                let answer = call(&builtin)?;
                Ok(decision(&builtin, answer, Some(err.to_string())))
            }
            Err(err) => Err(err),
        }
    }

    fn decide<T>(
        &self,
        kind: Kind,
        call: impl Fn(&Plugin) -> Result<Answer<T>, PluginError>,
    ) -> Result<Decision<T>, PluginError> {
        let default = kind.default_plugin().unwrap_or_default();
        // A configured plugin that is missing (its directory removed or half
        // copied) is a failure like any other: the built-in decides.
        let (err, chosen) = match self.policy(kind) {
            Ok(chosen) => match call(&chosen) {
                Ok(answer) => return Ok(decision(&chosen, answer, None)),
                Err(err) => (err, Some(chosen)),
            },
            Err(err) => (err, None),
        };
        let builtin = match self.builtin(kind, default) {
            Ok(b) if chosen.as_ref().is_none_or(|c| !Arc::ptr_eq(&b, c)) => b,
            _ => return Err(err),
        };
        tracing::warn!(error = %err, fallback = %builtin.label(), "plugin failed; the built-in decides");
        let answer = call(&builtin)?;
        Ok(decision(&builtin, answer, Some(err.to_string())))
    }

    fn find(
        &self,
        kind: Kind,
        name: &str,
        requirement: Option<&VersionReq>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let matches = |p: &Plugin| requirement.is_none_or(|r| r.matches(&p.manifest().version));
        let site = self
            .site_read()
            .get(&(kind, name.to_string()))
            .map(|s| s.plugin.clone());
        if let Some(p) = site
            && matches(&p)
        {
            return Ok(p);
        }
        if self.builtins.contains_key(&(kind, name.to_string())) {
            let p = self.builtin(kind, name)?;
            if matches(&p) {
                return Ok(p);
            }
        }
        let mut known: Vec<String> = self
            .site_read()
            .values()
            .map(|s| s.plugin.manifest())
            .filter(|m| m.kind == kind)
            .map(|m| format!("{}@{}", m.name, m.version))
            .collect();
        known.extend(
            self.builtins
                .keys()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| format!("{n} (built-in)")),
        );
        known.sort();
        known.dedup();
        Err(PluginError::NotFound {
            kind: kind.to_string(),
            name: name.to_string(),
            requirement: requirement
                .map(|r| format!(" matching {r}"))
                .unwrap_or_default(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        })
    }

    fn builtin(&self, kind: Kind, name: &str) -> Result<Arc<Plugin>, PluginError> {
        let key = (kind, name.to_string());
        if let Some(p) = self.builtin_lock().get(&key) {
            return Ok(p.clone());
        }
        let Some(builtin) = self.builtins.get(&key) else {
            return Err(PluginError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
                requirement: String::new(),
                known: "no built-in of that name".into(),
            });
        };
        let manifest = Manifest::parse(builtin.manifest, "built-in plugin.toml")?;
        let generation = self
            .grants_generation
            .load(std::sync::atomic::Ordering::SeqCst);
        let plugin = Arc::new(
            Plugin::load(
                &self.engine,
                manifest,
                Origin::Builtin,
                builtin.wasm,
                self.settings.config.get(name),
                self.grant(name).as_ref(),
            )?
            .with_caps(&self.settings.caps(kind)),
        );
        let mut loaded = self.builtin_lock();
        if self
            .grants_generation
            .load(std::sync::atomic::Ordering::SeqCst)
            == generation
        {
            loaded.insert(key, plugin.clone());
        }
        Ok(plugin)
    }

    fn load_dir(&self, dir: &Path) -> Result<Plugin, PluginError> {
        let (manifest, wasm) = read_plugin_dir(dir)?;
        let name = manifest.name.clone();
        let caps = self.settings.caps(manifest.kind);
        Ok(Plugin::load(
            &self.engine,
            manifest,
            Origin::Directory(dir.to_path_buf()),
            &wasm,
            self.settings.config.get(&name),
            self.grant(&name).as_ref(),
        )?
        .with_caps(&caps))
    }

    fn site_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Key, Site>> {
        self.site.read().unwrap_or_else(|p| p.into_inner())
    }
    fn site_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Key, Site>> {
        self.site.write().unwrap_or_else(|p| p.into_inner())
    }
    fn builtin_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Arc<Plugin>>> {
        self.builtin_loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
    fn failed_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, (Option<Stamp>, String)>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stops the reload thread when dropped.
pub struct WatchHandle {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The kind and name a plugin directory's manifest declares, if it parses.
fn manifest_key(dir: &Path) -> Option<Key> {
    let text = std::fs::read_to_string(dir.join("plugin.toml")).ok()?;
    let manifest = Manifest::parse(&text, "plugin.toml").ok()?;
    Some((manifest.kind, manifest.name))
}

/// Reads a plugin directory: `plugin.toml` and `NAME.wasm`.
pub fn read_plugin_dir(dir: &Path) -> Result<(Manifest, Vec<u8>), PluginError> {
    let manifest_path = dir.join("plugin.toml");
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|e| PluginError::io(&manifest_path, e))?;
    let manifest = Manifest::parse(&text, &manifest_path.display().to_string())?;
    // Cargo names a crate's artifact with '_' for '-'; take either.
    let wasm_path = dir.join(format!("{}.wasm", manifest.name));
    let alternative = dir.join(format!("{}.wasm", manifest.name.replace('-', "_")));
    let wasm_path = if !wasm_path.exists() && alternative.exists() {
        alternative
    } else {
        wasm_path
    };
    let wasm = std::fs::read(&wasm_path).map_err(|e| PluginError::io(&wasm_path, e))?;
    Ok((manifest, wasm))
}

/// The plugin subdirectories of `dir` (those holding a plugin.toml) and
/// their file stamps, or why a subdirectory could not be read.
fn scan(dir: &Path) -> std::io::Result<Vec<(PathBuf, std::io::Result<Stamp>)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        // An entry removed while listed is simply not there.
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(path.join("plugin.toml")) else {
            continue;
        };
        let stamp = stamp(&path, &meta);
        found.push((path, stamp));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// The stamps of a plugin directory's manifest and components. The wasm
/// file's name comes from the manifest, so every .wasm is stamped;
/// symlinks are followed, so a link to a rebuilt file is seen to change.
fn stamp(dir: &Path, manifest: &std::fs::Metadata) -> std::io::Result<Stamp> {
    let mut wasm_stamp = (None, 0);
    for file in std::fs::read_dir(dir)?.flatten() {
        let path = file.path();
        if path.extension().is_some_and(|e| e == "wasm")
            && let Ok(m) = std::fs::metadata(&path)
        {
            wasm_stamp = (m.modified().ok().max(wasm_stamp.0), m.len() + wasm_stamp.1);
        }
    }
    Ok([(manifest.modified().ok(), manifest.len()), wasm_stamp])
}

fn decision<T>(plugin: &Plugin, answer: Answer<T>, fallback: Option<String>) -> Decision<T> {
    Decision {
        value: answer.value,
        plugin: plugin.label(),
        fallback,
        logs: answer.logs,
    }
}
