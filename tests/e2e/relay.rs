//! The relay as a real process between a hub and agents: it syncs only
//! what changed, serves the hub's signed metadata unchanged and switches
//! it only once the content is stored, passes enrollment on, chains into
//! tiers, and keeps serving its last good snapshot when the upstream lies.

use ferry_e2e::relay::Relay;
use ferry_e2e::tree::{overwrite, snapshot, total_bytes, write_app};
use ferry_e2e::{Hub, Mirror, Tamper};

/// The versions a client lists through its server, as `NAME@VERSION`.
fn listed(client: &ferry_e2e::Client) -> Vec<String> {
    let list = client.run(&["packages", "--json"]).json();
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| {
            format!(
                "{}@{}",
                v["name"].as_str().unwrap(),
                v["version"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_relay_syncs_only_what_changed_and_agents_fetch_through_it() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 21);
    publisher.publish(&app, "app", "1.0.0").success();

    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.sync_on_request_only();
    relay.run();
    // The schedule's first sync starts at once; a requested one may find
    // it already done.
    relay.sync();
    let total = total_bytes(&app);
    let status = relay.status();
    assert_eq!(
        status["serving"]["served"],
        serde_json::json!(["app@1.0.0.json"]),
        "{status}"
    );
    assert_eq!(
        status["packages"]["app"]["full_bytes"].as_u64().unwrap(),
        total,
        "{status}"
    );

    // An agent enrolled through the relay fetches from it, verified against
    // the hub's root, and gets exactly what was published.
    let agent = relay.enroll_agent(&hub, "agent", "berlin");
    let v1 = hub.root.path().join("v1");
    agent.fetch("app", &v1, None).success();
    assert_eq!(snapshot(&v1), snapshot(&app));
    // What it served is counted for the package (the status file catches
    // up within seconds).
    let status = status_when(&relay, |s| {
        s["packages"]["app"]["lan_bytes"].as_u64().unwrap_or(0) > total / 2
    });
    assert!(
        status["packages"]["app"]["lan_bytes"].as_u64() <= status["lan_served"].as_u64(),
        "{status}"
    );

    // A small change: published, but not served by the relay before it
    // synced, so agents see one consistent snapshot.
    overwrite(&app.join("bin/app"), 1 << 20, 16 << 10, 77);
    publisher.publish(&app, "app", "1.1.0").success();
    assert_eq!(listed(&agent), vec!["app@1.0.0"]);

    let second = relay.sync();
    assert_eq!(
        second["fetched"],
        serde_json::json!(["app@1.1.0"]),
        "{second}"
    );
    // As chunks, or as a byte-level delta of the file (an outline then
    // stands for the manifest).
    let moved = second["chunk_bytes"].as_u64().unwrap() + second["delta_bytes"].as_u64().unwrap();
    assert!(
        moved > 16 << 10 && moved < 40 << 10,
        "a 16 KiB change moved {moved} content bytes: {second}"
    );
    let wan = second["wan_bytes"].as_u64().unwrap();
    assert!(
        wan < 96 << 10,
        "a 16 KiB change cost {wan} WAN bytes: {second}"
    );
    assert!(
        second["manifest_bytes"].as_u64().unwrap() < 8 << 10,
        "{second}"
    );
    let mut now = listed(&agent);
    now.sort();
    assert_eq!(now, vec!["app@1.0.0", "app@1.1.0"]);
    let v2 = hub.root.path().join("v2");
    let fetched = agent.fetch("app@=1.1.0", &v2, None).json();
    assert_eq!(snapshot(&v2), snapshot(&app));
    assert!(
        fetched["bytes_downloaded"].as_u64().unwrap() + fetched["bytes_delta"].as_u64().unwrap()
            < 40 << 10,
        "{fetched}"
    );

    // The relay serves the hub's metadata byte for byte.
    let served = relay.status()["serving"].clone();
    let timestamp = served["timestamp_version"].as_u64().unwrap();
    let hub_timestamp = std::fs::read(hub.data.join("tuf/metadata/timestamp.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&hub_timestamp).unwrap();
    assert_eq!(doc["signed"]["version"].as_u64().unwrap(), timestamp);
    let relayed = std::fs::read(relay.data.join("metadata/current/timestamp.json")).unwrap();
    assert_eq!(relayed, hub_timestamp);

    // Withdrawn upstream: gone from the relay at once (new metadata whose
    // content is all held is switched to without waiting for a sync).
    publisher.run(&["unpublish", "app@1.0.0"]).success();
    relay.sync();
    let status = relay.status();
    assert_eq!(
        status["serving"]["served"],
        serde_json::json!(["app@1.1.0.json"]),
        "{status}"
    );
    assert_eq!(listed(&agent), vec!["app@1.1.0"]);

    // The status tells the story, and survives a restart.
    relay.kill();
    let status = relay.status();
    assert_eq!(status["site"], "berlin", "{status}");
    assert_eq!(status["address"], serde_json::Value::Null, "{status}");
    assert!(
        status["wan"]["received"].as_u64().unwrap() > total,
        "{status}"
    );
    // What the agent fetched through it was counted on the LAN side.
    assert!(status["lan_served"].as_u64().unwrap() > total, "{status}");
    assert_eq!(
        status["packages"]["app"]["full_bytes"].as_u64().unwrap(),
        2 * total
    );
    let text = relay.cmd(&["status"]).success();
    assert!(text.contains("up to date"), "{text}");
    assert!(text.contains("app"), "{text}");
}

#[test]
fn a_relay_keeps_what_it_selects_and_pulls_the_rest_through_once() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    for (name, version, seed, size) in [
        ("tools-a", "1.0.0", 1, 50_000),
        ("tools-a", "2.0.0", 2, 50_000),
        ("other", "1.0.0", 3, 3 << 20),
    ] {
        let dir = hub.root.path().join(format!("{name}-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), ferry_e2e::tree::random_bytes(size, seed)).unwrap();
        publisher.publish(&dir, name, version).success();
    }
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.edit_config(&[(
        "[keep]\npackages = [\"*\"]",
        "[keep]\npackages = [\"tools-*@^2\"]",
    )]);
    relay.sync_on_request_only();
    relay.run();
    relay.sync();
    let status = relay.status();
    assert_eq!(
        status["serving"]["served"],
        serde_json::json!(["tools-a@2.0.0.json"]),
        "{status}"
    );
    let agent = relay.enroll_agent(&hub, "agent", "berlin");
    assert_eq!(listed(&agent), vec!["tools-a@2.0.0"]);

    // Not kept, but signed: eight agents ask at once; the relay fetches it
    // once and serves them all.
    let agents: Vec<_> = (0..8)
        .map(|i| relay.enroll_agent(&hub, &format!("agent-{i}"), "berlin"))
        .collect();
    std::thread::scope(|scope| {
        for (i, a) in agents.iter().enumerate() {
            let out = hub.root.path().join(format!("other-{i}"));
            scope.spawn(move || a.fetch("other", &out, None).success());
        }
    });
    let original = snapshot(&hub.root.path().join("other-1.0.0"));
    for i in 0..8 {
        assert_eq!(
            snapshot(&hub.root.path().join(format!("other-{i}"))),
            original
        );
    }
    let status = relay.status();
    let wan = status["packages"]["other"]["wan_bytes"].as_u64().unwrap();
    assert!(
        wan > 3 << 20 && wan < (3 << 20) + (3 << 20) / 10,
        "3 MiB pulled through for eight agents cost {wan} WAN bytes: {status}"
    );
    // Kept from then on, across syncs.
    relay.sync();
    let mut now = listed(&agent);
    now.sort();
    assert_eq!(now, vec!["other@1.0.0", "tools-a@2.0.0"]);

    // A bad selection is refused at start, naming the entry.
    relay.kill();
    relay.edit_config(&[("packages = [\"tools-*@^2\"]", "packages = [\"Tools!\"]")]);
    let args: Vec<std::ffi::OsString> = vec![
        "relay".into(),
        "run".into(),
        "--data".into(),
        relay.data.clone().into_os_string(),
    ];
    let run = ferry_e2e::ferry(args);
    run.failure("Tools!");
}

#[test]
fn relays_chain_into_tiers_and_each_link_carries_the_bytes_once() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 5);
    publisher.publish(&app, "app", "1.0.0").success();
    let total = total_bytes(&app);

    let mut regional = Relay::init(&hub, "regional", "emea", &hub.url());
    regional.run();
    // The branch relay enrolls through the regional one and syncs from it;
    // it still trusts only the hub's root.
    let mut branch = Relay::init(&hub, "branch", "berlin", &regional.url());
    branch.run();
    regional.sync();
    branch.sync();

    let agent = branch.enroll_agent(&hub, "agent", "berlin");
    let out = hub.root.path().join("out");
    agent.fetch("app", &out, None).success();
    assert_eq!(snapshot(&out), snapshot(&app));

    for relay in [&regional, &branch] {
        let status = relay.status();
        let received = status["wan"]["received"].as_u64().unwrap();
        assert!(
            received > total && received < total + total / 10,
            "{}: {received} bytes over its upstream link for {total}: {status}",
            relay.data.display()
        );
    }
    let branch_root = std::fs::read(branch.data.join("root.json")).unwrap();
    let hub_root = std::fs::read(hub.data.join("tuf/metadata/1.root.json")).unwrap();
    assert_eq!(branch_root, hub_root);
}

#[test]
fn tampered_content_or_rolled_back_metadata_leave_the_last_good_snapshot_served() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 9);
    publisher.publish(&app, "app", "1.0.0").success();

    // The relay's upstream is a mirror that can lie.
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    let creds = ferry_net::ClientCredentials::load(&relay.data).unwrap();
    let mirror = Mirror::start(
        &hub.data,
        ferry_net::HubClient::from_credentials(&creds).unwrap(),
    );
    relay.edit_config(&[(
        &format!("upstream = \"{}/\"", hub.url()),
        &format!("upstream = \"{}/\"", mirror.url()),
    )]);
    // Each sync below is one the test asks for, made under the tampering
    // it set up.
    relay.sync_on_request_only();
    relay.run();
    relay.sync();
    let early = mirror.recorded();
    let agent = relay.enroll_agent(&hub, "agent", "berlin");

    // Small enough that chunks, not a byte-level delta, carry it; with a
    // new file the relay cannot rebuild, the whole manifest comes (not an
    // outline).
    overwrite(&app.join("bin/app"), 0, 16 << 10, 8);
    std::fs::write(app.join("NEWS"), b"1.1.0: a fix\n").unwrap();
    publisher.publish(&app, "app", "1.1.0").success();

    // A swapped manifest: refused, nothing switched.
    mirror.set(Tamper::FlipBit("manifests/".into()));
    relay.cmd(&["sync"]).failure("sync did not finish");
    let status = relay.status();
    assert_eq!(status["last_sync"]["outcome"], "failed", "{status}");
    let reason = status["last_failure"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("manifest"), "{reason}");
    assert_eq!(listed(&agent), vec!["app@1.0.0"]);

    // Tampered chunks: refused too, and the last good snapshot still
    // serves its content.
    mirror.set(Tamper::FlipBit("chunks/batch".into()));
    relay.cmd(&["sync"]).failure("sync did not finish");
    let status = relay.status();
    let reason = status["last_failure"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("chunk"), "{reason}");
    assert_eq!(listed(&agent), vec!["app@1.0.0"]);
    agent
        .fetch("app@=1.0.0", &hub.root.path().join("still"), None)
        .success();

    // Honest again: the sync completes.
    mirror.set(Tamper::None);
    relay.sync();
    let mut now = listed(&agent);
    now.sort();
    assert_eq!(now, vec!["app@1.0.0", "app@1.1.0"]);

    // Old metadata replayed: the TUF client refuses the rollback.
    let replayed = early
        .into_iter()
        .filter(|(path, _)| path.ends_with("timestamp.json"))
        .collect();
    mirror.set(Tamper::Replay(replayed));
    relay.cmd(&["sync"]).failure("sync did not finish");
    let status = relay.status();
    assert_eq!(
        status["serving"]["served"].as_array().unwrap().len(),
        2,
        "{status}"
    );
}

/// Reads the relay's status until `done` holds, for at most 30 s (the
/// relay acts on its own here; the deadline is only a last guard).
fn status_when(relay: &Relay, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = relay.status();
        if done(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn serves(status: &serde_json::Value, target: &str) -> bool {
    status["serving"]["served"]
        .as_array()
        .is_some_and(|s| s.iter().any(|t| t == target))
}

#[test]
fn new_upstream_content_reaches_the_relay_within_seconds_without_being_asked() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("f"), ferry_e2e::tree::random_bytes(200_000, 1)).unwrap();
    publisher.publish(&app, "app", "1.0.0").success();
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    status_when(&relay, |s| serves(s, "app@1.0.0.json"));

    // The default schedule syncs hourly; the hub's notice brings new
    // content over at once.
    std::fs::write(app.join("g"), b"new file").unwrap();
    publisher.publish(&app, "app", "1.1.0").success();
    let status = status_when(&relay, |s| serves(s, "app@1.1.0.json"));
    assert_eq!(status["last_sync"]["outcome"], "succeeded", "{status}");

    // Told not to, the relay learns of new content but leaves it to the
    // schedule: the status shows it behind.
    relay.kill();
    relay.sync_on_request_only();
    relay.run();
    std::fs::write(app.join("h"), b"another").unwrap();
    let published = publisher.publish(&app, "app", "1.2.0").json();
    let version = published["published"]["metadata_version"].as_u64().unwrap();
    let status = status_when(&relay, |s| {
        s["upstream_seen"]["targets_version"].as_u64() >= Some(version)
    });
    assert!(!serves(&status, "app@1.2.0.json"), "{status}");
    let text = relay.cmd(&["status"]).success();
    assert!(text.contains("behind"), "{text}");
}

#[test]
fn reports_wait_in_the_relay_outbox_while_the_hub_is_down_and_arrive_once() {
    use ferry_e2e::process::block_on;
    use ferry_net::api::{Report, ReportAck, ReportBatch};

    let mut hub = Hub::start();
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    let agent = relay.enroll_agent(&hub, "agent", "berlin");
    let me = ferry_net::ClientCredentials::load(&agent.data)
        .unwrap()
        .info
        .id;
    let http = agent.http();
    let reports = |range: std::ops::Range<i64>, agent: &str| ReportBatch {
        reports: range
            .map(|i| Report {
                id: format!("r-{i}"),
                agent: agent.to_owned(),
                kind: "test".into(),
                created_at: 1_800_000_000 + i,
                body: serde_json::json!({ "n": i }),
            })
            .collect(),
    };
    let send = |batch: &ReportBatch| -> Result<ReportAck, ferry_net::NetError> {
        block_on(http.post_json("v1/reports", batch))
    };

    // The hub is down: the relay accepts and keeps them.
    hub.stop();
    let ack = send(&reports(0..150, &me)).unwrap();
    assert_eq!(
        ack,
        ReportAck {
            accepted: 150,
            new: 150
        }
    );
    // Sent again after a lost answer: nothing new.
    let ack = send(&reports(100..150, &me)).unwrap();
    assert_eq!(
        ack,
        ReportAck {
            accepted: 50,
            new: 0
        }
    );
    // An agent speaks only for itself; bad reports are refused whole.
    let err = send(&reports(0..1, "someone-else")).unwrap_err();
    assert_eq!(err.code(), Some("forbidden"), "{err}");
    let mut bad = reports(200..202, &me);
    bad.reports[1].kind = "Not A Kind".into();
    let err = send(&bad).unwrap_err();
    assert_eq!(err.code(), Some("bad-request"), "{err}");

    // A relay restart keeps them.
    relay.kill();
    relay.run();
    let status = status_when(&relay, |s| s["outbox"]["pending"] == 150);
    assert_eq!(status["outbox"]["forwarded"], 0, "{status}");

    // The hub is back: each arrives once.
    hub.run_again();
    status_when(&relay, |s| {
        s["outbox"]["forwarded"] == 150 && s["outbox"]["pending"] == 0
    });
    let held = hub
        .admin(&["hub", "reports", "--json", "--limit", "1000"])
        .json();
    let held = held.as_array().unwrap();
    assert_eq!(held.len(), 150);
    let ids: std::collections::HashSet<&str> =
        held.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 150);
    assert!(held.iter().all(|r| r["agent"] == me.as_str()));

    // Resent through the relay after it forwarded them: the relay passes
    // them on again, the hub still holds each once.
    assert_eq!(send(&reports(0..10, &me)).unwrap().new, 10);
    status_when(&relay, |s| s["outbox"]["forwarded"] == 160);
    let held = hub
        .admin(&["hub", "reports", "--json", "--limit", "1000"])
        .json();
    assert_eq!(held.as_array().unwrap().len(), 150);
}

