//! Enrollment: one-time, expiring, role-bound tokens; the hub is
//! authenticated by the fingerprint in the token; every call after that is
//! authorised by the client's certificate.

use ferry_e2e::process::{block_on, wait_until};
use ferry_e2e::tree::write_app;
use ferry_e2e::{Client, Hub, Run};

fn client(hub: &Hub, name: &str) -> Client {
    Client {
        data: hub.root.path().join(name),
    }
}

#[test]
fn a_token_is_used_once() {
    let hub = Hub::start();
    let token = hub.token("agent", Some("berlin"), None);
    client(&hub, "a").enroll(&hub.url(), &token).success();
    client(&hub, "b")
        .enroll(&hub.url(), &token)
        .failure("already used");
    assert!(!hub.root.path().join("b/client.toml").exists());
}

#[test]
fn an_expired_token_is_refused() {
    let hub = Hub::start();
    hub.admin(&["token", "create", "--role", "publisher", "--expires", "0s"])
        .failure("longer than zero");
    let token = hub.token("agent", Some("berlin"), Some("1s"));
    // The point is the passing of time: let the token's lifetime run out.
    wait_until(std::time::SystemTime::now() + std::time::Duration::from_millis(1100));
    client(&hub, "late")
        .enroll(&hub.url(), &token)
        .failure("expired");
}

#[test]
fn a_forged_token_is_refused() {
    let hub = Hub::start();
    let token = hub.token("publisher", None, None);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = "A".repeat(43);
    client(&hub, "forger")
        .enroll(&hub.url(), &parts.join("."))
        .failure("not valid for this hub");
    client(&hub, "typo")
        .enroll(&hub.url(), "ferry1.nonsense")
        .failure("malformed enrollment token");
}

#[test]
fn a_token_for_another_hub_does_not_enroll_with_this_one() {
    let hub = Hub::start();
    let other = Hub::init(&[]);
    let token = other.token("publisher", None, None);
    client(&hub, "confused")
        .enroll(&hub.url(), &token)
        .failure("impostor");
}

#[test]
fn roles_and_revocation_are_enforced() {
    let hub = Hub::start();
    hub.admin(&["token", "create", "--role", "agent"])
        .failure("needs --site");
    let agent = hub.enroll("agent", "agent");
    let app = hub.root.path().join("app");
    write_app(&app, 3);
    agent
        .publish(&app, "app", "1.0.0")
        .failure("needs the publisher role");

    let publisher = hub.enroll("publisher", "publisher");
    publisher.publish(&app, "app", "1.0.0").success();
    agent.run(&["packages"]).success();

    let clients = hub.admin(&["hub", "clients", "--json"]).json();
    let id = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "agent")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    hub.admin(&["hub", "revoke", &id]).success();
    // A server remembers a certificate's standing for up to a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let run = agent.run(&["packages"]);
        if !run.ok() || std::time::Instant::now() > deadline {
            run.failure("revoked");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    publisher.run(&["packages"]).success();
}

#[test]
fn calls_without_a_certificate_are_refused() {
    let hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let creds = ferry_net::ClientCredentials::load(&publisher.data).unwrap();
    let anonymous =
        ferry_net::HubClient::new(url::Url::parse(&hub.url()).unwrap(), &creds.ca_pem, None)
            .unwrap();
    let err = block_on(anonymous.get_json::<serde_json::Value>("v1/packages")).unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("enroll first"), "{err}");
}

/// `ferry enroll` of a new client NAME with a fresh ROLE token and these
/// `--server-name`s.
fn enroll_with_names(hub: &Hub, name: &str, role: &str, names: &[&str]) -> (Client, Run) {
    let client = Client {
        data: hub.root.path().join(name),
    };
    let token = hub.token(role, Some("berlin"), None);
    let url = hub.url();
    let mut args = vec!["enroll", "--server", &url, "--token", &token];
    for n in names {
        args.extend(["--server-name", n]);
    }
    let run = client.run(&args);
    (client, run)
}

#[test]
fn only_relays_get_certificates_that_serve_tls() {
    let hub = Hub::start();
    let (relay, run) = enroll_with_names(
        &hub,
        "relay",
        "relay",
        &["relay.berlin.example", "10.1.2.3"],
    );
    run.success();
    let pem = std::fs::read_to_string(relay.data.join("client.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    enroll_with_names(&hub, "agent", "agent", &["agent.example"])
        .1
        .failure("only relays serve TLS");
    enroll_with_names(&hub, "bad", "relay", &["not a name"])
        .1
        .failure("cannot name a server");
}

#[test]
fn a_token_pins_the_root_the_client_will_trust() {
    let mut hub = Hub::start();
    let token = hub.token("agent", Some("berlin"), None);
    assert!(token.starts_with("ferry2."), "{token}");
    // The root changes after the token was made (as a relay substituting
    // one would make it): the client refuses the answer and keeps nothing.
    hub.offline(&["hub", "rotate-key", "--role", "root"])
        .success();
    let agent = client(&hub, "agent");
    agent.enroll(&hub.url(), &token).failure("another TUF root");
    assert!(!agent.data.join("client.toml").exists());
    // A token made now pins the new root.
    let token = hub.token("agent", Some("berlin"), None);
    agent.enroll(&hub.url(), &token).success();
}
