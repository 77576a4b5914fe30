//! `agent.toml`: where the agent checks in, where installers may write,
//! how it retries. [`AgentConfig::template`] writes it documented in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AgentError;

/// The agent's configuration, `agent.toml` in its data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    /// The server the agent checks in with and fetches from first: the
    /// office's relay, or the hub.
    pub server: url::Url,
    /// The hub, when `server` is a relay: the fallback source if the relay
    /// fails. Absent: no fallback past the relay.
    #[serde(default)]
    pub hub: Option<url::Url>,
    /// Where installers may write: the built-in `copy` and `archive`
    /// installers are granted this directory, and an install step's
    /// relative `target` is placed under it.
    pub install_root: PathBuf,
    /// Longest a check-in is held open waiting for news (at most 20 s).
    #[serde(default = "default_checkin_wait", with = "humantime_serde")]
    pub checkin_wait: Duration,
    /// Retries of failed steps.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Slowest source accepted.
    #[serde(default)]
    pub transfer: TransferConfig,
    /// Plugins: the transport policy, a site plugin directory, per-plugin
    /// configuration, grants and caps.
    #[serde(default)]
    pub plugins: ferry_plugin::PluginSettings,
    /// What the `grants.PLUGIN.*` settings set centrally may do to the
    /// grants of `[plugins.grants]`.
    #[serde(default)]
    pub settings_grants: SettingsGrants,
}

/// What settings set centrally may do to this agent's plugin grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingsGrants {
    /// Replace a plugin's directories or commands: narrow or widen them.
    #[default]
    Replace,
    /// Only take away: a directory is kept if it lies inside one agent.toml
    /// grants the plugin, a command if agent.toml grants it.
    Narrow,
    /// Change nothing: agent.toml's grants stand.
    Ignore,
}

impl SettingsGrants {
    /// `base` (agent.toml's grant) with `setting` applied as this allows.
    /// Blocks: narrowing resolves symlinks, so a link inside a granted
    /// directory that leads out of it does not pass.
    pub fn apply(
        self,
        base: &ferry_plugin::Grant,
        setting: &ferry_net::settings::GrantSetting,
    ) -> ferry_plugin::Grant {
        let mut grant = base.clone();
        match self {
            SettingsGrants::Ignore => {}
            SettingsGrants::Replace => {
                if let Some(d) = &setting.directories {
                    grant.directories = d.clone();
                }
                if let Some(c) = &setting.commands {
                    grant.commands = c.clone();
                }
            }
            SettingsGrants::Narrow => {
                if let Some(d) = &setting.directories {
                    let real = |p: &std::path::Path| {
                        std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
                    };
                    grant.directories = d
                        .iter()
                        .filter(|dir| {
                            base.directories
                                .iter()
                                .any(|b| dir.starts_with(b) && real(dir).starts_with(real(b)))
                        })
                        .cloned()
                        .collect();
                }
                if let Some(c) = &setting.commands {
                    grant.commands = c
                        .iter()
                        .filter(|cmd| base.commands.contains(cmd))
                        .cloned()
                        .collect();
                }
            }
        }
        grant
    }
}

fn default_checkin_wait() -> Duration {
    Duration::from_secs(20)
}

/// How failed steps are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetryConfig {
    /// Attempts of a task before it is reported failed.
    pub attempts: u32,
    /// First wait after a failure; doubled each time.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 5,
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    /// The wait before attempt `attempt` (1 is the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_min
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.backoff_max)
    }
}

/// When a source counts as failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransferConfig {
    /// Longest wait for an answer or its next bytes before the next
    /// source is tried.
    #[serde(with = "humantime_serde")]
    pub stall: Duration,
    /// Slowest source accepted, in bytes per second over each `stall`
    /// window.
    pub min_rate: u64,
    /// How long to wait for the relay to sync a version it does not serve
    /// yet before getting it from the next source (the hub, across the
    /// WAN).
    #[serde(default = "default_relay_patience", with = "humantime_serde")]
    pub relay_patience: Duration,
}

fn default_relay_patience() -> Duration {
    Duration::from_secs(600)
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            stall: Duration::from_secs(10),
            min_rate: 4096,
            relay_patience: default_relay_patience(),
        }
    }
}

impl TransferConfig {
    /// The pace a source must keep.
    pub fn pace(&self) -> ferry_net::Pace {
        ferry_net::Pace {
            grace: self.stall,
            min_rate: self.min_rate,
            stall: self.stall,
        }
    }
}

