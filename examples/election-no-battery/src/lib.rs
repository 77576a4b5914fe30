//! An election policy that never makes a laptop on battery the subnet's
//! representative: the representative downloads the package once and
//! multicasts it to the others, which would drain a battery in an afternoon.
//!
//! Among the others it prefers wired desktops, then the volunteer that
//! already holds the most of the package, then the smallest id. If every
//! volunteer is a laptop on battery, one of them must still do it (a failed
//! election would only hand the choice to the built-in policy, which knows
//! nothing of this rule): the same ranking picks it and a warning says so.
//!
//! Every node of the subnet runs this on the same volunteers and must reach
//! the same answer, so it reads no clock, no randomness, no configuration
//! (each node may configure its plugins differently), and not the order of
//! the list: the ranking is a total order because ids are unique.

use std::cmp::Ordering;

use ferry_plugin_sdk::election::{Candidate, ElectionPolicy, ElectionRequest};

/// A laptop that runs on its battery.
fn on_battery(c: &Candidate) -> bool {
    c.laptop && !c.on_mains_power
}

/// A desktop with a cable: the best place to download and multicast from.
fn wired_desktop(c: &Candidate) -> bool {
    c.wired && !c.laptop
}

/// How `a` compares to `b` as representative: `Greater` means `a` is better.
fn rank(a: &Candidate, b: &Candidate) -> Ordering {
    wired_desktop(a)
        .cmp(&wired_desktop(b))
        .then(a.cached_bytes.cmp(&b.cached_bytes))
        // Equal on everything else: the smaller id is better.
        .then_with(|| b.id.cmp(&a.id))
}

/// Picks the best of `candidates`.
fn best<'a>(candidates: impl Iterator<Item = &'a Candidate>) -> Option<&'a Candidate> {
    candidates.max_by(|a, b| rank(a, b))
}

/// The policy. Public, as natively (where nothing exports it) the compiler
/// would otherwise take it for dead code.
pub struct NoBattery;

impl ElectionPolicy for NoBattery {
    fn elect(request: ElectionRequest) -> Result<String, String> {
        let volunteers = &request.volunteers;
        if let Some(winner) = best(volunteers.iter().filter(|c| !on_battery(c))) {
            return Ok(winner.id.clone());
        }
        let winner = best(volunteers.iter())
            .ok_or_else(|| format!("task {}: no volunteers", request.task))?;
        ferry_plugin_sdk::warn(&format!(
            "task {}: all {} volunteers are laptops on battery; {} has the most of the package",
            request.task,
            volunteers.len(),
            winner.id
        ));
        Ok(winner.id.clone())
    }
}

ferry_plugin_sdk::export_election!(NoBattery);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plugin_sdk::{LogLevel, testing};

    /// A desktop on mains power without a cable and nothing cached; the
    /// tests change what they are about.
    fn volunteer(id: &str) -> Candidate {
        Candidate {
            id: id.into(),
            free_disk_bytes: 50_000_000_000,
            uptime_secs: 3600,
            on_mains_power: true,
            wired: false,
            laptop: false,
            cached_bytes: 0,
        }
    }

    fn battery_laptop(id: &str, cached: u64) -> Candidate {
        Candidate {
            laptop: true,
            on_mains_power: false,
            cached_bytes: cached,
            ..volunteer(id)
        }
    }

    fn wired_desktop(id: &str, cached: u64) -> Candidate {
        Candidate {
            wired: true,
            cached_bytes: cached,
            ..volunteer(id)
        }
    }

    fn elect(volunteers: Vec<Candidate>) -> Result<String, String> {
        NoBattery::elect(ElectionRequest {
            task: "deploy-1".into(),
            self_id: "a".into(),
            volunteers,
        })
    }

    #[test]
    fn a_laptop_on_battery_loses_even_with_everything_cached() {
        let winner = elect(vec![battery_laptop("a", 1_000_000), volunteer("b")]);
        assert_eq!(winner.unwrap(), "b");
    }

    #[test]
    fn a_plugged_in_laptop_may_win() {
        let laptop = Candidate {
            laptop: true,
            cached_bytes: 10,
            ..volunteer("a")
        };
        assert_eq!(elect(vec![laptop, volunteer("b")]).unwrap(), "a");
    }

    #[test]
    fn a_wired_desktop_beats_more_cached_bytes() {
        let wifi_full = Candidate {
            cached_bytes: 900,
            ..volunteer("a")
        };
        let wired_laptop = Candidate {
            wired: true,
            laptop: true,
            cached_bytes: 800,
            ..volunteer("b")
        };
        let winner = elect(vec![wifi_full, wired_laptop, wired_desktop("c", 0)]);
        assert_eq!(winner.unwrap(), "c");
    }

    #[test]
    fn most_cached_bytes_then_smallest_id() {
        let winner = elect(vec![
            wired_desktop("c", 10),
            wired_desktop("b", 20),
            wired_desktop("a", 10),
        ]);
        assert_eq!(winner.unwrap(), "b");
        let winner = elect(vec![wired_desktop("c", 10), wired_desktop("a", 10)]);
        assert_eq!(winner.unwrap(), "a");
    }

    #[test]
    fn all_on_battery_elects_the_one_with_most_cached_and_warns() {
        testing::take_logs();
        let winner = elect(vec![
            battery_laptop("a", 5),
            battery_laptop("b", 50),
            battery_laptop("c", 50),
        ]);
        assert_eq!(winner.unwrap(), "b");
        let logs = testing::take_logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert_eq!(logs[0].0, LogLevel::Warn);
        assert!(logs[0].1.contains("all 3 volunteers"), "{}", logs[0].1);
    }

    #[test]
    fn no_volunteers_is_an_error() {
        let err = elect(Vec::new()).unwrap_err();
        assert!(err.contains("no volunteers"), "{err}");
    }

    /// Every order of the same volunteers elects the same one.
    #[test]
    fn the_order_of_volunteers_does_not_matter() {
        let volunteers = vec![
            battery_laptop("e", 1_000),
            wired_desktop("d", 7),
            wired_desktop("b", 7),
            volunteer("a"),
            Candidate {
                cached_bytes: 7,
                ..volunteer("c")
            },
        ];
        let mut orders = Vec::new();
        permutations(volunteers, 0, &mut orders);
        assert_eq!(orders.len(), 120);
        for order in orders {
            let ids: Vec<String> = order.iter().map(|c| c.id.clone()).collect();
            assert_eq!(elect(order).unwrap(), "b", "order {ids:?}");
        }
    }

    /// Every permutation of `items[k..]` (Heap's algorithm would do too;
    /// this one is easier to read).
    fn permutations(mut items: Vec<Candidate>, k: usize, out: &mut Vec<Vec<Candidate>>) {
        if k == items.len() {
            out.push(items);
            return;
        }
        for i in k..items.len() {
            items.swap(k, i);
            permutations(items.clone(), k + 1, out);
            items.swap(k, i);
        }
    }
}
