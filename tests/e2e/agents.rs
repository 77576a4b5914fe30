//! Agents and tasks as real processes: a hub, a relay and agents; tasks
//! created through the hub's API reach every target within seconds, bytes
//! cross the WAN once, and whatever goes wrong (a dead relay, tampered
//! bytes, an altered task) is detected, worked around and reported with
//! its reason.

use std::path::Path;
use std::time::Duration;

use ferry_e2e::agent::{Agent, create_task, publish_copy, show_task, targets_in, wait_hub_task};
use ferry_e2e::proxy::{Mode, Proxy};
use ferry_e2e::relay::Relay;
use ferry_e2e::tree::{Entry, random_bytes, snapshot, total_bytes};
use ferry_e2e::{Client, Hub};

/// Generous last-resort bound on waits for things that take seconds.
const LIMIT: Duration = Duration::from_secs(120);

/// A small application: a binary and a config file.
fn write_package(dir: &Path, seed: u64, size: usize) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("bin/tool"), random_bytes(size, seed)).unwrap();
    std::fs::write(dir.join("tool.toml"), format!("seed = {seed}\n")).unwrap();
}

/// Publishes `dir` as `tool` `version`, installed by `copy` into the
/// agent's install root under `tool`.
fn publish(publisher: &Client, dir: &Path, version: &str) {
    publish_copy(publisher, dir, "tool", version);
}

/// What an agent installed, without the installer's own records.
fn installed(agent: &Agent) -> std::collections::BTreeMap<String, Entry> {
    let mut tree = snapshot(&agent.install_root.join("tool"));
    tree.retain(|path, _| !path.starts_with(".ferry"));
    tree
}

fn bytes_from(record: &serde_json::Value, source: &str) -> u64 {
    record["bytes"][source].as_u64().unwrap_or(0)
}

