//! An election policy: which volunteer of a subnet downloads the package
//! once and multicasts it to the others. Every node runs it on the same
//! volunteers and must reach the same answer, so it depends on nothing else.

use ferry_plugin_sdk::election::{Candidate, ElectionPolicy, ElectionRequest};
use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    prefer_wired: bool,
}

/// The plugin; `pub` so native builds see it used.
pub struct Policy;

impl ElectionPolicy for Policy {
    fn elect(request: ElectionRequest) -> Result<String, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        let rank = |c: &Candidate| (config.prefer_wired && c.wired, c.free_disk_bytes);
        request
            .volunteers
            .iter()
            // Highest rank wins; equal ranks go to the smallest id.
            .max_by(|a, b| rank(a).cmp(&rank(b)).then(b.id.cmp(&a.id)))
            .map(|c| c.id.clone())
            .ok_or_else(|| "no volunteers".to_string())
    }
}

ferry_plugin_sdk::export_election!(Policy);

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, wired: bool, free: u64) -> Candidate {
        Candidate {
            id: id.into(),
            free_disk_bytes: free,
            uptime_secs: 0,
            on_mains_power: true,
            wired,
            laptop: false,
            cached_bytes: 0,
        }
    }

    #[test]
    fn a_wired_node_wins_over_more_disk() {
        ferry_plugin_sdk::testing::set_config("prefer-wired = true");
        let request = ElectionRequest {
            task: "t".into(),
            self_id: "a".into(),
            volunteers: vec![candidate("a", false, 100), candidate("b", true, 1)],
        };
        assert_eq!(Policy::elect(request).unwrap(), "b");
    }
}
