//! Replacing signing keys: clients that pinned the first root follow the
//! chain of root metadata to the new keys, and metadata signed with a
//! retired key is refused.

use ferry_e2e::tree::write_app;
use ferry_e2e::{Hub, Mirror, Tamper};

#[test]
fn clients_follow_key_rotations_and_refuse_retired_keys() {
    let mut hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 30);
    publisher.publish(&app, "app", "1.0.0").success();
    let agent = hub.enroll("agent", "agent");
    let mirror = Mirror::start(&hub.data, agent.http());
    let base = hub.root.path().to_owned();
    let out = |n: &str| base.join(n);
    agent
        .fetch("app", &out("one"), Some(&mirror.url()))
        .success();
    assert_eq!(agent.trusted_versions()["root"], 1);
    let before_rotation: std::collections::HashMap<_, _> = mirror
        .recorded()
        .into_iter()
        .filter(|(p, _)| p == "/v1/tuf/timestamp.json")
        .collect();

    hub.admin(&["hub", "rotate-key", "--role", "timestamp"])
        .failure("stop `ferry hub run` first");
    let rotated = hub
        .offline(&["hub", "rotate-key", "--role", "timestamp"])
        .success();
    assert!(
        rotated.contains("root metadata is now version 2"),
        "{rotated}"
    );
    agent
        .fetch("app", &out("two"), Some(&mirror.url()))
        .success();
    assert_eq!(agent.trusted_versions()["root"], 2);

    // A timestamp signed with the retired key no longer counts.
    mirror.set(Tamper::Replay(before_rotation));
    agent
        .fetch("app", &out("three"), Some(&mirror.url()))
        .failure("Signature threshold of 1 not met for role timestamp");
    mirror.set(Tamper::None);

    // The root key itself: the new root is signed by the old and the new key.
    hub.offline(&["hub", "rotate-key", "--role", "root"])
        .success();
    agent
        .fetch("app", &out("four"), Some(&mirror.url()))
        .success();
    assert_eq!(agent.trusted_versions()["root"], 3);

    // A client enrolled now pins the newest root and fetches as well.
    let late = hub.enroll("late", "agent");
    late.fetch("app", &out("five"), None).success();
    assert_eq!(late.trusted_versions()["root"], 3);
}
