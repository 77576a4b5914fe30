//! Every command's `--help` works on its own and says what the command is
//! for. (Also makes `cargo test` build the `ferry` binary that the
//! end-to-end tests in `tests/` drive.)

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .arg("--help")
        .output()
        .expect("ferry runs");
    assert!(out.status.success(), "ferry {args:?} --help failed");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

#[test]
fn every_command_has_useful_help() {
    let top = help(&[]);
    for command in [
        "hub",
        "token",
        "enroll",
        "publish",
        "packages",
        "fetch",
        "unpublish",
    ] {
        assert!(
            top.contains(command),
            "top-level help does not list {command}"
        );
    }
    let cases: &[(&[&str], &str)] = &[
        (&["hub"], "init"),
        (&["hub", "init"], "--data"),
        (&["hub", "run"], "--listen"),
        (&["hub", "gc"], "--data"),
        (&["hub", "clients"], "--json"),
        (&["hub", "revoke"], "client"),
        (&["token", "create"], "--role"),
        (&["enroll"], "--token"),
        (&["publish"], "--install"),
        (&["packages"], "NAME[@REQ]"),
        (&["fetch"], "--mirror"),
        (&["unpublish"], "NAME@VERSION"),
    ];
    for (args, needle) in cases {
        let text = help(args);
        assert!(
            text.contains(needle),
            "ferry {args:?} --help lacks {needle}:\n{text}"
        );
    }
}

#[test]
fn the_version_is_printed() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--version")
        .output()
        .expect("ferry runs");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ferry "));
}
