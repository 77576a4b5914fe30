//! The main path: a hub, a publisher, publish, republish a small change,
//! list, fetch and verify, and resume an interrupted fetch.

use ferry_e2e::tree::{overwrite, snapshot, total_bytes, write_app};
use ferry_e2e::{Hub, Mirror, Tamper};

#[test]
fn publish_list_fetch_and_republish_a_change() {
    let mut hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 1);

    let first = publisher.publish(&app, "app", "1.0.0").json();
    let total = first["total_bytes"].as_u64().unwrap();
    assert_eq!(first["files"], 6);
    assert_eq!(total, total_bytes(&app));
    assert_eq!(
        first["chunk_bytes_sent"].as_u64().unwrap(),
        total,
        "{first}"
    );
    // All-new random data: queries, pack framing and the manifest together
    // stay within 2% of the data (request and response bodies counted).
    let moved = first["bytes_moved"].as_u64().unwrap();
    assert!(
        moved <= total + total / 50,
        "publishing {total} new bytes moved {moved}: {first}"
    );
    assert_eq!(first["full_digest_retry"], false, "{first}");

    // 1 MiB of the 3.7 MiB package is untouched except for 64 KiB.
    overwrite(&app.join("bin/app"), 1 << 20, 64 << 10, 99);
    let second = publisher.publish(&app, "app", "1.1.0").json();
    let sent = second["bytes_moved"].as_u64().unwrap();
    assert!(second["delta_base"] == "app@1.0.0.json", "{second}");
    assert!(
        sent < (64 << 10) + (48 << 10),
        "a 64 KiB change moved {sent} bytes: {second}"
    );

    let listed = publisher.run(&["packages", "app@^1.1", "--json"]).json();
    let versions: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.1.0"]);
    let table = publisher.run(&["packages"]).success();
    assert!(
        table.contains("1.0.0") && table.contains("1.1.0"),
        "{table}"
    );

    // An agent of another site fetches the newest 1.x and gets exactly it.
    let agent = hub.enroll("agent", "agent");
    let out = hub.root.path().join("out");
    let fetched = agent.fetch("app@^1", &out, None).json();
    assert_eq!(fetched["version"], "1.1.0");
    assert_eq!(snapshot(&out), snapshot(&app));

    let old = hub.root.path().join("old");
    agent.fetch("app@=1.0.0", &old, None).success();
    assert_ne!(snapshot(&old), snapshot(&app));

    // Same version again with the same content (a retried publish):
    // nothing to do, nothing sent beyond the listing.
    let again = publisher.publish(&app, "app", "1.1.0").json();
    assert_eq!(again["already_published"], true, "{again}");
    assert_eq!(again["pack_bytes_sent"], 0, "{again}");
    // Same version with other content (1.0.0's): refused, nothing changes.
    let other = hub.root.path().join("other");
    write_app(&other, 1);
    publisher
        .publish(&other, "app", "1.1.0")
        .failure("already published with other content");
    let after = publisher.run(&["packages", "app", "--json"]).json();
    assert_eq!(after.as_array().unwrap().len(), 2);

    // Withdraw a version: it disappears from the list and from signed
    // metadata, so a verified fetch no longer finds it.
    publisher.run(&["unpublish", "app@1.0.0"]).success();
    agent
        .fetch("app@=1.0.0", &hub.root.path().join("gone"), None)
        .failure("no signed version of app matches");
    hub.admin(&["hub", "gc"])
        .failure("stop `ferry hub run` first");
    let gc = hub.offline(&["hub", "gc"]).success();
    // Only the old bin/app is used by no remaining version.
    assert!(gc.contains("removed 1 object(s)"), "{gc}");
    let newest = hub.root.path().join("newest");
    agent.fetch("app", &newest, None).success();
    assert_eq!(snapshot(&newest), snapshot(&app));
}

#[test]
fn an_interrupted_fetch_resumes_where_it_stopped() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 2);
    publisher.publish(&app, "app", "2.0.0").success();

    let agent = hub.enroll("agent", "agent");
    let mirror = Mirror::start(&hub.data, agent.http());
    mirror.set(Tamper::CutAfter("/v1/chunks/batch".into(), 1 << 20));
    let out = hub.root.path().join("out");
    agent
        .fetch("app", &out, Some(&mirror.url()))
        .failure("run the same command again to resume");
    assert!(!out.exists(), "a failed fetch left {}", out.display());

    mirror.set(Tamper::None);
    let report = agent.fetch("app", &out, Some(&mirror.url())).json();
    let resumed = report["bytes_resumed"].as_u64().unwrap();
    let downloaded = report["bytes_downloaded"].as_u64().unwrap();
    assert!(
        resumed > 900 << 10,
        "only {resumed} bytes were kept: {report}"
    );
    assert_eq!(resumed + downloaded, total_bytes(&app));
    assert_eq!(snapshot(&out), snapshot(&app));
}

/// A digest prefix that matches another chunk on the hub does not publish
/// the wrong content: with 1-byte prefixes every query "finds" the chunk and
/// every abbreviated manifest is ambiguous, so the publish must retry with
/// full digests and still deliver exactly its own bytes.
#[test]
fn a_prefix_collision_falls_back_to_full_digests() {
    use ferry_content::{ChunkParams, scan_directory};
    use ferry_transfer::upload::{ManifestCache, PublishOptions, UploadProgress, publish_with};

    struct Quiet;
    impl UploadProgress for Quiet {
        fn start(&self, _: u64, _: u64) {}
        fn advance(&self, _: u64) {}
    }

    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    // Seeds far apart: write_app(n) and write_app(n + 1) share bytes.
    let first = hub.root.path().join("first");
    write_app(&first, 10);
    publisher.publish(&first, "first", "1.0.0").success();

    let publish = |seed: u64, name: &str, prefix_len: usize| {
        let dir = hub.root.path().join(name);
        write_app(&dir, seed);
        let scanned = scan_directory(
            &dir,
            ferry_content::PackageName::new(name).unwrap(),
            "1.0.0".parse().unwrap(),
            None,
            ChunkParams::default(),
        )
        .unwrap();
        let cache = ManifestCache::new(hub.root.path().join(format!("{name}-cache")));
        let report = ferry_e2e::process::block_on(publish_with(
            &publisher.http(),
            &cache,
            &scanned,
            &Quiet,
            PublishOptions { prefix_len },
        ))
        .unwrap();
        (dir, report)
    };
    let (dir, report) = publish(20, "second", 1);
    assert!(report.full_digest_retry, "{report:?}");
    // Only the two small text files are shared with the first package.
    assert!(
        report.chunk_bytes_sent + 100 >= total_bytes(&dir),
        "{report:?}"
    );
    let agent = hub.enroll("agent", "agent");
    let out = hub.root.path().join("out");
    agent.fetch("second", &out, None).success();
    assert_eq!(snapshot(&out), snapshot(&dir));

    // Control: the usual 8-byte prefixes need no retry.
    let (_, report) = publish(30, "third", 8);
    assert!(!report.full_digest_retry, "{report:?}");
}
