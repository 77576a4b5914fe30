//! The plugin examples under `examples/` build as their READMEs say, pass
//! their own unit tests, and behave as documented through the real host
//! (`ferry plugin test`, the binary under test).
//!
//! The Rust examples build into `target/ferry-examples` beside the ferry
//! binary's profile directory, so repeated runs are incremental and the
//! source tree stays clean; the Python example uses `componentize-py` from
//! `PATH` or installs the pinned version into a virtual environment there,
//! and fails, never skips, when it cannot.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_e2e::plugins::system_program;
use ferry_e2e::process::{Run, ferry, ferry_bin};
use ferry_plugin::Manifest;

/// `examples/NAME` of this repository.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// The target directory of the examples' builds: `<target>/ferry-examples`,
/// `<target>/<profile>/ferry` being the binary under test. The examples
/// share it (they use the same SDK); cargo serializes builds into it.
pub(crate) fn examples_target() -> PathBuf {
    let bin = ferry_bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("ferry lives in <target>/<profile>/");
    target.join("ferry-examples")
}

/// Runs `command` to completion; panics with both streams unless it
/// succeeded.
pub(crate) fn run(mut command: Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `cargo ARGS` in a standalone example crate, into [`examples_target`].
pub(crate) fn cargo(dir: &Path, args: &[&str]) -> Output {
    // The cargo running these tests, so the same toolchain builds them.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // Not --locked: the examples depend on the SDK by path, and a
    // dependency the SDK gains should update their Cargo.lock as it would
    // for a reader, not fail the suite.
    command
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", examples_target());
    run(
        command,
        &format!("cargo {} in {}", args.join(" "), dir.display()),
    )
}

/// Runs the example crate's unit tests natively, then builds its component
/// as its README says; returns the component's path.
fn build_rust_example(name: &str, artifact: &str) -> PathBuf {
    let dir = example(name);
    cargo(&dir, &["test"]);
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    let wasm = examples_target().join(format!("wasm32-wasip2/release/{artifact}.wasm"));
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    wasm
}

/// Puts together a plugin directory as a node's plugin directory holds it:
/// `<parent>/NAME/plugin.toml` and `<parent>/NAME/NAME.wasm`, NAME being the
/// manifest's `name`.
fn plugin_dir(parent: &Path, example_dir: &Path, wasm: &Path) -> PathBuf {
    let text = std::fs::read_to_string(example_dir.join("plugin.toml")).expect("plugin.toml");
    let manifest =
        Manifest::parse(&text, "plugin.toml").expect("the example's plugin.toml is valid");
    let dir = parent.join(&manifest.name);
    std::fs::create_dir_all(&dir).expect("create the plugin directory");
    std::fs::write(dir.join("plugin.toml"), text).expect("write plugin.toml");
    std::fs::copy(wasm, dir.join(format!("{}.wasm", manifest.name))).expect("copy the component");
    dir
}

/// `ferry plugin test DIR --input SCENARIO`.
fn plugin_test(dir: &Path, scenario: &Path) -> Run {
    ferry([
        "plugin".as_ref(),
        "test".as_ref(),
        dir.as_os_str(),
        "--input".as_ref(),
        scenario.as_os_str(),
    ])
}

/// The output line of the case named `name`, which must have passed.
fn ok_line<'a>(stdout: &'a str, name: &str) -> &'a str {
    let prefix = format!("ok   {name}: ");
    stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no passing case {name:?} in:\n{stdout}"))
}

