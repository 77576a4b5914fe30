//! `ferry plugin`: a scaffolded plugin of each kind builds for
//! wasm32-wasip2 and runs through the host on its own scenario; `inspect`,
//! `test` and `builtins` say what an operator needs, and bad input is
//! refused by name.

use std::path::Path;

use crate::plugin_examples::{cargo, examples_target};
use ferry_e2e::process::ferry;

#[test]
fn builtins_lists_every_default_plugin() {
    let out = ferry(["plugin", "builtins"]).success();
    for (kind, name) in [
        ("transport", "default"),
        ("schedule", "interval"),
        ("schedule", "window"),
        ("election", "score"),
        ("installer", "copy"),
        ("installer", "archive"),
        ("installer", "command"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(kind) && l.contains(&format!(" {name} "))),
            "{kind} {name} missing:\n{out}"
        );
    }
}

#[test]
fn a_scaffolded_plugin_of_each_kind_builds_and_passes_its_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["election", "schedule", "transport", "installer"] {
        let name = format!("my-{kind}");
        let dir = tmp.path().join(&name);
        let out = ferry(["plugin", "new", kind, &name, "--dir", dir.to_str().unwrap()]).success();
        assert!(
            out.contains("cargo build --release --target wasm32-wasip2"),
            "{out}"
        );

        cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
        let artifact = format!("{}.wasm", name.replace('-', "_"));
        let built = examples_target()
            .join("wasm32-wasip2/release")
            .join(&artifact);
        // The crate directory holds plugin.toml; put the component beside it
        // as a node's plugin directory would.
        std::fs::copy(&built, dir.join(&artifact)).unwrap();

        let inspected = ferry(["plugin", "inspect", dir.to_str().unwrap()]).success();
        assert!(
            inspected.contains(&format!("ferry:plugin/{}", export(kind))),
            "{inspected}"
        );
        assert!(inspected.contains("loadable by this ferry"), "{inspected}");

        let scenario = dir.join("scenario.toml");
        let tested = ferry([
            "plugin",
            "test",
            dir.to_str().unwrap(),
            "--input",
            scenario.to_str().unwrap(),
        ])
        .success();
        assert!(tested.contains("ok  "), "{kind}: {tested}");
        assert!(!tested.contains("FAIL"), "{kind}: {tested}");
        if kind == "installer" {
            assert!(
                dir.join("out/hello.txt").is_file(),
                "the installer wrote nothing"
            );
        }
    }
    // The election scaffold's own unit test runs natively.
    cargo(&tmp.path().join("my-election"), &["test"]);
}

fn export(kind: &str) -> &str {
    match kind {
        "installer" => "install",
        other => other,
    }
}

#[test]
fn bad_names_kinds_and_scenarios_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    let d = dir.to_str().unwrap();
    ferry(["plugin", "new", "dance", "x", "--dir", d]).failure("unknown kind \"dance\"");
    ferry(["plugin", "new", "election", "Bad_Name", "--dir", d]).failure("Bad_Name");
    assert!(!dir.exists(), "a refused scaffold wrote files");

    ferry(["plugin", "new", "election", "ok", "--dir", d]).success();
    ferry(["plugin", "new", "election", "ok", "--dir", d]).failure("not empty");

    // A scenario with a misspelt key names it.
    let scenario = tmp.path().join("bad.toml");
    std::fs::write(
        &scenario,
        "[[case]]\ntask = \"t\"\nself-id = \"a\"\nvolunteers = [{ id = \"a\", wierd = true }]\n",
    )
    .unwrap();
    let score = builtin_dir(tmp.path(), "score");
    ferry([
        "plugin",
        "test",
        score.to_str().unwrap(),
        "--input",
        scenario.to_str().unwrap(),
    ])
    .failure("wierd");

    // A component built against another contract is refused with both
    // versions named.
    let future = tmp.path().join("future");
    std::fs::create_dir_all(&future).unwrap();
    std::fs::write(
        future.join("plugin.toml"),
        "name = \"future\"\nversion = \"1.0.0\"\nkind = \"election\"\ncontract = \"0.1\"\n",
    )
    .unwrap();
    std::fs::write(
        future.join("future.wasm"),
        ferry_e2e::plugins::fixture_wasm("future-contract"),
    )
    .unwrap();
    let out = ferry(["plugin", "inspect", future.to_str().unwrap()]).success();
    assert!(
        out.contains("NOT loadable") && out.contains("0.2.0"),
        "{out}"
    );
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        "[[case]]\ntask = \"t\"\nself-id = \"a\"\nvolunteers = [{ id = \"a\" }]\n",
    )
    .unwrap();
    ferry([
        "plugin",
        "test",
        future.to_str().unwrap(),
        "--input",
        good.to_str().unwrap(),
    ])
    .failure("ferry:plugin@0.2.0");
}

/// The built-in `name` election plugin as a plugin directory.
fn builtin_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let b = ferry_e2e::plugins::builtin(ferry_plugin::Kind::Election, name);
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugin.toml"), b.manifest).unwrap();
    std::fs::write(dir.join(format!("{name}.wasm")), b.wasm).unwrap();
    dir
}
