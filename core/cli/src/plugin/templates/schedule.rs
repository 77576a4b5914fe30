//! A sync schedule: when the relay syncs next and how fast it may go.

use ferry_plugin_sdk::schedule::{ScheduleDecision, ScheduleRequest, SyncSchedule};
use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Config {
    every_minutes: u64,
}

/// The plugin; `pub` so native builds see it used.
pub struct Schedule;

impl SyncSchedule for Schedule {
    fn decide(request: ScheduleRequest) -> Result<ScheduleDecision, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        let every = config.every_minutes.max(1) * 60;
        let next_sync = match (&request.last_sync, request.urgent) {
            (Some(last), false) => last.started + every,
            _ => request.now,
        };
        Ok(ScheduleDecision {
            next_sync,
            bandwidth_cap_bps: None,
            cap_until: next_sync.max(request.now + 60),
        })
    }
}

ferry_plugin_sdk::export_schedule!(Schedule);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sync_is_now() {
        ferry_plugin_sdk::testing::set_config("every-minutes = 30");
        let request = ScheduleRequest {
            now: 1000,
            utc_offset_minutes: 0,
            last_sync: None,
            backlog_bytes: 0,
            urgent: false,
        };
        assert_eq!(Schedule::decide(request).unwrap().next_sync, 1000);
    }
}
