//! The sandbox: misbehaving plugins built from `tests/plugins/` run through
//! the real host. Each is stopped or refused, the node keeps answering, and
//! the built-in decides in place of a failed policy.

use std::time::{Duration, Instant};

use ferry_e2e::plugins::{
    candidate, election, engine, fixture_wasm, manifest, registry, system_program, write_plugin,
};
use ferry_plugin::{
    Grant, InstallAction, InstallJob, InstallRequest, Kind, Manifest, Origin, Plugin, PluginError,
    PluginSettings, StagedFile,
};

/// Loads the fixture plugin `fixture` with manifest `text` through the host.
fn load(text: &str, fixture: &str, grant: Option<&Grant>) -> Result<Plugin, PluginError> {
    let manifest = Manifest::parse(text, "test").unwrap();
    Plugin::load(
        &engine(),
        manifest,
        Origin::Builtin,
        &fixture_wasm(fixture),
        None,
        grant,
    )
}

fn hostile_election(mode: &str, limits: &str) -> Plugin {
    let text = manifest(
        "hostile",
        "1.0.0",
        Kind::Election,
        &format!("[limits]\n{limits}\n[config]\nmode = \"{mode}\""),
    );
    load(&text, "hostile-election", None).unwrap()
}

fn volunteers() -> ferry_plugin::ElectionRequest {
    election(vec![candidate("b"), candidate("a"), candidate("c")])
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline_and_the_host_keeps_answering() {
    let spinning = hostile_election("spin", "timeout-ms = 50");
    let started = Instant::now();
    let err = spinning
        .elect(&volunteers())
        .expect_err("a spinning plugin fails");
    let took = started.elapsed();
    assert!(err.to_string().contains("time limit of 50 ms"), "{err}");
    assert!(err.to_string().contains("hostile"), "{err}");
    // Stopped near its deadline, not by a test timeout.
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    // Again: the trapped instance was dropped, a new one spins and is stopped.
    assert!(spinning.elect(&volunteers()).is_err());

    // The same plugin in a sane mode, on the same engine, still answers.
    let fine = hostile_election("smallest", "timeout-ms = 50");
    assert_eq!(fine.elect(&volunteers()).unwrap().value, "a");
}

#[test]
fn a_plugin_cannot_sleep_through_its_deadline() {
    // Sleeping waits inside the host, where the epoch cannot interrupt it:
    // timers are refused instead.
    let sleeper = hostile_election("sleep", "timeout-ms = 50");
    let started = Instant::now();
    let err = sleeper
        .elect(&volunteers())
        .expect_err("a sleeping plugin fails");
    assert!(err.to_string().contains("may not sleep"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_memory_bomb_hits_the_limit() {
    let bomb = hostile_election("membomb", "memory-mib = 16\ntimeout-ms = 5000");
    let err = bomb.elect(&volunteers()).expect_err("a memory bomb fails");
    assert!(err.to_string().contains("memory limit of 16 MiB"), "{err}");
}

#[test]
fn a_panic_is_a_failed_call_not_a_crash() {
    let err = hostile_election("panic", "")
        .elect(&volunteers())
        .expect_err("a panicking plugin fails");
    assert!(err.to_string().contains("trapped"), "{err}");
}

#[test]
fn a_winner_that_did_not_volunteer_is_nonsense() {
    let err = hostile_election("stranger", "")
        .elect(&volunteers())
        .expect_err("nonsense is refused");
    assert!(matches!(err, PluginError::Nonsense { .. }), "{err}");
}

/// A site election plugin that fails in each way: the node logs it and the
/// built-in `score` decides; the decision says so.
#[test]
fn a_failing_site_policy_falls_back_to_the_built_in() {
    for mode in ["spin", "sleep", "panic", "stranger", "membomb"] {
        let site = tempfile::tempdir().unwrap();
        write_plugin(
            site.path(),
            "hostile",
            &manifest(
                "hostile",
                "1.0.0",
                Kind::Election,
                &format!("[limits]\ntimeout-ms = 50\nmemory-mib = 16\n[config]\nmode = \"{mode}\""),
            ),
            &fixture_wasm("hostile-election"),
        );
        let registry = registry(PluginSettings {
            dir: Some(site.path().to_path_buf()),
            election: "hostile".into(),
            ..PluginSettings::default()
        });
        let decision = registry.elect(&volunteers()).expect("the built-in decides");
        assert!(
            decision.plugin.contains("score"),
            "{mode}: {}",
            decision.plugin
        );
        let reason = decision.fallback.expect("the fallback is reported");
        assert!(reason.contains("hostile"), "{mode}: {reason}");
        // The built-in's answer, as the built-in gives it directly.
        let direct = registry
            .get(Kind::Election, "score")
            .unwrap()
            .elect(&volunteers())
            .unwrap();
        assert_eq!(decision.value, direct.value, "{mode}");
    }
}

#[test]
fn a_plugin_built_against_another_contract_is_refused_with_what_it_needs() {
    let text = manifest("future", "1.0.0", Kind::Election, "");
    let err = load(&text, "future-contract", None).expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(err, PluginError::IncompatibleContract { .. }),
        "{text}"
    );
    assert!(text.contains("ferry:plugin@0.2.0"), "{text}");
    assert!(text.contains("ferry:plugin@0.1.0"), "{text}");
    assert!(text.contains("upgrade Ferry"), "{text}");

    // Declaring a contract this node lacks in plugin.toml is refused too.
    let text = manifest("future", "1.0.0", Kind::Election, "").replace("\"0.1\"", "\"0.2\"");
    let err = Manifest::parse(&text, "plugin.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ferry:plugin@^0.2") && err.contains("0.1.0"),
        "{err}"
    );
}

#[test]
fn a_component_of_another_kind_is_refused() {
    let text = manifest("mislabelled", "1.0.0", Kind::Schedule, "");
    let err = load(&text, "hostile-election", None).expect_err("refused");
    assert!(err.to_string().contains("kind = \"schedule\""), "{err}");
}

/// A host directory laid out for the installer attacks: a granted
/// directory holding a symlink out, and an outside directory with a file
/// an attacker would like to change.
struct Arena {
    _tmp: tempfile::TempDir,
    granted: std::path::PathBuf,
    outside: std::path::PathBuf,
    staged: std::path::PathBuf,
}

impl Arena {
    fn new() -> Arena {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let granted = root.join("granted");
        let outside = root.join("outside");
        let staged = root.join("staged");
        for d in [&granted, &outside, &staged] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(outside.join("victim"), "secret").unwrap();
        std::fs::write(staged.join("payload"), "payload").unwrap();
        std::os::unix::fs::symlink(&outside, granted.join("link-out")).unwrap();
        Arena {
            _tmp: tmp,
            granted,
            outside,
            staged,
        }
    }

    /// Runs the hostile installer with `attack`, granting it the granted
    /// directory and `commands`.
    fn attack(&self, attack: &str, commands: &[&str]) -> Result<String, PluginError> {
        self.attack_with(attack, commands, None, None)
    }

    /// [`Arena::attack`] with a progress sink.
    fn attack_with(
        &self,
        attack: &str,
        commands: &[&str],
        progress: Option<ferry_plugin::ProgressSink>,
        caps: Option<ferry_plugin::LimitCaps>,
    ) -> Result<String, PluginError> {
        let text = manifest(
            "hostile",
            "1.0.0",
            Kind::Installer,
            "[permissions]\ndirectories = true\ncommands = [\"*\"]\n[limits]\ntimeout-ms = 10000",
        );
        let grant = Grant {
            directories: vec![self.granted.clone()],
            commands: commands.iter().map(|c| c.to_string()).collect(),
            ..Grant::default()
        };
        let mut plugin = load(&text, "hostile-installer", Some(&grant)).unwrap();
        if let Some(caps) = caps {
            plugin = plugin.with_caps(&caps.or_defaults(Kind::Installer));
        }
        let mut job = self.job(attack);
        job.progress = progress;
        plugin
            .install(InstallAction::Install, &job)
            .map(|a| a.value.message)
    }

    /// An install of the staged payload whose parameters tell the hostile
    /// installer to try `attack` on this arena.
    fn job(&self, attack: &str) -> InstallJob {
        InstallJob {
            staged_dir: self.staged.clone(),
            request: InstallRequest {
                package: "evil".into(),
                version: "1.0.0".into(),
                staged_dir: String::new(),
                files: vec![StagedFile {
                    path: "payload".into(),
                    mode: 0o644,
                    size: 7,
                }],
                params: format!(
                    "attack = {attack:?}\ngranted = {:?}\noutside = {:?}\n",
                    self.granted.display().to_string(),
                    self.outside.display().to_string()
                ),
                previous_version: None,
            },
            progress: None,
        }
    }

    /// What lies outside the grant, apart from the victim file.
    fn escaped(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(&self.outside)
            .unwrap()
            .chain(std::fs::read_dir(self.granted.parent().unwrap()).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("escaped"))
            .collect();
        found.sort();
        found
    }
}

#[test]
fn an_installer_cannot_leave_its_granted_directories() {
    let arena = Arena::new();
    // The control: writing inside the grant and reading the staged package
    // work, so the refusals below are the sandbox's doing.
    arena
        .attack("write-granted", &[])
        .expect("writes inside the grant");
    assert!(arena.granted.join("inside").exists());
    arena
        .attack("read-staged", &[])
        .expect("reads the staged package");

    for attack in ["dotdot", "absolute", "symlink", "read-outside"] {
        let err = arena.attack(attack, &[]).err();
        assert!(err.is_some(), "{attack} was not refused");
    }
    assert_eq!(arena.escaped(), Vec::<String>::new());
    assert_eq!(
        std::fs::read_to_string(arena.outside.join("victim")).unwrap(),
        "secret"
    );
}

#[test]
fn set_mode_through_a_symlink_out_of_the_grant_is_refused() {
    let arena = Arena::new();
    let before = std::fs::metadata(arena.outside.join("victim"))
        .unwrap()
        .permissions();
    let err = arena.attack("set-mode-outside", &[]).expect_err("refused");
    assert!(
        err.to_string().contains("outside") || err.to_string().contains("symlink"),
        "{err}"
    );
    let after = std::fs::metadata(arena.outside.join("victim"))
        .unwrap()
        .permissions();
    assert_eq!(before, after);
}

#[test]
fn a_command_not_on_the_allow_list_is_refused() {
    let arena = Arena::new();
    let (true_bin, touch_bin) = (system_program("true"), system_program("touch"));
    let err = arena.attack("command", &[&true_bin]).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("\"touch\" is not on this plugin's allow-list"),
        "{text}"
    );
    assert!(text.contains(&format!("granted: {true_bin}")), "{text}");
    assert_eq!(arena.escaped(), Vec::<String>::new());

    // Granted by the node but not asked for by the plugin: still refused.
    let text = manifest("asks-nothing", "1.0.0", Kind::Installer, "");
    let grant = Grant {
        commands: vec![touch_bin.clone()],
        ..Grant::default()
    };
    let plugin = load(&text, "hostile-installer", Some(&grant)).unwrap();
    assert!(plugin.grant().commands.is_empty());
    assert!(plugin.grant().directories.is_empty());

    // Granted and asked for: it runs (the control), named by its file name.
    arena
        .attack("command", &[&touch_bin])
        .expect("granted command runs");
    assert_eq!(arena.escaped(), vec!["escaped-command".to_string()]);
}

/// An installer must not be able to write a program it may then run (it
/// would run as the node's user): commands are granted by absolute path,
/// and a grant set where a granted command, or a directory of the command
/// search path, is writable through a granted directory does not load.
#[test]
fn an_installer_cannot_run_a_program_it_wrote() {
    let arena = Arena::new();
    let text = manifest(
        "hostile",
        "1.0.0",
        Kind::Installer,
        "[permissions]\ndirectories = true\ncommands = [\"*\"]",
    );
    let planted = arena.granted.join("tool");
    std::fs::copy(system_program("true"), &planted).unwrap();
    let refused = |directories: Vec<std::path::PathBuf>, commands: Vec<String>| {
        let grant = Grant {
            directories,
            commands,
            ..Grant::default()
        };
        load(&text, "hostile-installer", Some(&grant))
            .expect_err("refused")
            .to_string()
    };
    let err = refused(
        vec![arena.granted.clone()],
        vec![planted.display().to_string()],
    );
    assert!(err.contains("lies inside the granted directory"), "{err}");
    // A command reached through a symlink inside a granted directory: the
    // plugin could point the link at a program of its own.
    let elsewhere = arena.outside.join("tools");
    std::fs::create_dir_all(elsewhere.join("bin")).unwrap();
    std::fs::copy(system_program("true"), elsewhere.join("bin/tool")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, arena.granted.join("current")).unwrap();
    let err = refused(
        vec![arena.granted.clone()],
        vec![arena.granted.join("current/bin/tool").display().to_string()],
    );
    assert!(err.contains("as written or through a symlink"), "{err}");
    let err = refused(vec!["/usr/local".into()], vec![system_program("true")]);
    assert!(
        err.contains("/usr/local/sbin, where commands find"),
        "{err}"
    );
    let err = refused(vec![arena.granted.clone()], vec!["true".into()]);
    assert!(err.contains("by absolute path"), "{err}");
    assert!(err.contains(&system_program("true")), "{err}");

    // Control: the same plugin with a command outside its directories loads.
    let grant = Grant {
        directories: vec![arena.granted.clone()],
        commands: vec![system_program("true")],
        ..Grant::default()
    };
    let plugin = load(&text, "hostile-installer", Some(&grant)).expect("loads");
    assert_eq!(plugin.grant().commands, vec![system_program("true")]);
}

#[test]
fn policies_may_not_ask_for_directories_or_commands() {
    let text = manifest(
        "greedy",
        "1.0.0",
        Kind::Election,
        "[permissions]\ncommands = [\"sh\"]",
    );
    let err = Manifest::parse(&text, "plugin.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("only installers"), "{err}");
}

#[test]
fn the_network_is_reachable_only_at_granted_addresses() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let staged = tempfile::tempdir().unwrap();
    std::fs::write(staged.path().join("payload"), "x").unwrap();
    let connect = |asked: &str, granted: &str| {
        let text = manifest(
            "netter",
            "1.0.0",
            Kind::Installer,
            &format!("[permissions]\nhosts = [{asked}]"),
        );
        let grant = Grant {
            hosts: if granted.is_empty() {
                Vec::new()
            } else {
                vec![granted.to_string()]
            },
            ..Grant::default()
        };
        let plugin = load(&text, "hostile-installer", Some(&grant)).unwrap();
        let job = InstallJob {
            staged_dir: staged.path().to_path_buf(),
            request: InstallRequest {
                package: "net".into(),
                version: "1.0.0".into(),
                staged_dir: String::new(),
                files: Vec::new(),
                params: format!("attack = \"connect\"\ngranted = \"/\"\noutside = {addr:?}\n"),
                previous_version: None,
            },
            progress: None,
        };
        plugin
            .install(InstallAction::Install, &job)
            .map(|a| a.value.message)
    };
    let quoted = format!("{addr:?}");
    // Asked but not granted, granted but not asked: refused.
    assert!(connect(&quoted, "").is_err());
    assert!(connect("", &addr).is_err());
    // Both: it connects, and the listener hears it.
    let heard = std::thread::spawn(move || {
        use std::io::Read;
        let (mut stream, _) = listener.accept().unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    });
    connect(&quoted, &addr).expect("granted connection");
    assert_eq!(heard.join().unwrap(), "hello from the plugin");
}

/// Bidirectional controls and other characters that reorder or hide text.
fn forges(text: &str) -> bool {
    text.chars().any(|c| {
        c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}'..='\u{200f}')
    })
}

