//! `relay.toml`: where the relay serves, what it keeps, how it syncs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ferry_content::PackageName;
use serde::{Deserialize, Serialize};

use crate::RelayError;

/// The relay's configuration, `relay.toml` in its data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelayConfig {
    /// Address and port to serve the office's agents on.
    pub listen: SocketAddr,
    /// Where the relay syncs from: the hub, or another relay enrolled with
    /// the same hub.
    pub upstream: url::Url,
    /// What the relay keeps.
    #[serde(default)]
    pub keep: KeepConfig,
    /// How it syncs.
    #[serde(default)]
    pub sync: SyncConfig,
    /// How much it keeps.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Plugins: the sync schedule (`schedule = "interval"`), a site plugin
    /// directory, per-plugin configuration and caps.
    #[serde(default)]
    pub plugins: ferry_plugin::PluginSettings,
}

/// What the relay keeps synced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeepConfig {
    /// `*` for everything, or `NAME` / `NAME@REQUIREMENT`, where `*` in
    /// NAME matches any characters (`acme-*@^2`).
    pub packages: Vec<String>,
}

impl Default for KeepConfig {
    fn default() -> Self {
        KeepConfig {
            packages: vec!["*".into()],
        }
    }
}

/// Sync timing that is not the schedule plugin's to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SyncConfig {
    /// First wait after a failed sync; doubled on each failure in a row.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest wait after failures in a row (the schedule may say sooner).
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Slowest upstream accepted, in bytes per second averaged over each
    /// `stall` window of a sync's requests taken together (time waiting for
    /// the WAN budget does not count); a link that trickles below it is
    /// treated as down.
    #[serde(default = "default_min_rate")]
    pub min_rate: u64,
    /// Longest wait for an answer or for the next bytes of one.
    #[serde(default = "default_stall", with = "humantime_serde")]
    pub stall: Duration,
}

fn default_min_rate() -> u64 {
    1024
}

fn default_stall() -> Duration {
    Duration::from_secs(30)
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            min_rate: default_min_rate(),
            stall: default_stall(),
        }
    }
}

impl SyncConfig {
    /// The pace the upstream must keep.
    pub fn pace(&self) -> ferry_net::Pace {
        ferry_net::Pace {
            grace: self.stall,
            min_rate: self.min_rate,
            stall: self.stall,
        }
    }
}

/// The disk the relay's content may use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheConfig {
    /// Most bytes of package content kept (`"50GiB"`, `"500MB"`,
    /// `"1000000"`); absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

impl CacheConfig {
    /// The quota in bytes, if any.
    pub fn quota_bytes(&self) -> Result<Option<u64>, String> {
        self.quota.as_deref().map(ferry_net::parse_size).transpose()
    }
}

/// One `[keep] packages` entry.
#[derive(Debug, Clone)]
pub struct KeepRule {
    pattern: String,
    requirement: semver::VersionReq,
}

impl KeepRule {
    /// Parses `NAME[@REQ]`, NAME possibly with `*`.
    pub fn parse(text: &str) -> Result<KeepRule, String> {
        let (pattern, req) = match text.split_once('@') {
            Some((p, r)) => (p, r),
            None => (text, "*"),
        };
        let requirement = semver::VersionReq::parse(req).map_err(|e| {
            format!("{text:?}: {req:?} is not a semver requirement (try ^1.2, >=2): {e}")
        })?;
        // The pattern must be a package name once its wildcards are filled.
        if PackageName::new(&pattern.replace('*', "x")).is_err() {
            return Err(format!(
                "{text:?}: {pattern:?} is not a package name or a pattern of one \
                 (a-z, 0-9, '.', '_', '-' and '*')"
            ));
        }
        Ok(KeepRule {
            pattern: pattern.to_owned(),
            requirement,
        })
    }

    /// Whether this rule keeps `name` `version`.
    pub fn matches(&self, name: &str, version: &semver::Version) -> bool {
        glob(&self.pattern, name) && self.requirement.matches(version)
    }
}

