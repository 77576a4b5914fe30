//! `ferry plugin`: scaffold, inspect and try plugins.

mod scaffold;
mod scenario;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::Serialize;

use ferry_plugin::{
    InstallAction, InstallJob, Kind, Manifest, Origin, Plugin, PluginEngine, PluginError, Source,
};

use crate::output;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin crate that builds with `cargo build --target wasm32-wasip2`.
    New(NewArgs),
    /// Show a plugin's kind, versions, permissions, limits and imports.
    Inspect(InspectArgs),
    /// Run a plugin on the inputs of a scenario file and print its decisions.
    Test(TestArgs),
    /// List the plugins built into this ferry binary.
    Builtins,
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// transport, schedule, election or installer.
    kind: String,
    /// The plugin's name: lowercase letters, digits and '-'.
    name: String,
    /// Where to create it (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The plugin: its directory (plugin.toml and NAME.wasm), or a .wasm
    /// file (plugin.toml is read from beside it or the crate that built it).
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "A scenario is a TOML file with one [[case]] per input; \
    see docs/plugins.md for the fields of each kind.")]
pub struct TestArgs {
    /// The plugin: its directory, or its .wasm file (plugin.toml beside it
    /// or in the crate that built it).
    file: PathBuf,
    /// The scenario file.
    #[arg(long, value_name = "SCENARIO.toml")]
    input: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    match cmd {
        PluginCommand::New(args) => new(args),
        PluginCommand::Inspect(args) => inspect(args),
        PluginCommand::Test(args) => test(args),
        PluginCommand::Builtins => builtins(),
    }
}

fn new(args: NewArgs) -> anyhow::Result<()> {
    let kind = Kind::parse(&args.kind).with_context(|| {
        format!(
            "unknown kind {:?}; choose transport, schedule, election or installer",
            args.kind
        )
    })?;
    if !ferry_plugin::valid_name(&args.name) {
        bail!(
            "plugin name {:?} must be 1 to 64 lowercase letters, digits and '-'",
            args.name
        );
    }
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    scaffold::write(&dir, kind, &args.name)?;
    let artifact = args.name.replace('-', "_");
    println!("Created {kind} plugin {:?} in {}", args.name, dir.display());
    println!();
    println!("Next steps:");
    println!("  cd {}", dir.display());
    println!("  cargo test                                  # its logic, natively");
    println!("  cargo build --release --target wasm32-wasip2");
    println!(
        "  ferry plugin test target/wasm32-wasip2/release/{artifact}.wasm --input scenario.toml"
    );
    println!(
        "  mkdir -p PLUGIN_DIR/{0} && cp plugin.toml target/wasm32-wasip2/release/{artifact}.wasm PLUGIN_DIR/{0}/",
        args.name
    );
    Ok(())
}

/// Reads a plugin given as a directory or a .wasm file.
fn read_plugin(path: &Path) -> anyhow::Result<(Option<Manifest>, Vec<u8>, PathBuf)> {
    if path.is_dir() {
        let (manifest, wasm) = ferry_plugin::read_plugin_dir(path)?;
        return Ok((Some(manifest), wasm, path.to_path_buf()));
    }
    let wasm = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Beside the component, or in the crate that built it
    // (target/wasm32-wasip2/release/NAME.wasm is three levels down).
    let found = path
        .ancestors()
        .skip(1)
        .take(4)
        .map(|d| d.join("plugin.toml"))
        .find(|p| p.is_file());
    let manifest = match found {
        Some(manifest_path) => {
            let text = std::fs::read_to_string(&manifest_path)
                .with_context(|| format!("cannot read {}", manifest_path.display()))?;
            Some(Manifest::parse(
                &text,
                &manifest_path.display().to_string(),
            )?)
        }
        None => None,
    };
    Ok((manifest, wasm, dir))
}