/// Checks that every case of the scenario ran and passed.
fn all_cases_passed(stdout: &str, scenario: &Path) {
    let text = std::fs::read_to_string(scenario).expect("scenario");
    let cases = text.lines().filter(|l| l.trim() == "[[case]]").count();
    let passed = stdout.lines().filter(|l| l.starts_with("ok   ")).count();
    assert!(cases > 0, "{} has no cases", scenario.display());
    assert_eq!(passed, cases, "not every case passed:\n{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn election_no_battery_builds_and_elects_as_documented() {
    let dir = example("election-no-battery");
    let wasm = build_rust_example("election-no-battery", "election_no_battery");
    let scratch = tempfile::tempdir().expect("temporary directory");
    let plugin = plugin_dir(scratch.path(), &dir, &wasm);
    assert!(plugin.ends_with("no-battery"), "{}", plugin.display());

    let scenario = dir.join("scenario.toml");
    let stdout = plugin_test(&plugin, &scenario).success();
    all_cases_passed(&stdout, &scenario);
    assert!(stdout.starts_with("election no-battery@0.1.0"), "{stdout}");
    let line = ok_line(
        &stdout,
        "a laptop on battery loses although it holds the whole package",
    );
    assert!(line.ends_with("winner=desk"), "{line}");
    let line = ok_line(
        &stdout,
        "every volunteer on battery: the one holding most, with a warning",
    );
    assert!(line.ends_with("winner=y"), "{line}");
    assert!(
        stdout.contains("all 2 volunteers are laptops on battery"),
        "the warning is not among the logs:\n{stdout}"
    );

    // A case expecting the laptop on battery to win fails, and so does the
    // run: the scenario's expectations are really checked.
    let wrong = scratch.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        r#"
[[case]]
name = "battery laptop expected"
task = "t"
self-id = "lap"
volunteers = [
    { id = "lap", laptop = true, on-mains-power = false, wired = true, cached-bytes = 9 },
    { id = "tower" },
]
expect = "lap"
"#,
    )
    .expect("write scenario");
    let run = plugin_test(&plugin, &wrong);
    run.failure("1 of 1 cases failed");
    assert!(
        run.stdout()
            .contains("FAIL battery laptop expected: winner tower; expected lap"),
        "{}",
        run.stdout()
    );
}

