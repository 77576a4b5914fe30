//! A node's plugin settings: which plugin of each kind it uses, where site
//! plugins live, their configuration and what they are granted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kind::Kind;

/// The `[plugins]` table of a node's configuration.
///
/// ```toml
/// [plugins]
/// dir = "/etc/ferry/plugins"      # site plugins; override built-ins of the same kind and name
/// schedule = "window"             # the sync schedule this node uses
///
/// [plugins.config.window]         # laid over the plugin's own [config]
/// outside-cap-bps = 128000
///
/// [plugins.grants.command]        # what the plugin may touch, if it asks
/// commands = ["/usr/bin/systemctl"]
/// directories = ["/srv/app"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginSettings {
    /// Directory of site plugins, one subdirectory each holding
    /// `plugin.toml` and `NAME.wasm`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A second directory laid out like `dir`, which the node itself
    /// fills with plugins delivered as Ferry packages (an agent's
    /// `plugin-packages` setting); `dir` wins when both provide a plugin.
    #[serde(skip)]
    pub packages_dir: Option<PathBuf>,
    /// The transport policy.
    #[serde(default = "PluginSettings::default_transport")]
    pub transport: String,
    /// The sync schedule.
    #[serde(default = "PluginSettings::default_schedule")]
    pub schedule: String,
    /// The election policy.
    #[serde(default = "PluginSettings::default_election")]
    pub election: String,
    /// How often the plugin directory is checked for changed plugins.
    #[serde(default = "PluginSettings::default_reload", with = "humantime_serde")]
    pub reload_every: Duration,
    /// Configuration per plugin name, laid over the plugin's defaults.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Table>,
    /// Grants per plugin name.
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
    /// Caps per plugin kind on what a plugin's `plugin.toml` may ask for;
    /// kinds not listed get [`LimitCaps::default_for`].
    #[serde(default)]
    pub limits: BTreeMap<Kind, LimitCaps>,
}

impl PluginSettings {
    fn default_transport() -> String {
        "default".into()
    }
    fn default_schedule() -> String {
        "interval".into()
    }
    fn default_election() -> String {
        "score".into()
    }
    fn default_reload() -> Duration {
        Duration::from_secs(2)
    }

    /// The caps that apply to plugins of `kind`: the node's setting, each
    /// field falling back to the kind's default.
    pub fn caps(&self, kind: Kind) -> LimitCaps {
        self.limits
            .get(&kind)
            .copied()
            .unwrap_or_default()
            .or_defaults(kind)
    }
}

/// The most a plugin of one kind may run per call and hold in memory, set
/// by the node (`[plugins.limits.KIND]`). A plugin's `plugin.toml` may ask
/// for less, never more: the node's limits win.
///
/// ```toml
/// [plugins.limits.election]
/// timeout-ms = 500
/// memory-mib = 64
///
/// [plugins.limits.installer]
/// write-mib = 2048     # what one call may add to the disks of its grants
/// write-files = 50000
/// log-lines = 500      # passed on per call; the rest are counted and dropped
/// progress-events = 100
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitCaps {
    /// Longest call, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Most linear memory, in MiB.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Installers: most MiB one call may add to the disks of its grants.
    #[serde(default)]
    pub write_mib: Option<u64>,
    /// Installers: most files one call may create there.
    #[serde(default)]
    pub write_files: Option<u64>,
    /// Most log lines passed on per call (default 200; more are counted and
    /// dropped).
    #[serde(default)]
    pub log_lines: Option<usize>,
    /// Most progress reports passed on per call (default 1,000).
    #[serde(default)]
    pub progress_events: Option<usize>,
}

impl LimitCaps {
    /// These caps, each unset field taken from [`LimitCaps::default_for`].
    pub fn or_defaults(self, kind: Kind) -> LimitCaps {
        let default = LimitCaps::default_for(kind);
        LimitCaps {
            timeout_ms: self.timeout_ms.or(default.timeout_ms),
            memory_mib: self.memory_mib.or(default.memory_mib),
            write_mib: self.write_mib.or(default.write_mib),
            write_files: self.write_files.or(default.write_files),
            log_lines: self.log_lines.or(default.log_lines),
            progress_events: self.progress_events.or(default.progress_events),
        }
    }

