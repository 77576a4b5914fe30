//! Install windows: the times at which an agent may install a task's
//! package, in the agent's own local time, so "22:00-06:00" means the night
//! wherever each office is.

use std::str::FromStr;

use chrono::{DateTime, TimeZone};
use croner::Cron;
use croner::errors::CronError;

/// The longest window, a week: longer ones say nothing a `--not-before`
/// does not, and it bounds the arithmetic.
const MAX_LENGTH_S: i64 = 7 * 24 * 3600;

/// When installs may start: a daily range `HH:MM-HH:MM` (it may cross
/// midnight: `22:00-06:00`), or the starts of the window as a cron
/// expression and its length, `CRON for DURATION` (`0 22 * * 1-5 for 8h`;
/// the expression may lead with a seconds field). Evaluated in the agent's
/// local time.
#[derive(Clone, Debug)]
pub struct InstallWindow {
    /// The window as written, for messages.
    text: String,
    /// When the window opens.
    starts: Cron,
    /// How long it stays open, in seconds.
    length: i64,
}

/// An install window that does not parse; the message says how to write it.
#[derive(Debug, thiserror::Error)]
#[error(
    "install window {text:?}: {problem}; write a daily range such as \"22:00-06:00\" or a cron \
     expression for the starts and a length, such as \"0 22 * * 1-5 for 8h\""
)]
pub struct WindowError {
    text: String,
    problem: String,
}

/// Where an install window stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// Open until this Unix time.
    Open {
        /// When it closes (it may open again at once).
        until: i64,
    },
    /// Closed; opens at this Unix time, or not within a year (`None`).
    Closed {
        /// When it opens next.
        opens: Option<i64>,
    },
}

impl FromStr for InstallWindow {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Self, WindowError> {
        let fail = |problem: String| WindowError {
            text: text.to_owned(),
            problem,
        };
        let trimmed = text.trim();
        let (expression, length) = match trimmed.split_once(" for ") {
            Some((cron, length)) => {
                let length = humantime::parse_duration(length.trim())
                    .map_err(|e| fail(format!("length {:?}: {e}", length.trim())))?;
                (cron.trim().to_owned(), length.as_secs() as i64)
            }
            None => daily_range(trimmed).map_err(fail)?,
        };
        if length <= 0 || length > MAX_LENGTH_S {
            return Err(fail(format!(
                "it lasts {length} s; a window lasts from one second to a week"
            )));
        }
        let starts = Cron::from_str(&expression)
            .map_err(|e| fail(format!("cron expression {expression:?}: {e}")))?;
        Ok(InstallWindow {
            text: trimmed.to_owned(),
            starts,
            length,
        })
    }
}

/// `HH:MM-HH:MM` as a cron expression for its start and its length.
fn daily_range(text: &str) -> Result<(String, i64), String> {
    let (from, to) = text
        .split_once('-')
        .ok_or_else(|| "it is neither a range nor \"CRON for DURATION\"".to_owned())?;
    let (fh, fm) = clock(from.trim())?;
    let (th, tm) = clock(to.trim())?;
    let (start, end) = (fh * 60 + fm, th * 60 + tm);
    if start == end {
        return Err("it starts where it ends".into());
    }
    // Minutes to the end, across midnight when the end is earlier.
    let minutes = (end + 24 * 60 - start) % (24 * 60);
    Ok((format!("{fm} {fh} * * *"), i64::from(minutes) * 60))
}

/// `HH:MM` as hours and minutes.
fn clock(text: &str) -> Result<(u32, u32), String> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
        (h < 24 && m < 60 && text.len() <= 5).then_some((h, m))
    });
    parsed.ok_or_else(|| format!("{text:?} is not a time of day as HH:MM"))
}