/// Seconds between two RFC 3339 times of a status record.
fn seconds_between(from: &serde_json::Value, to: &serde_json::Value) -> f64 {
    let at = |t: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(t.as_str().expect("a time")).expect("RFC 3339")
    };
    (at(to) - at(from)).as_seconds_f64()
}

#[test]
fn a_sync_holds_the_schedule_cap_on_a_shaped_wan_link() {
    use ferry_e2e::netns::Netns;
    if !Netns::available() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    // The office's WAN: a veth into a namespace, shaped to 100 Mbit/s;
    // the schedule caps the site at 20 Mbit/s.
    let wan = Netns::new();
    wan.shape(100);
    let mut hub = Hub::init_with(&["--san", &wan.outer_ip], &[]);
    hub.run_on("0.0.0.0:0");
    let publisher = hub.enroll("publisher", "publisher");
    let dir = hub.root.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("big.bin"),
        ferry_e2e::tree::random_bytes(16 << 20, 3),
    )
    .unwrap();
    publisher.publish(&dir, "big", "1.0.0").success();

    let upstream = format!("https://{}:{}", wan.outer_ip, hub.addr().port());
    let mut relay = Relay::init_in(&hub, "relay", "berlin", &upstream, wan.launcher());
    relay.edit_config(&[(
        "[plugins.config]\n",
        "[plugins.config.interval]\nbandwidth-cap-bps = 20000000\n",
    )]);
    let (sent_before, received_before) = wan.traffic();
    relay.run();
    let status = status_when(&relay, |s| serves(s, "big@1.0.0.json"));
    let (sent_after, received_after) = wan.traffic();
    let record = &status["last_sync"];
    let seconds = seconds_between(&record["started"], &record["finished"]);
    // Everything on the wire, both ways: TCP, TLS, HTTP, metadata.
    let wire = (sent_after - sent_before) + (received_after - received_before);
    let rate = wire as f64 * 8.0 / seconds;
    assert!(
        (18e6..=22e6).contains(&rate),
        "{wire} bytes on the WAN in {seconds:.2} s is {:.2} Mbit/s, not 20 within 10%: {status}",
        rate / 1e6
    );
    assert_eq!(status["next_sync"]["cap"], "20000000 bit/s", "{status}");
    eprintln!(
        "WAN cap 20 Mbit/s: {wire} bytes on the wire in {seconds:.2} s, {:.2} Mbit/s",
        rate / 1e6
    );
}

