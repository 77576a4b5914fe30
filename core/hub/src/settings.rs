//! Settings set centrally: admins set values per scope; the hub keeps them
//! in the catalog and signs all scopes as one document that every check-in
//! answer carries (see [`ferry_net::settings`]).

use std::time::Duration;

use ferry_catalog::SettingsRecord;
use ferry_net::settings::{
    MAX_SETTINGS_BYTES, SETTINGS_DOCUMENT, Scope, ScopeSettings, Settings, SettingsChange,
    SettingsView,
};

use crate::state::blocking;
use crate::tasks::TaskRefusal;
use crate::{HubError, HubState};

/// How long a signed settings document is valid. An agent that hears no
/// newer one by then (its relay withholds it) falls back to its own
/// `agent.toml`.
pub const SETTINGS_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most keys one scope holds.
const MAX_KEYS: usize = 64;
/// Longest value.
const MAX_VALUE: usize = 1024;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The version after `last`: at least the time now in seconds, so a hub
/// restored from an older backup still signs versions its agents take.
fn next_version(last: u64) -> u64 {
    (last + 1).max(now().max(0) as u64)
}

fn body_of(record: &SettingsRecord) -> Result<Settings, HubError> {
    serde_json::from_str(&record.body)
        .map_err(|e| HubError::DataDir(format!("the settings in the catalog: {e}")))
}

impl HubState {
    /// Every scope's values, as signed now.
    pub async fn settings_view(&self) -> Result<SettingsView, HubError> {
        let catalog = self.catalog.clone();
        let Some(record) = blocking(move || catalog.settings()).await?? else {
            return Ok(SettingsView::default());
        };
        Ok(SettingsView {
            version: record.seq,
            expires_at: record.expires_at,
            settings: body_of(&record)?,
            resolved: None,
        })
    }

    /// The settings with what agent `id` resolves from them, as the agent
    /// does: by its site and its last reported inventory. `None`: no such
    /// agent is enrolled.
    pub async fn settings_for_agent(&self, id: &str) -> Result<Option<SettingsView>, HubError> {
        let mut view = self.settings_view().await?;
        let catalog = self.catalog.clone();
        let directory =
            blocking(move || crate::groups::Directory::read(catalog.as_ref())).await??;
        let Some(client) = directory
            .clients
            .iter()
            .find(|c| c.id == id && c.role == ferry_catalog::Role::Agent)
        else {
            return Ok(None);
        };
        view.resolved = Some(view.settings.resolve(
            id,
            client.site.as_deref(),
            directory.inventories.get(id),
        ));
        Ok(Some(view))
    }

    /// Sets and removes values in one scope, then signs the settings again.
    pub async fn change_settings(
        &self,
        change: SettingsChange,
        by: &str,
    ) -> Result<Result<SettingsView, TaskRefusal>, HubError> {
        let refuse = |m: String| Ok(Err(TaskRefusal::Invalid(m)));
        if change.set.is_empty() && change.unset.is_empty() {
            return refuse("nothing to change: give KEY=VALUE to set or --unset KEY".into());
        }
        for (key, value) in &change.set {
            if value.len() > MAX_VALUE {
                return refuse(format!("{key}: a value is at most {MAX_VALUE} bytes"));
            }
            if let Err(e) = ferry_net::settings::check(key, value) {
                return refuse(e);
            }
        }
        if let Some(key) = change.unset.iter().find(|k| change.set.contains_key(*k)) {
            return refuse(format!("{key} is both set and unset"));
        }
        let _serial = self.task_lock.lock().await;
        let catalog = self.catalog.clone();
        let (record, groups) =
            blocking(move || Ok::<_, HubError>((catalog.settings()?, catalog.groups()?))).await??;
        if let Scope::Group(g) = &change.scope
            && !groups.iter().any(|(name, _)| name == g)
        {
            return refuse(format!(
                "no group {g}; create it with `ferry group create {g} SELECTOR...`"
            ));
        }
        let mut settings = match &record {
            Some(r) => body_of(r)?,
            None => Settings::default(),
        };
        let at = settings.scopes.iter().position(|s| s.scope == change.scope);
        let mut scope = match at {
            Some(i) => settings.scopes.remove(i),
            None => ScopeSettings {
                scope: change.scope.clone(),
                selectors: Vec::new(),
                values: Default::default(),
            },
        };
        if let Some(key) = change.unset.iter().find(|k| !scope.values.contains_key(*k)) {
            return refuse(format!(
                "{key} is not set in {}; see `ferry settings list`",
                change.scope
            ));
        }
        for key in &change.unset {
            scope.values.remove(key);
        }
        scope.values.extend(change.set);
        if scope.values.len() > MAX_KEYS {
            return refuse(format!("a scope holds at most {MAX_KEYS} settings"));
        }
        if !scope.values.is_empty() {
            settings.scopes.push(scope);
        }
        // Every check-in answer carries the settings: they stay small.
        let size = serde_json::to_vec(&settings).map_or(0, |b| b.len());
        if size > MAX_SETTINGS_BYTES {
            return refuse(format!(
                "the settings would take {size} bytes, more than {MAX_SETTINGS_BYTES}; set values \
                 for sites or groups rather than for many single agents"
            ));
        }
        settings.scopes.sort_by(|a, b| a.scope.cmp(&b.scope));
        settings.changed_at = now();
        settings.changed_by = by.to_owned();
        let view = self
            .sign_settings(settings, next_version(record.map_or(0, |r| r.seq)))
            .await?;
        tracing::info!(version = view.version, scope = %change.scope, by, "settings changed");
        Ok(Ok(view))
    }

