//! `ferry-bench plugins`: what a plugin call costs through the host, beside
//! the same plugin logic compiled natively, and what loading and
//! instantiating a plugin costs.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_plugin::{
    BuiltinPlugin, Grant, InstallAction, InstallJob, Kind, Manifest, Origin, Plugin, PluginEngine,
};
use ferry_plugin_sdk as sdk;
use serde_json::{Value, json};

/// Runs every measurement and returns one JSON object.
pub fn run(calls: usize) -> anyhow::Result<Value> {
    let engine = PluginEngine::new(None)?;
    let mut results = Vec::new();

    let election = load(&engine, Kind::Election, "score", None)?;
    set_native_config(&election);
    // 50 volunteers, and 1 for the fixed cost of a call.
    for (count, what) in [(50, "score, 50 volunteers"), (1, "score, 1 volunteer")] {
        let mut host_request = host_election();
        host_request.volunteers.truncate(count);
        let mut native_request = native_election();
        native_request.volunteers.truncate(count);
        results.push(measure(
            "election",
            what,
            calls,
            || election.elect(&host_request).map(|_| ()),
            || {
                use sdk::election::ElectionPolicy;
                let request = native_request.clone();
                timed(|| ferry_plugin_election_score::Score::elect(request))
            },
        )?);
    }

    let transport = load(&engine, Kind::Transport, "default", None)?;
    set_native_config(&transport);
    let host_request = host_transport();
    let native_request = native_transport();
    results.push(measure(
        "transport",
        "default, relay + hub + peers",
        calls,
        || transport.plan(&host_request).map(|_| ()),
        || {
            use sdk::transport::TransportPolicy;
            let request = native_request.clone();
            timed(|| ferry_plugin_transport_default::DefaultTransport::plan(request))
        },
    )?);

    let schedule = load(&engine, Kind::Schedule, "interval", None)?;
    set_native_config(&schedule);
    let host_request = host_schedule();
    let native_request = native_schedule();
    results.push(measure(
        "schedule",
        "interval, after a success",
        calls,
        || schedule.schedule(&host_request).map(|_| ()),
        || {
            use sdk::schedule::SyncSchedule;
            let request = native_request.clone();
            timed(|| ferry_plugin_schedule_interval::Interval::decide(request))
        },
    )?);

    // The installer writes real files: 10 files of 4 KiB, each call a fresh
    // instance (installers are never reused).
    let scratch = tempfile::tempdir()?;
    let staged = scratch.path().join("staged");
    let target = scratch.path().canonicalize()?.join("target");
    std::fs::create_dir_all(&staged)?;
    std::fs::create_dir_all(&target)?;
    let mut files = Vec::new();
    for i in 0..10 {
        let name = format!("file-{i}.dat");
        std::fs::write(staged.join(&name), vec![i as u8; 4096])?;
        files.push((name, 0o644u32, 4096u64));
    }
    let grant = Grant {
        directories: vec![target.clone()],
        ..Grant::default()
    };
    let copy = load(&engine, Kind::Installer, "copy", Some(&grant))?;
    let job = host_install(&staged, &target, &files);
    let native = native_install(&staged, &target, &files);
    results.push(measure(
        "installer",
        "copy, 10 files of 4 KiB",
        (calls / 40).max(50),
        || copy.install(InstallAction::Install, &job).map(|_| ()),
        || {
            use sdk::installer::Installer;
            let request = native.clone();
            timed(|| ferry_plugin_installer_copy::CopyInstaller::install(request))
        },
    )?);

    let loading = measure_loading(&engine, calls)?;
    Ok(json!({ "calls": results, "loading": loading }))
}

/// Times one native call; the request was cloned before, as the host
/// copies it into the component before the call starts too.
fn timed<T>(call: impl FnOnce() -> Result<T, String>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let result = call();
    let elapsed = t.elapsed();
    std::hint::black_box(result).map_err(anyhow::Error::msg)?;
    Ok(elapsed)
}

fn builtin(kind: Kind, name: &str) -> anyhow::Result<(Manifest, &'static BuiltinPlugin)> {
    for b in ferry_builtin_plugins::BUILTINS {
        let m = Manifest::parse(b.manifest, "built-in")?;
        if m.kind == kind && m.name == name {
            return Ok((m, b));
        }
    }
    anyhow::bail!("no built-in {kind} plugin {name}")
}

