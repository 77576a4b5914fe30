//! Transport `default`: Ferry's default transport policy.
//!
//! Bytes are taken from the cheapest source first and from the hub last, so
//! the site's WAN link carries a package once and the LAN carries the rest:
//!
//! 1. the subnet's multicast session, when the task allows multicast and
//!    enough agents take part for one stream to beat separate copies;
//! 2. LAN peers, when some agent on the subnet takes part in the task;
//! 3. the site's relay, when it was reachable last time;
//! 4. the configured mirrors, in the order given;
//! 5. the hub, the last resort, always present;
//! 6. an unreachable relay, after the hub rather than dropped, so a relay
//!    that has recovered since is still tried before the transfer fails.
//!
//! Each source carries the rate cap configured for its kind; mirrors are
//! reached over the same WAN link as the hub and share its cap.

use ferry_plugin_sdk::transport::{
    PlannedSource, Source, TransportPlan, TransportPolicy, TransportRequest,
};
use serde::Deserialize;

/// The plugin's configuration, the `[config]` table of its plugin.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Multicast is planned only when at least this many other agents of the
    /// subnet take part in the task; below that, peer copies cost less than
    /// running a session.
    #[serde(default = "default_multicast_min_peers")]
    pub multicast_min_peers: u32,
    /// Rate cap for multicast, in bits per second; absent: none.
    #[serde(default)]
    pub multicast_cap_bps: Option<u64>,
    /// Rate cap for LAN peers, in bits per second; absent: none.
    #[serde(default)]
    pub peer_cap_bps: Option<u64>,
    /// Rate cap for the relay, in bits per second; absent: none.
    #[serde(default)]
    pub relay_cap_bps: Option<u64>,
    /// Rate cap for the hub and the mirrors, in bits per second; absent: none.
    #[serde(default)]
    pub hub_cap_bps: Option<u64>,
    /// Mirror URLs, tried in this order after the relay and before the hub.
    #[serde(default)]
    pub mirrors: Vec<String>,
}

fn default_multicast_min_peers() -> u32 {
    3
}

impl Config {
    /// Checks what serde cannot: mirror URLs must name a scheme and a host.
    fn validate(&self) -> Result<(), String> {
        for (index, mirror) in self.mirrors.iter().enumerate() {
            let host = mirror
                .strip_prefix("https://")
                .or_else(|| mirror.strip_prefix("http://"));
            if host.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
                return Err(format!(
                    "invalid plugin configuration: mirrors[{index}] = {mirror:?} is not an http:// or https:// URL with a host"
                ));
            }
        }
        Ok(())
    }
}

/// The policy.
pub struct DefaultTransport;

impl TransportPolicy for DefaultTransport {
    fn plan(request: TransportRequest) -> Result<TransportPlan, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        config.validate()?;
        let mut sources = plan_sources(&config, &request);
        if request.missing_bytes == 0 {
            // Nothing is left to fetch, so the order only matters if the node
            // finds a stored chunk damaged and fetches it again; the contract
            // wants at least one source, and the cheapest is the one to ask.
            sources.truncate(1);
        }
        Ok(TransportPlan { sources })
    }
}

/// Every source worth trying, cheapest first; never empty, as the hub is
/// always in it.
fn plan_sources(config: &Config, request: &TransportRequest) -> Vec<PlannedSource> {
    let mut sources = Vec::new();
    let mut planned = |source, rate_cap_bps| {
        sources.push(PlannedSource {
            source,
            rate_cap_bps,
        })
    };
    if request.options.multicast_allowed && request.subnet_peers >= config.multicast_min_peers {
        planned(Source::Multicast, config.multicast_cap_bps);
    }
    // Peers taking part in the task may hold chunks already even if none
    // holds the whole package; asking them costs a LAN round trip.
    if request.peers_with_content > 0 || request.subnet_peers > 0 {
        planned(Source::Peer, config.peer_cap_bps);
    }
    let relay_reachable = request.relay.as_ref().map(|relay| relay.reachable);
    if relay_reachable == Some(true) {
        planned(Source::Relay, config.relay_cap_bps);
    }
    for mirror in &config.mirrors {
        planned(Source::Url(mirror.clone()), config.hub_cap_bps);
    }
    planned(Source::Hub, config.hub_cap_bps);
    if relay_reachable == Some(false) {
        planned(Source::Relay, config.relay_cap_bps);
    }
    sources
}