#[test]
fn the_cache_quota_evicts_the_least_recently_used_and_never_a_pin() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let publish = |version: &str, seed: u64| {
        let dir = hub.root.path().join(format!("a-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), ferry_e2e::tree::random_bytes(1 << 20, seed)).unwrap();
        publisher.publish(&dir, "a", version).success();
    };
    let served = |relay: &Relay| {
        let mut s: Vec<String> = relay.status()["serving"]["served"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        s.sort();
        s
    };
    // Time must pass between uses for their order to show.
    let next_second = || {
        ferry_e2e::process::wait_until(
            std::time::SystemTime::now() + std::time::Duration::from_millis(1100),
        )
    };
    publish("1.0.0", 1);
    publish("2.0.0", 2);
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.edit_config(&[("\n[cache]\n", "\n[cache]\nquota = \"2600KiB\"\n")]);
    relay.sync_on_request_only();
    relay.run();
    relay.sync();
    assert_eq!(served(&relay), vec!["a@1.0.0.json", "a@2.0.0.json"]);
    let agent = relay.enroll_agent(&hub, "agent", "berlin");
    agent
        .fetch("a@=2.0.0", &hub.root.path().join("o2"), None)
        .success();

    // A third version passes the quota: the version nobody asked for goes
    // (the newest stays whatever its use).
    next_second();
    publish("3.0.0", 3);
    relay.sync();
    assert_eq!(served(&relay), vec!["a@2.0.0.json", "a@3.0.0.json"]);
    let text = relay.cmd(&["status"]).success();
    assert!(text.contains("evicted      a@1.0.0.json"), "{text}");

    // Asked for again, it comes back by pull-through; now 2.0.0 is the
    // least recently used and goes at the next sync.
    next_second();
    let o1 = hub.root.path().join("o1");
    agent.fetch("a@=1.0.0", &o1, None).success();
    assert_eq!(snapshot(&o1), snapshot(&hub.root.path().join("a-1.0.0")));
    relay.sync();
    assert_eq!(served(&relay), vec!["a@1.0.0.json", "a@3.0.0.json"]);

    // A pin keeps a version whatever the quota, and brings it back.
    relay
        .cmd(&["pin", "a@2.0.0", "--for", "1h", "--reason", "task 42"])
        .success();
    relay.sync();
    let now = served(&relay);
    assert!(now.contains(&"a@2.0.0.json".to_owned()), "{now:?}");
    assert!(now.contains(&"a@3.0.0.json".to_owned()), "{now:?}");
    assert_eq!(now.len(), 2, "the unpinned old version went: {now:?}");
    let text = relay.cmd(&["status"]).success();
    assert!(
        text.contains("a@2.0.0.json until") && text.contains("task 42"),
        "{text}"
    );
    relay.cmd(&["unpin", "a@2.0.0"]).success();
    relay.cmd(&["unpin", "a@2.0.0"]).failure("not pinned");
    relay.cmd(&["pin", "a@latest"]).failure("exact semver");
}

#[test]
fn a_shifted_file_crosses_the_wan_as_a_byte_level_delta_verified_against_the_manifest() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let dir = hub.root.path().join("tool");
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = ferry_e2e::tree::random_bytes(4 << 20, 12);
    std::fs::write(dir.join("tool.bin"), &v1).unwrap();
    publisher.publish(&dir, "tool", "1.0.0").success();

    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    let creds = ferry_net::ClientCredentials::load(&relay.data).unwrap();
    let mirror = Mirror::start(
        &hub.data,
        ferry_net::HubClient::from_credentials(&creds).unwrap(),
    );
    relay.edit_config(&[(
        &format!("upstream = \"{}/\"", hub.url()),
        &format!("upstream = \"{}/\"", mirror.url()),
    )]);
    relay.sync_on_request_only();
    relay.run();
    relay.sync();
    let agent = relay.enroll_agent(&hub, "agent", "berlin");
    agent
        .fetch("tool", &hub.root.path().join("a1"), None)
        .success();

    // Four bytes inserted every 8 KiB, as shifted code: every chunk is new,
    // the bytes barely are.
    let mut v2 = Vec::new();
    for piece in v1.chunks(8 << 10) {
        v2.extend_from_slice(b"SHFT");
        v2.extend_from_slice(piece);
    }
    std::fs::write(dir.join("tool.bin"), &v2).unwrap();
    publisher.publish(&dir, "tool", "2.0.0").success();

    // An outline that does not verify costs the whole manifest, nothing
    // more: the file is still rebuilt from its delta and checked.
    mirror.set(Tamper::FlipBit("outlines/".into()));
    let record = relay.sync();
    assert_eq!(record["files_by_delta"], 1, "{record}");
    let whole = record["manifest_bytes"].as_u64().unwrap();
    assert!(whole > 8 << 10, "{record}");

    // Agents get the outline and the delta from the relay.
    mirror.set(Tamper::None);
    let out = hub.root.path().join("a2");
    let fetched = agent.fetch("tool@=2.0.0", &out, None).json();
    assert_eq!(std::fs::read(out.join("tool.bin")).unwrap(), v2);
    assert_eq!(fetched["files_by_delta"], 1, "{fetched}");
    assert_eq!(fetched["manifest_outline"], true, "{fetched}");
    assert!(
        fetched["bytes_delta"].as_u64().unwrap() < 64 << 10,
        "{fetched}"
    );
    assert!(
        fetched["manifest_bytes"].as_u64().unwrap() < 2 << 10,
        "{fetched}"
    );

    // The next version crosses the WAN as an outline and a delta: the
    // chunk records of the shifted file are made at the relay.
    let mut v3 = Vec::new();
    for piece in v2.chunks(6 << 10) {
        v3.extend_from_slice(b"AGAIN");
        v3.extend_from_slice(piece);
    }
    std::fs::write(dir.join("tool.bin"), &v3).unwrap();
    publisher.publish(&dir, "tool", "3.0.0").success();
    let record = relay.sync();
    assert_eq!(record["files_by_delta"], 1, "{record}");
    assert_eq!(record["chunk_bytes"], 0, "{record}");
    let outline = record["manifest_bytes"].as_u64().unwrap();
    assert!(
        outline < 2 << 10 && outline * 16 < whole,
        "outline {outline} bytes, the whole manifest {whole}: {record}"
    );
    let wan = record["wan_bytes"].as_u64().unwrap();
    assert!(
        wan < 96 << 10,
        "a 4 MiB file with every chunk shifted cost {wan} WAN bytes: {record}"
    );
    let out = hub.root.path().join("a3");
    agent.fetch("tool@=3.0.0", &out, None).success();
    assert_eq!(std::fs::read(out.join("tool.bin")).unwrap(), v3);

    // A delta that does not rebuild the signed file is refused.
    let v4: Vec<u8> = v3.iter().rev().copied().collect();
    let v4 = [&v3[..1 << 20], &v4[..64 << 10], &v3[1 << 20..]].concat();
    std::fs::write(dir.join("tool.bin"), &v4).unwrap();
    publisher.publish(&dir, "tool", "4.0.0").success();
    mirror.set(Tamper::FlipBit("deltas/".into()));
    relay.cmd(&["sync"]).failure("sync did not finish");
    let reason = relay.status()["last_failure"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("delta"), "{reason}");
    assert_eq!(
        listed(&agent),
        vec!["tool@3.0.0", "tool@2.0.0", "tool@1.0.0"]
    );
    mirror.set(Tamper::None);
    assert_eq!(relay.sync()["files_by_delta"], 1);
    let out = hub.root.path().join("a4");
    agent.fetch("tool@=4.0.0", &out, None).success();
    assert_eq!(std::fs::read(out.join("tool.bin")).unwrap(), v4);
}

/// Source-like text of about `lines` lines; `version` changes one line in
/// 500.
fn source_text(lines: u64, version: u64) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = if i % 500 == 0 { version } else { 1 };
        writeln!(
            out,
            "let v{} = f{}(x{}, {v});",
            x % 5000,
            x % 300,
            (x >> 20) % 40
        )
        .unwrap();
    }
    out
}