/// Errors and winner ids are plugin text: shown escaped (no new lines,
/// terminal escapes or right-to-left overrides) and cut to a documented
/// size, however much the plugin returns.
#[test]
fn plugin_text_reaches_people_escaped_and_bounded() {
    for mode in ["loud-error", "forged-winner"] {
        let plugin = hostile_election(mode, "timeout-ms = 5000\nmemory-mib = 128");
        let err = plugin.elect(&volunteers()).expect_err(mode).to_string();
        assert!(
            err.len() < ferry_plugin::MAX_ERROR_TEXT + 512,
            "{mode}: {} bytes shown",
            err.len()
        );
        assert!(!forges(&err), "{mode}: {err:?}");
        assert!(
            err.contains("\\n") && err.contains("\\u{1b}") && err.contains("\\u{202e}"),
            "{mode}: what was escaped is still visible: {err}"
        );
        assert!(
            err.contains("more bytes cut"),
            "{mode}: the cut is said: {err}"
        );
    }
}

/// A million progress reports in one call reach the operator as at most
/// 1,000 (or the node's `progress-events`), each one line.
#[test]
fn progress_reports_are_capped_per_call() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let arena = Arena::new();
    let flood = |caps: Option<ferry_plugin::LimitCaps>| {
        let seen = Arc::new(AtomicUsize::new(0));
        let forged = Arc::new(AtomicUsize::new(0));
        let (count, bad) = (seen.clone(), forged.clone());
        let sink: ferry_plugin::ProgressSink = Arc::new(move |_, _, message: &str| {
            count.fetch_add(1, Ordering::Relaxed);
            if forges(message) {
                bad.fetch_add(1, Ordering::Relaxed);
            }
        });
        let done = arena
            .attack_with("progress-flood", &[], Some(sink), caps)
            .expect("the call itself succeeds");
        assert_eq!(done, "flooded");
        assert_eq!(forged.load(Ordering::Relaxed), 0);
        seen.load(Ordering::Relaxed)
    };
    assert_eq!(flood(None), 1000);
    let node = ferry_plugin::LimitCaps {
        progress_events: Some(25),
        ..Default::default()
    };
    assert_eq!(flood(Some(node)), 25);
}

