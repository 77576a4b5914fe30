//! Schedule `interval`: a relay syncs every `every-minutes`, sooner after a
//! sync that failed or stopped part way, and at once when a task is urgent.
//!
//! Every interval is stretched or shrunk by a random amount of up to
//! `jitter-percent`, so that relays started together (after a power cut, a
//! rollout) do not all reach the hub in the same second, and keep apart after.
//! The bandwidth cap is the same at every hour.

use std::hash::{BuildHasher, RandomState};

use ferry_plugin_sdk::Timestamp;
use ferry_plugin_sdk::schedule::{ScheduleDecision, ScheduleRequest, SyncOutcome, SyncSchedule};
use serde::Deserialize;

/// The plugin's configuration, the `[config]` table of its plugin.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Minutes from the start of one successful sync to the next.
    #[serde(default = "default_every_minutes")]
    pub every_minutes: u64,
    /// Each interval varies randomly by up to this share of it, 0 to 50.
    #[serde(default = "default_jitter_percent")]
    pub jitter_percent: u64,
    /// Minutes from the end of a failed or partial sync to the retry; never
    /// more than `every-minutes`.
    #[serde(default = "default_retry_minutes")]
    pub retry_minutes: u64,
    /// Cap on the site's WAN traffic in bits per second; absent: unlimited.
    #[serde(default)]
    pub bandwidth_cap_bps: Option<u64>,
    /// Sync at once when the upstream has new content this node keeps
    /// (after a successful sync; a failed one waits for its retry).
    #[serde(default = "default_sync_new_content")]
    pub sync_new_content: bool,
}

fn default_sync_new_content() -> bool {
    true
}

fn default_every_minutes() -> u64 {
    60
}

fn default_jitter_percent() -> u64 {
    10
}

fn default_retry_minutes() -> u64 {
    5
}

/// The largest `every-minutes`: a year, far beyond any useful schedule, and
/// small enough that no timestamp arithmetic can overflow.
const MAX_MINUTES: u64 = 366 * 24 * 60;

impl Config {
    /// Checks the ranges serde cannot.
    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_MINUTES).contains(&self.every_minutes) {
            return Err(format!(
                "invalid plugin configuration: every-minutes = {} must be between 1 and {MAX_MINUTES}",
                self.every_minutes
            ));
        }
        if self.jitter_percent > 50 {
            return Err(format!(
                "invalid plugin configuration: jitter-percent = {} must be between 0 and 50",
                self.jitter_percent
            ));
        }
        if self.retry_minutes == 0 {
            return Err(
                "invalid plugin configuration: retry-minutes must be at least 1".to_string(),
            );
        }
        Ok(())
    }
}

/// The schedule.
pub struct Interval;

impl SyncSchedule for Interval {
    fn decide(request: ScheduleRequest) -> Result<ScheduleDecision, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        config.validate()?;
        Ok(decide(&config, &request, random()))
    }
}

/// A fresh random number for the jitter. `RandomState` is seeded from the
/// system's randomness and hands out new keys on every construction, which is
/// all the jitter needs, without a dependency.
fn random() -> u64 {
    RandomState::new().hash_one(0u8)
}

/// The decision, with the jitter drawn from `random`.
fn decide(config: &Config, request: &ScheduleRequest, random: u64) -> ScheduleDecision {
    let now = request.now;
    let every = config.every_minutes * 60;
    let next_sync = match &request.last_sync {
        _ if request.urgent => now,
        None => now,
        Some(last)
            if config.sync_new_content
                && request.backlog_bytes > 0
                && last.outcome == SyncOutcome::Succeeded =>
        {
            now
        }
        Some(last) => {
            let (base, interval) = match last.outcome {
                SyncOutcome::Succeeded => (last.started, every),
                // Wait from the end of a failed attempt, so a sync that took
                // longer than the retry delay does not restart at once.
                SyncOutcome::Partial | SyncOutcome::Failed => (
                    last.finished,
                    config.retry_minutes.min(config.every_minutes) * 60,
                ),
            };
            base.saturating_add(jittered(interval, config.jitter_percent, random))
                .max(now)
        }
    };
    ScheduleDecision {
        next_sync,
        bandwidth_cap_bps: config.bandwidth_cap_bps,
        cap_until: ask_again(now, next_sync, every),
    }
}

/// When to ask again: at the next sync; if that is now, a whole interval on,
/// since an answer due at once would only have the node ask again at once,
/// while the sync it just started has not ended yet.
fn ask_again(now: Timestamp, next_sync: Timestamp, every: u64) -> Timestamp {
    if next_sync > now {
        next_sync
    } else {
        now.saturating_add(every)
    }
}

/// `interval` seconds moved by up to `percent` of it, either way, as `random`
/// picks.
fn jittered(interval: u64, percent: u64, random: u64) -> u64 {
    let spread = interval * percent / 100;
    let offset = random % (2 * spread + 1);
    interval - spread + offset
}

