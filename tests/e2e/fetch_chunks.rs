//! Chunk-level fetch: a new version moves only what changed, identical
//! content is fetched once, and clients sharing a data directory take turns.

use ferry_e2e::Hub;
use ferry_e2e::tree::{overwrite, snapshot, total_bytes, write_app};

#[test]
fn fetching_a_new_version_moves_only_the_changed_chunks() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 11);
    publisher.publish(&app, "app", "1.0.0").success();
    overwrite(&app.join("bin/app"), 1 << 20, 64 << 10, 999);
    publisher.publish(&app, "app", "1.1.0").success();

    let agent = hub.enroll("agent", "agent");
    let first = agent
        .fetch("app@=1.0.0", &hub.root.path().join("v1"), None)
        .json();
    let total = total_bytes(&app);
    let downloaded = first["bytes_downloaded"].as_u64().unwrap();
    assert!(
        downloaded <= total && downloaded > total / 10 * 9,
        "{first}"
    );
    assert!(first["requests"].as_u64().unwrap() <= 4, "{first}");

    let out = hub.root.path().join("v2");
    let second = agent.fetch("app@=1.1.0", &out, None).json();
    assert_eq!(snapshot(&out), snapshot(&app));
    // As missing chunks or as a byte-level delta, whichever is smaller.
    let received =
        second["bytes_downloaded"].as_u64().unwrap() + second["bytes_delta"].as_u64().unwrap();
    assert!(
        received > 60 << 10 && received < (64 << 10) + (24 << 10),
        "a 64 KiB change received {received} bytes: {second}"
    );
    assert_eq!(second["manifest_delta_base"], "app@1.0.0.json", "{second}");
    let manifest = second["manifest_bytes"].as_u64().unwrap();
    assert!(
        manifest < 8 << 10,
        "the manifest delta took {manifest} bytes: {second}"
    );
    let requests =
        second["requests"].as_u64().unwrap() + second["files_by_delta"].as_u64().unwrap();
    assert_eq!(requests, 1, "one request, for chunks or a delta: {second}");

    // Fetching again needs nothing but the metadata.
    let third = agent
        .fetch("app@=1.1.0", &hub.root.path().join("again"), None)
        .json();
    assert_eq!(third["bytes_downloaded"], 0, "{third}");
    assert_eq!(third["manifest_bytes"], 0, "{third}");
}

#[test]
fn identical_files_are_fetched_once() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let dir = hub.root.path().join("twins");
    std::fs::create_dir_all(&dir).unwrap();
    let data = ferry_e2e::tree::random_bytes(1 << 20, 5);
    for name in ["a.bin", "b.bin", "c.bin"] {
        std::fs::write(dir.join(name), &data).unwrap();
    }
    publisher.publish(&dir, "twins", "1.0.0").success();
    let agent = hub.enroll("agent", "agent");
    let out = hub.root.path().join("out");
    let report = agent.fetch("twins", &out, None).json();
    assert_eq!(snapshot(&out), snapshot(&dir));
    assert_eq!(report["bytes_downloaded"], 1 << 20, "{report}");
}

#[test]
fn two_fetches_sharing_a_data_directory_both_succeed() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 21);
    publisher.publish(&app, "app", "1.0.0").success();
    let agent = hub.enroll("agent", "agent");
    for round in 0..5 {
        let outs: Vec<_> = (0..2)
            .map(|i| hub.root.path().join(format!("out-{round}-{i}")))
            .collect();
        // A fresh local content each round, so both really download.
        let _ = std::fs::remove_dir_all(agent.data.join("cache/content"));
        let handles: Vec<_> = outs
            .iter()
            .map(|out| {
                let (agent, out) = (agent.clone(), out.clone());
                std::thread::spawn(move || agent.fetch("app", &out, None))
            })
            .collect();
        for (h, out) in handles.into_iter().zip(&outs) {
            h.join().unwrap().success();
            assert_eq!(snapshot(out), snapshot(&app));
        }
    }
}

#[test]
fn compressible_content_travels_compressed_both_ways() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let dir = hub.root.path().join("text");
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = (0..200_000)
        .map(|i| format!("line {i} of a log file\n"))
        .collect();
    std::fs::write(dir.join("log.txt"), &text).unwrap();
    let published = publisher.publish(&dir, "text", "1.0.0").json();
    let payload = published["chunk_bytes_sent"].as_u64().unwrap();
    let wire = published["pack_bytes_sent"].as_u64().unwrap();
    assert_eq!(payload, text.len() as u64, "{published}");
    assert!(wire < payload / 3, "packs were not compressed: {published}");

    let agent = hub.enroll("agent", "agent");
    let out = hub.root.path().join("out");
    agent.fetch("text", &out, None).success();
    assert_eq!(std::fs::read_to_string(out.join("log.txt")).unwrap(), text);
}
