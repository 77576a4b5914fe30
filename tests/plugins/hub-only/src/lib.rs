//! A transport plugin that plans the hub alone: a site plugin an agent
//! takes only through its settings, so a test can see which plan it used.

use ferry_plugin_sdk::transport::{
    PlannedSource, Source, TransportPlan, TransportPolicy, TransportRequest,
};

/// The plugin.
pub struct HubOnly;

impl TransportPolicy for HubOnly {
    fn plan(_request: TransportRequest) -> Result<TransportPlan, String> {
        Ok(TransportPlan {
            sources: vec![PlannedSource {
                source: Source::Hub,
                rate_cap_bps: None,
            }],
        })
    }
}

ferry_plugin_sdk::export_transport!(HubOnly);
