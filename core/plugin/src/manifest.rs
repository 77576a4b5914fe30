//! `plugin.toml`: what a plugin is, what it asks for, and its defaults.

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::contract;
use crate::error::PluginError;
use crate::kind::Kind;

/// The most memory a plugin may ask for; the node's pool is sized for it.
pub const MAX_MEMORY_MIB: u32 = 512;
/// The longest a single call may be allowed to run.
pub const MAX_TIMEOUT_MS: u64 = 60 * 60 * 1000;

/// A parsed, validated `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// The plugin's name within its kind, e.g. `window`.
    pub name: String,
    /// The plugin's own version.
    pub version: Version,
    /// Which kind of plugin it is.
    pub kind: Kind,
    /// The contract versions the plugin works with, e.g. `0.1`.
    pub contract: VersionReq,
    /// One line for `ferry plugin inspect`.
    #[serde(default)]
    pub description: String,
    /// What the plugin asks the node for.
    #[serde(default)]
    pub permissions: Permissions,
    /// Its resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Its default configuration; the node may override keys.
    #[serde(default)]
    pub config: toml::Table,
}

/// What a plugin asks for. Asking is not getting: the node grants each
/// plugin directories, commands and hosts in its own configuration, and the
/// plugin gets what it asked for and was granted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Permissions {
    /// Wants read-write access to the directories the node grants it.
    #[serde(default)]
    pub directories: bool,
    /// Programs it may run; `"*"` means any the node grants.
    #[serde(default)]
    pub commands: Vec<String>,
    /// `address:port` pairs it may connect to.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// The resource limits a plugin asks for in `plugin.toml`; the node's
/// caps (see [`crate::LimitCaps`]) may lower them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Linear memory, in MiB.
    #[serde(default = "Limits::default_memory")]
    pub memory_mib: u32,
    /// Time per call, in milliseconds.
    #[serde(default = "Limits::default_timeout")]
    pub timeout_ms: u64,
    /// Installers: bytes one call may add to the disks of its granted
    /// directories, in MiB (absent: what the node allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_mib: Option<u64>,
    /// Installers: files (inodes) one call may create there (absent: what
    /// the node allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_files: Option<u64>,
}

impl Limits {
    fn default_memory() -> u32 {
        64
    }
    fn default_timeout() -> u64 {
        1000
    }
}

/// Who set a limit in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    /// The plugin's `plugin.toml` (or its default) asked for it, within the
    /// node's cap.
    Plugin,
    /// The node's cap, lower than what the plugin asked for.
    Node,
}

impl std::fmt::Display for LimitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitSource::Plugin => "plugin.toml",
            LimitSource::Node => "the node's cap",
        })
    }
}

/// The limits a plugin runs with, and who set each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EffectiveLimits {
    /// Linear memory, in MiB.
    pub memory_mib: u32,
    /// Who set `memory_mib`.
    pub memory_set_by: LimitSource,
    /// Time per call, in milliseconds.
    pub timeout_ms: u64,
    /// Who set `timeout_ms`.
    pub timeout_set_by: LimitSource,
    /// Installers: MiB one call may add to the disks of its grants.
    pub write_mib: u64,
    /// Installers: files one call may create there.
    pub write_files: u64,
    /// Log lines passed on per call (set by the node).
    pub log_lines: usize,
    /// Progress reports passed on per call (set by the node).
    pub progress_events: usize,
}

impl EffectiveLimits {
    /// What `asked` comes to under `caps`.
    pub fn new(asked: &Limits, caps: &crate::LimitCaps) -> EffectiveLimits {
        let (memory_mib, memory_set_by) = match caps.memory_mib {
            Some(cap) if cap < asked.memory_mib => (cap, LimitSource::Node),
            _ => (asked.memory_mib, LimitSource::Plugin),
        };
        let (timeout_ms, timeout_set_by) = match caps.timeout_ms {
            Some(cap) if cap < asked.timeout_ms => (cap.max(1), LimitSource::Node),
            _ => (asked.timeout_ms, LimitSource::Plugin),
        };
        let capped = |asked: Option<u64>, cap: Option<u64>| match (asked, cap) {
            (Some(a), Some(c)) => a.min(c),
            (Some(a), None) => a,
            (None, Some(c)) => c,
            (None, None) => u64::MAX,
        };
        EffectiveLimits {
            memory_mib,
            memory_set_by,
            timeout_ms,
            timeout_set_by,
            write_mib: capped(asked.write_mib, caps.write_mib),
            write_files: capped(asked.write_files, caps.write_files),
            log_lines: caps
                .log_lines
                .unwrap_or(crate::state::MAX_LOG_LINES_PER_CALL),
            progress_events: caps
                .progress_events
                .unwrap_or(crate::state::MAX_PROGRESS_PER_CALL),
        }
    }
}

