//! Settings set centrally: what an admin sets for all agents, a site, a
//! group or one agent, signed by the hub and resolved by each agent for
//! itself.
//!
//! The hub signs every scope's settings as one `ferry-settings` document
//! (`ferry_trust::documents`) whose version grows with every change, so an
//! agent keeping the highest it saw refuses a replayed older one. Each
//! agent resolves its own values: `global`, then its `site:`, then the
//! groups whose selectors match its own inventory (by name), then its
//! `agent:` scope; the most specific scope wins. A task may override what
//! concerns it (multicast).
//!
//! Settings are not secret: every agent and relay receives the whole
//! document, so a value never holds a credential.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tasks::{Inventory, Selector};

/// The document kind of the signed settings (`ferry-settings`).
pub const SETTINGS_DOCUMENT: &str = "settings";
/// Largest settings body the hub signs: every check-in answer carries it.
pub const MAX_SETTINGS_BYTES: usize = 1 << 20;
/// Most plugin packages one agent is told to hold.
pub const MAX_PLUGIN_PACKAGES: usize = 16;

/// A key agents understand, with what it does and which values it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key as written (`checkin-wait`).
    pub name: &'static str,
    /// The values it takes, for the operator.
    pub values: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every key agents understand.
pub const KEYS: &[KeyInfo] = &[
    KeyInfo {
        name: "checkin-wait",
        values: "a duration from 1s to 20s",
        help: "longest a check-in is held open waiting for news (the check-in interval); \
               replaces agent.toml's checkin-wait",
    },
    KeyInfo {
        name: "multicast",
        values: "true or false",
        help: "whether tasks that do not say (no --multicast or --no-multicast) may use \
               subnet multicast",
    },
    KeyInfo {
        name: "multicast-delay",
        values: "a duration up to 1h",
        help: "how long a subnet waits for agents to join a multicast session, for tasks \
               that do not give --multicast-delay (kept for subnet multicast, not built yet)",
    },
    KeyInfo {
        name: "cache-size",
        values: "a size such as 500MiB or 20GB",
        help: "most bytes the agent keeps in its distribution cache; files no open task \
               needs are removed, oldest first, after each task",
    },
    KeyInfo {
        name: "plugins.transport",
        values: "a plugin name",
        help: "the transport policy that orders sources; a built-in or one from \
               plugin-packages",
    },
    KeyInfo {
        name: "plugins.schedule",
        values: "a plugin name",
        help: "the sync schedule of relays (their site: or agent:ID scope names them by \
               site or id); a built-in or one in the relay's plugin directory",
    },
    KeyInfo {
        name: "plugins.election",
        values: "a plugin name",
        help: "the policy electing a subnet's multicast representative",
    },
    KeyInfo {
        name: "grants.PLUGIN.directories",
        values: "absolute paths, comma-separated (none: grant none)",
        help: "the directories plugin PLUGIN (e.g. copy) may read and write, over agent.toml's \
               [plugins.grants.PLUGIN] as the agent's settings-grants allows (replace, narrow \
               or ignore)",
    },
    KeyInfo {
        name: "grants.PLUGIN.commands",
        values: "absolute paths of programs, comma-separated (none: grant none)",
        help: "the programs plugin PLUGIN may run, over agent.toml's, as settings-grants allows",
    },
    KeyInfo {
        name: "plugin-packages",
        values: "NAME@REQUIREMENT[,NAME@REQUIREMENT...]",
        help: "published Ferry packages that each hold a plugin directory (plugin.toml and \
               NAME.wasm); agents fetch the newest matching version, verify it like any \
               package, and switch to it without a restart",
    },
];

/// A settings scope: who a value applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every agent.
    Global,
    /// The agents of a site.
    Site(String),
    /// The agents a group selects.
    Group(String),
    /// One agent.
    Agent(String),
}