fn reasons(record: &serde_json::Value) -> Vec<(String, String)> {
    record["incidents"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| {
                    (
                        i["reason"].as_str().unwrap_or("").to_owned(),
                        i["source"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_site_task_installs_on_every_agent_through_the_relay_and_crosses_the_wan_once() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let pkg = hub.root.path().join("pkg");
    write_package(&pkg, 1, 1 << 20);
    publish(&publisher, &pkg, "1.0.0");
    let total = total_bytes(&pkg);

    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| {
            Agent::init(
                &hub,
                &format!("berlin-pc{i}"),
                "berlin",
                &relay.url(),
                Some(&hub.url()),
            )
        })
        .collect();
    // A roaming machine of another site, enrolled with the hub directly.
    let mut roaming = Agent::init(&hub, "paris-laptop", "paris", &hub.url(), None);
    for agent in agents.iter_mut() {
        agent.run();
    }
    roaming.run();

    let id = create_task(&publisher, "tool@^1", &["site:berlin"], &[]);
    // Every report travels agent → relay outbox → hub.
    let detail = wait_hub_task(&publisher, &id, LIMIT, |d| targets_in(d, "installed") == 3);
    assert_eq!(detail["targets"].as_array().unwrap().len(), 3, "{detail:#}");
    for agent in &agents {
        assert_eq!(installed(agent), snapshot(&pkg), "{}", agent.data.display());
        let record = agent.task(&id).expect("the agent holds the task");
        assert_eq!(bytes_from(&record, "relay"), total, "{record:#}");
        assert_eq!(bytes_from(&record, "hub"), 0, "{record:#}");
    }
    assert_eq!(
        detail["summary"]["bytes"]["relay"].as_u64(),
        Some(3 * total),
        "{detail:#}"
    );
    // The WAN carried the package once (plus metadata), not once per agent.
    let wan = relay.status()["wan"]["received"].as_u64().unwrap();
    assert!(
        wan >= total && wan < total + total / 4,
        "the relay received {wan} bytes over the WAN for a {total}-byte package"
    );

    // The paris machine heard the task list but holds no berlin task.
    let deadline = std::time::Instant::now() + LIMIT;
    while roaming.status()["agent"]["task_version"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the roaming agent never checked in"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(roaming.task(&id).is_none());

    // The roaming machine, targeted by id, installs from the hub.
    let roaming_id = roaming.status()["agent"]["id"].as_str().unwrap().to_owned();
    let id2 = create_task(
        &publisher,
        "tool@1.0.0",
        &[&format!("agent:{roaming_id}")],
        &[],
    );
    let record = roaming.wait_task(&id2, LIMIT, |r| r["state"] == "installed");
    assert_eq!(bytes_from(&record, "hub"), total, "{record:#}");
    assert_eq!(installed(&roaming), snapshot(&pkg));

    // A task for a version an agent has installed does not install again.
    let id3 = create_task(&publisher, "tool", &["site:berlin"], &[]);
    let record = agents[0].wait_task(&id3, LIMIT, |r| r["state"] == "installed");
    assert!(
        record["message"]
            .as_str()
            .unwrap()
            .contains("installed already"),
        "{record:#}"
    );
    assert_eq!(bytes_from(&record, "relay"), 0, "{record:#}");
}

#[test]
fn with_the_relay_down_agents_hear_of_tasks_and_get_bytes_from_the_hub_and_say_why() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let pkg = hub.root.path().join("pkg");
    write_package(&pkg, 2, 512 << 10);
    publish(&publisher, &pkg, "1.0.0");
    let total = total_bytes(&pkg);
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    let mut agent = Agent::init(&hub, "pc", "berlin", &relay.url(), Some(&hub.url()));
    agent.run();
    let deadline = std::time::Instant::now() + LIMIT;
    while agent.status()["agent"]["server_kind"] != "relay" {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never checked in"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    relay.kill();

    let started = std::time::Instant::now();
    let id = create_task(&publisher, "tool", &["site:berlin"], &[]);
    let record = agent.wait_task(&id, LIMIT, |r| r["state"] == "installed");
    let took = started.elapsed();
    assert_eq!(installed(&agent), snapshot(&pkg));
    assert_eq!(bytes_from(&record, "hub"), total, "{record:#}");
    assert!(
        reasons(&record).contains(&("relay-unreachable".into(), "relay".into())),
        "{record:#}"
    );
    // Seconds, not minutes: the check-in falls back after a failed try,
    // a refused connection is a failure at once.
    assert!(took < Duration::from_secs(60), "took {took:?}");

    // The reports made meanwhile reached the hub (through it directly),
    // with the reason.
    let detail = wait_hub_task(&publisher, &id, LIMIT, |d| targets_in(d, "installed") == 1);
    let target = &detail["targets"][0]["progress"];
    assert!(
        reasons(target).contains(&("relay-unreachable".into(), "relay".into())),
        "{detail:#}"
    );
    assert_eq!(detail["summary"]["bytes"]["hub"].as_u64(), Some(total));
}

#[test]
fn bytes_tampered_at_the_relay_are_refused_fetched_from_the_hub_and_reported_against_the_relay() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let pkg = hub.root.path().join("pkg");
    write_package(&pkg, 3, 1 << 20);
    publish(&publisher, &pkg, "1.0.0");
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    relay.sync();
    // Flip one byte in the middle of every large file the relay stores.
    let mut flipped = 0;
    for entry in walk(&relay.data.join("content")) {
        let len = std::fs::metadata(&entry).unwrap().len();
        if len > 100_000 {
            let mut bytes = std::fs::read(&entry).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&entry, bytes).unwrap();
            flipped += 1;
        }
    }
    assert!(flipped > 0, "the relay stores the package's binary");

    let mut agent = Agent::init(&hub, "pc", "berlin", &relay.url(), Some(&hub.url()));
    agent.run();
    let id = create_task(&publisher, "tool", &["site:berlin"], &[]);
    let record = agent.wait_task(&id, LIMIT, |r| r["state"] == "installed");
    assert_eq!(
        installed(&agent),
        snapshot(&pkg),
        "only verified bytes installed"
    );
    assert!(
        reasons(&record).contains(&("bad-bytes-from-source".into(), "relay".into())),
        "{record:#}"
    );
    assert!(bytes_from(&record, "hub") > 0, "{record:#}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_task_waits_for_not_before_and_an_altered_or_replayed_task_is_refused() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let pkg = hub.root.path().join("pkg");
    write_package(&pkg, 4, 64 << 10);
    publish(&publisher, &pkg, "1.0.0");
    // The relay reaches the hub through a proxy, so the test can hold the
    // hub's answers back while the relay serves what it was made to.
    let hub_addr: std::net::SocketAddr = hub.url()["https://".len()..].parse().unwrap();
    let wan = Proxy::start(hub_addr);
    let mut relay = Relay::init(&hub, "relay", "berlin", &wan.url());
    relay.run();
    let mut agent = Agent::init(&hub, "pc", "berlin", &relay.url(), None);
    agent.run();

    let id = create_task(
        &publisher,
        "tool",
        &["site:berlin"],
        &["--not-before", "6s"],
    );
    let created = std::time::Instant::now();
    let waiting = agent.wait_task(&id, LIMIT, |r| r["state"] == "waiting");
    assert_eq!(waiting["reason"], "not-before", "{waiting:#}");
    assert!(
        !agent.install_root.join("tool").exists(),
        "nothing installed early"
    );
    let record = agent.wait_task(&id, LIMIT, |r| r["state"] == "installed");
    assert!(
        created.elapsed() >= Duration::from_secs(5),
        "installed {:?} after creation, before its not-before",
        created.elapsed()
    );
    assert_eq!(record["reason"], serde_json::Value::Null);

    // The relay alters a task it passes on: the agent refuses it.
    wan.set(Mode::Refuse);
    relay.kill();
    let tasks_file = relay.data.join("tasks.json");
    let held: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tasks_file).unwrap()).unwrap();
    let mut altered = held.clone();
    let doc = altered["tasks"][0].as_str().unwrap().to_owned();
    let forged = doc.replace(&format!("\"id\": \"{id}\""), "\"id\": \"t999\"");
    assert_ne!(forged, doc, "the task id is in the document: {doc}");
    altered["tasks"] = serde_json::json!([forged]);
    altered["version"] = serde_json::json!(1000);
    std::fs::write(&tasks_file, serde_json::to_vec(&altered).unwrap()).unwrap();
    relay.run();
    agent.wait_refusal("did not verify", LIMIT);
    assert!(agent.task("t999").is_none());

    // Cancelled at the hub, heard through the relay, whose list (ahead of
    // the hub's) is replaced by the hub's. Then the relay replays the
    // task's older, uncancelled version: refused, the cancellation stands.
    wan.set(Mode::Pass);
    publisher.run(&["task", "cancel", &id]).success();
    agent.wait_task(&id, LIMIT, |r| r["task"]["cancelled"] == true);
    wan.set(Mode::Refuse);
    relay.kill();
    let mut replayed = held.clone();
    replayed["version"] = serde_json::json!(2000);
    std::fs::write(&tasks_file, serde_json::to_vec(&replayed).unwrap()).unwrap();
    relay.run();
    agent.wait_refusal("a replay", LIMIT);
    let record = agent.task(&id).unwrap();
    assert_eq!(record["task"]["cancelled"], true, "{record:#}");
}

#[test]
fn a_cancelled_download_stops_and_a_killed_agent_resumes_without_refetching() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let pkg = hub.root.path().join("pkg");
    write_package(&pkg, 5, 2 << 20);
    publish(&publisher, &pkg, "1.0.0");
    let total = total_bytes(&pkg);
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    relay.sync();
    // A slow LAN between agent and relay, so downloads take a while.
    let relay_addr: std::net::SocketAddr = relay.url()["https://".len()..].parse().unwrap();
    let lan = Proxy::start(relay_addr);
    lan.set(Mode::Trickle(128 << 10));
    let mut agent = Agent::init(&hub, "pc", "berlin", &lan.url(), None);
    agent.run();

    // Cancelled while downloading: stops, reported cancelled, nothing
    // installed.
    let id = create_task(&publisher, "tool", &["site:berlin"], &[]);
    agent.wait_task(&id, LIMIT, |r| {
        r["state"] == "downloading" && r["percent"].as_u64().unwrap_or(0) > 0
    });
    publisher.run(&["task", "cancel", &id]).success();
    agent.wait_task(&id, LIMIT, |r| r["state"] == "cancelled");
    assert!(!agent.install_root.join("tool").exists());
    let detail = wait_hub_task(&publisher, &id, LIMIT, |d| targets_in(d, "cancelled") == 1);
    assert_eq!(detail["summary"]["task"]["cancelled"], true);

    // Killed mid-download, restarted: the verified chunks kept are not
    // fetched again.
    let before = lan.bytes_to_client();
    let id2 = create_task(&publisher, "tool", &["site:berlin"], &[]);
    agent.wait_task(&id2, LIMIT, |r| {
        r["state"] == "downloading" && r["percent"].as_u64().unwrap_or(0) >= 30
    });
    agent.kill();
    lan.set(Mode::Pass);
    agent.run();
    agent.wait_task(&id2, LIMIT, |r| r["state"] == "installed");
    assert_eq!(installed(&agent), snapshot(&pkg));
    let moved = lan.bytes_to_client() - before;
    assert!(
        moved < total + total / 2,
        "{moved} bytes crossed the LAN for a {total}-byte package after a restart"
    );
    let _ = show_task(&publisher, &id2);
}