    /// A node's caps when its settings name none: decisions (transport,
    /// schedule, election) are quick and small, 2 s and 128 MiB; installers
    /// may wait on package managers, 30 minutes and 512 MiB, and may add
    /// 4 GiB and 100,000 files to the disks of their grants per call.
    pub fn default_for(kind: Kind) -> LimitCaps {
        match kind {
            Kind::Installer => LimitCaps {
                timeout_ms: Some(30 * 60 * 1000),
                memory_mib: Some(512),
                write_mib: Some(4096),
                write_files: Some(100_000),
                log_lines: None,
                progress_events: None,
            },
            _ => LimitCaps {
                timeout_ms: Some(2000),
                memory_mib: Some(128),
                write_mib: None,
                write_files: None,
                log_lines: None,
                progress_events: None,
            },
        }
    }
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            dir: None,
            packages_dir: None,
            transport: Self::default_transport(),
            schedule: Self::default_schedule(),
            election: Self::default_election(),
            reload_every: Self::default_reload(),
            config: BTreeMap::new(),
            grants: BTreeMap::new(),
            limits: BTreeMap::new(),
        }
    }
}

/// What a node grants one plugin. A plugin gets only what it also asked for
/// in its manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grant {
    /// Directories it may read and write, absolute.
    #[serde(default)]
    pub directories: Vec<PathBuf>,
    /// Programs it may run, by absolute path (the plugin names one by that
    /// path or its file name). Refused at load if a granted directory holds
    /// a granted program or a directory of the command search path.
    #[serde(default)]
    pub commands: Vec<String>,
    /// `address:port` pairs it may connect to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Mirror URLs a transport plugin may name as sources: scheme, host and
    /// port exactly, the path and anything below it (no user names).
    #[serde(default)]
    pub urls: Vec<String>,
}

/// A mirror URL a transport plugin may name, parsed from a grant's `urls`:
/// scheme, host and port must match exactly and the path must continue the
/// grant's path at a segment boundary. Matching text prefixes instead let
/// `https://mirror.example@evil.example/` pass for `https://mirror.example`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlGrant {
    scheme: String,
    host: String,
    port: Option<u16>,
    /// The path without a trailing `/` (empty for the whole host).
    path: String,
}

impl UrlGrant {
    /// Parses a granted URL prefix, refusing what a mirror URL cannot be.
    pub(crate) fn parse(text: &str) -> Result<UrlGrant, String> {
        let url = url::Url::parse(text).map_err(|e| format!("urls entry {text:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "urls entry {text:?}: only http:// and https:// mirrors"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "urls entry {text:?}: user names and passwords do not belong in a mirror URL"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "urls entry {text:?}: a mirror prefix has no query or fragment"
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("urls entry {text:?}: no host"))?;
        Ok(UrlGrant {
            scheme: url.scheme().to_owned(),
            host: host.to_owned(),
            port: url.port_or_known_default(),
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Whether `candidate`, a URL a plugin named, lies under this grant.
    pub(crate) fn allows(&self, candidate: &str) -> bool {
        let Ok(url) = url::Url::parse(candidate) else {
            return false;
        };
        let path = url.path();
        url.scheme() == self.scheme
            && url.username().is_empty()
            && url.password().is_none()
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == self.port
            && (path == self.path
                || path
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_grants_match_host_port_and_whole_segments() {
        let grant = UrlGrant::parse("https://mirror.example/pkg").unwrap();
        for ok in [
            "https://mirror.example/pkg",
            "https://mirror.example/pkg/",
            "https://mirror.example:443/pkg/a/b.bin",
            "HTTPS://MIRROR.example/pkg/x",
        ] {
            assert!(grant.allows(ok), "{ok} refused");
        }
        for bad in [
            "https://mirror.example@evil.example/pkg",
            "https://mirror.example:443@169.254.169.254/pkg",
            "https://user@mirror.example/pkg/x",
            "https://mirror.example/pkgevil",
            "https://mirror.example:8443/pkg/x",
            "http://mirror.example/pkg/x",
            "https://mirror.example.evil.example/pkg/x",
            "not a url",
        ] {
            assert!(!grant.allows(bad), "{bad} allowed");
        }
        let whole = UrlGrant::parse("https://mirror.example").unwrap();
        assert!(whole.allows("https://mirror.example/any/thing"));
        assert!(!whole.allows("https://mirror.example@evil.example/"));
        for bad in [
            "https://u:p@mirror.example/",
            "ftp://mirror.example/",
            "https://mirror.example/?q=1",
            "mirror.example",
        ] {
            assert!(UrlGrant::parse(bad).is_err(), "{bad} accepted as a grant");
        }
    }
}