ferry_plugin_sdk::export_transport!(DefaultTransport);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::testing;
    use ferry_plugin_sdk::transport::{SourceHealth, TaskOptions};

    fn health(reachable: bool) -> SourceHealth {
        SourceHealth {
            reachable,
            rtt_ms: Some(20),
            recent_throughput_bps: None,
            consecutive_failures: if reachable { 0 } else { 3 },
        }
    }

    fn request() -> TransportRequest {
        TransportRequest {
            package: "app".into(),
            version: "1.0.0".into(),
            size_bytes: 1 << 30,
            missing_bytes: 1 << 30,
            options: TaskOptions {
                multicast_allowed: true,
                deadline: None,
            },
            subnet_peers: 0,
            peers_with_content: 0,
            relay: None,
            hub: health(true),
            now: 1_700_000_000,
        }
    }

    fn plan(config: &str, request: TransportRequest) -> Result<Vec<(Source, Option<u64>)>, String> {
        testing::set_config(config);
        DefaultTransport::plan(request).map(|plan| {
            plan.sources
                .into_iter()
                .map(|s| (s.source, s.rate_cap_bps))
                .collect()
        })
    }

    /// Sources without their caps, spelled out for readable assertions.
    fn kinds(sources: &[(Source, Option<u64>)]) -> Vec<String> {
        sources
            .iter()
            .map(|(source, _)| match source {
                Source::Multicast => "multicast".to_string(),
                Source::Peer => "peer".to_string(),
                Source::Relay => "relay".to_string(),
                Source::Hub => "hub".to_string(),
                Source::Url(url) => url.clone(),
            })
            .collect()
    }

    #[test]
    fn alone_on_the_subnet_without_relay_uses_the_hub_only() {
        let sources = plan("", request()).unwrap();
        assert_eq!(kinds(&sources), ["hub"]);
        assert_eq!(sources[0].1, None);
    }

    #[test]
    fn full_plan_orders_cheapest_first() {
        let mut req = request();
        req.subnet_peers = 5;
        req.peers_with_content = 1;
        req.relay = Some(health(true));
        let config = r#"
            multicast-cap-bps = 1
            peer-cap-bps = 2
            relay-cap-bps = 3
            hub-cap-bps = 4
            mirrors = ["https://m1.example/ferry", "http://m2.example"]
        "#;
        let sources = plan(config, req).unwrap();
        assert_eq!(
            kinds(&sources),
            [
                "multicast",
                "peer",
                "relay",
                "https://m1.example/ferry",
                "http://m2.example",
                "hub"
            ]
        );
        let caps: Vec<_> = sources.iter().map(|(_, cap)| *cap).collect();
        assert_eq!(caps, [Some(1), Some(2), Some(3), Some(4), Some(4), Some(4)]);
    }

    #[test]
    fn multicast_needs_permission_and_enough_peers() {
        let mut req = request();
        req.subnet_peers = 2;
        assert_eq!(kinds(&plan("", req.clone()).unwrap()), ["peer", "hub"]);

        req.subnet_peers = 3;
        assert_eq!(
            kinds(&plan("", req.clone()).unwrap()),
            ["multicast", "peer", "hub"]
        );

        req.options.multicast_allowed = false;
        assert_eq!(kinds(&plan("", req.clone()).unwrap()), ["peer", "hub"]);

        req.options.multicast_allowed = true;
        req.subnet_peers = 2;
        assert_eq!(
            kinds(&plan("multicast-min-peers = 2", req).unwrap()),
            ["multicast", "peer", "hub"]
        );
    }

    #[test]
    fn peers_holding_content_are_asked_even_if_none_counted_on_the_subnet() {
        let mut req = request();
        req.peers_with_content = 1;
        assert_eq!(kinds(&plan("", req).unwrap()), ["peer", "hub"]);
    }

    #[test]
    fn unreachable_relay_goes_after_the_hub() {
        let mut req = request();
        req.relay = Some(health(false));
        let sources = plan("mirrors = [\"https://m.example\"]", req).unwrap();
        assert_eq!(kinds(&sources), ["https://m.example", "hub", "relay"]);
    }

    #[test]
    fn unreachable_hub_is_still_the_last_resort() {
        let mut req = request();
        req.hub = health(false);
        req.relay = Some(health(true));
        assert_eq!(kinds(&plan("", req).unwrap()), ["relay", "hub"]);
    }

    #[test]
    fn nothing_missing_keeps_only_the_cheapest_source() {
        let mut req = request();
        req.missing_bytes = 0;
        req.subnet_peers = 1;
        req.relay = Some(health(true));
        assert_eq!(kinds(&plan("", req.clone()).unwrap()), ["peer"]);

        req.subnet_peers = 0;
        assert_eq!(kinds(&plan("", req.clone()).unwrap()), ["relay"]);

        req.relay = None;
        assert_eq!(kinds(&plan("", req).unwrap()), ["hub"]);
    }

    #[test]
    fn bad_configuration_is_an_error_naming_the_key() {
        let err = plan("mirrors = [\"ftp://x\"]", request()).unwrap_err();
        assert!(
            err.contains("mirrors[0]") && err.contains("ftp://x"),
            "{err}"
        );

        let err = plan("mirrors = [\"https://\"]", request()).unwrap_err();
        assert!(err.contains("mirrors[0]"), "{err}");

        let err = plan("multicast-min-peers = -1", request()).unwrap_err();
        assert!(err.contains("multicast-min-peers"), "{err}");

        let err = plan("hub-cap = 5", request()).unwrap_err();
        assert!(err.contains("hub-cap"), "{err}");
    }
}
