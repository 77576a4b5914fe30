//! Schedule `window`: time-of-day windows in which a relay syncs freely, and a
//! smaller cap (or none at all) outside them.
//!
//! A window starts whenever its cron expression matches, in the node's local
//! time, and lasts `hours`. Inside a window the relay syncs every
//! `every-minutes` at the window's cap; outside, it syncs at `outside-cap-bps`
//! on the same cadence, or, when that is zero, waits for the next window. A
//! failed or partial sync is retried after `retry-minutes`, so an upstream
//! that is down is not hammered. An urgent task brings the next sync forward
//! to now wherever traffic is allowed at all.
//!
//! The decision holds until the earliest of: the end of the window, the next
//! window start, and the next sync; the node asks again then, so the cap
//! follows the windows and every sync is decided afresh.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset};
use croner::Cron;
use croner::errors::CronError;
use ferry_plugin_sdk::schedule::{
    LastSync, ScheduleDecision, ScheduleRequest, SyncOutcome, SyncSchedule,
};
use serde::Deserialize;

/// The plugin's configuration, the `[config]` table of its plugin.toml.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Cap in bits per second outside every window; 0: no sync outside them.
    #[serde(default)]
    pub outside_cap_bps: u64,
    /// Minutes from the start of one successful sync to the next.
    #[serde(default = "default_every_minutes")]
    pub every_minutes: u64,
    /// Minutes from the end of a failed or partial sync to the retry; never
    /// more than `every-minutes`.
    #[serde(default = "default_retry_minutes")]
    pub retry_minutes: u64,
    /// The windows, as `[[window]]` tables.
    #[serde(default, rename = "window")]
    pub windows: Vec<WindowConfig>,
    /// Sync at once, where traffic is allowed, when the upstream has new
    /// content this node keeps (after a successful sync; a failed one
    /// waits for its retry).
    #[serde(default = "default_sync_new_content")]
    pub sync_new_content: bool,
}

fn default_sync_new_content() -> bool {
    true
}

/// One `[[window]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WindowConfig {
    /// Cron expression for the window's start, in the node's local time
    /// (`minute hour day-of-month month day-of-week`).
    pub start: String,
    /// How long the window lasts, in hours; fractions allowed.
    pub hours: f64,
    /// Cap in bits per second inside the window; absent: unlimited.
    #[serde(default)]
    pub cap_bps: Option<u64>,
}

fn default_every_minutes() -> u64 {
    60
}

fn default_retry_minutes() -> u64 {
    5
}

/// The largest `every-minutes`, a year: beyond any useful schedule, and small
/// enough that no timestamp arithmetic overflows.
const MAX_MINUTES: u64 = 366 * 24 * 60;

/// The longest window, a year, for the same reasons.
const MAX_HOURS: f64 = (MAX_MINUTES / 60) as f64;

/// A window, checked and parsed.
struct Window {
    /// Its position in the configuration, for messages.
    index: usize,
    /// Its expression as written, for messages.
    expression: String,
    /// Its start times.
    start: Cron,
    /// Its length in seconds.
    length: i64,
    /// Its cap.
    cap_bps: Option<u64>,
}

impl Window {
    /// Names the window in messages.
    fn name(&self) -> String {
        format!("window[{}] (start = {:?})", self.index, self.expression)
    }

    /// The window's latest start at or before `now`, if any within croner's
    /// search range (a year).
    fn previous_start(&self, now: &DateTime<FixedOffset>) -> Result<Option<i64>, String> {
        self.found(self.start.find_previous_occurrence(now, true))
    }

    /// The window's first start after `now`, if any within a year.
    fn next_start(&self, now: &DateTime<FixedOffset>) -> Result<Option<i64>, String> {
        self.found(self.start.find_next_occurrence(now, false))
    }

    /// A search result as a timestamp; running out of search range is no
    /// start rather than an error, as a rare pattern (29 February) may have
    /// none on one side of now.
    fn found(
        &self,
        result: Result<DateTime<FixedOffset>, CronError>,
    ) -> Result<Option<i64>, String> {
        match result {
            Ok(time) => Ok(Some(time.timestamp())),
            Err(CronError::TimeSearchLimitExceeded) => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.name())),
        }
    }
}

