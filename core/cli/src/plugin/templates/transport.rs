//! A transport policy: where an agent gets a package's bytes from.

use ferry_plugin_sdk::transport::{
    PlannedSource, Source, TransportPlan, TransportPolicy, TransportRequest,
};
use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Config {
    multicast_min_peers: u32,
}

/// The plugin; `pub` so native builds see it used.
pub struct Policy;

impl TransportPolicy for Policy {
    fn plan(request: TransportRequest) -> Result<TransportPlan, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        let mut sources = Vec::new();
        let mut add = |source| sources.push(PlannedSource { source, rate_cap_bps: None });
        if request.options.multicast_allowed && request.subnet_peers >= config.multicast_min_peers {
            add(Source::Multicast);
        }
        if request.peers_with_content > 0 {
            add(Source::Peer);
        }
        if request.relay.is_some() {
            add(Source::Relay);
        }
        add(Source::Hub);
        Ok(TransportPlan { sources })
    }
}

ferry_plugin_sdk::export_transport!(Policy);