/// `contents` gzipped as zlib users write it (level 9, a name, XFL 2).
fn tar_gz(contents: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::GzBuilder::new()
        .filename("app.tar")
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(contents).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_changed_tar_gz_crosses_the_wan_as_a_delta_of_its_contents() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let dir = hub.root.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.tar.gz"), tar_gz(&source_text(120_000, 1))).unwrap();
    publisher.publish(&dir, "app", "1.0.0").success();
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.sync_on_request_only();
    relay.run();
    relay.sync();

    // Deflate spreads a change of one line in 500 over the whole file.
    let v2 = tar_gz(&source_text(120_000, 2));
    std::fs::write(dir.join("app.tar.gz"), &v2).unwrap();
    publisher.publish(&dir, "app", "2.0.0").success();
    let record = relay.sync();
    assert_eq!(record["files_by_delta"], 1, "{record}");
    let delta = record["delta_bytes"].as_u64().unwrap();
    assert!(
        delta * 8 < v2.len() as u64,
        "a {} byte .tar.gz with one line in 500 changed cost a {delta} byte delta: {record}",
        v2.len()
    );
    assert!(
        record["wan_bytes"].as_u64().unwrap() < v2.len() as u64 / 4,
        "{record}"
    );
    let agent = relay.enroll_agent(&hub, "agent", "berlin");
    let out = hub.root.path().join("out");
    agent.fetch("app@=2.0.0", &out, None).success();
    assert_eq!(std::fs::read(out.join("app.tar.gz")).unwrap(), v2);
}