impl InstallWindow {
    /// The window as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Where the window stands at `at`, in `at`'s time zone (the agent
    /// passes its local time).
    pub fn state_at<Tz: TimeZone>(&self, at: &DateTime<Tz>) -> WindowState {
        let now = at.timestamp();
        // The latest start at or before now decides: the window is open if
        // that start is less than its length ago.
        if let Some(start) = found(self.starts.find_previous_occurrence(at, true))
            && now < start + self.length
        {
            return WindowState::Open {
                until: start + self.length,
            };
        }
        WindowState::Closed {
            opens: found(self.starts.find_next_occurrence(at, false)),
        }
    }
}

/// A search result as a Unix time; none within croner's search range (a
/// year) is no start.
fn found<Tz: TimeZone>(result: Result<DateTime<Tz>, CronError>) -> Option<i64> {
    result.ok().map(|t| t.timestamp())
}

impl std::fmt::Display for InstallWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, Utc};

    use super::*;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, hour, minute, 0)
            .unwrap()
    }

    fn window(text: &str) -> InstallWindow {
        text.parse().unwrap()
    }

    #[test]
    fn a_daily_range_across_midnight_is_open_at_night_only() {
        let w = window("22:00-06:00");
        // Tuesday 1 December 2026.
        assert_eq!(
            w.state_at(&at(1, 12, 0)),
            WindowState::Closed {
                opens: Some(at(1, 22, 0).timestamp())
            }
        );
        assert_eq!(
            w.state_at(&at(1, 22, 0)),
            WindowState::Open {
                until: at(2, 6, 0).timestamp()
            }
        );
        assert_eq!(
            w.state_at(&at(2, 3, 30)),
            WindowState::Open {
                until: at(2, 6, 0).timestamp()
            }
        );
        assert_eq!(
            w.state_at(&at(2, 6, 0)),
            WindowState::Closed {
                opens: Some(at(2, 22, 0).timestamp())
            }
        );
    }

    #[test]
    fn a_cron_window_opens_on_its_days_for_its_length() {
        // Weeknights from 22:00 for 8 hours; 5 December 2026 is a Saturday.
        let w = window("0 22 * * 1-5 for 8h");
        assert_eq!(
            w.state_at(&at(4, 23, 0)),
            WindowState::Open {
                until: at(5, 6, 0).timestamp()
            }
        );
        assert_eq!(
            w.state_at(&at(5, 23, 0)),
            WindowState::Closed {
                opens: Some(at(7, 22, 0).timestamp())
            }
        );
        // A leading seconds field.
        let w = window("30 0 22 * * * for 10s");
        assert_eq!(
            w.state_at(&(at(1, 22, 0) + chrono::Duration::seconds(35))),
            WindowState::Open {
                until: at(1, 22, 0).timestamp() + 40
            }
        );
    }

    #[test]
    fn the_window_is_read_in_the_time_zone_given() {
        let w = window("22:00-06:00");
        let berlin = FixedOffset::east_opt(3600).unwrap();
        // 21:30 UTC is 22:30 in Berlin: open there.
        let evening = at(1, 21, 30).with_timezone(&berlin);
        assert_eq!(
            w.state_at(&evening),
            WindowState::Open {
                until: at(2, 5, 0).timestamp()
            }
        );
        assert!(matches!(
            w.state_at(&at(1, 21, 30)),
            WindowState::Closed { .. }
        ));
    }

    #[test]
    fn a_window_that_never_comes_is_closed_for_good() {
        let w = window("0 0 30 2 * for 1h");
        assert_eq!(
            w.state_at(&at(1, 0, 0)),
            WindowState::Closed { opens: None }
        );
    }

    #[test]
    fn bad_windows_name_the_problem() {
        for (text, needle) in [
            ("22:00", "neither a range"),
            ("25:00-06:00", "\"25:00\" is not a time"),
            ("22:00-22:00", "starts where it ends"),
            ("0 22 * * * for soon", "length \"soon\""),
            ("0 22 * * * for 0s", "from one second to a week"),
            ("0 22 * * * for 8d", "from one second to a week"),
            ("0 99 * * * for 1h", "cron expression \"0 99 * * *\""),
        ] {
            let e = text.parse::<InstallWindow>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains("22:00-06:00"), "says how to write one: {e}");
        }
    }
}
