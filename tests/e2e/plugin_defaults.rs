//! The default plugins, as embedded in ferry, through the real host with
//! real inputs.

use std::collections::BTreeMap;

use ferry_e2e::plugins::{candidate, election, health, registry, transport_request};
use ferry_plugin::{Candidate, LastSync, PluginSettings, ScheduleRequest, Source, SyncOutcome};

/// 50 volunteers with varied, reproducible traits.
fn fifty() -> Vec<Candidate> {
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    (0..50)
        .map(|i| Candidate {
            id: format!("agent-{i:02}"),
            free_disk_bytes: (next() % 500) << 30,
            uptime_secs: next() % (30 * 24 * 3600),
            on_mains_power: next() % 4 != 0,
            wired: next() % 2 == 0,
            laptop: next() % 3 == 0,
            cached_bytes: next() % (1 << 30),
        })
        .collect()
}

#[test]
fn score_election_is_deterministic_and_never_picks_a_laptop_on_battery() {
    let registry = registry(PluginSettings::default());
    let volunteers = fifty();
    let winner = registry.elect(&election(volunteers.clone())).unwrap();
    assert!(winner.fallback.is_none());
    assert!(winner.plugin.contains("score"), "{}", winner.plugin);
    let chosen = volunteers.iter().find(|c| c.id == winner.value).unwrap();
    assert!(!chosen.laptop || chosen.on_mains_power, "{chosen:?}");

    // Every node sees the volunteers in its own order; all agree.
    for rotation in [1, 7, 23, 49] {
        let mut order = volunteers.clone();
        order.rotate_left(rotation);
        order.reverse();
        assert_eq!(
            registry.elect(&election(order)).unwrap().value,
            winner.value
        );
    }

    // Only one volunteer is not a laptop on battery: it wins even with the
    // least disk and uptime.
    let mut battery: Vec<Candidate> = volunteers
        .iter()
        .map(|c| Candidate {
            laptop: true,
            on_mains_power: false,
            ..c.clone()
        })
        .collect();
    battery[17] = Candidate {
        free_disk_bytes: 1 << 30,
        uptime_secs: 60,
        ..candidate("the-desktop")
    };
    assert_eq!(
        registry.elect(&election(battery)).unwrap().value,
        "the-desktop"
    );

    // Equal volunteers: the smallest id wins, whatever the order.
    let twins = vec![
        candidate("twin-b"),
        candidate("twin-a"),
        candidate("twin-c"),
    ];
    assert_eq!(registry.elect(&election(twins)).unwrap().value, "twin-a");

    // No volunteers: an error, not a made-up winner.
    assert!(registry.elect(&election(Vec::new())).is_err());
}

fn kinds(plan: &ferry_plugin::TransportPlan) -> Vec<String> {
    plan.sources
        .iter()
        .map(|s| match &s.source {
            Source::Multicast => "multicast".to_string(),
            Source::Peer => "peer".to_string(),
            Source::Relay => "relay".to_string(),
            Source::Hub => "hub".to_string(),
            Source::Url(u) => u.clone(),
        })
        .collect()
}

#[test]
fn default_transport_orders_sources_and_honours_caps() {
    let registry = registry(PluginSettings::default());
    let plan = registry.plan(&transport_request()).unwrap().value;
    assert_eq!(kinds(&plan), ["multicast", "peer", "relay", "hub"]);

    // The task forbids multicast; too few peers.
    let mut request = transport_request();
    request.options.multicast_allowed = false;
    assert_eq!(kinds(&registry.plan(&request).unwrap().value)[0], "peer");
    let mut request = transport_request();
    request.subnet_peers = 1;
    request.peers_with_content = 0;
    assert!(!kinds(&registry.plan(&request).unwrap().value).contains(&"multicast".to_string()));

    // An unreachable relay is tried after the hub, not dropped.
    let mut request = transport_request();
    request.relay = Some(health(false));
    let order = kinds(&registry.plan(&request).unwrap().value);
    let pos = |k: &str| order.iter().position(|o| o == k).unwrap();
    assert!(pos("relay") > pos("hub"), "{order:?}");

    // The node's configuration caps the relay and adds a mirror.
    let mut config = BTreeMap::new();
    config.insert(
        "default".to_string(),
        toml::from_str("relay-cap-bps = 2000000\nmirrors = [\"https://mirror.example/ferry\"]")
            .unwrap(),
    );
    // Without the node's grant the mirror is left out of the plan (the node
    // names the mirrors a plugin may use); granted, it is planned.
    let ungranted = registry_with(config.clone(), BTreeMap::new());
    let plan = ungranted.plan(&transport_request()).unwrap().value;
    assert!(
        !kinds(&plan).iter().any(|k| k.starts_with("https://")),
        "{:?}",
        kinds(&plan)
    );
    let mut grants = BTreeMap::new();
    grants.insert(
        "default".to_string(),
        ferry_plugin::Grant {
            urls: vec!["https://mirror.example/".into()],
            ..Default::default()
        },
    );
    let capped = registry_with(config, grants);
    let plan = capped.plan(&transport_request()).unwrap().value;
    let relay = plan
        .sources
        .iter()
        .find(|s| matches!(s.source, Source::Relay))
        .unwrap();
    assert_eq!(relay.rate_cap_bps, Some(2_000_000));
    let order = kinds(&plan);
    let mirror = order
        .iter()
        .position(|o| o.starts_with("https://"))
        .expect("mirror planned");
    assert!(
        mirror < order.iter().position(|o| o == "hub").unwrap(),
        "{order:?}"
    );
}