#[test]
fn the_hub_shares_its_relay_egress_cap_fairly_and_every_relay_finishes() {
    let mut hub = Hub::init(&[("[egress]\n", "[egress]\nrelays_cap_bps = 16000000\n")]);
    hub.run();
    let publisher = hub.enroll("publisher", "publisher");
    let dir = hub.root.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("big.bin"),
        ferry_e2e::tree::random_bytes(6 << 20, 8),
    )
    .unwrap();
    publisher.publish(&dir, "big", "1.0.0").success();

    // Two relays start syncing at once.
    let mut relays: Vec<Relay> = ["relay-a", "relay-b"]
        .iter()
        .map(|name| Relay::init(&hub, name, "berlin", &hub.url()))
        .collect();
    for relay in &mut relays {
        relay.run();
    }
    let done: Vec<serde_json::Value> = relays
        .iter()
        .map(|r| status_when(r, |s| serves(s, "big@1.0.0.json"))["last_sync"].clone())
        .collect();
    let at =
        |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let start = done.iter().map(|r| at(&r["started"])).min().unwrap();
    let end = done.iter().map(|r| at(&r["finished"])).max().unwrap();
    let seconds = (end - start).as_seconds_f64();
    let bytes: u64 = done.iter().map(|r| r["wan_bytes"].as_u64().unwrap()).sum();
    let rate = bytes as f64 * 8.0 / seconds;
    assert!(
        (13.6e6..=16.8e6).contains(&rate),
        "two relays got {:.2} Mbit/s together from a hub capped at 16: {done:?}",
        rate / 1e6
    );
    // Each got about half: they finish close together.
    let spans: Vec<f64> = done
        .iter()
        .map(|r| (at(&r["finished"]) - at(&r["started"])).as_seconds_f64())
        .collect();
    let (short, long) = (spans[0].min(spans[1]), spans[0].max(spans[1]));
    assert!(long < short * 1.3, "unfair shares: {spans:?}");
    eprintln!(
        "hub egress cap 16 Mbit/s: two relays {:.2} Mbit/s together, syncs of {spans:?} s",
        rate / 1e6
    );
}

#[test]
fn a_client_revoked_on_the_hub_is_refused_by_the_relay_without_new_metadata() {
    // Metadata lives a day, so the hub signs no new metadata during the
    // test: the revocation list reaches the relay on its own (the hub signs
    // it within a minute, the long-poll tells the relay).
    let hub = Hub::start();
    let mut relay = Relay::init(&hub, "relay", "berlin", &hub.url());
    relay.run();
    status_when(&relay, |s| s["serving"].is_object());
    let agent = relay.enroll_agent(&hub, "agent", "berlin");
    agent.run(&["packages", "--json"]).success();
    let served = relay.status()["serving"]["timestamp_version"].clone();

    let id = ferry_net::ClientCredentials::load(&agent.data)
        .unwrap()
        .info
        .id;
    hub.admin(&["hub", "revoke", &id]).success();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let run = agent.run(&["packages", "--json"]);
        if !run.ok() {
            run.failure("revoked");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay still serves a revoked agent"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        relay.status()["serving"]["timestamp_version"],
        served,
        "new metadata was served"
    );
}