fn load(
    engine: &PluginEngine,
    kind: Kind,
    name: &str,
    grant: Option<&Grant>,
) -> anyhow::Result<Plugin> {
    let (manifest, b) = builtin(kind, name)?;
    Ok(Plugin::load(
        engine,
        manifest,
        Origin::Builtin,
        b.wasm,
        None,
        grant,
    )?)
}

/// The native code reads the same configuration the component sees.
fn set_native_config(plugin: &Plugin) {
    sdk::testing::set_config(plugin.config_text());
}

fn percentile(sorted: &[Duration], p: f64) -> u128 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_nanos()
}

fn stats(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    json!({
        "p50_ns": percentile(&samples, 0.50),
        "p99_ns": percentile(&samples, 0.99),
        "n": samples.len(),
    })
}

/// Times `calls` host calls and `calls` native ones, after a warm-up of
/// each.
fn measure<E: std::fmt::Display>(
    kind: &str,
    what: &str,
    calls: usize,
    mut host: impl FnMut() -> Result<(), E>,
    mut native: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Value> {
    let warm = (calls / 10).max(10);
    for _ in 0..warm {
        host().map_err(|e| anyhow::anyhow!("{e}"))?;
        native()?;
    }
    let mut host_samples = Vec::with_capacity(calls);
    let mut native_samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        host().map_err(|e| anyhow::anyhow!("{e}"))?;
        host_samples.push(t.elapsed());
        native_samples.push(native()?);
    }
    Ok(json!({
        "kind": kind,
        "what": what,
        "wasm": stats(host_samples),
        "native": stats(native_samples),
    }))
}

/// Compiling from .wasm, loading from the compiled cache, and instantiating
/// (a fresh instance plus its first call).
fn measure_loading(engine: &PluginEngine, calls: usize) -> anyhow::Result<Value> {
    let (manifest, b) = builtin(Kind::Election, "score")?;
    let mut compile = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(engine.compile("score", b.wasm)?);
        compile.push(t.elapsed());
    }
    let cache = tempfile::tempdir()?;
    let cached = PluginEngine::new(Some(cache.path().to_path_buf()))?;
    cached.compile("score", b.wasm)?;
    anyhow::ensure!(
        cached.is_cached(b.wasm),
        "the compiled cache was not written"
    );
    let mut from_cache = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        std::hint::black_box(cached.compile("score", b.wasm)?);
        from_cache.push(t.elapsed());
    }
    let mut load_from_cache = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        std::hint::black_box(Plugin::load(
            &cached,
            manifest.clone(),
            Origin::Builtin,
            b.wasm,
            None,
            None,
        )?);
        load_from_cache.push(t.elapsed());
    }
    let plugin = Plugin::load(&cached, manifest, Origin::Builtin, b.wasm, None, None)?;
    let request = host_election();
    let mut instantiate = Vec::new();
    let mut call_only = Vec::new();
    for _ in 0..(calls / 10).max(100) {
        plugin.clear_instances();
        let t = Instant::now();
        plugin.elect(&request)?;
        instantiate.push(t.elapsed());
        let t = Instant::now();
        plugin.elect(&request)?;
        call_only.push(t.elapsed());
    }
    Ok(json!({
        "plugin": "election score",
        "wasm_bytes": b.wasm.len(),
        "pooling": engine.pooled(),
        "compile_from_wasm": stats(compile),
        "deserialize_from_cache": stats(from_cache),
        "load_from_cache": stats(load_from_cache),
        "instantiate_and_first_call": stats(instantiate),
        "reused_instance_call": stats(call_only),
    }))
}

/// 50 volunteers with varied, reproducible traits, as the host sees them
/// and as the native code does.
fn volunteers() -> Vec<(String, u64, u64, bool, bool, bool, u64)> {
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    (0..50)
        .map(|i| {
            (
                format!("agent-{i:02}"),
                (next() % 500) << 30,
                next() % (30 * 24 * 3600),
                next() % 4 != 0,
                next() % 2 == 0,
                next() % 3 == 0,
                next() % (1 << 30),
            )
        })
        .collect()
}

fn host_election() -> ferry_plugin::ElectionRequest {
    ferry_plugin::ElectionRequest {
        task: "deploy-42".into(),
        self_id: "agent-00".into(),
        volunteers: volunteers()
            .into_iter()
            .map(
                |(id, disk, up, mains, wired, laptop, cached)| ferry_plugin::Candidate {
                    id,
                    free_disk_bytes: disk,
                    uptime_secs: up,
                    on_mains_power: mains,
                    wired,
                    laptop,
                    cached_bytes: cached,
                },
            )
            .collect(),
    }
}