#[derive(Serialize)]
struct Inspection {
    name: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    contract: Option<String>,
    built_against: Vec<String>,
    description: Option<String>,
    permissions: Option<ferry_plugin::Permissions>,
    limits: Option<ferry_plugin::Limits>,
    effective_limits: Option<ferry_plugin::EffectiveLimits>,
    config: Option<toml::Table>,
    imports: Vec<String>,
    exports: Vec<String>,
    sha256: String,
    size_bytes: usize,
    check: String,
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let (manifest, wasm, _) = read_plugin(&args.file)?;
    let engine = engine()?;
    let label = manifest
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_else(|| args.file.display().to_string());
    let component = engine.compile(&label, &wasm)?;
    let interfaces = ferry_plugin::contract::interfaces(engine.engine(), &component);
    let check = match &manifest {
        Some(m) => match ferry_plugin::contract::check(&m.name, m.kind, &interfaces) {
            Ok(()) => format!(
                "loadable by this ferry (contract ferry:plugin@{})",
                *ferry_plugin::contract::VERSION
            ),
            Err(e) => format!("NOT loadable: {e}"),
        },
        None => "no plugin.toml beside the component: a node cannot load it".to_string(),
    };
    let mut built_against: Vec<String> = interfaces
        .imports
        .iter()
        .chain(&interfaces.exports)
        .filter(|n| n.starts_with("ferry:plugin/"))
        .filter_map(|n| n.split_once('@').map(|(_, v)| format!("ferry:plugin@{v}")))
        .collect();
    built_against.sort();
    built_against.dedup();
    use sha2::Digest;
    let info = Inspection {
        name: manifest.as_ref().map(|m| m.name.clone()),
        version: manifest.as_ref().map(|m| m.version.to_string()),
        kind: manifest.as_ref().map(|m| m.kind.to_string()),
        contract: manifest.as_ref().map(|m| m.contract.to_string()),
        built_against,
        description: manifest.as_ref().map(|m| m.description.clone()),
        permissions: manifest.as_ref().map(|m| m.permissions.clone()),
        limits: manifest.as_ref().map(|m| m.limits.clone()),
        effective_limits: manifest.as_ref().map(|m| {
            ferry_plugin::EffectiveLimits::new(
                &m.limits,
                &ferry_plugin::LimitCaps::default_for(m.kind),
            )
        }),
        config: manifest.as_ref().map(|m| m.config.clone()),
        imports: interfaces.imports.clone(),
        exports: interfaces.exports.clone(),
        sha256: hex::encode(sha2::Sha256::digest(&wasm)),
        size_bytes: wasm.len(),
        check,
    };
    if args.json {
        return output::json(&info);
    }
    let none = || "-".to_string();
    let rows = vec![
        vec!["name".into(), info.name.clone().unwrap_or_else(none)],
        vec!["version".into(), info.version.clone().unwrap_or_else(none)],
        vec!["kind".into(), info.kind.clone().unwrap_or_else(none)],
        vec![
            "description".into(),
            info.description.clone().unwrap_or_else(none),
        ],
        vec![
            "contract".into(),
            info.contract.clone().unwrap_or_else(none),
        ],
        vec!["built against".into(), info.built_against.join(", ")],
        vec!["size".into(), output::bytes(info.size_bytes as u64)],
        vec!["sha256".into(), info.sha256.clone()],
        vec!["check".into(), info.check.clone()],
    ];
    output::table(&["field", "value"], &rows);
    if let Some(p) = &info.permissions {
        println!();
        println!("permissions (asked; the node grants them under [plugins.grants.NAME]):");
        println!(
            "  directories: {}",
            if p.directories {
                "read-write, as granted"
            } else {
                "none"
            }
        );
        println!("  commands:    {}", list_or_none(&p.commands));
        println!("  hosts:       {}", list_or_none(&p.hosts));
    }
    if let (Some(l), Some(kind)) = (&info.limits, &info.kind) {
        println!(
            "limits: asks for {} MiB memory, {} ms per call",
            l.memory_mib, l.timeout_ms
        );
        if let Some(effective) = &info.effective_limits {
            println!(
                "        runs with {effective} under a node's default caps for {kind} plugins \
                 (a node lowers them in [plugins.limits.{kind}])"
            );
        }
    }
    if let Some(c) = &info.config
        && !c.is_empty()
    {
        println!("default config:");
        for line in toml::to_string(c)?.lines() {
            println!("  {line}");
        }
    }
    println!("imports:");
    for i in &info.imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &info.exports {
        println!("  {e}");
    }
    Ok(())
}

