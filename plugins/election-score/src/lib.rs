//! Election `score`: the best-equipped volunteer becomes the subnet's
//! representative.
//!
//! Each volunteer scores points for free disk, uptime, mains power, a wired
//! link, and the bytes of the package it already holds, each factor times its
//! weight. A laptop on battery loses to every other volunteer whatever its
//! score: it may leave or sleep in the middle of the download. The highest
//! score wins; equal scores go to the smallest id.
//!
//! Every agent of the subnet runs the election on the same facts and must
//! reach the same result, so the outcome depends on those facts alone: not on
//! the order of the list, the clock or randomness. The arithmetic is integer
//! only, so no rounding can differ between nodes either. The nodes of a subnet
//! must share the weights, which come from the configuration.

use ferry_plugin_sdk::election::{Candidate, ElectionPolicy, ElectionRequest};
use serde::Deserialize;

/// The plugin's configuration, the `[config]` table of its plugin.toml. Each
/// factor earns up to 1000 points before its weight applies.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Weight of free disk space.
    #[serde(default = "default_disk_weight")]
    pub disk_weight: u64,
    /// Free disk earning full points, in GiB; more earns no more, as beyond
    /// it any volunteer can hold the package.
    #[serde(default = "default_disk_full_gib")]
    pub disk_full_gib: u64,
    /// Weight of uptime: a machine that has been up long is likely to stay.
    #[serde(default = "default_uptime_weight")]
    pub uptime_weight: u64,
    /// Uptime earning full points, in hours.
    #[serde(default = "default_uptime_full_hours")]
    pub uptime_full_hours: u64,
    /// Weight of running on mains power.
    #[serde(default = "default_mains_power_weight")]
    pub mains_power_weight: u64,
    /// Weight of a wired link: multicast from Wi-Fi is slow and lossy.
    #[serde(default = "default_wired_weight")]
    pub wired_weight: u64,
    /// Weight of the bytes already cached, relative to the volunteer holding
    /// the most: they need not cross the WAN again.
    #[serde(default = "default_cached_weight")]
    pub cached_weight: u64,
}

fn default_disk_weight() -> u64 {
    2
}

fn default_disk_full_gib() -> u64 {
    100
}

fn default_uptime_weight() -> u64 {
    1
}

fn default_uptime_full_hours() -> u64 {
    168
}

fn default_mains_power_weight() -> u64 {
    3
}

fn default_wired_weight() -> u64 {
    3
}

fn default_cached_weight() -> u64 {
    2
}

/// Points a factor earns at its best, before its weight.
const FULL_POINTS: u128 = 1000;

/// The largest weight; with it, no score can overflow.
const MAX_WEIGHT: u64 = 1_000_000;

impl Config {
    /// Checks the ranges serde cannot.
    fn validate(&self) -> Result<(), String> {
        for (key, weight) in [
            ("disk-weight", self.disk_weight),
            ("uptime-weight", self.uptime_weight),
            ("mains-power-weight", self.mains_power_weight),
            ("wired-weight", self.wired_weight),
            ("cached-weight", self.cached_weight),
        ] {
            if weight > MAX_WEIGHT {
                return Err(format!(
                    "invalid plugin configuration: {key} = {weight} must be at most {MAX_WEIGHT}"
                ));
            }
        }
        for (key, value) in [
            ("disk-full-gib", self.disk_full_gib),
            ("uptime-full-hours", self.uptime_full_hours),
        ] {
            if value == 0 {
                return Err(format!(
                    "invalid plugin configuration: {key} must be at least 1"
                ));
            }
        }
        Ok(())
    }

    /// `candidate`'s score; `most_cached` is the most bytes any volunteer
    /// holds.
    fn score(&self, candidate: &Candidate, most_cached: u64) -> u128 {
        let disk = share(
            candidate.free_disk_bytes,
            self.disk_full_gib.saturating_mul(1 << 30),
        );
        let uptime = share(
            candidate.uptime_secs,
            self.uptime_full_hours.saturating_mul(3600),
        );
        let cached = share(candidate.cached_bytes, most_cached);
        let flag = |set: bool| if set { FULL_POINTS } else { 0 };
        disk * u128::from(self.disk_weight)
            + uptime * u128::from(self.uptime_weight)
            + flag(candidate.on_mains_power) * u128::from(self.mains_power_weight)
            + flag(candidate.wired) * u128::from(self.wired_weight)
            + cached * u128::from(self.cached_weight)
    }
}