impl Scope {
    /// How specific the scope is: a more specific one wins.
    fn rank(&self) -> u8 {
        match self {
            Scope::Global => 0,
            Scope::Site(_) => 1,
            Scope::Group(_) => 2,
            Scope::Agent(_) => 3,
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "global" {
            return Ok(Scope::Global);
        }
        let (kind, value) = text.split_once(':').ok_or_else(|| {
            format!("{text:?} is not a scope: use global, site:NAME, group:NAME or agent:ID")
        })?;
        if value.is_empty()
            || value.len() > 64
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "{text:?}: the name must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"
            ));
        }
        match kind {
            "site" => Ok(Scope::Site(value.into())),
            "group" => Ok(Scope::Group(value.into())),
            "agent" => Ok(Scope::Agent(value.into())),
            other => Err(format!(
                "{text:?}: unknown scope {other:?}; use global, site:NAME, group:NAME or agent:ID"
            )),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Site(s) => write!(f, "site:{s}"),
            Scope::Group(g) => write!(f, "group:{g}"),
            Scope::Agent(a) => write!(f, "agent:{a}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks `value` for `key`; the error tells the operator what is wanted.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    if let Some(rest) = key.strip_prefix("grants.") {
        return check_grant(key, rest, value);
    }
    let Some(info) = KEYS.iter().find(|k| k.name == key) else {
        let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        return Err(format!(
            "unknown setting {key:?}; known: {} (see `ferry settings keys`)",
            known.join(", ")
        ));
    };
    let wrong = |why: String| Err(format!("{key} = {value:?}: {why}; want {}", info.values));
    match key {
        "checkin-wait" => match humantime::parse_duration(value) {
            Ok(d) if (Duration::from_secs(1)..=Duration::from_secs(20)).contains(&d) => Ok(()),
            Ok(_) => wrong("out of range".into()),
            Err(e) => wrong(e.to_string()),
        },
        "multicast" => match value {
            "true" | "false" => Ok(()),
            _ => wrong("not a boolean".into()),
        },
        "multicast-delay" => match humantime::parse_duration(value) {
            Ok(d) if d <= Duration::from_secs(3600) => Ok(()),
            Ok(_) => wrong("longer than an hour".into()),
            Err(e) => wrong(e.to_string()),
        },
        "cache-size" => crate::parse_size(value).map(|_| ()).or_else(wrong),
        "plugins.transport" | "plugins.election" | "plugins.schedule" => {
            if plugin_name(value) {
                Ok(())
            } else {
                wrong("not a plugin name".into())
            }
        }
        "plugin-packages" => parse_packages(value).map(|_| ()).or_else(wrong),
        _ => Ok(()),
    }
}

/// `grants.PLUGIN.FIELD`: a plugin name, a field, absolute paths.
fn check_grant(key: &str, rest: &str, value: &str) -> Result<(), String> {
    let Some((plugin, field)) = rest.rsplit_once('.') else {
        return Err(format!(
            "{key:?}: write grants.PLUGIN.directories or grants.PLUGIN.commands"
        ));
    };
    if !plugin_name(plugin) {
        return Err(format!("{key:?}: {plugin:?} is not a plugin name"));
    }
    if !matches!(field, "directories" | "commands") {
        return Err(format!(
            "{key:?}: settings grant directories and commands; hosts and urls stay in agent.toml"
        ));
    }
    parse_paths(value)
        .map(|_| ())
        .map_err(|why| format!("{key} = {value:?}: {why}"))
}

/// Comma-separated absolute paths without `..`; empty: none.
pub fn parse_paths(value: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let path = std::path::Path::new(item);
        if !path.is_absolute() {
            return Err(format!("{item:?} is not an absolute path"));
        }
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!("{item:?} holds '..'"));
        }
        out.push(path.to_path_buf());
    }
    Ok(out)
}

/// Plugin names: as `plugin.toml` allows them.
fn plugin_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `plugin-packages`: package names with version requirements.
pub fn parse_packages(value: &str) -> Result<Vec<(String, semver::VersionReq)>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, req) = item
            .split_once('@')
            .ok_or_else(|| format!("{item:?} is not NAME@REQUIREMENT"))?;
        ferry_content::PackageName::new(name)
            .map_err(|_| format!("{name:?} is not a package name"))?;
        let req = semver::VersionReq::parse(req)
            .map_err(|_| format!("{req:?} is not a version requirement (try ^1.2)"))?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("{name} is named twice"));
        }
        out.push((name.to_owned(), req));
    }
    if out.len() > MAX_PLUGIN_PACKAGES {
        return Err(format!("more than {MAX_PLUGIN_PACKAGES} packages"));
    }
    Ok(out)
}

/// One scope's values in the signed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeSettings {
    /// Who they apply to.
    pub scope: Scope,
    /// For a group scope, the group's selectors when the hub signed
    /// ([`Selector`] as text): agents match them against their own
    /// inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<String>,
    /// Key to value, each checked by [`check`].
    pub values: BTreeMap<String, String>,
}

/// The body of the signed settings document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Every scope with values, in no particular order.
    pub scopes: Vec<ScopeSettings>,
    /// Unix time of the last change.
    pub changed_at: i64,
    /// Client id of the admin who made it.
    pub changed_by: String,
}

/// One resolved value and the scope it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The value.
    pub value: String,
    /// The scope that set it.
    pub scope: Scope,
}