impl AgentConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::io(path, e))?;
        let config: AgentConfig = toml::from_str(&text).map_err(|e| AgentError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| AgentError::Config {
            path: path.display().to_string(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if !self.install_root.is_absolute() {
            return Err(format!(
                "install-root {} must be an absolute path",
                self.install_root.display()
            ));
        }
        if self.checkin_wait > Duration::from_secs(ferry_net::tasks::MAX_CHECKIN_WAIT)
            || self.checkin_wait < Duration::from_secs(1)
        {
            return Err("checkin-wait is between 1s and 20s".into());
        }
        if self.retry.attempts == 0 {
            return Err("retry.attempts must be at least 1".into());
        }
        Ok(())
    }

    /// `agent.toml` as `ferry agent init` writes it: every setting with
    /// what it does, the built-in installers granted `install_root`.
    pub fn template(server: &url::Url, hub: Option<&url::Url>, install_root: &Path) -> String {
        let root = toml::Value::String(install_root.display().to_string());
        let hub = match hub {
            Some(h) => format!("hub = \"{h}\""),
            None => "# hub = \"https://hub.example.com:8443\"".into(),
        };
        format!(
            r#"# Ferry agent configuration. Changes take effect at the next `ferry agent run`.

# The server this agent checks in with and fetches from first: the office's
# relay, or the hub for a roaming machine.
server = "{server}"

# The hub, when `server` is a relay: the source tried when the relay fails.
{hub}

# Where installers may write. The built-in `copy` and `archive` installers
# are granted this directory (see [plugins.grants] below), and an install
# step's relative `target` (e.g. target = "acme-vpn") is placed under it.
install-root = {root}

# Longest a check-in is held open waiting for a new task (at most 20s);
# the agent hears of new tasks as soon as the server has them.
checkin-wait = "20s"

# What the hub's `grants.PLUGIN.directories` and `grants.PLUGIN.commands`
# settings (`ferry settings`) may do to [plugins.grants] below: "replace"
# (narrow or widen them), "narrow" (only take away) or "ignore".
settings-grants = "replace"

[retry]
# Attempts of a task before it is reported failed, and the waits between
# them (doubling from backoff-min up to backoff-max).
attempts = 5
backoff-min = "5s"
backoff-max = "5m"

[transfer]
# A source that answers nothing for `stall`, or fewer than `min-rate` bytes
# per second over it, is dropped and the next planned source is tried.
stall = "10s"
min-rate = 4096
# A relay that answers but does not have the version yet (it is syncing) is
# waited for this long before the next source (the hub, across the WAN).
relay-patience = "10m"

[plugins]
# The transport policy that orders sources (built-in: "default").
transport = "default"
# A directory of site plugins, checked for changes every few seconds:
# dir = "/etc/ferry/plugins"

# What installers may touch: directories (read-write), commands (by
# absolute path) and nothing else. No commands are granted by default.
[plugins.grants.copy]
directories = [{root}]

[plugins.grants.archive]
directories = [{root}]
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_and_grants_the_install_root() {
        let server = url::Url::parse("https://relay.example:8444").unwrap();
        let text = AgentConfig::template(&server, None, Path::new("/opt/ferry"));
        let config: AgentConfig = toml::from_str(&text).unwrap();
        assert_eq!(config.server, server);
        assert_eq!(config.hub, None);
        assert_eq!(config.install_root, Path::new("/opt/ferry"));
        assert_eq!(
            config.plugins.grants["copy"].directories,
            [PathBuf::from("/opt/ferry")]
        );
        assert!(config.plugins.grants["copy"].commands.is_empty());
        config.check().unwrap();
        let relative = text.replace("\"/opt/ferry\"", "\"opt\"");
        let bad: AgentConfig = toml::from_str(&relative).unwrap();
        assert!(bad.check().unwrap_err().contains("absolute"));
        assert_eq!(config.retry.backoff(1), Duration::from_secs(5));
        assert_eq!(config.retry.backoff(3), Duration::from_secs(20));
        assert_eq!(config.retry.backoff(30), Duration::from_secs(300));
        assert_eq!(config.settings_grants, SettingsGrants::Replace);
    }

    #[test]
    fn settings_grants_replace_narrow_or_leave_the_agents_own() {
        let base = ferry_plugin::Grant {
            directories: vec!["/opt/ferry".into()],
            commands: vec!["/usr/bin/systemctl".into()],
            ..Default::default()
        };
        let setting = ferry_net::settings::GrantSetting {
            directories: Some(vec!["/opt/ferry/app".into(), "/etc".into()]),
            commands: Some(vec!["/usr/bin/systemctl".into(), "/bin/sh".into()]),
        };
        let replaced = SettingsGrants::Replace.apply(&base, &setting);
        assert_eq!(replaced.directories, setting.directories.clone().unwrap());
        assert_eq!(replaced.commands, setting.commands.clone().unwrap());
        let narrowed = SettingsGrants::Narrow.apply(&base, &setting);
        assert_eq!(narrowed.directories, [PathBuf::from("/opt/ferry/app")]);
        assert_eq!(narrowed.commands, ["/usr/bin/systemctl"]);
        assert_eq!(SettingsGrants::Ignore.apply(&base, &setting), base);
        let commands_only = ferry_net::settings::GrantSetting {
            directories: None,
            commands: Some(Vec::new()),
        };
        let replaced = SettingsGrants::Replace.apply(&base, &commands_only);
        assert_eq!(replaced.directories, base.directories);
        assert!(replaced.commands.is_empty());
    }
}