/// Points for `value` out of `full`, which earns [`FULL_POINTS`]; nothing
/// when `full` is zero.
fn share(value: u64, full: u64) -> u128 {
    if full == 0 {
        return 0;
    }
    // u64 arithmetic where it cannot overflow (any full below 16 PiB): in
    // wasm32 a u128 division is a library call, many times slower, and an
    // election sits on the agents' hot path.
    match value.min(full).checked_mul(FULL_POINTS as u64) {
        Some(scaled) => u128::from(scaled / full),
        None => u128::from(value.min(full)) * FULL_POINTS / u128::from(full),
    }
}

/// The policy.
pub struct Score;

impl ElectionPolicy for Score {
    fn elect(request: ElectionRequest) -> Result<String, String> {
        let config: Config = ferry_plugin_sdk::config()?;
        config.validate()?;
        elect(&config, &request.volunteers)
            .ok_or_else(|| format!("no volunteers for task {:?}", request.task))
    }
}

/// The winner's id; none without volunteers.
fn elect(config: &Config, volunteers: &[Candidate]) -> Option<String> {
    let most_cached = volunteers.iter().map(|c| c.cached_bytes).max()?;
    volunteers
        .iter()
        // Each volunteer's key once, not once per comparison.
        .map(|c| ((!on_battery(c), config.score(c, most_cached)), c))
        // The key orders volunteers totally, up to equal ids, so the maximum
        // is the same id in any order of the list, duplicates included.
        .max_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| b.id.cmp(&a.id)))
        .map(|(_, c)| c.id.clone())
}

/// A laptop on battery, the worst representative.
fn on_battery(candidate: &Candidate) -> bool {
    candidate.laptop && !candidate.on_mains_power
}

