//! A client that trusts only the hub's root must catch what an untrusted
//! mirror does to the bytes it passes on. Every case must fail the fetch
//! with a message naming the attack, leave no output directory, never let
//! a trusted metadata version go down, and keep the trusted targets (the
//! list of packages) as they were.

use ferry_e2e::tree::{overwrite, snapshot, write_app};
use ferry_e2e::{Client, Hub, Mirror, Run, Tamper};

/// A hub with two packages and an agent that has fetched once through the
/// mirror, so the mirror has recorded every file it passed on.
struct Scene {
    hub: Hub,
    publisher: Client,
    agent: Client,
    mirror: Mirror,
}

impl Scene {
    fn new(config: &[(&str, &str)]) -> Scene {
        let mut hub = Hub::init(config);
        hub.run();
        let publisher = hub.enroll("publisher", "publisher");
        for (name, seed) in [("app", 10), ("other", 20)] {
            let dir = hub.root.path().join(format!("src-{name}"));
            write_app(&dir, seed);
            publisher.publish(&dir, name, "1.0.0").success();
        }
        let agent = hub.enroll("agent", "agent");
        let mirror = Mirror::start(&hub.data, agent.http());
        let scene = Scene {
            hub,
            publisher,
            agent,
            mirror,
        };
        for name in ["app", "other"] {
            scene.fetch(name).success();
        }
        scene
    }

    fn fetch(&self, spec: &str) -> Run {
        let out = self.hub.root.path().join(format!("out-{}", rand_suffix()));
        self.agent.fetch(spec, &out, Some(&self.mirror.url()))
    }

    /// Runs a fetch that must fail with `needle`, and checks what the client
    /// trusts afterwards.
    fn refused(&self, spec: &str, needle: &str) {
        // Everything must come through the mirror, not from local content.
        if self.agent.data.join("cache/content/store").is_dir() {
            self.agent.forget_content();
        }
        let before = self.agent.trusted_versions();
        let out = self.hub.root.path().join("refused-out");
        self.agent
            .fetch(spec, &out, Some(&self.mirror.url()))
            .failure(needle);
        assert!(!out.exists(), "a refused fetch wrote {}", out.display());
        let after = self.agent.trusted_versions();
        assert_eq!(
            after["targets"], before["targets"],
            "a refused fetch changed the trusted targets"
        );
        for (role, version) in &before {
            assert!(
                after[role] >= *version,
                "{role} went from {version} to {}",
                after[role]
            );
        }
    }

    fn publish_again(&self, name: &str, version: &str, seed: u64) {
        let dir = self.hub.root.path().join(format!("src-{name}"));
        overwrite(&dir.join("data.bin"), 0, 1000, seed);
        self.publisher.publish(&dir, name, version).success();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn a_flipped_bit_in_served_content_is_caught() {
    let s = Scene::new(&[]);
    s.mirror.set(Tamper::FlipBit("/v1/chunks/batch".into()));
    s.refused("app", "does not match the signed manifest");
    // The same source, honest again, still works: nothing bad was kept.
    s.mirror.set(Tamper::None);
    let out = s.hub.root.path().join("honest");
    s.agent.fetch("app", &out, Some(&s.mirror.url())).success();
    assert_eq!(snapshot(&out), snapshot(&s.hub.root.path().join("src-app")));
}

#[test]
fn a_manifest_swapped_for_another_packages_is_caught() {
    let s = Scene::new(&[]);
    // The attacker serves another package's genuine, hub-made manifest
    // frame where this one's was asked for: only the signed length and
    // hash can tell.
    let other = s.mirror.recorded_ending(".other@1.0.0.json");
    s.mirror
        .set(Tamper::Replace("app@1.0.0.json".into(), other));
    s.refused("app", "tampered content refused: manifest app@1.0.0.json");
}

#[test]
fn metadata_rolled_back_to_an_older_version_is_caught() {
    let s = Scene::new(&[]);
    let old = s.mirror.recorded();
    let old_tuf: std::collections::HashMap<_, _> = old
        .into_iter()
        .filter(|(p, _)| p.starts_with("/v1/tuf/") && !p.contains("/targets/"))
        .collect();
    s.publish_again("app", "1.0.1", 5);
    s.fetch("app").success();
    s.mirror.set(Tamper::Replay(old_tuf));
    s.refused("app", "rollback refused");
}

#[test]
fn mixed_metadata_versions_are_caught() {
    let s = Scene::new(&[]);
    s.publish_again("app", "1.0.1", 6);
    s.fetch("app").success();
    s.publish_again("app", "1.0.2", 7);
    let (_, version) = current_targets(&s.hub);
    let older = s
        .mirror
        .recorded_ending(&format!("/v1/tuf/{}.targets.json", version - 1));
    s.mirror.set(Tamper::Replace(
        format!("/v1/tuf/{version}.targets.json"),
        older,
    ));
    s.refused("app", "tampered content refused");
}

#[test]
fn expired_metadata_is_caught() {
    let s = Scene::new(&[("timestamp = \"1day\"", "timestamp = \"3s\"")]);
    s.fetch("app").success();
    let frozen: std::collections::HashMap<_, _> = s
        .mirror
        .recorded()
        .into_iter()
        .filter(|(p, _)| p.starts_with("/v1/tuf/") && !p.contains("/targets/"))
        .collect();
    let timestamp: serde_json::Value =
        serde_json::from_slice(&frozen["/v1/tuf/timestamp.json"]).unwrap();
    let expires = timestamp["signed"]["expires"].as_str().unwrap();
    let expires = rfc3339(expires);
    s.mirror.set(Tamper::Replay(frozen));
    // The point of this test is the passing of time: wait out the lifetime.
    ferry_e2e::process::wait_until(expires + std::time::Duration::from_secs(1));
    s.refused("app", "has expired");
}

#[test]
fn responses_longer_than_their_signed_length_are_caught() {
    let s = Scene::new(&[]);
    // A manifest frame is read only up to what its signed length needs.
    s.mirror.set(Tamper::Pad("app@1.0.0.json".into(), 10 << 20));
    s.refused("app", "bytes expected");
    s.mirror
        .set(Tamper::Pad("/v1/tuf/timestamp.json".into(), 2 << 20));
    s.refused("app", "exceeds its signed length");
    // Junk after the last requested chunk is refused, not buffered.
    s.mirror
        .set(Tamper::Pad("/v1/chunks/batch".into(), 10 << 20));
    s.refused("app", "was not asked for");
    // A small frame that would decode to 1 GiB is cut off at the signed
    // length of the manifest.
    s.mirror
        .set(Tamper::ZstdBomb("app@1.0.0.json".into(), 1 << 30));
    s.refused("app", "tampered content refused");
}

/// The targets metadata version the hub serves now.
fn current_targets(hub: &Hub) -> (std::path::PathBuf, u64) {
    let ts: serde_json::Value = serde_json::from_slice(
        &std::fs::read(hub.data.join("tuf/metadata/timestamp.json")).unwrap(),
    )
    .unwrap();
    let v = ts["signed"]["version"].as_u64().unwrap();
    (hub.data.join(format!("tuf/metadata/{v}.targets.json")), v)
}

/// Parses the RFC 3339 times TUF metadata carries.
fn rfc3339(text: &str) -> std::time::SystemTime {
    let t = chrono::DateTime::parse_from_rfc3339(text).expect("an RFC 3339 time");
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp() as u64)
}
