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

/// The names clap lists under "Commands:" in a help text.
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn every_command_has_useful_help() {
    let top = commands(&help(&[]));
    for command in [
        "hub",
        "token",
        "enroll",
        "publish",
        "packages",
        "fetch",
        "unpublish",
        "plugin",
    ] {
        assert!(
            top.iter().any(|c| c == command),
            "top-level help does not list {command}: {top:?}"
        );
    }
    let hub = commands(&help(&["hub"]));
    for command in [
        "init",
        "run",
        "status",
        "gc",
        "rotate-key",
        "clients",
        "revoke",
    ] {
        assert!(
            hub.iter().any(|c| c == command),
            "`ferry hub --help` does not list {command}: {hub:?}"
        );
    }
    let cases: &[(&[&str], &str)] = &[
        (&["hub"], "init"),
        (&["hub", "init"], "--data"),
        (&["hub", "run"], "--listen"),
        (&["hub", "gc"], "--staged-older-than"),
        (&["hub", "status"], "--json"),
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
