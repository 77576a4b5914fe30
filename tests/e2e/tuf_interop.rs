//! An independent TUF client (python-tuf, from PyPI, in the test's own
//! virtual environment) accepts the hub's metadata as the specification
//! writes it: it refreshes from the pinned root, follows a root renewal and
//! a key rotation, and downloads a manifest whose hash matches.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_e2e::Hub;
use ferry_e2e::tree::write_app;

use crate::plugin_examples::{python_venv, run};

/// python-tuf at the version `tests/python/requirements.txt` pins, in a
/// virtual environment under the target directory (kept for the next run).
fn python_tuf() -> PathBuf {
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/requirements.txt");
    let venv = python_venv("tuf-venv", &requirements, |venv| {
        Command::new(venv.join("bin/python"))
            .args(["-c", "import tuf; assert tuf.__version__ == '7.0.1'"])
            .status()
            .is_ok_and(|s| s.success())
    });
    venv.join("bin/python")
}

fn refresh(
    python: &Path,
    client: &Path,
    hub: &Hub,
    work: &Path,
    target: &str,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tuf_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(client)
        .arg(hub.url())
        .arg(work)
        .arg(target);
    let out = run(cmd, "python-tuf refresh and download");
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[test]
fn python_tuf_verifies_the_hubs_metadata_and_downloads_a_target() {
    let python = python_tuf();
    let mut hub = Hub::start();
    let publisher = hub.enroll("publisher", "publisher");
    let app = hub.root.path().join("app");
    write_app(&app, 31);
    publisher.publish(&app, "app", "1.0.0").success();
    let agent = hub.enroll("agent", "agent");
    let work = hub.root.path().join("python-tuf");

    let first = refresh(&python, &agent.data, &hub, &work, "app@1.0.0.json");
    let signed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(hub.data.join(format!(
            "tuf/metadata/{}.targets.json",
            first["targets_version"]
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        first["sha256"], signed["signed"]["targets"]["app@1.0.0.json"]["hashes"]["sha256"],
        "{first}"
    );

    // A key rotation (root 2) and a new version: the same client follows.
    hub.offline(&["hub", "rotate-key", "--role", "timestamp"])
        .success();
    ferry_e2e::tree::overwrite(&app.join("bin/app"), 0, 4096, 32);
    publisher.publish(&app, "app", "1.1.0").success();
    let second = refresh(&python, &agent.data, &hub, &work, "app@1.1.0.json");
    assert_eq!(second["root_version"], 2, "{second}");
    assert!(
        second["targets_version"].as_u64() > first["targets_version"].as_u64(),
        "{second}"
    );
}
