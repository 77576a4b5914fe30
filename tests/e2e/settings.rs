//! Settings set centrally, as real processes: an admin sets values for all
//! agents, a site, a group or one agent; each agent takes the most specific
//! at its next check-in, without a restart; a site plugin published as a
//! Ferry package takes over an agent's transport plan.

use std::path::Path;
use std::time::Duration;

use ferry_e2e::agent::{Agent, create_task, publish_copy};
use ferry_e2e::proxy::{Mode, Proxy};
use ferry_e2e::relay::Relay;
use ferry_e2e::tree::{random_bytes, total_bytes};
use ferry_e2e::{Client, Hub, Run};
use ferry_plugin::Kind;

/// Generous last-resort bound on waits for things that take seconds.
const LIMIT: Duration = Duration::from_secs(120);

fn settings(admin: &Client, args: &[&str]) -> Run {
    let mut all = vec!["settings"];
    all.extend_from_slice(args);
    admin.run(&all)
}

/// The value of `key` the agent's status shows, with its scope.
fn setting(status: &serde_json::Value, key: &str) -> Option<(String, String)> {
    let s = &status["agent"]["settings"][key];
    Some((
        s["value"].as_str()?.to_owned(),
        s["scope"].as_str()?.to_owned(),
    ))
}

fn has(status: &serde_json::Value, key: &str, value: &str, scope: &str) -> bool {
    setting(status, key) == Some((value.to_owned(), scope.to_owned()))
}

fn publish_tool(publisher: &Client, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tool.bin"), random_bytes(256 << 10, 7)).unwrap();
    publish_copy(publisher, dir, "tool", "1.0.0");
}