    /// Signs the settings again (new version) before they expire, or when
    /// `group` changed and they hold values for it. The caller holds
    /// `task_lock`.
    pub(crate) async fn resign_settings(
        &self,
        why: &str,
        group: Option<&str>,
    ) -> Result<(), HubError> {
        let catalog = self.catalog.clone();
        let Some(record) = blocking(move || catalog.settings()).await?? else {
            return Ok(());
        };
        let settings = body_of(&record)?;
        let seq = next_version(record.seq);
        if let Some(g) = group
            && !settings
                .scopes
                .iter()
                .any(|s| s.scope == Scope::Group(g.to_owned()))
        {
            return Ok(());
        }
        let view = self.sign_settings(settings, seq).await?;
        tracing::info!(version = view.version, "settings signed again: {why}");
        Ok(())
    }

    /// Signs the settings again if less than half their lifetime is left,
    /// or if they no longer verify with the control key (it was rotated).
    pub(crate) async fn refresh_settings(&self) -> Result<(), HubError> {
        let _serial = self.task_lock.lock().await;
        let Some((_, document)) = self.tasks.settings() else {
            return Ok(());
        };
        let expires_at = self.tasks.settings_expiry().unwrap_or(0);
        if expires_at - now() < (SETTINGS_LIFETIME.as_secs() / 2) as i64 {
            return self.resign_settings("they expire soon", None).await;
        }
        let tuf = self.tuf.clone();
        let verifies = blocking(move || {
            let key = tuf.control_key()?;
            // Without a control key nothing can be signed again.
            Ok::<_, HubError>(key.is_none_or(|key| {
                ferry_trust::documents::verify(
                    &key,
                    document.as_bytes(),
                    SETTINGS_DOCUMENT,
                    jiff::Timestamp::now(),
                )
                .is_ok()
            }))
        })
        .await??;
        if !verifies {
            self.resign_settings("the control key changed", None)
                .await?;
        }
        Ok(())
    }

    /// Fills in each group scope's selectors as the groups are now, signs
    /// the settings as version `seq`, keeps them and tells check-ins.
    async fn sign_settings(
        &self,
        mut settings: Settings,
        seq: u64,
    ) -> Result<SettingsView, HubError> {
        let catalog = self.catalog.clone();
        let groups = blocking(move || catalog.groups()).await??;
        for scope in &mut settings.scopes {
            if let Scope::Group(g) = &scope.scope {
                scope.selectors = groups
                    .iter()
                    .find(|(name, _)| name == g)
                    .and_then(|(_, text)| serde_json::from_str(text).ok())
                    .unwrap_or_default();
            }
        }
        let body = serde_json::to_value(&settings).map_err(|e| HubError::DataDir(e.to_string()))?;
        let tuf = self.tuf.clone();
        let document =
            blocking(move || tuf.sign_document(SETTINGS_DOCUMENT, seq, SETTINGS_LIFETIME, body))
                .await??;
        let record = SettingsRecord {
            seq,
            expires_at: now() + SETTINGS_LIFETIME.as_secs() as i64,
            body: serde_json::to_string(&settings).map_err(|e| HubError::DataDir(e.to_string()))?,
            document: String::from_utf8(document)
                .map_err(|e| HubError::DataDir(format!("signed settings are not text: {e}")))?,
        };
        let catalog = self.catalog.clone();
        let kept = record.clone();
        blocking(move || catalog.put_settings(&kept)).await??;
        self.tasks.put_settings(&record);
        Ok(SettingsView {
            version: record.seq,
            expires_at: record.expires_at,
            settings,
            resolved: None,
        })
    }
}