fn native_election() -> sdk::election::ElectionRequest {
    sdk::election::ElectionRequest {
        task: "deploy-42".into(),
        self_id: "agent-00".into(),
        volunteers: volunteers()
            .into_iter()
            .map(
                |(id, disk, up, mains, wired, laptop, cached)| sdk::election::Candidate {
                    id,
                    free_disk_bytes: disk,
                    uptime_secs: up,
                    on_mains_power: mains,
                    wired,
                    laptop,
                    cached_bytes: cached,
                },
            )
            .collect(),
    }
}

const NOW: u64 = 1_795_694_400;

fn host_transport() -> ferry_plugin::TransportRequest {
    let health = |rtt| ferry_plugin::SourceHealth {
        reachable: true,
        rtt_ms: Some(rtt),
        recent_throughput_bps: Some(50_000_000),
        consecutive_failures: 0,
    };
    ferry_plugin::TransportRequest {
        package: "office-suite".into(),
        version: "2.1.0".into(),
        size_bytes: 500 << 20,
        missing_bytes: 500 << 20,
        options: ferry_plugin::TaskOptions {
            multicast_allowed: true,
            deadline: Some(NOW + 3600),
        },
        subnet_peers: 24,
        peers_with_content: 3,
        relay: Some(health(2)),
        hub: health(80),
        now: NOW,
    }
}

fn native_transport() -> sdk::transport::TransportRequest {
    let health = |rtt| sdk::transport::SourceHealth {
        reachable: true,
        rtt_ms: Some(rtt),
        recent_throughput_bps: Some(50_000_000),
        consecutive_failures: 0,
    };
    sdk::transport::TransportRequest {
        package: "office-suite".into(),
        version: "2.1.0".into(),
        size_bytes: 500 << 20,
        missing_bytes: 500 << 20,
        options: sdk::transport::TaskOptions {
            multicast_allowed: true,
            deadline: Some(NOW + 3600),
        },
        subnet_peers: 24,
        peers_with_content: 3,
        relay: Some(health(2)),
        hub: health(80),
        now: NOW,
    }
}

fn host_schedule() -> ferry_plugin::ScheduleRequest {
    ferry_plugin::ScheduleRequest {
        now: NOW,
        utc_offset_minutes: 60,
        last_sync: Some(ferry_plugin::LastSync {
            started: NOW - 1800,
            finished: NOW - 1700,
            outcome: ferry_plugin::SyncOutcome::Succeeded,
            error: None,
            bytes: 10 << 20,
        }),
        backlog_bytes: 200 << 20,
        urgent: false,
    }
}

fn native_schedule() -> sdk::schedule::ScheduleRequest {
    sdk::schedule::ScheduleRequest {
        now: NOW,
        utc_offset_minutes: 60,
        last_sync: Some(sdk::schedule::LastSync {
            started: NOW - 1800,
            finished: NOW - 1700,
            outcome: sdk::schedule::SyncOutcome::Succeeded,
            error: None,
            bytes: 10 << 20,
        }),
        backlog_bytes: 200 << 20,
        urgent: false,
    }
}

fn params(target: &Path) -> String {
    format!("target = {:?}\n", target.display().to_string())
}

fn host_install(staged: &Path, target: &Path, files: &[(String, u32, u64)]) -> InstallJob {
    InstallJob {
        staged_dir: staged.to_path_buf(),
        request: ferry_plugin::InstallRequest {
            package: "bench".into(),
            version: "1.0.0".into(),
            staged_dir: String::new(),
            files: files
                .iter()
                .map(|(path, mode, size)| ferry_plugin::StagedFile {
                    path: path.clone(),
                    mode: *mode,
                    size: *size,
                })
                .collect(),
            params: params(target),
            previous_version: None,
        },
        progress: None,
    }
}

fn native_install(
    staged: &Path,
    target: &Path,
    files: &[(String, u32, u64)],
) -> sdk::installer::InstallRequest {
    sdk::installer::InstallRequest {
        package: "bench".into(),
        version: "1.0.0".into(),
        staged_dir: staged.display().to_string(),
        files: files
            .iter()
            .map(|(path, mode, size)| sdk::installer::StagedFile {
                path: path.clone(),
                mode: *mode,
                size: *size,
            })
            .collect(),
        params: params(target),
        previous_version: None,
    }
}
