//! Swapping a site plugin while calls run: no call fails, the new version
//! takes over, a broken file keeps the old one, and removing the plugin
//! brings the built-in back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use ferry_e2e::plugins::{
    candidate, election, fixture_wasm, manifest, registry, replace, write_plugin,
};
use ferry_plugin::{Kind, PluginSettings, Registry};

fn hostile(version: &str, mode: &str) -> String {
    manifest(
        "score",
        version,
        Kind::Election,
        &format!("[config]\nmode = \"{mode}\""),
    )
}

/// Polls `check` until it holds; the deadline is only a last guard.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = SystemTime::now() + Duration::from_secs(60);
    while !check() {
        assert!(SystemTime::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn swapping_a_plugin_under_concurrent_calls_fails_no_call() {
    let site = tempfile::tempdir().unwrap();
    let wasm = fixture_wasm("hostile-election");
    let dir = write_plugin(site.path(), "score", &hostile("1.0.0", "smallest"), &wasm);
    let registry = Arc::new(registry(PluginSettings {
        dir: Some(site.path().to_path_buf()),
        reload_every: Duration::from_millis(10),
        ..PluginSettings::default()
    }));
    let _watch = registry.watch();

    let request = election(vec![candidate("m"), candidate("a"), candidate("z")]);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (registry, request, stop, calls) = (
                registry.clone(),
                request.clone(),
                stop.clone(),
                calls.clone(),
            );
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    match registry.elect(&request) {
                        Ok(d) if d.fallback.is_none() => {
                            seen.insert(format!("{} -> {}", d.plugin, d.value));
                        }
                        Ok(d) => failures.push(format!("fallback: {:?}", d.fallback)),
                        Err(e) => failures.push(e.to_string()),
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                (failures, seen)
            })
        })
        .collect();

    let winner = |registry: &Registry| registry.elect(&request).unwrap();
    assert_eq!(winner(&registry).value, "a");

    // v2 answers differently; the watcher picks it up.
    replace(
        &dir.join("plugin.toml"),
        hostile("2.0.0", "largest").as_bytes(),
    );
    eventually("version 2", || winner(&registry).value == "z");
    assert!(winner(&registry).plugin.contains("score@2.0.0"));

    // A half-copied component is refused; version 2 stays in use.
    replace(&dir.join("score.wasm"), &wasm[..wasm.len() / 2]);
    replace(
        &dir.join("plugin.toml"),
        hostile("3.0.0", "smallest").as_bytes(),
    );
    eventually("the broken file to be seen", || {
        registry.problems().iter().any(|p| p.contains("score"))
    });
    assert!(winner(&registry).plugin.contains("score@2.0.0"));

    // The whole file arrives: version 3 takes over.
    replace(&dir.join("score.wasm"), &wasm);
    eventually("version 3", || {
        winner(&registry).plugin.contains("score@3.0.0")
    });
    assert_eq!(winner(&registry).value, "a");

    // Removed: the built-in score is back.
    std::fs::remove_dir_all(&dir).unwrap();
    eventually("the built-in", || {
        winner(&registry).plugin.contains("built-in")
    });

    let before = calls.load(Ordering::Relaxed);
    eventually("more calls", || {
        calls.load(Ordering::Relaxed) > before + 100
    });
    stop.store(true, Ordering::Relaxed);
    let mut seen_all = std::collections::BTreeSet::new();
    for worker in workers {
        let (failures, seen) = worker.join().unwrap();
        assert!(
            failures.is_empty(),
            "calls failed during the swap: {failures:?}"
        );
        seen_all.extend(seen);
    }
    // The workers saw the versions change under them.
    assert!(seen_all.len() >= 3, "{seen_all:?}");
}

#[test]
fn two_directories_with_the_same_plugin_do_not_take_turns() {
    let site = tempfile::tempdir().unwrap();
    let wasm = fixture_wasm("hostile-election");
    write_plugin(site.path(), "a-score", &hostile("1.0.0", "smallest"), &wasm);
    write_plugin(site.path(), "b-score", &hostile("2.0.0", "largest"), &wasm);
    let (registry, report) = Registry::new(
        ferry_e2e::plugins::engine(),
        PluginSettings {
            dir: Some(site.path().to_path_buf()),
            ..PluginSettings::default()
        },
        ferry_e2e::plugins::builtins(),
    )
    .unwrap();
    assert_eq!(report.loaded, ["election/score@1.0.0"]);
    assert!(
        report.failed[0].contains("already provided by"),
        "{report:?}"
    );
    // Checked again, nothing changes: no reload, no flip to the other.
    let again = registry.reload();
    assert!(
        again.loaded.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
    assert!(
        registry
            .elect(&election(vec![candidate("a"), candidate("z")]))
            .unwrap()
            .plugin
            .contains("1.0.0")
    );
    assert_eq!(registry.problems().len(), 1);

    // The first one goes: the second takes over; its problem is gone.
    std::fs::remove_dir_all(site.path().join("a-score")).unwrap();
    let report = registry.reload();
    assert_eq!(report.loaded, ["election/score@2.0.0"], "{report:?}");
    assert!(registry.problems().is_empty(), "{:?}", registry.problems());
}