impl std::fmt::Display for EffectiveLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} MiB memory (set by {}), {} ms per call (set by {})",
            self.memory_mib, self.memory_set_by, self.timeout_ms, self.timeout_set_by
        )?;
        if self.write_mib != u64::MAX || self.write_files != u64::MAX {
            write!(
                f,
                ", writes up to {} MiB and {} files per call",
                self.write_mib, self.write_files
            )?;
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: Self::default_memory(),
            timeout_ms: Self::default_timeout(),
            write_mib: None,
            write_files: None,
        }
    }
}

impl Manifest {
    /// Parses and validates `plugin.toml` text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, PluginError> {
        let bad = |reason: String| PluginError::Manifest {
            path: origin.to_string(),
            reason,
        };
        let manifest: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !valid_name(&manifest.name) {
            return Err(bad(format!(
                "name {:?} must be 1 to 64 lowercase letters, digits and '-'",
                manifest.name
            )));
        }
        if !manifest.contract.matches(&contract::VERSION) {
            return Err(PluginError::IncompatibleContract {
                plugin: manifest.name.clone(),
                found: manifest.contract.to_string(),
                supported: contract::VERSION.to_string(),
                hint: contract::hint(&manifest.contract),
            });
        }
        if manifest.limits.memory_mib == 0 || manifest.limits.memory_mib > MAX_MEMORY_MIB {
            return Err(bad(format!(
                "limits.memory-mib = {} must be between 1 and {MAX_MEMORY_MIB}",
                manifest.limits.memory_mib
            )));
        }
        if manifest.limits.timeout_ms == 0 || manifest.limits.timeout_ms > MAX_TIMEOUT_MS {
            return Err(bad(format!(
                "limits.timeout-ms = {} must be between 1 and {MAX_TIMEOUT_MS}",
                manifest.limits.timeout_ms
            )));
        }
        if manifest.kind != Kind::Installer
            && (manifest.permissions.directories || !manifest.permissions.commands.is_empty())
        {
            return Err(bad(format!(
                "a {} plugin cannot ask for directories or commands; only installers can",
                manifest.kind
            )));
        }
        for host in &manifest.permissions.hosts {
            host.parse::<std::net::SocketAddr>().map_err(|_| {
                bad(format!(
                    "permissions.hosts entry {host:?} must be an address:port, e.g. 10.0.0.5:8080"
                ))
            })?;
        }
        Ok(manifest)
    }
}

/// Plugin names: short, lowercase, safe as a directory name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "window"
        version = "0.1.0"
        kind = "schedule"
        contract = "0.1"
        [config]
        every-minutes = 60
    "#;

    #[test]
    fn parses_a_manifest_with_defaults() {
        let m = Manifest::parse(GOOD, "plugin.toml").unwrap();
        assert_eq!(m.kind, Kind::Schedule);
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.config["every-minutes"].as_integer(), Some(60));
    }

    #[test]
    fn refuses_a_contract_this_node_does_not_speak() {
        let text = GOOD.replace("contract = \"0.1\"", "contract = \"^2.0\"");
        let err = Manifest::parse(&text, "plugin.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ferry:plugin@^2.0"), "{err}");
        assert!(err.contains("0.1.0"), "{err}");
    }

    #[test]
    fn refuses_policies_asking_for_commands_and_bad_limits() {
        let text = format!("{GOOD}\n[permissions]\ncommands = [\"sh\"]\n");
        let text = text.replace("[config]\nevery-minutes = 60", "");
        let err = Manifest::parse(&text, "p").unwrap_err().to_string();
        assert!(err.contains("only installers"), "{err}");
        let text = GOOD.replace("[config]", "[limits]\nmemory-mib = 100000\n[config]");
        let err = Manifest::parse(&text, "p").unwrap_err().to_string();
        assert!(err.contains("memory-mib"), "{err}");
        let err = Manifest::parse(&GOOD.replace("window", "Win/dow"), "p").unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        let err = Manifest::parse(
            &GOOD.replace("kind = \"schedule\"", "kind = \"dance\""),
            "p",
        )
        .unwrap_err();
        assert!(err.to_string().contains("dance"), "{err}");
    }
}