impl Settings {
    /// The values that apply to agent `id` of `site` with `inventory`:
    /// more specific scopes over less specific ones, groups by name.
    pub fn resolve(
        &self,
        id: &str,
        site: Option<&str>,
        inventory: Option<&Inventory>,
    ) -> BTreeMap<String, Resolved> {
        let mut applying: Vec<&ScopeSettings> = self
            .scopes
            .iter()
            .filter(|s| match &s.scope {
                Scope::Global => true,
                Scope::Site(name) => site == Some(name.as_str()),
                Scope::Agent(a) => a == id,
                Scope::Group(_) => s.selectors.iter().any(|text| {
                    text.parse::<Selector>()
                        .is_ok_and(|sel| sel.matches(id, site, inventory))
                }),
            })
            .collect();
        applying.sort_by(|a, b| {
            a.scope
                .rank()
                .cmp(&b.scope.rank())
                .then_with(|| a.scope.cmp(&b.scope))
        });
        let mut out = BTreeMap::new();
        for s in applying {
            for (key, value) in &s.values {
                out.insert(
                    key.clone(),
                    Resolved {
                        value: value.clone(),
                        scope: s.scope.clone(),
                    },
                );
            }
        }
        out
    }
}

/// What an agent acts on, read from its resolved values; a value that does
/// not check (from a newer hub that knows more) is left out and named in
/// `ignored`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSettings {
    /// `checkin-wait`.
    pub checkin_wait: Option<Duration>,
    /// `multicast`.
    pub multicast: Option<bool>,
    /// `multicast-delay`.
    pub multicast_delay: Option<Duration>,
    /// `cache-size`, in bytes.
    pub cache_size: Option<u64>,
    /// `plugins.transport`.
    pub transport: Option<String>,
    /// `plugins.election`.
    pub election: Option<String>,
    /// `plugins.schedule` (relays).
    pub schedule: Option<String>,
    /// `plugin-packages`.
    pub plugin_packages: Vec<(String, semver::VersionReq)>,
    /// `grants.PLUGIN.*`, by plugin name.
    pub grants: BTreeMap<String, GrantSetting>,
    /// Keys not understood or values that do not check, with why.
    pub ignored: Vec<String>,
}