#[test]
fn a_precached_package_installs_later_without_a_second_download() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let pkg = hub.root.path().join("pkg");
    write_package(&pkg, 6, 512 << 10);
    publish(&publisher, &pkg, "1.0.0");
    let total = total_bytes(&pkg);
    let mut agent = Agent::init(&hub, "pc", "berlin", &hub.url(), None);
    agent.run();
    let pre = create_task(&publisher, "tool", &["site:berlin"], &["--precache-only"]);
    let record = agent.wait_task(&pre, LIMIT, |r| r["state"] == "downloaded");
    assert_eq!(bytes_from(&record, "hub"), total, "{record:#}");
    assert!(
        !agent.install_root.join("tool").exists(),
        "pre-cache installs nothing"
    );

    // Install from the cache only, once the window opens: no download.
    let install = create_task(
        &publisher,
        "tool",
        &["site:berlin"],
        &["--install-from-cache-only", "--not-before", "2s"],
    );
    let record = agent.wait_task(&install, LIMIT, |r| r["state"] == "installed");
    assert_eq!(bytes_from(&record, "hub"), 0, "{record:#}");
    assert_eq!(installed(&agent), snapshot(&pkg));

    // Install-from-cache-only of content not cached, with its window open
    // already, fails and fetches nothing.
    let pkg2 = hub.root.path().join("pkg2");
    write_package(&pkg2, 7, 256 << 10);
    publish(&publisher, &pkg2, "2.0.0");
    let uncached = create_task(
        &publisher,
        "tool@2",
        &["site:berlin"],
        &["--install-from-cache-only", "--not-before", "0s"],
    );
    let record = agent.wait_task(&uncached, LIMIT, |r| r["state"] == "failed");
    assert_eq!(record["reason"], "not-cached", "{record:#}");
    assert_eq!(bytes_from(&record, "hub"), 0, "{record:#}");
    assert_eq!(installed(&agent), snapshot(&pkg), "1.0.0 stays installed");
}