/// `*`-only glob matching.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl RelayConfig {
    /// A configuration with defaults for everything but the addresses.
    pub fn new(listen: SocketAddr, upstream: url::Url) -> Self {
        RelayConfig {
            listen,
            upstream,
            keep: KeepConfig::default(),
            sync: SyncConfig::default(),
            cache: CacheConfig::default(),
            plugins: ferry_plugin::PluginSettings::default(),
        }
    }

    /// The parsed `[keep] packages` rules.
    pub fn keep_rules(&self) -> Result<Vec<KeepRule>, String> {
        self.keep
            .packages
            .iter()
            .map(|p| KeepRule::parse(p))
            .collect()
    }

    /// The commented file `ferry relay init` writes.
    pub fn render(&self) -> String {
        let body = toml::to_string_pretty(self).expect("config serializes");
        format!(
            "# Ferry relay configuration (read at `ferry relay run`).\n\
             #\n\
             # listen        address:port the office's agents reach this relay at\n\
             #               (port 0: any free port; `ferry relay status` shows it)\n\
             # upstream      where this relay syncs from: the hub, or another relay\n\
             #               enrolled with the same hub (tiers). Whatever it is, every\n\
             #               byte is verified against the hub's root pinned at init.\n\
             # [keep]        packages = [\"*\"] keeps everything; or a list of NAME or\n\
             #               NAME@REQUIREMENT, `*` matching any characters in NAME:\n\
             #               packages = [\"acme-vpn@^2\", \"tools-*\"]\n\
             # [sync]        retry-min / retry-max: back-off after failed syncs\n\
             #               (doubling, with jitter); min-rate (bytes/s) and stall:\n\
             #               an upstream slower than min-rate over a stall window,\n\
             #               or silent for stall, is treated as down\n\
             # [cache]       quota = \"100GiB\": most package content kept; past it\n\
             #               the least recently asked-for versions are evicted\n\
             #               (never pinned ones, nor the newest of a kept package)\n\
             # [plugins]     schedule = \"interval\" (default) or \"window\", or a site\n\
             #               plugin in `dir`; its configuration goes in\n\
             #               [plugins.config.NAME], e.g.\n\
             #                 [plugins.config.interval]\n\
             #                 every-minutes = 30\n\
             #                 bandwidth-cap-bps = 20000000\n\
             #               See docs/plugins.md and docs/relay.md.\n\n{body}"
        )
    }

    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, RelayError> {
        let text = std::fs::read_to_string(path).map_err(|e| RelayError::io(path, e))?;
        let bad = |message: String| RelayError::Config {
            path: path.display().to_string(),
            message,
        };
        let config: RelayConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        config
            .keep_rules()
            .map_err(|e| bad(format!("[keep] packages: {e}")))?;
        config
            .cache
            .quota_bytes()
            .map_err(|e| bad(format!("[cache] quota: {e}")))?;
        if config.sync.stall < Duration::from_secs(1) {
            return Err(bad("[sync] stall must be at least 1s".into()));
        }
        if config.sync.retry_min.is_zero() || config.sync.retry_min > config.sync.retry_max {
            return Err(bad(
                "[sync] retry-min must be above zero and at most retry-max".into(),
            ));
        }
        if config.upstream.scheme() != "https" {
            return Err(bad(format!(
                "upstream {} must be an https:// URL",
                config.upstream
            )));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_parses_back() {
        let c = RelayConfig::new(
            "0.0.0.0:8444".parse().unwrap(),
            "https://hub.example:8443/".parse().unwrap(),
        );
        let text = c.render();
        assert_eq!(toml::from_str::<RelayConfig>(&text).unwrap(), c);
        assert!(toml::from_str::<RelayConfig>(&text.replace("listen", "lisen")).is_err());
    }

    #[test]
    fn keep_rules_match_names_and_versions() {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        let all = KeepRule::parse("*").unwrap();
        assert!(all.matches("anything", &v("0.1.0")));
        let vpn = KeepRule::parse("acme-*@^2").unwrap();
        assert!(vpn.matches("acme-vpn", &v("2.3.0")));
        assert!(!vpn.matches("acme-vpn", &v("3.0.0")));
        assert!(!vpn.matches("other-vpn", &v("2.3.0")));
        let mid = KeepRule::parse("a*b*c").unwrap();
        assert!(mid.matches("abc", &v("1.0.0")));
        assert!(mid.matches("axxbyyc", &v("1.0.0")));
        assert!(!mid.matches("axxbyy", &v("1.0.0")));
        assert!(!mid.matches("acb", &v("1.0.0")));
        let exact = KeepRule::parse("tool").unwrap();
        assert!(exact.matches("tool", &v("1.0.0")));
        assert!(!exact.matches("tools", &v("1.0.0")));
        for bad in ["Bad Name", "x@not-a-req", "../x"] {
            assert!(KeepRule::parse(bad).is_err(), "{bad}");
        }
    }
}
