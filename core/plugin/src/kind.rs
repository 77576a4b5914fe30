//! The kinds of plugin and what each exports.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A kind of plugin: one world of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Where an agent gets a package's bytes from.
    Transport,
    /// When a relay syncs and how fast.
    Schedule,
    /// Who becomes a subnet's multicast representative.
    Election,
    /// What installing a package means.
    Installer,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [
        Kind::Transport,
        Kind::Schedule,
        Kind::Election,
        Kind::Installer,
    ];

    /// The world a plugin of this kind implements.
    pub fn world(self) -> &'static str {
        match self {
            Kind::Transport => "transport-policy",
            Kind::Schedule => "sync-schedule",
            Kind::Election => "election-policy",
            Kind::Installer => "installer",
        }
    }

    /// The interface a plugin of this kind exports, without version.
    pub fn export(self) -> &'static str {
        match self {
            Kind::Transport => "ferry:plugin/transport",
            Kind::Schedule => "ferry:plugin/schedule",
            Kind::Election => "ferry:plugin/election",
            Kind::Installer => "ferry:plugin/install",
        }
    }

    /// The built-in plugin the node falls back to when a policy fails.
    /// Installers have none: the package names its installer.
    pub fn default_plugin(self) -> Option<&'static str> {
        match self {
            Kind::Transport => Some("default"),
            Kind::Schedule => Some("interval"),
            Kind::Election => Some("score"),
            Kind::Installer => None,
        }
    }

    /// Parses a kind's name.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The kind's name in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Transport => "transport",
            Kind::Schedule => "schedule",
            Kind::Election => "election",
            Kind::Installer => "installer",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