#[test]
fn install_config_service_writes_restarts_and_removes_for_real() {
    let dir = example("install-config-service");
    let wasm = build_rust_example("install-config-service", "install_config_service");
    let scratch = tempfile::tempdir().expect("temporary directory");
    let plugin = plugin_dir(&scratch.path().join("plugins"), &dir, &wasm);
    assert!(plugin.ends_with("config-service"), "{}", plugin.display());

    // The example's scenario, run where its granted `out` directory is
    // created: beside a copy of it, not in the source tree.
    let work = scratch.path().join("work");
    std::fs::create_dir_all(work.join("staged")).expect("create work dir");
    std::fs::copy(dir.join("scenario.toml"), work.join("scenario.toml")).expect("copy scenario");
    std::fs::copy(
        dir.join("staged/README.txt"),
        work.join("staged/README.txt"),
    )
    .expect("copy staged");
    let stdout = plugin_test(&plugin, &work.join("scenario.toml")).success();
    all_cases_passed(&stdout, &work.join("scenario.toml"));
    let out = work
        .join("out")
        .canonicalize()
        .expect("the granted directory exists");
    let conf = out.join("myapp.conf");
    let line = ok_line(&stdout, "install: write out/myapp.conf, then restart");
    assert!(
        line.contains(&format!(
            "wrote {} (4 settings), then ran `true restart myapp`",
            conf.display()
        )),
        "{line}"
    );
    let line = ok_line(&stdout, "verify: the file holds these settings");
    assert!(line.contains("intact=true"), "{line}");
    let line = ok_line(
        &stdout,
        "install the same settings again: nothing written, nothing restarted",
    );
    assert!(line.contains("is up to date; nothing restarted"), "{line}");
    let line = ok_line(&stdout, "verify against other settings: the file differs");
    assert!(
        line.contains("intact=false") && line.contains("differs"),
        "{line}"
    );
    let line = ok_line(&stdout, "uninstall: remove the file");
    assert!(
        line.contains(&format!("removed {}", conf.display())),
        "{line}"
    );
    let line = ok_line(&stdout, "verify after uninstall: the file is missing");
    assert!(
        line.contains("intact=false") && line.contains("is missing"),
        "{line}"
    );
    assert!(!conf.exists(), "uninstall left {}", conf.display());
    assert_eq!(
        std::fs::read_dir(&out).expect("read out").count(),
        0,
        "something was left in {}",
        out.display()
    );

    // Install alone, then look at the real file.
    let scenario = |name: &str, action: &str, commands: &str, restart: &str, port: u32| {
        let path = work.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"
[grant]
directories = ["out"]
commands = [{commands}]

[[case]]
name = "{name}"
action = "{action}"
staged = "staged"
package = "myapp-config"
version = "2.0.0"
[case.params]
dir = {out:?}
file = "myapp.conf"
mode = 0o600
restart = [{restart}]
[case.params.settings]
port = {port}
name = "my app"
"#,
                out = out.display().to_string()
            ),
        )
        .expect("write scenario");
        path
    };
    let true_bin = format!("{:?}", system_program("true"));
    let install = scenario("install", "install", &true_bin, r#""true""#, 8080);
    plugin_test(&plugin, &install).success();
    let written = "# myapp-config 2.0.0: written by ferry; edits are lost at the next install.\n\
                   name=my app\nport=8080\n";
    assert_eq!(
        std::fs::read_to_string(&conf).expect("myapp.conf was written"),
        written
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&conf).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the mode of the parameters");
    }
    let names: Vec<_> = std::fs::read_dir(&out)
        .expect("read out")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["myapp.conf"], "the temporary file was left behind");

    // A program the plugin asked for but the node did not grant is refused,
    // and the file is back as it was.
    let refused = scenario(
        "not granted",
        "install",
        &true_bin,
        r#""systemctl", "restart", "myapp""#,
        9090,
    );
    let run = plugin_test(&plugin, &refused);
    run.failure("1 of 1 cases failed");
    let stdout = run.stdout();
    assert!(
        stdout.contains(&format!(
            r#"command "systemctl" is not on this plugin's allow-list (granted: {})"#,
            system_program("true")
        )),
        "{stdout}"
    );
    assert!(stdout.contains("is back as it was"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&conf).expect("myapp.conf"), written);

    // A program the node grants but the plugin did not ask for (plugin.toml
    // names systemctl and true) is refused too: the plugin gets the
    // intersection.
    let marker = scratch.path().join("sh-ran");
    let unasked = scenario(
        "not asked",
        "install",
        &format!("{:?}", system_program("sh")),
        &format!(r#""sh", "-c", "touch {}""#, marker.display()),
        9090,
    );
    let run = plugin_test(&plugin, &unasked);
    run.failure("1 of 1 cases failed");
    assert!(
        run.stdout()
            .contains(r#"command "sh" is not on this plugin's allow-list (granted: none)"#),
        "{}",
        run.stdout()
    );
    assert!(
        !marker.exists(),
        "sh ran although the plugin never asked for it"
    );
    assert_eq!(std::fs::read_to_string(&conf).expect("myapp.conf"), written);

    let uninstall = scenario("uninstall", "uninstall", "", "", 8080);
    plugin_test(&plugin, &uninstall).success();
    assert!(!conf.exists(), "uninstall left {}", conf.display());
}

/// `componentize-py` at the version the example pins: the one on `PATH`
/// if it is that version, else one installed from PyPI into a virtual
/// environment under the target directory (kept for the next run), so the
/// test suite needs only Python 3.11 with `venv`.
fn componentize_py(dir: &Path) -> PathBuf {
    let pinned = pinned_componentize_py(dir);
    let wanted = format!("componentize-py {pinned}");
    let version = |program: &Path| {
        Command::new(program)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let on_path = PathBuf::from("componentize-py");
    if version(&on_path).as_deref() == Some(wanted.as_str()) {
        return on_path;
    }
    let venv = python_venv("python-venv", &dir.join("requirements.txt"), |venv| {
        version(&venv.join("bin/componentize-py")).as_deref() == Some(wanted.as_str())
    });
    let installed = venv.join("bin/componentize-py");
    assert_eq!(version(&installed).as_deref(), Some(wanted.as_str()));
    installed
}

/// A virtual environment `name` under the target directory (kept for the
/// next run) with `requirements` installed from PyPI, unless `ready` says
/// it already has them. The test suite needs only Python 3 with `venv`.
pub(crate) fn python_venv(
    name: &str,
    requirements: &Path,
    ready: impl Fn(&Path) -> bool,
) -> PathBuf {
    let venv = examples_target().join(name);
    if !ready(&venv) {
        let hint =
            "needs python3 with venv (Debian: apt-get install python3-venv) and access to PyPI";
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        run(create, &format!("python3 -m venv ({hint})"));
        let mut install = Command::new(venv.join("bin/pip"));
        install.args(["install", "--quiet", "-r"]).arg(requirements);
        run(
            install,
            &format!("pip install -r {} ({hint})", requirements.display()),
        );
    }
    assert!(
        ready(&venv),
        "{} lacks what {} asks for",
        venv.display(),
        requirements.display()
    );
    venv
}

/// The componentize-py version requirements.txt pins.
fn pinned_componentize_py(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("requirements.txt")).expect("requirements.txt");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("componentize-py=="))
        .expect("requirements.txt pins componentize-py==VERSION")
        .trim()
        .to_string()
}