/// A plugin asking for more time or memory than the node allows gets the
/// node's cap: the kind's default without settings, lower with them.
#[test]
fn the_nodes_caps_win_over_what_a_plugin_asks_for() {
    use ferry_plugin::{LimitCaps, LimitSource};
    let greedy = hostile_election("spin", "timeout-ms = 20000");
    assert_eq!(greedy.limits().timeout_ms, 2000);
    assert_eq!(greedy.limits().timeout_set_by, LimitSource::Node);
    let started = Instant::now();
    let err = greedy
        .elect(&volunteers())
        .expect_err("stopped")
        .to_string();
    assert!(
        err.contains("time limit of 2000 ms (set by the node's cap)"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let node = |caps: LimitCaps| caps.or_defaults(Kind::Election);
    let capped = hostile_election("spin", "timeout-ms = 20000").with_caps(&node(LimitCaps {
        timeout_ms: Some(100),
        ..LimitCaps::default()
    }));
    let started = Instant::now();
    let err = capped
        .elect(&volunteers())
        .expect_err("stopped")
        .to_string();
    assert!(err.contains("time limit of 100 ms"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let bomb = hostile_election("membomb", "memory-mib = 512\ntimeout-ms = 5000").with_caps(&node(
        LimitCaps {
            memory_mib: Some(16),
            ..LimitCaps::default()
        },
    ));
    let err = bomb.elect(&volunteers()).expect_err("stopped").to_string();
    assert!(
        err.contains("memory limit of 16 MiB (set by the node's cap)"),
        "{err}"
    );

    // Asking for less than the cap is what the plugin gets.
    let modest = hostile_election("smallest", "timeout-ms = 50");
    assert_eq!(modest.limits().timeout_ms, 50);
    assert_eq!(modest.limits().timeout_set_by, LimitSource::Plugin);

    // The registry applies [plugins.limits.KIND] to site plugins.
    let site = tempfile::tempdir().unwrap();
    write_plugin(
        site.path(),
        "hostile",
        &manifest(
            "hostile",
            "1.0.0",
            Kind::Election,
            "[limits]\ntimeout-ms = 20000\n[config]\nmode = \"spin\"",
        ),
        &fixture_wasm("hostile-election"),
    );
    let mut settings = PluginSettings {
        dir: Some(site.path().to_path_buf()),
        election: "hostile".into(),
        ..PluginSettings::default()
    };
    settings.limits.insert(
        Kind::Election,
        LimitCaps {
            timeout_ms: Some(150),
            ..LimitCaps::default()
        },
    );
    let registry = registry(settings);
    let hostile = registry.get(Kind::Election, "hostile").unwrap();
    assert_eq!(hostile.limits().timeout_ms, 150);
    let started = Instant::now();
    let decision = registry.elect(&volunteers()).expect("the built-in decides");
    assert!(decision.fallback.unwrap().contains("150 ms"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Mirror URLs are matched as URLs: a grant of `https://mirror.example`
/// does not let a plugin send agents to another host through user info, a
/// longer host name, another port or a path that merely starts alike.
#[test]
fn url_grants_are_parsed_not_prefixes() {
    let mirrors = [
        "https://mirror.example@evil.example/pkg",
        "https://mirror.example:443@169.254.169.254/",
        "https://mirror.example.evil.example/pkg",
        "https://mirror.example:8443/pkg",
        "https://mirror.example/pkgevil/x",
        "https://mirror.example/pkg/ok",
    ];
    let config: toml::Table = toml::from_str(&format!("mirrors = {mirrors:?}")).unwrap();
    let grant = Grant {
        urls: vec!["https://mirror.example/pkg".into()],
        ..Grant::default()
    };
    let builtin = ferry_e2e::plugins::builtin(Kind::Transport, "default");
    let plugin = Plugin::load(
        &engine(),
        Manifest::parse(builtin.manifest, "built-in").unwrap(),
        Origin::Builtin,
        builtin.wasm,
        Some(&config),
        Some(&grant),
    )
    .unwrap();
    let plan = plugin
        .plan(&ferry_e2e::plugins::transport_request())
        .expect("a plan");
    let urls: Vec<String> = plan
        .value
        .sources
        .iter()
        .filter_map(|s| match &s.source {
            ferry_plugin::Source::Url(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(urls, ["https://mirror.example/pkg/ok"]);

    // A grant that carries user info is refused when the plugin is loaded.
    let bad = Grant {
        urls: vec!["https://user:secret@mirror.example/".into()],
        ..Grant::default()
    };
    let err = Plugin::load(
        &engine(),
        Manifest::parse(builtin.manifest, "built-in").unwrap(),
        Origin::Builtin,
        builtin.wasm,
        None,
        Some(&bad),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("user names"), "{err}");
}

/// Waits inside the host end at the call's deadline: a granted host that
/// accepts and never answers, and a FIFO nobody writes to. The node keeps
/// answering, and the same waits succeed when the other side does answer.
#[test]
fn waits_inside_the_host_end_at_the_deadline() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let asking = || {
        let text = manifest(
            "hostile",
            "1.0.0",
            Kind::Election,
            &format!(
                "[permissions]\nhosts = [{addr:?}]\n[limits]\ntimeout-ms = 500\n[config]\nmode = \"ask-host\"\nhost = {addr:?}"
            ),
        );
        let grant = Grant {
            hosts: vec![addr.clone()],
            ..Grant::default()
        };
        load(&text, "hostile-election", Some(&grant)).unwrap()
    };
    // The host accepts (the kernel's backlog does) and never answers.
    let started = Instant::now();
    let err = asking()
        .elect(&volunteers())
        .expect_err("abandoned")
        .to_string();
    let took = started.elapsed();
    assert!(err.contains("waiting inside the host"), "{err}");
    assert!(err.contains("500 ms"), "{err}");
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    // Control: a host that answers.
    let answering = std::thread::spawn(move || {
        let _silent_calls = listener.accept().unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"ok\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    });
    assert_eq!(asking().elect(&volunteers()).expect("answered").value, "a");
    answering.join().unwrap();

    // An installer opening a FIFO nobody writes to.
    let arena = Arena::new();
    let fifo = arena.granted.join("fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let text = manifest(
        "hostile",
        "1.0.0",
        Kind::Installer,
        "[permissions]\ndirectories = true\n[limits]\ntimeout-ms = 500",
    );
    let grant = Grant {
        directories: vec![arena.granted.clone()],
        ..Grant::default()
    };
    let plugin = load(&text, "hostile-installer", Some(&grant)).unwrap();
    let job = |attack: &str| arena.job(attack);
    let started = Instant::now();
    let err = plugin
        .install(InstallAction::Install, &job("read-fifo"))
        .expect_err("abandoned")
        .to_string();
    assert!(err.contains("waiting inside the host"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The node keeps answering: the same plugin runs its next call.
    plugin
        .install(InstallAction::Install, &job("write-granted"))
        .expect("the next call runs");
    // Control: a FIFO with a writer (a fresh one: the abandoned call's
    // open still waits on the first).
    let other = Arena::new();
    let fifo = other.granted.join("fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let grant = Grant {
        directories: vec![other.granted.clone()],
        ..Grant::default()
    };
    let plugin = load(&text, "hostile-installer", Some(&grant)).unwrap();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        // The reader may be gone already (EPIPE): the open is what counts.
        let _ = f.write_all(b"hello");
    });
    let control = other.job("read-fifo");
    // With a writer the open returns at once and the plugin gets its own
    // answer (WASI reads files at offsets, which a pipe refuses with
    // ESPIPE), not an abandoned call.
    let started = Instant::now();
    let answer = plugin.install(InstallAction::Install, &control);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    match answer {
        Ok(read) => assert_eq!(read.value.message, "read 5 bytes from the fifo"),
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("fifo:") && !e.contains("waiting inside the host"),
                "{e}"
            );
        }
    }
    writer.join().unwrap();
}

/// A command that starts a daemon in a new session (out of its process
/// group) leaves nothing running when the call ends, and its output comes
/// back although the daemon held the pipe.
#[test]
fn what_a_command_starts_is_gone_when_the_call_ends() {
    let arena = Arena::new();
    let started = Instant::now();
    let out = arena
        .attack("daemon", &[&system_program("sh")])
        .expect("the command ran");
    assert_eq!(out, "started");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let pid: u32 = std::fs::read_to_string(arena.granted.join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Gone, or a zombie waiting for init to reap it: not running.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()));
    assert!(
        matches!(state, None | Some('Z') | Some('X')),
        "the daemon {pid} is still running (state {state:?})"
    );
}

/// An installer cannot leave a symlink that leads out of its grant (the
/// node and other programs would follow it later): it is removed and the
/// call fails. Symlinks inside the grant, and an operator's own symlinks
/// made before the call, stay.
#[test]
fn an_installer_cannot_leave_a_symlink_out_of_its_grant() {
    let arena = Arena::new();
    let err = arena
        .attack("plant-symlink", &[])
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("left symlinks pointing outside") && err.contains("p-shadow"),
        "{err}"
    );
    assert!(
        std::fs::symlink_metadata(arena.granted.join("p-shadow")).is_err(),
        "the symlink stayed"
    );
    assert!(
        std::fs::symlink_metadata(arena.granted.join("link-out")).is_ok(),
        "the operator's symlink was removed"
    );
    // Control: a symlink inside the grant is kept.
    arena
        .attack("inner-symlink", &[])
        .expect("a symlink inside the grant");
    assert_eq!(
        std::fs::read_link(arena.granted.join("current")).unwrap(),
        std::path::PathBuf::from("inside")
    );
}

/// An installer cannot fill the disk or its inodes: a call that adds more
/// than its budget to the disks of its grants is stopped.
#[test]
fn an_installer_cannot_fill_the_disk() {
    use ferry_plugin::LimitCaps;
    let arena = Arena::new();
    let text = manifest(
        "hostile",
        "1.0.0",
        Kind::Installer,
        "[permissions]\ndirectories = true\n[limits]\ntimeout-ms = 60000",
    );
    let grant = Grant {
        directories: vec![arena.granted.clone()],
        ..Grant::default()
    };
    // Budgets count the whole filesystem, where other tests write too: each
    // plugin is limited in one dimension only, so a concurrent writer can
    // only stop it early, for the same reason.
    let capped = |write_mib: u64, write_files: u64| {
        load(&text, "hostile-installer", Some(&grant))
            .unwrap()
            .with_caps(
                &LimitCaps {
                    write_mib: Some(write_mib),
                    write_files: Some(write_files),
                    ..LimitCaps::default()
                }
                .or_defaults(Kind::Installer),
            )
    };
    let plugin = capped(8, u64::MAX);
    let job = |attack: &str| arena.job(attack);
    let count = |prefix: &str| {
        std::fs::read_dir(&arena.granted)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.metadata().unwrap().len())
            .fold((0u64, 0u64), |(n, bytes), len| (n + 1, bytes + len))
    };

    let err = plugin
        .install(InstallAction::Install, &job("fill-disk"))
        .expect_err("stopped")
        .to_string();
    assert!(err.contains("over its budget of 8 MiB"), "{err}");
    let (_, bytes) = count("fill-");
    assert!(bytes < 128 << 20, "{} MiB written of 256", bytes >> 20);

    let err = capped(u64::MAX, 200)
        .install(InstallAction::Install, &job("fill-inodes"))
        .expect_err("stopped")
        .to_string();
    assert!(err.contains("over its budget of 200"), "{err}");
    let (files, _) = count("inode-");
    assert!(files < 20_000, "{files} files made of 100,000");

    // A command the plugin runs is held to the same budget.
    let grant = Grant {
        directories: vec![arena.granted.clone()],
        commands: vec![system_program("sh")],
        ..Grant::default()
    };
    let text_with_sh = manifest(
        "hostile",
        "1.0.0",
        Kind::Installer,
        "[permissions]\ndirectories = true\ncommands = [\"sh\"]\n[limits]\ntimeout-ms = 60000",
    );
    let commanding = load(&text_with_sh, "hostile-installer", Some(&grant))
        .unwrap()
        .with_caps(
            &LimitCaps {
                write_mib: Some(8),
                ..LimitCaps::default()
            }
            .or_defaults(Kind::Installer),
        );
    let err = commanding
        .install(InstallAction::Install, &job("fill-by-command"))
        .expect_err("stopped")
        .to_string();
    assert!(err.contains("over its budget of 8 MiB"), "{err}");
    let big = std::fs::metadata(arena.granted.join("big")).map_or(0, |m| m.len());
    assert!(big < 128 << 20, "{} MiB written of 286", big >> 20);

    // Control: a small write within (the default) budgets.
    capped(4096, 100_000)
        .install(InstallAction::Install, &job("write-granted"))
        .expect("within the budget");
}

/// More calls at once than the node's pool holds wait for a free slot
/// (within their own time limit) instead of failing at once: 300 calls that
/// each wait on a host until it answers all finish.
#[test]
fn calls_beyond_the_pool_wait_for_a_slot() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let text = manifest(
        "hostile",
        "1.0.0",
        Kind::Election,
        &format!(
            "[permissions]\nhosts = [{addr:?}]\n[limits]\ntimeout-ms = 20000\n[config]\nmode = \"ask-host\"\nhost = {addr:?}"
        ),
    );
    let grant = Grant {
        hosts: vec![addr.clone()],
        ..Grant::default()
    };
    let plugin = std::sync::Arc::new(
        load(&text, "hostile-election", Some(&grant))
            .unwrap()
            .with_caps(
                &ferry_plugin::LimitCaps {
                    timeout_ms: Some(20_000),
                    ..Default::default()
                }
                .or_defaults(Kind::Election),
            ),
    );
    const CALLS: usize = 300;
    let callers: Vec<_> = (0..CALLS)
        .map(|_| {
            let plugin = plugin.clone();
            std::thread::spawn(move || plugin.elect(&volunteers()).map(|a| a.value))
        })
        .collect();
    // Hold every connection until no new one came for 300 ms (every slot
    // is taken and the rest wait), then answer them all, and answer the
    // later ones at once.
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let (mut held, mut answered) = (Vec::new(), 0);
        let mut quiet_since = Instant::now();
        while answered < CALLS {
            match listener.accept() {
                Ok((peer, _)) => {
                    peer.set_nonblocking(false).unwrap();
                    held.push(peer);
                    quiet_since = Instant::now();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
            if quiet_since.elapsed() > Duration::from_millis(300) || answered > 0 {
                for mut peer in held.drain(..) {
                    peer.write_all(b"ok\n").unwrap();
                    answered += 1;
                }
            }
        }
    });
    for caller in callers {
        assert_eq!(caller.join().unwrap().expect("the call ran"), "a");
    }
    server.join().unwrap();
}