impl Config {
    /// Checks the values and parses the windows; errors name the key or the
    /// window and its expression.
    fn windows(&self) -> Result<Vec<Window>, String> {
        if !(1..=MAX_MINUTES).contains(&self.every_minutes) {
            return Err(format!(
                "invalid plugin configuration: every-minutes = {} must be between 1 and {MAX_MINUTES}",
                self.every_minutes
            ));
        }
        if self.retry_minutes == 0 {
            return Err(
                "invalid plugin configuration: retry-minutes must be at least 1".to_string(),
            );
        }
        if self.windows.is_empty() && self.outside_cap_bps == 0 {
            return Err("invalid plugin configuration: no [[window]] and outside-cap-bps = 0: this schedule would never sync".to_string());
        }
        self.windows
            .iter()
            .enumerate()
            .map(|(index, window)| {
                let name = format!("window[{index}] (start = {:?})", window.start);
                let start = Cron::from_str(&window.start).map_err(|e| {
                    format!("invalid plugin configuration: {name}: bad cron expression: {e}")
                })?;
                if !(window.hours > 0.0 && window.hours <= MAX_HOURS) {
                    return Err(format!(
                        "invalid plugin configuration: {name}: hours = {} must be more than 0 and at most {MAX_HOURS}",
                        window.hours
                    ));
                }
                Ok(Window {
                    index,
                    expression: window.start.clone(),
                    start,
                    // In range by the check above, so the conversion is exact
                    // to the second.
                    length: (window.hours * 3600.0).round() as i64,
                    cap_bps: window.cap_bps,
                })
            })
            .collect()
    }
}

/// The schedule.
pub struct TimeWindows;

impl SyncSchedule for TimeWindows {
    fn decide(request: ScheduleRequest) -> Result<ScheduleDecision, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        let windows = config.windows()?;
        decide(&config, &windows, &request)
    }
}

/// A window the present lies in.
struct Open {
    /// When it ends.
    end: i64,
    /// Its cap.
    cap_bps: Option<u64>,
}

/// The decision for `request` under `windows`.
fn decide(
    config: &Config,
    windows: &[Window],
    request: &ScheduleRequest,
) -> Result<ScheduleDecision, String> {
    let offset = request
        .utc_offset_minutes
        .checked_mul(60)
        .and_then(FixedOffset::east_opt)
        .ok_or_else(|| {
            format!(
                "utc-offset-minutes = {} is not a valid offset from UTC",
                request.utc_offset_minutes
            )
        })?;
    let now = i64::try_from(request.now)
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| format!("now = {} is out of range", request.now))?
        .with_timezone(&offset);
    let now_secs = now.timestamp();

    let mut open: Option<Open> = None;
    let mut next_start: Option<i64> = None;
    for window in windows {
        let previous = window.previous_start(&now)?;
        let next = window.next_start(&now)?;
        if previous.is_none() && next.is_none() {
            return Err(format!(
                "{}: never starts within a year of now",
                window.name()
            ));
        }
        if let Some(start) = previous
            && now_secs < start + window.length
        {
            let candidate = Open {
                end: start + window.length,
                cap_bps: window.cap_bps,
            };
            // Where windows overlap, the most generous cap holds.
            if open
                .as_ref()
                .is_none_or(|o| more_generous(candidate.cap_bps, o.cap_bps))
            {
                open = Some(candidate);
            }
        }
        if let Some(next) = next {
            next_start = Some(next_start.map_or(next, |n| n.min(next)));
        }
    }

    let due = due(config, request.last_sync.as_ref(), request.backlog_bytes);
    let (next_sync, cap_bps, cap_until) = match open {
        Some(open) => {
            let next_sync = if request.urgent {
                now_secs
            } else {
                due.max(now_secs)
            };
            let until = [Some(open.end), next_start].into_iter().flatten().min();
            (next_sync, open.cap_bps, until)
        }
        None if config.outside_cap_bps == 0 => {
            // Checked in `windows`: with no traffic outside windows, there
            // is a window, and it starts again within a year.
            let start = next_start.ok_or("no window starts within a year of now")?;
            (start, Some(0), Some(start))
        }
        None => {
            let next_sync = if request.urgent {
                now_secs
            } else {
                due.max(now_secs)
            };
            (next_sync, Some(config.outside_cap_bps), next_start)
        }
    };
    // Ask again at the next sync too, so each sync is decided afresh. Every
    // bound is after now; with none (a sync due now, no windows), an interval
    // on.
    let cap_until = [cap_until, (next_sync > now_secs).then_some(next_sync)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now_secs + config.every_minutes as i64 * 60);
    Ok(ScheduleDecision {
        next_sync: to_timestamp(next_sync),
        bandwidth_cap_bps: cap_bps,
        cap_until: to_timestamp(cap_until),
    })
}