#[test]
fn schedule_python_builds_with_componentize_py_and_decides_as_documented() {
    let dir = example("schedule-python");
    let componentize_py = componentize_py(&dir);
    // The rules' own unit tests, natively.
    let mut unittest = Command::new("python3");
    unittest
        .args(["-m", "unittest", "-v"])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run(unittest, "python3 -m unittest in examples/schedule-python");

    // The README's build, with the component written to scratch space.
    let scratch = tempfile::tempdir().expect("temporary directory");
    let wasm = scratch.path().join("schedule.wasm");
    let mut build = Command::new(&componentize_py);
    build
        .args([
            "--wit-path",
            "../../sdk/wit",
            "--world",
            "sync-schedule",
            "componentize",
            "app",
            "-o",
        ])
        .arg(&wasm)
        .current_dir(&dir);
    run(build, "componentize-py componentize");
    let plugin = plugin_dir(scratch.path(), &dir, &wasm);
    assert!(plugin.ends_with("business-hours"), "{}", plugin.display());

    let scenario = dir.join("scenario.toml");
    let stdout = plugin_test(&plugin, &scenario).success();
    all_cases_passed(&stdout, &scenario);
    assert!(
        stdout.starts_with("schedule business-hours@0.1.0"),
        "{stdout}"
    );
    let line = ok_line(&stdout, "never synced: now");
    assert!(line.contains("in-seconds=0"), "{line}");
    let line = ok_line(
        &stdout,
        "business hours (Thursday 10:30 in Berlin): an hour after the last, capped",
    );
    assert!(line.contains("bandwidth-cap-bps=2000000"), "{line}");
    assert!(line.contains("next-sync=2026-11-26T10:10:00Z"), "{line}");
    let line = ok_line(
        &stdout,
        "evening (Thursday 20:00 in Berlin): 15 minutes after the last, unlimited",
    );
    assert!(line.contains("bandwidth-cap-bps=none"), "{line}");
    assert!(line.contains("next-sync=2026-11-26T19:05:00Z"), "{line}");
    let line = ok_line(
        &stdout,
        "before 08:00: unlimited until business hours start",
    );
    assert!(line.contains("cap-until=2026-11-26T08:00:00Z"), "{line}");
    let line = ok_line(&stdout, "urgent in business hours: now, still capped");
    assert!(
        line.contains("in-seconds=0") && line.contains("bandwidth-cap-bps=2000000"),
        "{line}"
    );
    let line = ok_line(
        &stdout,
        "the last sync failed: retry 5 minutes after it ended",
    );
    assert!(line.contains("next-sync=2026-11-26T12:04:00Z"), "{line}");
    // What the plugin logs through the host's log().
    assert!(
        stdout.contains("business hours, every 60 min, cap 2000000 bit/s"),
        "{stdout}"
    );

    // The node's settings reach it through config(), and a bad one comes
    // back as the call's error (a raised Err), naming the key.
    let evening = scratch.path().join("evening.toml");
    std::fs::write(
        &evening,
        r#"
[config]
business-end = "21:00"
business-cap-bps = 500_000

[[case]]
name = "20:00 is business hours now"
now = "2026-11-26T20:00:00Z"
"#,
    )
    .expect("write scenario");
    let line_of = |run: &Run, name: &str| ok_line(&run.success(), name).to_string();
    let line = line_of(
        &plugin_test(&plugin, &evening),
        "20:00 is business hours now",
    );
    assert!(line.contains("bandwidth-cap-bps=500000"), "{line}");
    let bad = scratch.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[config]
business-start = "25:00"

[[case]]
name = "bad settings"
now = "2026-11-26T10:00:00Z"
"#,
    )
    .expect("write scenario");
    let run = plugin_test(&plugin, &bad);
    run.failure("1 of 1 cases failed");
    assert!(
        run.stdout()
            .contains("returned an error: invalid plugin configuration: business-start"),
        "{}",
        run.stdout()
    );
}