fn registry_with(
    config: BTreeMap<String, toml::Table>,
    grants: BTreeMap<String, ferry_plugin::Grant>,
) -> ferry_plugin::Registry {
    registry(PluginSettings {
        config,
        grants,
        ..PluginSettings::default()
    })
}

fn schedule(now: u64, last: Option<LastSync>, urgent: bool) -> ScheduleRequest {
    ScheduleRequest {
        now,
        utc_offset_minutes: 0,
        last_sync: last,
        // Nothing new upstream: the cadence alone decides (new content
        // after a successful sync is synced at once, tested below).
        backlog_bytes: 0,
        urgent,
    }
}

fn last(started: u64, finished: u64, outcome: SyncOutcome) -> Option<LastSync> {
    Some(LastSync {
        started,
        finished,
        outcome,
        error: None,
        bytes: 1 << 20,
    })
}

/// 2026-11-26T00:00:00Z.
const MIDNIGHT: u64 = 1_795_651_200;
const HOUR: u64 = 3600;

#[test]
fn interval_schedule_spreads_syncs_and_retries_failures_sooner() {
    let registry = registry(PluginSettings::default());
    let now = MIDNIGHT + 12 * HOUR;
    let first = registry
        .schedule(&schedule(now, None, false))
        .unwrap()
        .value;
    assert_eq!(first.next_sync, now);
    let mut new_content = schedule(
        now,
        last(now - 600, now - 540, SyncOutcome::Succeeded),
        false,
    );
    new_content.backlog_bytes = 1 << 30;
    assert_eq!(
        registry.schedule(&new_content).unwrap().value.next_sync,
        now
    );

    // Succeeded 10 minutes ago: next in 60 minutes +- 10% from its start.
    let started = now - 600;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let d = registry
            .schedule(&schedule(
                now,
                last(started, started + 60, SyncOutcome::Succeeded),
                false,
            ))
            .unwrap()
            .value;
        assert!(
            (started + 54 * 60..=started + 66 * 60).contains(&d.next_sync),
            "{}",
            d.next_sync as i64 - started as i64
        );
        assert!(d.cap_until > now);
        seen.insert(d.next_sync);
    }
    assert!(seen.len() > 1, "no jitter across 20 decisions");

    // Failed a minute ago: retry 5 minutes (+- 10%) after it ended.
    let d = registry
        .schedule(&schedule(
            now,
            last(now - 120, now - 60, SyncOutcome::Failed),
            false,
        ))
        .unwrap()
        .value;
    let ended = now - 60;
    assert!(
        (ended + 270..=ended + 330).contains(&d.next_sync),
        "{}",
        d.next_sync - ended
    );

    // Urgent: now.
    let d = registry
        .schedule(&schedule(
            now,
            last(started, started + 60, SyncOutcome::Succeeded),
            true,
        ))
        .unwrap()
        .value;
    assert_eq!(d.next_sync, now);
}

#[test]
fn window_schedule_is_unlimited_at_night_and_capped_by_day() {
    let mut settings = PluginSettings {
        schedule: "window".into(),
        ..PluginSettings::default()
    };
    settings.schedule = "window".into();
    let registry = registry(settings);

    // 21:00: inside the 20:00-06:00 window: sync now, unlimited, until 06:00.
    let night = MIDNIGHT + 21 * HOUR;
    let d = registry.schedule(&schedule(night, None, false)).unwrap();
    assert!(d.plugin.contains("window"), "{}", d.plugin);
    assert_eq!(d.value.next_sync, night);
    assert_eq!(d.value.bandwidth_cap_bps, None);
    assert_eq!(d.value.cap_until, MIDNIGHT + 30 * HOUR);

    // 12:00: outside: 256 kbit/s until the window opens at 20:00.
    let noon = MIDNIGHT + 12 * HOUR;
    let d = registry
        .schedule(&schedule(noon, None, false))
        .unwrap()
        .value;
    assert_eq!(d.bandwidth_cap_bps, Some(256_000));
    assert_eq!(d.cap_until, MIDNIGHT + 20 * HOUR);

    // The node's clock is UTC+2: 19:00 UTC is 21:00 local, inside.
    let mut request = schedule(MIDNIGHT + 19 * HOUR, None, false);
    request.utc_offset_minutes = 120;
    let d = registry.schedule(&request).unwrap().value;
    assert_eq!(d.bandwidth_cap_bps, None);
    assert_eq!(d.cap_until, MIDNIGHT + 28 * HOUR);
}