ferry_plugin_sdk::export_schedule!(Interval);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::schedule::LastSync;
    use ferry_plugin_sdk::testing;

    const NOW: u64 = 1_700_000_000;

    fn request(last: Option<(u64, u64, SyncOutcome)>) -> ScheduleRequest {
        ScheduleRequest {
            now: NOW,
            utc_offset_minutes: 60,
            last_sync: last.map(|(started, finished, outcome)| LastSync {
                started,
                finished,
                outcome,
                error: None,
                bytes: 0,
            }),
            backlog_bytes: 0,
            urgent: false,
        }
    }

    fn config(text: &str) -> Config {
        testing::set_config(text);
        let config: Config = ferry_plugin_sdk::config().unwrap();
        config.validate().unwrap();
        config
    }

    /// Decisions through the exported entry point, with real random jitter.
    fn decide_many(text: &str, request: &ScheduleRequest) -> Vec<ScheduleDecision> {
        testing::set_config(text);
        (0..200)
            .map(|_| Interval::decide(request.clone()).unwrap())
            .collect()
    }

    #[test]
    fn new_upstream_content_is_synced_at_once_unless_the_last_sync_failed() {
        let mut req = request(Some((NOW - 60, NOW - 50, SyncOutcome::Succeeded)));
        req.backlog_bytes = 1 << 20;
        for decision in decide_many("", &req) {
            assert_eq!(decision.next_sync, NOW);
        }
        // Turned off: the interval holds.
        for decision in decide_many("sync-new-content = false", &req) {
            assert!(decision.next_sync > NOW + 3000, "{}", decision.next_sync);
        }
        // After a failure the retry delay holds, backlog or not.
        let mut failed = request(Some((NOW - 60, NOW - 50, SyncOutcome::Failed)));
        failed.backlog_bytes = 1 << 20;
        for decision in decide_many("", &failed) {
            let retry = NOW - 50 + 270..=NOW - 50 + 330;
            assert!(
                retry.contains(&decision.next_sync),
                "{}",
                decision.next_sync
            );
        }
    }

    #[test]
    fn first_sync_is_now() {
        for decision in decide_many("", &request(None)) {
            assert_eq!(decision.next_sync, NOW);
            assert_eq!(decision.cap_until, NOW + 3600);
            assert_eq!(decision.bandwidth_cap_bps, None);
        }
    }

    #[test]
    fn urgent_is_now_even_right_after_a_sync() {
        let mut req = request(Some((NOW - 10, NOW - 5, SyncOutcome::Succeeded)));
        req.urgent = true;
        let decision = Interval::decide(req).unwrap();
        assert_eq!(decision.next_sync, NOW);
    }

    #[test]
    fn after_success_next_is_an_interval_from_its_start_within_jitter() {
        let started = NOW - 600;
        let req = request(Some((started, NOW - 300, SyncOutcome::Succeeded)));
        let decisions = decide_many("every-minutes = 60\njitter-percent = 10", &req);
        let offsets: Vec<u64> = decisions.iter().map(|d| d.next_sync - started).collect();
        for (decision, offset) in decisions.iter().zip(&offsets) {
            assert!((3240..=3960).contains(offset), "offset {offset}");
            assert_eq!(decision.cap_until, decision.next_sync);
        }
        // The jitter is random: 200 draws over 721 seconds are not all equal.
        assert!(offsets.iter().any(|o| *o != offsets[0]));
    }

    #[test]
    fn no_jitter_is_exact() {
        let started = NOW - 600;
        let req = request(Some((started, NOW - 300, SyncOutcome::Succeeded)));
        for decision in decide_many("every-minutes = 30\njitter-percent = 0", &req) {
            assert_eq!(decision.next_sync, started + 1800);
        }
    }

    #[test]
    fn jitter_bounds_are_reached_and_kept() {
        assert_eq!(jittered(3600, 10, 0), 3240);
        assert_eq!(jittered(3600, 10, 720), 3960);
        assert_eq!(jittered(3600, 10, 721), 3240);
        assert!((1800..=5400).contains(&jittered(3600, 50, u64::MAX)));
        assert_eq!(jittered(3600, 0, u64::MAX), 3600);
    }

    #[test]
    fn overdue_sync_is_now() {
        let req = request(Some((NOW - 7200, NOW - 7000, SyncOutcome::Succeeded)));
        let decision = decide(&config("jitter-percent = 0"), &req, 0);
        assert_eq!(decision.next_sync, NOW);
        assert_eq!(decision.cap_until, NOW + 3600);
    }

    #[test]
    fn failure_and_partial_retry_from_the_end() {
        for outcome in [SyncOutcome::Failed, SyncOutcome::Partial] {
            let req = request(Some((NOW - 900, NOW - 60, outcome)));
            let decision = decide(&config("retry-minutes = 5\njitter-percent = 0"), &req, 0);
            assert_eq!(decision.next_sync, NOW - 60 + 300);
            assert_eq!(decision.cap_until, decision.next_sync);
        }
    }

    #[test]
    fn retry_is_never_longer_than_the_interval() {
        let req = request(Some((NOW - 100, NOW - 60, SyncOutcome::Failed)));
        let text = "every-minutes = 2\nretry-minutes = 30\njitter-percent = 0";
        let decision = decide(&config(text), &req, 0);
        assert_eq!(decision.next_sync, NOW - 60 + 120);
    }

    #[test]
    fn cap_applies_whatever_the_decision() {
        testing::set_config("bandwidth-cap-bps = 1000000");
        let decision = Interval::decide(request(None)).unwrap();
        assert_eq!(decision.bandwidth_cap_bps, Some(1_000_000));
        let req = request(Some((NOW - 60, NOW - 30, SyncOutcome::Succeeded)));
        let decision = Interval::decide(req).unwrap();
        assert_eq!(decision.bandwidth_cap_bps, Some(1_000_000));
    }

    #[test]
    fn bad_configuration_is_an_error_naming_the_key() {
        for (text, key) in [
            ("every-minutes = 0", "every-minutes"),
            ("jitter-percent = 51", "jitter-percent"),
            ("retry-minutes = 0", "retry-minutes"),
            ("every-minute = 5", "every-minute"),
            ("bandwidth-cap-bps = -1", "bandwidth-cap-bps"),
        ] {
            testing::set_config(text);
            let err = Interval::decide(request(None)).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
