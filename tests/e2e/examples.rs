//! The runnable examples under `examples/` work as their READMEs say.

use std::process::Command;

#[test]
fn publish_and_fetch_runs() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/publish-and-fetch/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("FERRY", ferry_e2e::process::ferry_bin())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run.sh failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("fetched files are identical to the published ones"),
        "{stdout}"
    );
    assert!(stdout.contains("delta of my-app@1.0.0.json"), "{stdout}");
}