/// The engine, with compiled plugins cached in the per-user cache
/// directory so trying a plugin again (or a large one, made from Python)
/// does not compile it again.
fn engine() -> anyhow::Result<PluginEngine> {
    let cache = dirs::cache_dir().map(|d| d.join("ferry").join("compiled-plugins"));
    Ok(PluginEngine::new(cache)?)
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[derive(Serialize)]
struct CaseResult {
    case: String,
    ok: bool,
    decision: Option<serde_json::Value>,
    error: Option<String>,
    logs: Vec<String>,
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    let scenario = scenario::Scenario::read(&args.input)?;
    let (manifest, wasm, dir) = read_plugin(&args.file)?;
    let manifest = manifest.with_context(|| {
        format!(
            "no plugin.toml beside {} or in the crate that built it; a plugin is NAME.wasm plus plugin.toml",
            args.file.display()
        )
    })?;
    let engine = engine()?;
    let mut loaded = Plugin::load(
        &engine,
        manifest,
        Origin::Directory(dir),
        &wasm,
        scenario.config.as_ref(),
        scenario.grant.as_ref(),
    )?
    .capture_logs(true);
    if let Some(caps) = &scenario.limits {
        let kind = loaded.manifest().kind;
        loaded = loaded.with_caps(&caps.or_defaults(kind));
    }
    let plugin = Arc::new(loaded);
    let mut results = Vec::new();
    for (i, case) in scenario.cases.iter().enumerate() {
        let name = scenario::case_name(case, i);
        let result =
            run_case(&plugin, case, &scenario.base).with_context(|| format!("{name}: bad input"));
        results.push(match result {
            Ok((Ok((decision, text)), logs, expect_failure)) => CaseResult {
                case: name,
                ok: expect_failure.is_none(),
                decision: Some(decision),
                error: expect_failure.map(|e| format!("{text}; {e}")),
                logs,
            },
            Ok((Err(e), logs, _)) => CaseResult {
                case: name,
                ok: false,
                decision: None,
                error: Some(e.to_string()),
                logs,
            },
            Err(e) => return Err(e),
        });
    }
    if args.json {
        output::json(&results)?;
    } else {
        println!("{}", plugin.label());
        println!("limits: {}", plugin.limits());
        for r in &results {
            let status = if r.ok { "ok  " } else { "FAIL" };
            let detail = match (&r.decision, &r.error) {
                (_, Some(e)) => e.clone(),
                (Some(d), None) => describe(d),
                (None, None) => String::new(),
            };
            println!("{status} {}: {detail}", r.case);
            for line in &r.logs {
                println!("       log {line}");
            }
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        bail!("{failed} of {} cases failed", results.len());
    }
    Ok(())
}

type CaseOutcome = (
    Result<(serde_json::Value, String), PluginError>,
    Vec<String>,
    Option<String>,
);

fn run_case(plugin: &Plugin, case: &toml::Table, base: &Path) -> anyhow::Result<CaseOutcome> {
    let logs = |l: &[ferry_plugin::LogLine]| -> Vec<String> {
        l.iter()
            .map(|l| format!("{}: {}", ferry_plugin::level_name(l.level), l.message))
            .collect()
    };
    let kind = plugin.manifest().kind;
    Ok(match kind {
        Kind::Election => {
            let (request, expect) = scenario::election(case)?;
            match plugin.elect(&request) {
                Ok(a) => {
                    let miss = expect
                        .filter(|e| *e != a.value)
                        .map(|e| format!("expected {e}"));
                    let text = format!("winner {}", a.value);
                    (
                        Ok((serde_json::json!({ "winner": a.value }), text)),
                        logs(&a.logs),
                        miss,
                    )
                }
                Err(e) => (Err(e), Vec::new(), None),
            }
        }
        Kind::Transport => {
            let request = scenario::transport(case)?;
            match plugin.plan(&request) {
                Ok(a) => {
                    let sources: Vec<serde_json::Value> = a
                        .value
                        .sources
                        .iter()
                        .map(|s| {
                            let source = match &s.source {
                                Source::Multicast => "multicast".to_string(),
                                Source::Peer => "peer".to_string(),
                                Source::Relay => "relay".to_string(),
                                Source::Hub => "hub".to_string(),
                                Source::Url(u) => u.clone(),
                            };
                            serde_json::json!({ "source": source, "rate-cap-bps": s.rate_cap_bps })
                        })
                        .collect();
                    let value = serde_json::json!({ "sources": sources });
                    (Ok((value.clone(), describe(&value))), logs(&a.logs), None)
                }
                Err(e) => (Err(e), Vec::new(), None),
            }
        }
        Kind::Schedule => {
            let request = scenario::schedule(case)?;
            match plugin.schedule(&request) {
                Ok(a) => {
                    let d = &a.value;
                    let value = serde_json::json!({
                        "next-sync": time(d.next_sync),
                        "in-seconds": d.next_sync.saturating_sub(request.now),
                        "bandwidth-cap-bps": d.bandwidth_cap_bps,
                        "cap-until": time(d.cap_until),
                    });
                    (Ok((value.clone(), describe(&value))), logs(&a.logs), None)
                }
                Err(e) => (Err(e), Vec::new(), None),
            }
        }
        Kind::Installer => {
            let (action, staged, request) = scenario::install(case, base)?;
            let job = InstallJob {
                staged_dir: staged,
                request,
                progress: Some(Arc::new(|plugin: &str, percent: u8, message: &str| {
                    eprintln!("       {plugin}: {percent:>3}% {message}");
                })),
            };
            let result = match action {
                scenario::Action::Install => plugin.install(InstallAction::Install, &job),
                scenario::Action::Uninstall => plugin.install(InstallAction::Uninstall, &job),
                scenario::Action::Verify => {
                    return Ok(match plugin.verify(&job) {
                        Ok(a) => {
                            let value = serde_json::json!({
                                "intact": a.value.intact, "problems": a.value.problems });
                            (Ok((value.clone(), describe(&value))), logs(&a.logs), None)
                        }
                        Err(e) => (Err(e), Vec::new(), None),
                    });
                }
            };
            match result {
                Ok(a) => {
                    let value = serde_json::json!({
                        "message": a.value.message, "files": a.value.files });
                    (Ok((value.clone(), describe(&value))), logs(&a.logs), None)
                }
                Err(e) => (Err(e), Vec::new(), None),
            }
        }
    })
}

fn time(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

/// One line for a JSON decision.
fn describe(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "none".into(),
                    serde_json::Value::Array(items) => {
                        let parts: Vec<String> = items.iter().map(describe).collect();
                        format!("[{}]", parts.join(", "))
                    }
                    other => other.to_string(),
                };
                format!("{k}={v}")
            })
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn builtins() -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for b in ferry_builtin_plugins::BUILTINS {
        let m = Manifest::parse(b.manifest, "built-in")?;
        rows.push(vec![
            m.kind.to_string(),
            m.name,
            m.version.to_string(),
            format!("{} KiB", b.wasm.len() / 1024),
            m.description,
        ]);
    }
    rows.sort();
    output::table(&["kind", "name", "version", "size", "description"], &rows);
    Ok(())
}