/// A cron window (with a seconds field) that opens `secs` from now, in this
/// machine's local time (the agents' too), for an hour.
fn window_in(secs: i64) -> String {
    use chrono::Timelike;
    let at = chrono::Local::now() + chrono::Duration::seconds(secs);
    format!("{} {} {} * * * for 1h", at.second(), at.minute(), at.hour())
}

#[test]
fn an_install_window_holds_the_install_while_the_download_runs_ahead() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let pkg = hub.root.path().join("pkg");
    write_package(&pkg, 9, 256 << 10);
    publish(&publisher, &pkg, "1.0.0");
    let total = total_bytes(&pkg);
    let mut agent = Agent::init(&hub, "pc", "berlin", &hub.url(), None);
    agent.run();

    // Bad windows are refused at creation, naming the problem.
    publisher
        .run(&[
            "task",
            "create",
            "--package",
            "tool",
            "--target",
            "site:berlin",
            "--install-window",
            "25:00-06:00",
        ])
        .failure("\"25:00\" is not a time of day");

    let created = std::time::Instant::now();
    let window = window_in(8);
    let id = create_task(
        &publisher,
        "tool",
        &["site:berlin"],
        &["--install-window", &window],
    );
    let shown = publisher.run(&["task", "show", &id]).success();
    assert!(
        shown.contains(&format!("install window {window}")),
        "{shown}"
    );
    // Downloaded ahead, then waiting for the window with nothing installed.
    let waiting = agent.wait_task(&id, LIMIT, |r| {
        r["state"] == "waiting" && r["reason"] == "window-closed"
    });
    assert_eq!(bytes_from(&waiting, "hub"), total, "{waiting:#}");
    assert_eq!(waiting["content_ready"], true, "{waiting:#}");
    assert!(
        !agent.install_root.join("tool").exists(),
        "installed before the window"
    );
    agent.wait_task(&id, LIMIT, |r| r["state"] == "installed");
    assert!(
        created.elapsed() >= Duration::from_secs(7),
        "installed {:?} after creation, before its window opened",
        created.elapsed()
    );
    assert_eq!(installed(&agent), snapshot(&pkg));

    // Install-from-cache-only inside an open window, content not cached:
    // nothing is downloaded; it waits to fetch once the window closes.
    let pkg2 = hub.root.path().join("pkg2");
    write_package(&pkg2, 10, 128 << 10);
    publish(&publisher, &pkg2, "2.0.0");
    let open_now = window_in(-2);
    let id2 = create_task(
        &publisher,
        "tool@2",
        &["site:berlin"],
        &["--install-window", &open_now, "--install-from-cache-only"],
    );
    let record = agent.wait_task(&id2, LIMIT, |r| {
        r["state"] == "waiting" && r["reason"] == "not-cached"
    });
    assert_eq!(bytes_from(&record, "hub"), 0, "{record:#}");
    assert_eq!(installed(&agent), snapshot(&pkg), "1.0.0 stays installed");
    let detail = wait_hub_task(&publisher, &id2, LIMIT, |d| {
        d["targets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["progress"]["reason"] == "not-cached"))
    });
    assert_eq!(targets_in(&detail, "installed"), 0, "{detail:#}");
}