/// When the next sync is due by the cadence alone: at once without a last
/// sync or, with `sync-new-content`, when new content waits after a
/// successful one; an interval after a successful one started, a retry
/// delay after a failed or partial one ended.
fn due(config: &Config, last: Option<&LastSync>, backlog: u64) -> i64 {
    let Some(last) = last else {
        return i64::MIN;
    };
    if config.sync_new_content && backlog > 0 && last.outcome == SyncOutcome::Succeeded {
        return i64::MIN;
    }
    let (base, minutes) = match last.outcome {
        SyncOutcome::Succeeded => (last.started, config.every_minutes),
        SyncOutcome::Partial | SyncOutcome::Failed => (
            last.finished,
            config.retry_minutes.min(config.every_minutes),
        ),
    };
    i64::try_from(base)
        .unwrap_or(i64::MAX)
        .saturating_add(minutes as i64 * 60)
}

/// Whether cap `a` lets more through than cap `b`; none is unlimited.
fn more_generous(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        (_, None) => false,
    }
}

/// A time after the epoch as a contract timestamp; every time decided is at or
/// after now, which is.
fn to_timestamp(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0)
}

ferry_plugin_sdk::export_schedule!(TimeWindows);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ferry_plugin_sdk::testing;

    /// The default configuration of plugin.toml: unlimited 20:00 to 06:00,
    /// 256 kbit/s otherwise.
    const DEFAULT: &str = r#"
        outside-cap-bps = 256000
        every-minutes = 60
        [[window]]
        start = "0 20 * * *"
        hours = 10
    "#;

    /// UTC+1, so that a plugin reading UTC instead of local time fails.
    const OFFSET_MINUTES: i32 = 60;

    /// A local time on Monday 15 January 2024 (or `day` days later), UTC+1,
    /// as a timestamp.
    fn at(day: u32, hour: u32, minute: u32) -> u64 {
        let offset = FixedOffset::east_opt(OFFSET_MINUTES * 60).unwrap();
        let time = offset
            .with_ymd_and_hms(2024, 1, 15 + day, hour, minute, 0)
            .unwrap();
        u64::try_from(time.timestamp()).unwrap()
    }

    fn request(now: u64) -> ScheduleRequest {
        ScheduleRequest {
            now,
            utc_offset_minutes: OFFSET_MINUTES,
            last_sync: None,
            backlog_bytes: 0,
            urgent: false,
        }
    }

    fn last(request: &mut ScheduleRequest, started: u64, finished: u64, outcome: SyncOutcome) {
        request.last_sync = Some(LastSync {
            started,
            finished,
            outcome,
            error: None,
            bytes: 0,
        });
    }

    fn decide_with(
        config: &str,
        request: ScheduleRequest,
    ) -> Result<(u64, Option<u64>, u64), String> {
        testing::set_config(config);
        TimeWindows::decide(request).map(|d| (d.next_sync, d.bandwidth_cap_bps, d.cap_until))
    }

    #[test]
    fn inside_without_last_sync_syncs_now_unlimited_until_the_window_ends() {
        let now = at(0, 21, 15);
        assert_eq!(
            decide_with(DEFAULT, request(now)),
            Ok((now, None, at(1, 6, 0)))
        );
    }

    #[test]
    fn inside_after_midnight_belongs_to_the_window_of_the_evening_before() {
        let now = at(1, 2, 0);
        assert_eq!(
            decide_with(DEFAULT, request(now)),
            Ok((now, None, at(1, 6, 0)))
        );
    }

    #[test]
    fn window_start_is_inside_and_its_end_is_outside() {
        let start = at(0, 20, 0);
        assert_eq!(
            decide_with(DEFAULT, request(start)),
            Ok((start, None, at(1, 6, 0)))
        );
        let end = at(1, 6, 0);
        assert_eq!(
            decide_with(DEFAULT, request(end)),
            Ok((end, Some(256_000), at(1, 20, 0)))
        );
    }

    #[test]
    fn inside_follows_the_cadence_and_asks_again_at_the_next_sync() {
        let now = at(0, 22, 0);
        let mut req = request(now);
        last(&mut req, now - 600, now - 300, SyncOutcome::Succeeded);
        let next = now - 600 + 3600;
        assert_eq!(decide_with(DEFAULT, req.clone()), Ok((next, None, next)));

        last(&mut req, now - 3600, now - 3000, SyncOutcome::Succeeded);
        assert_eq!(
            decide_with(DEFAULT, req.clone()),
            Ok((now, None, at(1, 6, 0)))
        );

        req.urgent = true;
        last(&mut req, now - 60, now - 30, SyncOutcome::Succeeded);
        assert_eq!(decide_with(DEFAULT, req), Ok((now, None, at(1, 6, 0))));
    }

    #[test]
    fn new_content_is_synced_at_once_where_traffic_is_allowed() {
        let inside = at(0, 22, 0);
        let mut req = request(inside);
        last(&mut req, inside - 600, inside - 300, SyncOutcome::Succeeded);
        req.backlog_bytes = 1 << 20;
        assert_eq!(
            decide_with(DEFAULT, req.clone()),
            Ok((inside, None, at(1, 6, 0)))
        );
        let off = format!("sync-new-content = false\n{DEFAULT}");
        let next = inside - 600 + 3600;
        assert_eq!(decide_with(&off, req), Ok((next, None, next)));
        // Outside with no traffic allowed, it waits for the window.
        let config = DEFAULT.replace("256000", "0");
        let outside = at(0, 12, 0);
        let mut req = request(outside);
        last(
            &mut req,
            outside - 600,
            outside - 300,
            SyncOutcome::Succeeded,
        );
        req.backlog_bytes = 1 << 20;
        assert_eq!(
            decide_with(&config, req),
            Ok((at(0, 20, 0), Some(0), at(0, 20, 0)))
        );
    }

    #[test]
    fn failed_or_partial_sync_is_retried_after_the_retry_delay() {
        let now = at(0, 22, 0);
        for outcome in [SyncOutcome::Failed, SyncOutcome::Partial] {
            let mut req = request(now);
            last(&mut req, now - 900, now - 60, outcome);
            let retry = now - 60 + 300;
            assert_eq!(decide_with(DEFAULT, req), Ok((retry, None, retry)));
        }
    }

    #[test]
    fn outside_with_a_cap_syncs_on_the_cadence_at_the_cap() {
        let now = at(0, 12, 0);
        assert_eq!(
            decide_with(DEFAULT, request(now)),
            Ok((now, Some(256_000), at(0, 20, 0)))
        );
        let mut req = request(now);
        last(&mut req, now - 1800, now - 1700, SyncOutcome::Succeeded);
        let next = now + 1800;
        assert_eq!(
            decide_with(DEFAULT, req.clone()),
            Ok((next, Some(256_000), next))
        );

        req.urgent = true;
        assert_eq!(
            decide_with(DEFAULT, req),
            Ok((now, Some(256_000), at(0, 20, 0)))
        );
    }

    #[test]
    fn outside_without_traffic_waits_for_the_window_even_when_urgent() {
        let config = DEFAULT.replace("256000", "0");
        let now = at(0, 12, 0);
        let expected = Ok((at(0, 20, 0), Some(0), at(0, 20, 0)));
        assert_eq!(decide_with(&config, request(now)), expected);
        let mut req = request(now);
        req.urgent = true;
        assert_eq!(decide_with(&config, req), expected);
    }

    #[test]
    fn windows_are_in_local_time() {
        // 19:30 UTC is 20:30 at UTC+1, inside; at UTC it is outside.
        let now = at(0, 20, 30);
        assert_eq!(decide_with(DEFAULT, request(now)).unwrap().1, None);
        let mut req = request(now);
        req.utc_offset_minutes = 0;
        assert_eq!(
            decide_with(DEFAULT, req),
            Ok((now, Some(256_000), now + 1800))
        );
    }

    #[test]
    fn overlapping_windows_take_the_most_generous_cap_until_the_next_start() {
        let config = r#"
            outside-cap-bps = 0
            [[window]]
            start = "0 8 * * *"
            hours = 12
            cap-bps = 1000
            [[window]]
            start = "0 9 * * *"
            hours = 1
            cap-bps = 5000
            [[window]]
            start = "30 9 * * *"
            hours = 0.25
        "#;
        assert_eq!(
            decide_with(config, request(at(0, 8, 30))),
            Ok((at(0, 8, 30), Some(1000), at(0, 9, 0)))
        );
        assert_eq!(
            decide_with(config, request(at(0, 9, 10))),
            Ok((at(0, 9, 10), Some(5000), at(0, 9, 30)))
        );
        assert_eq!(
            decide_with(config, request(at(0, 9, 40))),
            Ok((at(0, 9, 40), None, at(0, 9, 45)))
        );
        assert_eq!(
            decide_with(config, request(at(0, 9, 50))),
            Ok((at(0, 9, 50), Some(5000), at(0, 10, 0)))
        );
        assert_eq!(
            decide_with(config, request(at(0, 19, 0))),
            Ok((at(0, 19, 0), Some(1000), at(0, 20, 0)))
        );
    }

    #[test]
    fn weekend_window_spans_days() {
        // 15 January 2024 is a Monday: Saturday is day 5.
        let config = r#"
            [[window]]
            start = "0 0 * * SAT"
            hours = 48
        "#;
        assert_eq!(
            decide_with(config, request(at(6, 12, 0))),
            Ok((at(6, 12, 0), None, at(7, 0, 0)))
        );
        assert_eq!(
            decide_with(config, request(at(2, 12, 0))),
            Ok((at(5, 0, 0), Some(0), at(5, 0, 0)))
        );
    }

    #[test]
    fn outside_without_windows_asks_again_an_interval_on() {
        let config = "outside-cap-bps = 1000\nevery-minutes = 30";
        let now = at(0, 12, 0);
        assert_eq!(
            decide_with(config, request(now)),
            Ok((now, Some(1000), now + 1800))
        );
    }

    #[test]
    fn bad_configuration_names_the_window_and_the_expression() {
        let config = r#"
            [[window]]
            start = "0 20 * * *"
            hours = 10
            [[window]]
            start = "0 25 * * *"
            hours = 1
        "#;
        let err = decide_with(config, request(at(0, 12, 0))).unwrap_err();
        assert!(
            err.contains("window[1]") && err.contains("0 25 * * *"),
            "{err}"
        );

        for (config, expected) in [
            ("[[window]]\nstart = \"0 1 * * *\"\nhours = 0", "window[0]"),
            ("[[window]]\nstart = \"0 1 * * *\"\nhours = -2", "hours"),
            ("[[window]]\nstart = \"0 1 * * *\"", "hours"),
            ("[[window]]\nstart = \"\"\nhours = 1", "window[0]"),
            ("outside-cap-bps = 0", "never sync"),
            ("outside-cap-bps = 1\nevery-minutes = 0", "every-minutes"),
            ("outside-cap-bps = 1\nretry-minutes = 0", "retry-minutes"),
            ("outside-cap = 1", "outside-cap"),
        ] {
            let err = decide_with(config, request(at(0, 12, 0))).unwrap_err();
            assert!(err.contains(expected), "{config}: {err}");
        }
    }

    #[test]
    fn impossible_dates_and_offsets_are_errors() {
        let config = "[[window]]\nstart = \"0 0 30 2 *\"\nhours = 1";
        let err = decide_with(config, request(at(0, 12, 0))).unwrap_err();
        assert!(err.contains("window[0]") && err.contains("never"), "{err}");

        let mut req = request(at(0, 12, 0));
        req.utc_offset_minutes = 24 * 60;
        let err = decide_with(DEFAULT, req).unwrap_err();
        assert!(err.contains("utc-offset-minutes"), "{err}");
    }
}