impl AgentSettings {
    /// Reads `resolved` values.
    pub fn from_resolved(resolved: &BTreeMap<String, Resolved>) -> AgentSettings {
        let mut out = AgentSettings::default();
        for (key, r) in resolved {
            if let Err(why) = check(key, &r.value) {
                out.ignored.push(format!("{why} (from {})", r.scope));
                continue;
            }
            let v = r.value.as_str();
            match key.as_str() {
                "checkin-wait" => out.checkin_wait = humantime::parse_duration(v).ok(),
                "multicast" => out.multicast = Some(v == "true"),
                "multicast-delay" => out.multicast_delay = humantime::parse_duration(v).ok(),
                "cache-size" => out.cache_size = crate::parse_size(v).ok(),
                "plugins.transport" => out.transport = Some(v.to_owned()),
                "plugins.election" => out.election = Some(v.to_owned()),
                "plugins.schedule" => out.schedule = Some(v.to_owned()),
                "plugin-packages" => out.plugin_packages = parse_packages(v).unwrap_or_default(),
                _ => {
                    if let Some((plugin, field)) = key
                        .strip_prefix("grants.")
                        .and_then(|rest| rest.rsplit_once('.'))
                    {
                        let grant = out.grants.entry(plugin.to_owned()).or_default();
                        let paths = parse_paths(v).unwrap_or_default();
                        match field {
                            "directories" => grant.directories = Some(paths),
                            "commands" => {
                                grant.commands =
                                    Some(paths.iter().map(|p| p.display().to_string()).collect())
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        out
    }
}

/// What the settings grant one plugin; `None`: agent.toml's stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSetting {
    /// `grants.PLUGIN.directories`.
    pub directories: Option<Vec<std::path::PathBuf>>,
    /// `grants.PLUGIN.commands`.
    pub commands: Option<Vec<String>>,
}

/// `POST /v1/settings`: values to set and keys to remove in one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsChange {
    /// The scope.
    pub scope: Scope,
    /// Key to value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

/// `GET /v1/settings` and the answer to a change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsView {
    /// The signed document's version (0: nothing set yet).
    pub version: u64,
    /// Unix time the signed document expires (the hub signs it again
    /// before then).
    pub expires_at: i64,
    /// Every scope's values.
    pub settings: Settings,
    /// With `?agent=ID`: what that agent resolves, each value with the
    /// scope that set it (groups matched against its last inventory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<BTreeMap<String, Resolved>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(scope: &str, selectors: &[&str], values: &[(&str, &str)]) -> ScopeSettings {
        ScopeSettings {
            scope: scope.parse().unwrap(),
            selectors: selectors.iter().map(|s| s.to_string()).collect(),
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_most_specific_scope_wins_and_groups_match_the_inventory() {
        let settings = Settings {
            scopes: vec![
                scope(
                    "agent:pc-1",
                    &[],
                    &[
                        ("checkin-wait", "5s"),
                        ("plugins.transport", "lan-first"),
                        ("cache-size", "1GiB"),
                    ],
                ),
                scope("group:linux", &["os:linux"], &[("checkin-wait", "7s")]),
                scope("group:zz", &["os:linux"], &[("multicast", "true")]),
                scope("group:aa", &["os:linux"], &[("multicast", "false")]),
                scope("site:berlin", &[], &[("checkin-wait", "9s")]),
                scope(
                    "global",
                    &[],
                    &[("checkin-wait", "20s"), ("multicast", "false")],
                ),
            ],
            ..Settings::default()
        };
        let linux = Inventory {
            os: "linux".into(),
            ..Inventory::default()
        };
        let get = |id: &str, site: Option<&str>, inv: Option<&Inventory>, key: &str| {
            settings.resolve(id, site, inv).get(key).cloned()
        };
        let wait = |id, site, inv| get(id, site, inv, "checkin-wait").unwrap();
        assert_eq!(wait("pc-1", Some("berlin"), Some(&linux)).value, "5s");
        assert_eq!(wait("pc-2", Some("berlin"), Some(&linux)).value, "7s");
        assert_eq!(
            wait("pc-2", Some("berlin"), Some(&linux)).scope,
            Scope::Group("linux".into())
        );
        assert_eq!(wait("pc-2", Some("berlin"), None).value, "9s");
        assert_eq!(wait("pc-2", Some("paris"), None).value, "20s");
        // Groups apply by name: zz after aa.
        let multicast = get("pc-2", None, Some(&linux), "multicast").unwrap();
        assert_eq!(multicast.value, "true");
        assert_eq!(get("pc-3", None, None, "plugins.transport"), None);
        let typed =
            AgentSettings::from_resolved(&settings.resolve("pc-1", Some("berlin"), Some(&linux)));
        assert_eq!(typed.checkin_wait, Some(Duration::from_secs(5)));
        assert_eq!(typed.transport.as_deref(), Some("lan-first"));
        assert_eq!(typed.cache_size, Some(1 << 30));
        assert_eq!(typed.multicast, Some(true));
        assert!(typed.ignored.is_empty());
    }

    #[test]
    fn values_are_checked_by_key() {
        for (k, v) in [
            ("checkin-wait", "10s"),
            ("multicast", "true"),
            ("multicast-delay", "90s"),
            ("cache-size", "20GB"),
            ("cache-size", "512MiB"),
            ("plugins.transport", "lan-first"),
            (
                "plugin-packages",
                "acme-transport@^1, site-installer@=2.0.1",
            ),
            ("grants.copy.directories", "/opt/acme, /srv/app"),
            ("grants.command.commands", "/usr/bin/systemctl"),
            ("grants.copy.directories", ""),
        ] {
            check(k, v).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
        }
        for (k, v) in [
            ("checkin-wait", "30s"),
            ("checkin-wait", "soon"),
            ("multicast", "yes"),
            ("multicast-delay", "2h"),
            ("cache-size", "12 parsecs"),
            ("cache-size", "99999999999TiB"),
            ("plugins.transport", "Bad Name"),
            ("plugin-packages", "acme"),
            ("plugin-packages", "a@^1,a@^2"),
            ("colour", "red"),
            ("grants.copy.directories", "opt/acme"),
            ("grants.copy.directories", "/opt/../etc"),
            ("grants.copy.hosts", "10.0.0.1:80"),
            ("grants.Bad.directories", "/opt"),
            ("grants.copy", "/opt"),
        ] {
            assert!(check(k, v).is_err(), "{k}={v}");
        }
        assert!(check("colour", "red").unwrap_err().contains("checkin-wait"));
        let resolved = BTreeMap::from([(
            "checkin-wait".to_string(),
            Resolved {
                value: "1h".into(),
                scope: Scope::Global,
            },
        )]);
        let typed = AgentSettings::from_resolved(&resolved);
        assert_eq!(typed.checkin_wait, None);
        assert_eq!(typed.ignored.len(), 1);
        let grants = BTreeMap::from([(
            "grants.copy.directories".to_string(),
            Resolved {
                value: "/opt/a,/opt/b".into(),
                scope: Scope::Global,
            },
        )]);
        let typed = AgentSettings::from_resolved(&grants);
        assert_eq!(
            typed.grants["copy"].directories,
            Some(vec!["/opt/a".into(), "/opt/b".into()])
        );
        assert_eq!(typed.grants["copy"].commands, None);
    }

    #[test]
    fn scopes_parse_and_print() {
        for text in ["global", "site:berlin", "group:linux-pcs", "agent:pc-1"] {
            assert_eq!(text.parse::<Scope>().unwrap().to_string(), text);
        }
        for bad in ["site:", "everyone", "planet:earth", "agent:a/b"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }
}