#[test]
fn a_group_task_reaches_its_members_only() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let pkg = hub.root.path().join("pkg");
    write_package(&pkg, 8, 64 << 10);
    publish(&publisher, &pkg, "1.0.0");
    let mut agents: Vec<Agent> = (0..2)
        .map(|i| Agent::init(&hub, &format!("pc{i}"), "berlin", &hub.url(), None))
        .collect();
    for agent in agents.iter_mut() {
        agent.run();
    }
    let ids: Vec<String> = (0..2)
        .map(|i| {
            let deadline = std::time::Instant::now() + LIMIT;
            loop {
                let status = agents[i].status();
                if let Some(id) = status["agent"]["id"].as_str().filter(|s| !s.is_empty()) {
                    break id.to_owned();
                }
                assert!(std::time::Instant::now() < deadline, "{status:#}");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .collect();

    // By id: one canary.
    publisher
        .run(&["group", "create", "canary", &format!("agent:{}", ids[0])])
        .success();
    let id = create_task(&publisher, "tool", &["group:canary"], &[]);
    agents[0].wait_task(&id, LIMIT, |r| r["state"] == "installed");
    let detail = show_task(&publisher, &id);
    assert_eq!(detail["targets"].as_array().unwrap().len(), 1, "{detail:#}");
    assert_eq!(
        detail["summary"]["task"]["groups"],
        serde_json::json!(["canary"])
    );
    let deadline = std::time::Instant::now() + LIMIT;
    while agents[1].status()["agent"]["task_version"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "pc1 never checked in");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agents[1].task(&id).is_none(), "pc1 is not in the group");

    // By inventory: every agent that reported this operating system.
    publisher
        .run(&[
            "group",
            "create",
            "all-linux",
            &format!("os:{}", std::env::consts::OS),
        ])
        .success();
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let groups = publisher.run(&["group", "list", "--json"]).json();
        let members = groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "all-linux")
            .map(|g| g["members"].as_array().unwrap().len())
            .unwrap_or(0);
        if members == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "inventories never arrived: {groups:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Unknown groups and selectors are refused with what to do.
    publisher
        .run(&[
            "task",
            "create",
            "--package",
            "tool",
            "--target",
            "group:nope",
        ])
        .failure("no group nope");
    publisher
        .run(&["group", "add", "canary", "color:red"])
        .failure("unknown selector");
}
