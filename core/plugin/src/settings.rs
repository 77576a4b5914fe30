//! A node's plugin settings: which plugin of each kind it uses, where site
//! plugins live, their configuration and what they are granted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
/// commands = ["systemctl"]
/// directories = ["/srv/app"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginSettings {
    /// Directory of site plugins, one subdirectory each holding
    /// `plugin.toml` and `NAME.wasm`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
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
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            dir: None,
            transport: Self::default_transport(),
            schedule: Self::default_schedule(),
            election: Self::default_election(),
            reload_every: Self::default_reload(),
            config: BTreeMap::new(),
            grants: BTreeMap::new(),
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
    /// Programs it may run, by name (looked up in the system directories)
    /// or absolute path, exactly as the plugin names them.
    #[serde(default)]
    pub commands: Vec<String>,
    /// `address:port` pairs it may connect to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// URL prefixes a transport plugin may name as sources (mirrors).
    #[serde(default)]
    pub urls: Vec<String>,
}
