//! Support for the plugin tests: the real built-in plugins and the
//! misbehaving fixtures under `tests/plugins/`, loaded through the real
//! host.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferry_plugin::{
    BuiltinPlugin, Candidate, ElectionRequest, Kind, Manifest, PluginEngine, PluginSettings,
    Registry, SourceHealth, TaskOptions, TransportRequest,
};

/// One engine for the test binary: engines are meant to be shared, and each
/// starts a deadline thread.
pub fn engine() -> PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| PluginEngine::new(None).expect("start the plugin engine"))
        .clone()
}

/// The built-in plugins embedded in ferry.
pub fn builtins() -> &'static [BuiltinPlugin] {
    ferry_builtin_plugins::BUILTINS
}

/// The built-in plugin of `kind` named `name`.
pub fn builtin(kind: Kind, name: &str) -> BuiltinPlugin {
    *builtins()
        .iter()
        .find(|b| {
            let m = Manifest::parse(b.manifest, "built-in").expect("built-in manifest");
            m.kind == kind && m.name == name
        })
        .unwrap_or_else(|| panic!("no built-in {kind} plugin {name}"))
}

/// The component of a fixture plugin crate, e.g. `hostile-election`.
pub fn fixture_wasm(name: &str) -> Vec<u8> {
    let path = Path::new(env!("FERRY_FIXTURE_PLUGINS"))
        .join(format!("ferry_fixture_{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes a plugin directory `<parent>/<dir>` with `plugin.toml` and
/// `NAME.wasm`, each replaced atomically (written aside, then renamed), as
/// an operator should.
pub fn write_plugin(parent: &Path, dir: &str, manifest: &str, wasm: &[u8]) -> PathBuf {
    let dir = parent.join(dir);
    std::fs::create_dir_all(&dir).expect("create plugin dir");
    let name = Manifest::parse(manifest, "test")
        .map(|m| m.name)
        .unwrap_or_else(|_| "broken".into());
    replace(&dir.join(format!("{name}.wasm")), wasm);
    replace(&dir.join("plugin.toml"), manifest.as_bytes());
    dir
}

/// Replaces a file atomically.
pub fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A plugin.toml for a test plugin.
pub fn manifest(name: &str, version: &str, kind: Kind, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = \"{version}\"\nkind = \"{kind}\"\ncontract = \"0.1\"\n{extra}\n"
    )
}

/// A registry over the built-ins and, if given, a site plugin directory.
pub fn registry(settings: PluginSettings) -> Registry {
    let (registry, report) =
        Registry::new(engine(), settings, builtins()).expect("create the registry");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    registry
}

/// A volunteer with the given traits.
pub fn candidate(id: &str) -> Candidate {
    Candidate {
        id: id.into(),
        free_disk_bytes: 50 << 30,
        uptime_secs: 3600,
        on_mains_power: true,
        wired: false,
        laptop: false,
        cached_bytes: 0,
    }
}

/// An election among `volunteers`.
pub fn election(volunteers: Vec<Candidate>) -> ElectionRequest {
    ElectionRequest {
        task: "deploy-42".into(),
        self_id: volunteers.first().map(|c| c.id.clone()).unwrap_or_default(),
        volunteers,
    }
}

/// A transport request: a 500 MiB package, relay and hub reachable.
pub fn transport_request() -> TransportRequest {
    TransportRequest {
        package: "office-suite".into(),
        version: "2.1.0".into(),
        size_bytes: 500 << 20,
        missing_bytes: 500 << 20,
        options: TaskOptions {
            multicast_allowed: true,
            deadline: None,
        },
        subnet_peers: 12,
        peers_with_content: 2,
        relay: Some(health(true)),
        hub: health(true),
        now: 1_800_000_000,
    }
}

/// A source's health, reachable or failing.
pub fn health(reachable: bool) -> SourceHealth {
    SourceHealth {
        reachable,
        rtt_ms: Some(3),
        recent_throughput_bps: Some(100_000_000),
        consecutive_failures: if reachable { 0 } else { 3 },
    }
}

/// The absolute path of a system program (commands are granted by path).
pub fn system_program(name: &str) -> String {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no system program {name}"))
        .display()
        .to_string()
}
