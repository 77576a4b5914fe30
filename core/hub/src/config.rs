use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::HubError;

/// The hub's configuration, `hub.toml` in its data directory. Command-line
/// flags override it, and `FERRY_LISTEN` overrides `listen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Address and port to serve HTTPS on.
    pub listen: SocketAddr,
    /// How long each kind of signed metadata stays valid.
    #[serde(default)]
    pub tuf: ferry_trust::Lifetimes,
    /// Garbage collection.
    #[serde(default)]
    pub gc: GcConfig,
    /// How long an issued client certificate is valid.
    #[serde(default = "default_cert_days")]
    pub client_cert_days: i64,
    /// The hub's uplink budget.
    #[serde(default)]
    pub egress: EgressConfig,
}

/// What the hub may send, to protect its own uplink.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Cap in bits per second on everything the hub sends to relays
    /// together, shared equally among the relays downloading at the moment;
    /// absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relays_cap_bps: Option<u64>,
}

fn default_cert_days() -> i64 {
    365
}

/// Garbage collection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// How often to collect.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Uploaded chunks no publish used are dropped after this long.
    #[serde(with = "humantime_serde")]
    pub staged_max_age: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: Duration::from_secs(3600),
            staged_max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: "0.0.0.0:8443".parse().expect("valid default address"),
            tuf: Default::default(),
            gc: Default::default(),
            client_cert_days: default_cert_days(),
            egress: EgressConfig::default(),
        }
    }
}

impl HubConfig {
    /// The commented file `ferry hub init` writes.
    pub fn render(&self) -> String {
        let body = toml::to_string_pretty(self).expect("config serializes");
        format!(
            "# Ferry hub configuration. Flags of `ferry hub run` override these values;\n\
             # FERRY_LISTEN overrides `listen`.\n\
             #\n\
             # listen            address:port for the HTTPS API (use port 0 for any free port)\n\
             # client_cert_days  validity of certificates issued at enrollment\n\
             # [tuf]             lifetime of each kind of signed metadata (2s to 100years);\n\
             #                   the hub re-signs each role when half of its lifetime is\n\
             #                   gone (root only while root.der is in tuf/keys; otherwise\n\
             #                   it warns, see docs/security.md), so clients that cannot\n\
             #                   reach it for longer than `timestamp` stop trusting stale\n\
             #                   metadata (freeze protection)\n\
             # [gc]              how often unreferenced content is removed, and how long an\n\
             #                   uploaded chunk may wait for the publish that uses it\n\
             # [egress]          relays_cap_bps = 200000000: the most the hub sends to all\n\
             #                   relays together, in bits per second, shared equally among\n\
             #                   those downloading at the moment (absent: no cap)\n\n{body}"
        )
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, HubError> {
        let text = std::fs::read_to_string(path).map_err(|e| HubError::io(path, e))?;
        let config: HubConfig = toml::from_str(&text).map_err(|e| HubError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        config.tuf.validate().map_err(|message| HubError::Config {
            path: path.display().to_string(),
            message,
        })?;
        if config.egress.relays_cap_bps == Some(0) {
            return Err(HubError::Config {
                path: path.display().to_string(),
                message: "[egress] relays_cap_bps must be above 0 (remove it for no cap)".into(),
            });
        }
        if config.client_cert_days < 1 {
            return Err(HubError::Config {
                path: path.display().to_string(),
                message: "client_cert_days must be at least 1".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_parses_back() {
        let c = HubConfig::default();
        let text = c.render();
        assert_eq!(toml::from_str::<HubConfig>(&text).unwrap(), c);
        assert!(toml::from_str::<HubConfig>("listen = \"x\"").is_err());
        assert!(toml::from_str::<HubConfig>("listen = \"127.0.0.1:1\"\nbogus = 1").is_err());
    }
}
