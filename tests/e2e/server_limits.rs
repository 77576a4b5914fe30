//! The hub stays responsive and consistent whatever clients do: idle and
//! dribbling connections, clients that vanish mid-publish, a shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferry_e2e::Hub;
use ferry_e2e::tree::{random_bytes, write_app};
use ferry_net::api::routes;
use futures_util::StreamExt;

#[test]
fn idle_and_dribbling_connections_do_not_stop_others_being_served() {
    ferry_net::raise_fd_limit();
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let addr = hub.addr();
    // 5,000 connections that never start TLS.
    let idle: Vec<TcpStream> = (0..5000)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // 20 that send a TLS ClientHello one byte a second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribblers: Vec<_> = (0..20)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                let hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
                for b in hello.iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || s.write_all(&[*b]).is_err()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    // Others are served meanwhile, promptly.
    for _ in 0..3 {
        let started = Instant::now();
        publisher.run(&["packages"]).success();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }
    // The idle ones are closed once the handshake time is up.
    let mut probe = idle.into_iter().next().unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 1];
    let n = probe.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an idle connection was kept open");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for d in dribblers {
        d.join().unwrap();
    }
}

#[test]
fn clients_that_reset_their_connection_mid_answer_do_not_end_the_hub() {
    let mut hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("big");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("data.bin"), random_bytes(16 << 20, 41)).unwrap();
    publisher
        .run(&[
            "publish",
            app.to_str().unwrap(),
            "--name",
            "big",
            "--version",
            "1.0.0",
        ])
        .success();
    let object = std::fs::read_dir(hub.data.join("store/objects"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap())
        .max_by_key(|f| f.metadata().unwrap().len())
        .expect("a stored object")
        .file_name()
        .into_string()
        .unwrap();
    let creds = ferry_net::ClientCredentials::load(&publisher.data).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for _ in 0..20 {
            // A client of its own each time, so each is a new connection:
            // it reads the first piece of a large answer and closes with
            // the rest unread, which resets the connection while the hub
            // is still writing.
            let client = ferry_net::HubClient::from_credentials(&creds).unwrap();
            let url = client.url(&routes::object(&object)).unwrap();
            let response = client.get(&url, None).await.unwrap();
            let mut body = client.body(&url, response);
            let first = body.next().await.expect("a first piece").unwrap();
            assert!(!first.is_empty());
            drop(body);
            drop(client);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    publisher.run(&["packages"]).success();
    assert!(
        hub.running(),
        "the hub ended when clients reset their connections"
    );
}

/// Waits until `check` holds, failing the test after `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_publisher_that_vanishes_after_the_commit_leaves_nothing_unsigned() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let agent = hub.enroll("agent", "agent");
    let watcher = agent.http();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..3u64 {
        let dir = hub.root.path().join(format!("pkg-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data.bin"), random_bytes(40 << 20, round + 40)).unwrap();
        let version = format!("1.0.{round}");
        let mut child = std::process::Command::new(ferry_e2e::process::ferry_bin())
            .args([
                "publish",
                dir.to_str().unwrap(),
                "--name",
                "big",
                "--version",
                &version,
                "--json",
                "--data",
            ])
            .arg(&publisher.data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill the publisher the moment the version is listed, before the
        // hub could have answered it.
        eventually(Duration::from_secs(120), "the version being listed", || {
            let listed: Vec<serde_json::Value> = rt
                .block_on(watcher.get_json("v1/packages?name=big"))
                .unwrap_or_default();
            listed.iter().any(|v| v["version"] == version.as_str())
        });
        child.kill().unwrap();
        let _ = child.wait();
        // Listed means signed: the exact version is fetchable.
        let out = hub.root.path().join(format!("out-{round}"));
        agent
            .fetch(&format!("big@={version}"), &out, None)
            .success();
    }
    // The mirror image: withdraw and vanish; the withdrawal gets signed.
    let mut child = std::process::Command::new(ferry_e2e::process::ferry_bin())
        .args(["unpublish", "big@1.0.0", "--data"])
        .arg(&publisher.data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the version leaving the list",
        || {
            let listed: Vec<serde_json::Value> = rt
                .block_on(watcher.get_json("v1/packages?name=big"))
                .unwrap_or_else(|_| vec![serde_json::Value::Null]);
            !listed.iter().any(|v| v["version"] == "1.0.0")
        },
    );
    child.kill().unwrap();
    let _ = child.wait();
    agent
        .fetch("big@=1.0.0", &hub.root.path().join("gone"), None)
        .failure("no signed version of big matches");
    let retry = publisher.run(&["unpublish", "big@1.0.0"]);
    retry.failure("not published");
}

#[test]
fn the_hub_stops_cleanly_on_sigterm_and_starts_again() {
    let mut hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 3);
    publisher.publish(&app, "app", "1.0.0").success();
    assert!(
        hub.terminate(),
        "the hub did not exit successfully on SIGTERM"
    );
    // The lock is released: offline commands and a new run work.
    hub.admin(&["hub", "status"]).success();
    hub.admin(&["hub", "gc"]).success();
    hub.run();
    let agent = hub.enroll("agent", "agent");
    agent
        .fetch("app", &hub.root.path().join("out"), None)
        .success();
}
