//! The hub publishes a revocation list signed by its control key, which
//! chains to the TUF root: a relay can check it whoever delivered it.

use std::time::{Duration, Instant};

use ferry_e2e::Hub;
use ferry_e2e::process::block_on;

/// The revocation list as `client` fetches it, checked against the root it
/// trusts: (version, revoked certificate fingerprints).
fn fetch_list(data: &std::path::Path) -> Result<(u64, Vec<String>), String> {
    block_on(async {
        let creds = ferry_net::ClientCredentials::load(data).map_err(|e| e.to_string())?;
        let client = ferry_net::HubClient::from_credentials(&creds).map_err(|e| e.to_string())?;
        let repo = ferry_transfer::load_repository(&creds, &client)
            .await
            .map_err(|e| e.to_string())?;
        let url = client.url("v1/revocations").map_err(|e| e.to_string())?;
        let bytes = client
            .get_bytes(&url, 1 << 20)
            .await
            .map_err(|e| e.to_string())?;
        let doc = repo
            .verify_document(&bytes, "revocations")
            .map_err(|e| e.to_string())?;
        let revoked = doc.body["revoked"]
            .as_array()
            .ok_or("no revoked list")?
            .iter()
            .map(|r| r["cert_sha256"].as_str().unwrap_or_default().to_owned())
            .collect();
        Ok((doc.version, revoked))
    })
}

#[test]
fn revoked_clients_appear_in_a_list_signed_by_the_control_key() {
    // A short timestamp lifetime makes the hub's refresh run every 2 s.
    let mut hub = Hub::init(&[("timestamp = \"1day\"", "timestamp = \"16s\"")]);
    hub.run();
    let relay = hub.enroll("relay", "relay");
    let agent = hub.enroll("agent", "agent");
    let (first, revoked) = fetch_list(&relay.data).unwrap();
    assert!(revoked.is_empty(), "{revoked:?}");

    let creds = ferry_net::ClientCredentials::load(&agent.data).unwrap();
    let cert = hex_sha256_of_pem(&creds.cert_pem);
    hub.admin(&["hub", "revoke", &creds.info.id]).success();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (version, revoked) = loop {
        let (v, r) = fetch_list(&relay.data).unwrap();
        if r.contains(&cert) {
            break (v, r);
        }
        assert!(
            Instant::now() < deadline,
            "the revocation was not published: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(version > first, "{version} after {first}");
    assert_eq!(revoked, vec![cert]);

    // A new control key (root 2): the list is signed anew, and clients
    // that follow the root accept it.
    hub.offline(&["hub", "rotate-key", "--role", "control"])
        .success();
    let (after, revoked) = fetch_list(&relay.data).unwrap();
    assert!(after > version, "{after} after {version}");
    assert_eq!(revoked.len(), 1);
}

#[test]
fn an_altered_revocation_list_is_refused() {
    let hub = Hub::start();
    let relay = hub.enroll("relay", "relay");
    fetch_list(&relay.data).unwrap();
    let path = hub.data.join("tuf/revocations.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"revoked\": []", "\"revoked\": [{}]")).unwrap();
    let err = fetch_list(&relay.data).unwrap_err();
    assert!(err.contains("not signed by the hub's control key"), "{err}");
}

fn hex_sha256_of_pem(pem: &str) -> String {
    let der = ferry_net::pem_cert_der(pem).unwrap();
    ferry_content::Digest(ferry_net::cert_sha256(&der)).to_hex()
}