#[test]
fn settings_reach_agents_by_scope_and_a_plugin_package_takes_over_the_transport() {
    let mut hub = Hub::start();
    let admin = hub.enroll("publisher", "publisher");
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    let mut a = Agent::init(&hub, "pc-a", "berlin", &relay.url(), Some(&hub.url()));
    let mut b = Agent::init(&hub, "pc-b", "berlin", &relay.url(), Some(&hub.url()));
    a.run();
    b.run();
    let id_of = |agent: &Agent| {
        agent.wait_status("a first check-in", LIMIT, |s| {
            s["agent"]["last_checkin_at"].is_number()
        })["agent"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (id_a, id_b) = (id_of(&a), id_of(&b));

    // Bad input is refused with what is wrong, and changes nothing.
    settings(&admin, &["set", "--scope", "global", "colour=red"]).failure("unknown setting");
    settings(&admin, &["set", "--scope", "global", "checkin-wait=1h"]).failure("out of range");
    settings(&admin, &["set", "--scope", "planet:mars", "multicast=true"]).failure("unknown scope");
    settings(&admin, &["set", "--scope", "group:nope", "multicast=true"]).failure("no group nope");
    settings(&admin, &["unset", "--scope", "global", "multicast"]).failure("not set");
    let listed = settings(&admin, &["list", "--json"]).json();
    assert_eq!(listed["version"], 0, "{listed:#}");

    // Global, then a site, then one agent: the most specific wins.
    settings(&admin, &["set", "--scope", "global", "checkin-wait=15s"]).success();
    settings(
        &admin,
        &["set", "--scope", "site:berlin", "checkin-wait=12s"],
    )
    .success();
    settings(
        &admin,
        &[
            "set",
            "--scope",
            &format!("agent:{id_b}"),
            "checkin-wait=9s",
        ],
    )
    .success();
    a.wait_status("the site's value", LIMIT, |s| {
        has(s, "checkin-wait", "12s", "site:berlin")
    });
    b.wait_status("its own value", LIMIT, |s| {
        has(s, "checkin-wait", "9s", &format!("agent:{id_b}"))
    });
    // The hub shows an admin what each agent takes, and from where.
    let view = settings(&admin, &["list", "--agent", &id_a, "--json"]).json();
    assert_eq!(
        view["resolved"]["checkin-wait"],
        serde_json::json!({"value": "12s", "scope": "site:berlin"}),
        "{view:#}"
    );
    let table = settings(&admin, &["list", "--agent", &id_b]).success();
    assert!(table.contains(&format!("agent:{id_b}")), "{table}");
    settings(&admin, &["list", "--agent", "nobody"]).failure("no agent");

    // A group scope applies to the agents its selectors take in, by their
    // own inventory; changing the group's members moves the value.
    admin
        .run(&["group", "create", "linux", "os:linux"])
        .success();
    settings(&admin, &["set", "--scope", "group:linux", "multicast=true"]).success();
    for agent in [&a, &b] {
        agent.wait_status("the group's value", LIMIT, |s| {
            has(s, "multicast", "true", "group:linux")
        });
    }
    admin
        .run(&["group", "remove", "linux", "os:linux"])
        .success();
    admin
        .run(&["group", "add", "linux", &format!("agent:{id_b}")])
        .success();
    a.wait_status("the group's value gone", LIMIT, |s| {
        setting(s, "multicast").is_none()
    });
    b.wait_status("the group's value kept", LIMIT, |s| {
        has(s, "multicast", "true", "group:linux")
    });

    // Unset: the less specific scope applies again.
    settings(&admin, &["unset", "--scope", "site:berlin", "checkin-wait"]).success();
    a.wait_status("the global value", LIMIT, |s| {
        has(s, "checkin-wait", "15s", "global")
    });

    // A site plugin published as a package, named in the settings of one
    // agent: it fetches it, verifies it, and plans with it from then on,
    // without a restart.
    let plugin = hub.root.path().join("hub-only-plugin");
    ferry_e2e::plugins::write_plugin(
        hub.root.path(),
        "hub-only-plugin",
        &ferry_e2e::plugins::manifest("hub-only", "1.0.0", Kind::Transport, ""),
        &ferry_e2e::plugins::fixture_wasm("hub-only"),
    );
    admin.publish(&plugin, "site-transport", "1.0.0").success();
    settings(
        &admin,
        &[
            "set",
            "--scope",
            &format!("agent:{id_a}"),
            "plugin-packages=site-transport@^1",
            "plugins.transport=hub-only",
        ],
    )
    .success();
    let status = a.wait_status("the plugin package in use", LIMIT, |s| {
        s["agent"]["policies"]["transport"] == "hub-only"
            && s["agent"]["plugin_packages"]["site-transport"] == "1.0.0"
    });
    assert_eq!(
        status["agent"]["settings_notes"],
        serde_json::json!([]),
        "{status:#}"
    );
    assert!(
        a.data
            .join("plugin-packages/site-transport/plugin.toml")
            .is_file(),
        "the package is laid out as a plugin directory"
    );
    assert_eq!(b.status()["agent"]["policies"]["transport"], "default");

    // The proof it decides: agent A gets the package from the hub, as its
    // plugin plans; agent B, on the built-in default, from the relay.
    let pkg = hub.root.path().join("tool");
    publish_tool(&admin, &pkg);
    let total = total_bytes(&pkg);
    let id = create_task(&admin, "tool", &["site:berlin"], &[]);
    let record_a = a.wait_task(&id, LIMIT, |r| r["state"] == "installed");
    let record_b = b.wait_task(&id, LIMIT, |r| r["state"] == "installed");
    assert_eq!(
        record_a["bytes"]["hub"].as_u64(),
        Some(total),
        "{record_a:#}"
    );
    assert_eq!(record_a["bytes"]["relay"].as_u64(), None, "{record_a:#}");
    assert_eq!(
        record_b["bytes"]["relay"].as_u64(),
        Some(total),
        "{record_b:#}"
    );

    // Taken back: the agent returns to the default and removes the package.
    settings(
        &admin,
        &[
            "unset",
            "--scope",
            &format!("agent:{id_a}"),
            "plugin-packages",
            "plugins.transport",
        ],
    )
    .success();
    a.wait_status("the default transport again", LIMIT, |s| {
        s["agent"]["policies"]["transport"] == "default"
            && s["agent"]["plugin_packages"] == serde_json::json!({})
    });
    assert!(!a.data.join("plugin-packages/site-transport").exists());

    // Settings survive a restart of the agent with the relay and the hub
    // away: what it holds applies before any check-in.
    let version = settings(&admin, &["list", "--json"]).json()["version"].clone();
    relay.kill();
    hub.stop();
    a.kill();
    std::fs::remove_file(a.data.join("status.json")).unwrap();
    a.run();
    let status = a.wait_status("the settings held", LIMIT, |s| {
        has(s, "checkin-wait", "15s", "global")
    });
    assert_eq!(status["agent"]["settings_version"], version, "{status:#}");
    assert!(status["agent"]["last_checkin_at"].is_null(), "{status:#}");
}

#[test]
fn a_package_that_is_not_a_plugin_is_refused_and_the_default_keeps_deciding() {
    let hub = Hub::start();
    let admin = hub.enroll("publisher", "publisher");
    let mut agent = Agent::init(&hub, "pc", "paris", &hub.url(), None);
    agent.run();
    let not_plugin = hub.root.path().join("docs");
    std::fs::create_dir_all(&not_plugin).unwrap();
    std::fs::write(not_plugin.join("README"), "not a plugin").unwrap();
    admin.publish(&not_plugin, "docs", "1.0.0").success();
    settings(
        &admin,
        &[
            "set",
            "--scope",
            "site:paris",
            "plugin-packages=docs@^1,absent@^1",
            "plugins.transport=nowhere",
        ],
    )
    .success();
    let status = agent.wait_status("the refusals noted", LIMIT, |s| {
        let notes = s["agent"]["settings_notes"].to_string();
        notes.contains("no plugin.toml") && notes.contains("absent")
    });
    let notes = status["agent"]["settings_notes"].to_string();
    assert!(
        notes.contains("transport plugin nowhere is not available"),
        "{status:#}"
    );
    assert!(!agent.data.join("plugin-packages/docs").exists());
    // The built-in default still plans: a task installs from the hub.
    let pkg = hub.root.path().join("tool");
    publish_tool(&admin, &pkg);
    let id = create_task(&admin, "tool", &["site:paris"], &[]);
    let record = agent.wait_task(&id, LIMIT, |r| r["state"] == "installed");
    assert_eq!(
        record["bytes"]["hub"].as_u64(),
        Some(total_bytes(&pkg)),
        "{record:#}"
    );
}

/// Publishes one file of `size` bytes as `name` 1.0.0, installed by `copy`.
fn publish_sized(admin: &Client, root: &Path, name: &str, size: usize, seed: u64) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.bin"), random_bytes(size, seed)).unwrap();
    publish_copy(admin, &dir, name, "1.0.0");
}

#[test]
fn the_cache_size_setting_trims_what_no_open_task_needs_oldest_first() {
    const KIB: usize = 1024;
    let hub = Hub::start();
    let admin = hub.enroll("publisher", "publisher");
    let mut agent = Agent::init(&hub, "pc", "paris", &hub.url(), None);
    agent.run();
    let id = agent.wait_status("a first check-in", LIMIT, |s| {
        s["agent"]["last_checkin_at"].is_number()
    })["agent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let root = hub.root.path();
    publish_sized(&admin, root, "big-a", 200 * KIB, 1);
    publish_sized(&admin, root, "big-b", 240 * KIB, 2);
    publish_sized(&admin, root, "small-c", 90 * KIB, 3);
    settings(
        &admin,
        &[
            "set",
            "--scope",
            &format!("agent:{id}"),
            "cache-size=300KiB",
        ],
    )
    .success();
    agent.wait_status("the cache size", LIMIT, |s| {
        has(s, "cache-size", "300KiB", &format!("agent:{id}"))
    });
    let store = agent.data.join("cache/content/store/objects");
    let held = || total_bytes(&store);

    // A pre-cached package is pinned: it stays, though it is the oldest.
    let pre = create_task(&admin, "big-a", &["site:paris"], &["--precache-only"]);
    agent.wait_task(&pre, LIMIT, |r| r["state"] == "downloaded");
    let b = create_task(&admin, "big-b", &["site:paris"], &[]);
    agent.wait_task(&b, LIMIT, |r| r["state"] == "installed");
    let c = create_task(&admin, "small-c", &["site:paris"], &[]);
    agent.wait_task(&c, LIMIT, |r| r["state"] == "installed");
    // b went (installed, unpinned) when it pushed the cache over 300 KiB;
    // a (pinned) and c (fits) stay. Without pinning, a would have gone
    // first, then b, leaving c alone.
    let deadline = std::time::Instant::now() + LIMIT;
    while held() != (290 * KIB) as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cache holds {} bytes, not a and c ({} bytes)",
            held(),
            290 * KIB
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // What was installed stays installed; the pre-cached one installs from
    // the cache without a download.
    let install = create_task(&admin, "big-a", &["site:paris"], &[]);
    let record = agent.wait_task(&install, LIMIT, |r| r["state"] == "installed");
    assert_eq!(record["bytes"]["hub"].as_u64(), None, "{record:#}");
    let installed_b = std::fs::metadata(agent.install_root.join("big-b/data.bin")).unwrap();
    assert_eq!(installed_b.len(), (240 * KIB) as u64);
}

#[test]
fn settings_altered_or_replayed_by_the_relay_are_refused() {
    let hub = Hub::start();
    let admin = hub.enroll("publisher", "publisher");
    // The relay reaches the hub through a proxy, so the test can hold the
    // hub back while the relay serves what it was made to.
    let hub_addr: std::net::SocketAddr = hub.url()["https://".len()..].parse().unwrap();
    let wan = Proxy::start(hub_addr);
    let mut relay = Relay::init(&hub, "relay", "berlin", &wan.url());
    relay.run();
    let mut agent = Agent::init(&hub, "pc", "berlin", &relay.url(), None);
    agent.run();
    let tasks_file = relay.data.join("tasks.json");
    let relay_holds = |version: &serde_json::Value| {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Ok(bytes) = std::fs::read(&tasks_file)
                && let Ok(held) = serde_json::from_slice::<serde_json::Value>(&bytes)
                && held["settings"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("\"version\": {version}")))
            {
                return held;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the relay never held settings {version}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let set = |value: &str| {
        settings(&admin, &["set", "--scope", "global", value]).success();
        settings(&admin, &["list", "--json"]).json()["version"].clone()
    };
    let first = relay_holds(&set("checkin-wait=15s"));
    let second = set("checkin-wait=10s");
    relay_holds(&second);
    agent.wait_status("the newer settings", LIMIT, |s| {
        has(s, "checkin-wait", "10s", "global")
    });

    // The relay alters the settings it passes on, claiming a newer version
    // so agents take them: refused, the held ones stay in force.
    wan.set(Mode::Refuse);
    relay.kill();
    let mut held: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tasks_file).unwrap()).unwrap();
    let doc = held["settings"].as_str().unwrap().to_owned();
    let newer = second.as_u64().unwrap() + 1;
    let forged = doc
        .replace("\"checkin-wait\": \"10s\"", "\"checkin-wait\": \"1s\"")
        .replace(
            &format!("\"version\": {second}"),
            &format!("\"version\": {newer}"),
        );
    assert!(
        forged.contains("\"1s\"") && forged.contains(&newer.to_string()),
        "the value and version are in the document: {doc}"
    );
    held["settings"] = forged.into();
    held["version"] = 1000.into();
    std::fs::write(&tasks_file, serde_json::to_vec(&held).unwrap()).unwrap();
    relay.run();
    agent.wait_refusal("settings from", LIMIT);

    // The relay serves the older, genuinely signed settings: the agent,
    // which holds newer ones, keeps those.
    relay.kill();
    let mut replayed = first.clone();
    replayed["version"] = 2000.into();
    std::fs::write(&tasks_file, serde_json::to_vec(&replayed).unwrap()).unwrap();
    relay.run();
    let status = agent.wait_status("a check-in at the replaying relay", LIMIT, |s| {
        s["agent"]["task_version"] == 2000
    });
    assert!(has(&status, "checkin-wait", "10s", "global"), "{status:#}");
    assert_eq!(status["agent"]["settings_version"], second, "{status:#}");
}

#[test]
fn settings_widen_and_take_back_what_an_installer_may_write() {
    let hub = Hub::start();
    let admin = hub.enroll("publisher", "publisher");
    let mut agent = Agent::init(&hub, "pc", "paris", &hub.url(), None);
    // Quick retries, so a failed install is tried again within seconds.
    agent.edit_config(&[("backoff-min = \"5s\"", "backoff-min = \"1s\"")]);
    agent.run();
    let elsewhere = hub.root.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let pkg = hub.root.path().join("app");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("app.conf"), "colour = blue\n").unwrap();
    let target = format!("target={}", elsewhere.join("app").display());
    for version in ["1.0.0", "1.0.1"] {
        admin
            .publish_with(
                &pkg,
                "app",
                version,
                &["--install", "copy", "--param", &target],
            )
            .success();
    }

    // agent.toml grants `copy` the install root only: refused.
    let first = create_task(&admin, "app@=1.0.0", &["site:paris"], &[]);
    agent.wait_task(&first, LIMIT, |r| r["reason"] == "installer-failed");
    assert!(!elsewhere.join("app").exists());

    // The settings widen the grant: the retry installs.
    let granted = format!(
        "grants.copy.directories={},{}",
        agent.install_root.display(),
        elsewhere.display()
    );
    settings(&admin, &["set", "--scope", "site:paris", &granted]).success();
    agent.wait_task(&first, LIMIT, |r| r["state"] == "installed");
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("app/app.conf")).unwrap(),
        "colour = blue\n"
    );

    // Taken back: agent.toml's grant stands again, and the next version is
    // refused.
    settings(
        &admin,
        &["unset", "--scope", "site:paris", "grants.copy.directories"],
    )
    .success();
    agent.wait_status("the grant setting gone", LIMIT, |s| {
        setting(s, "grants.copy.directories").is_none()
    });
    let second = create_task(&admin, "app@=1.0.1", &["site:paris"], &[]);
    let record = agent.wait_task(&second, LIMIT, |r| r["reason"] == "installer-failed");
    assert_ne!(record["state"], "installed", "{record:#}");
}

#[test]
fn a_relay_takes_the_schedule_plugin_its_settings_name() {
    let hub = Hub::start();
    let admin = hub.enroll("publisher", "publisher");
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    let decided_by = |relay: &Relay| {
        relay.status()["next_sync"]["decided_by"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let wait_for = |relay: &Relay, name: &str| {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let now = decided_by(relay);
            if now.contains(&format!("schedule {name}@")) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the relay's schedule is {now:?}, not {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&relay, "interval");
    settings(
        &admin,
        &["set", "--scope", "site:berlin", "plugins.schedule=window"],
    )
    .success();
    wait_for(&relay, "window");
    // Taken back: relay.toml's schedule again.
    settings(
        &admin,
        &["unset", "--scope", "site:berlin", "plugins.schedule"],
    )
    .success();
    wait_for(&relay, "interval");
}