ferry_plugin_sdk::export_election!(Score);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::testing;

    const GIB: u64 = 1 << 30;

    /// A desktop, wired, on mains, with 50 GiB free, up a day, holding nothing.
    fn desktop(id: &str) -> Candidate {
        Candidate {
            id: id.into(),
            free_disk_bytes: 50 * GIB,
            uptime_secs: 86_400,
            on_mains_power: true,
            wired: true,
            laptop: false,
            cached_bytes: 0,
        }
    }

    fn laptop_on_battery(id: &str) -> Candidate {
        Candidate {
            laptop: true,
            on_mains_power: false,
            wired: false,
            ..desktop(id)
        }
    }

    fn elect_with(config: &str, volunteers: Vec<Candidate>) -> Result<String, String> {
        testing::set_config(config);
        Score::elect(ElectionRequest {
            task: "task-1".into(),
            self_id: "b".into(),
            volunteers,
        })
    }

    /// Every rotation and the reversal of `volunteers` elect `expected`.
    fn assert_order_independent(config: &str, volunteers: Vec<Candidate>, expected: &str) {
        let mut orders: Vec<Vec<Candidate>> = (0..volunteers.len())
            .map(|n| {
                let mut v = volunteers.clone();
                v.rotate_left(n);
                v
            })
            .collect();
        orders.extend(orders.clone().into_iter().map(|mut v| {
            v.reverse();
            v
        }));
        for order in orders {
            let ids: Vec<_> = order.iter().map(|c| c.id.clone()).collect();
            assert_eq!(
                elect_with(config, order),
                Ok(expected.to_string()),
                "{ids:?}"
            );
        }
    }

    #[test]
    fn no_volunteers_is_an_error() {
        let err = elect_with("", vec![]).unwrap_err();
        assert!(
            err.contains("no volunteers") && err.contains("task-1"),
            "{err}"
        );
    }

    #[test]
    fn the_only_volunteer_wins_even_on_battery() {
        assert_eq!(elect_with("", vec![laptop_on_battery("x")]), Ok("x".into()));
    }

    #[test]
    fn better_equipped_wins_in_any_order() {
        let mut more_disk = desktop("m");
        more_disk.free_disk_bytes = 90 * GIB;
        let mut wifi = desktop("a");
        wifi.wired = false;
        assert_order_independent("", vec![desktop("c"), more_disk, wifi], "m");
    }

    #[test]
    fn laptop_on_battery_loses_to_anything_else() {
        let mut strong = laptop_on_battery("a");
        strong.free_disk_bytes = 1000 * GIB;
        strong.uptime_secs = 10_000_000;
        strong.cached_bytes = 5 * GIB;
        strong.wired = true;
        let mut weak = desktop("z");
        weak.free_disk_bytes = 0;
        weak.uptime_secs = 0;
        weak.wired = false;
        weak.on_mains_power = false;
        assert_order_independent("", vec![strong.clone(), weak], "z");

        // Plugged in, the same laptop is an ordinary candidate again.
        let mut plugged = strong;
        plugged.on_mains_power = true;
        assert_order_independent("", vec![plugged, desktop("b")], "a");
    }

    #[test]
    fn cached_bytes_count_relative_to_the_most_cached() {
        let mut holder = desktop("z");
        holder.cached_bytes = 10;
        assert_order_independent("", vec![desktop("a"), holder.clone()], "z");
        // Without weight on the cache, the tie goes to the smaller id.
        assert_order_independent("cached-weight = 0", vec![desktop("a"), holder], "a");
    }

    #[test]
    fn disk_and_uptime_saturate() {
        let mut huge = desktop("z");
        huge.free_disk_bytes = 10_000 * GIB;
        let mut enough = desktop("a");
        enough.free_disk_bytes = 100 * GIB;
        assert_order_independent("", vec![huge.clone(), enough.clone()], "a");
        assert_order_independent("disk-full-gib = 200", vec![huge, enough], "z");

        let mut old = desktop("z");
        old.uptime_secs = u64::MAX;
        let mut week = desktop("a");
        week.uptime_secs = 168 * 3600;
        assert_order_independent("", vec![old, week], "a");
    }

    #[test]
    fn weights_decide_between_factors() {
        let mut wired = desktop("w");
        wired.on_mains_power = false;
        let mut mains = desktop("m");
        mains.wired = false;
        assert_order_independent(
            "mains-power-weight = 4",
            vec![wired.clone(), mains.clone()],
            "m",
        );
        assert_order_independent("wired-weight = 4", vec![wired, mains], "w");
    }

    #[test]
    fn ties_go_to_the_smallest_id() {
        assert_order_independent(
            "",
            vec![desktop("b"), desktop("c"), desktop("a2"), desktop("a10")],
            "a10",
        );
    }

    #[test]
    fn duplicate_ids_are_still_deterministic() {
        let mut better_b = desktop("b");
        better_b.uptime_secs = 100 * 3600;
        let volunteers = vec![desktop("b"), desktop("a"), better_b, desktop("a")];
        assert_order_independent("", volunteers, "b");
        assert_order_independent("", vec![desktop("a"), desktop("a")], "a");
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut max = desktop("a");
        max.free_disk_bytes = u64::MAX;
        max.uptime_secs = u64::MAX;
        max.cached_bytes = u64::MAX;
        let config = "disk-weight = 1000000\nuptime-weight = 1000000\ncached-weight = 1000000\ndisk-full-gib = 18446744073709551615";
        assert_order_independent(config, vec![max, desktop("b")], "a");
    }

    #[test]
    fn bad_configuration_names_the_key() {
        for (config, key) in [
            ("disk-weight = 1000001", "disk-weight"),
            ("uptime-full-hours = 0", "uptime-full-hours"),
            ("disk-full-gib = 0", "disk-full-gib"),
            ("wired-weight = -1", "wired-weight"),
            ("wired = 1", "wired"),
        ] {
            let err = elect_with(config, vec![desktop("a")]).unwrap_err();
            assert!(err.contains(key), "{config}: {err}");
        }
    }
}
