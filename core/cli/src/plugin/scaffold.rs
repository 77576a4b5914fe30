//! `ferry plugin new`: writes a plugin crate with the SDK vendored beside
//! it, so it builds offline against exactly the contract this ferry speaks.

use std::path::Path;

use anyhow::{Context, bail};

use ferry_plugin::Kind;

/// The SDK, as shipped with this ferry.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "wit/types.wit",
        include_str!("../../../../sdk/wit/types.wit"),
    ),
    (
        "wit/transport.wit",
        include_str!("../../../../sdk/wit/transport.wit"),
    ),
    (
        "wit/schedule.wit",
        include_str!("../../../../sdk/wit/schedule.wit"),
    ),
    (
        "wit/election.wit",
        include_str!("../../../../sdk/wit/election.wit"),
    ),
    (
        "wit/installer.wit",
        include_str!("../../../../sdk/wit/installer.wit"),
    ),
    (
        "rust/src/lib.rs",
        include_str!("../../../../sdk/rust/src/lib.rs"),
    ),
    (
        "rust/src/bindings.rs",
        include_str!("../../../../sdk/rust/src/bindings.rs"),
    ),
    (
        "rust/src/host.rs",
        include_str!("../../../../sdk/rust/src/host.rs"),
    ),
    (
        "rust/src/testing.rs",
        include_str!("../../../../sdk/rust/src/testing.rs"),
    ),
];

/// The vendored SDK's manifest: the workspace's, made standalone.
fn sdk_cargo_toml() -> String {
    format!(
        r#"[package]
name = "ferry-plugin-sdk"
version = "{version}"
edition = "2024"
license = "Apache-2.0"
description = "Ferry's plugin SDK (vendored by `ferry plugin new`)"

[dependencies]
wit-bindgen = "0.63"
serde = {{ version = "1", features = ["derive"] }}
toml = "0.9"
"#,
        version = env!("CARGO_PKG_VERSION")
    )
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
ferry-plugin-sdk = {{ path = "ferry-sdk/rust" }}
serde = {{ version = "1", features = ["derive"] }}
toml = "0.9"

# A plugin is its own workspace, even when created inside another one.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#
    )
}

fn plugin_toml(kind: Kind, name: &str) -> String {
    let (permissions, limits, config) = match kind {
        Kind::Installer => (
            "directories = true      # the node grants which, under [plugins.grants.NAME]\ncommands = []",
            "memory-mib = 64\ntimeout-ms = 600000",
            "",
        ),
        Kind::Election => (
            "",
            "memory-mib = 16\ntimeout-ms = 500",
            "prefer-wired = true\n",
        ),
        Kind::Schedule => (
            "",
            "memory-mib = 16\ntimeout-ms = 500",
            "every-minutes = 60\n",
        ),
        Kind::Transport => (
            "",
            "memory-mib = 16\ntimeout-ms = 500",
            "multicast-min-peers = 3\n",
        ),
    };
    format!(
        r#"name = "{name}"
version = "0.1.0"
kind = "{kind}"
contract = "{major}.{minor}"
description = "TODO: one line saying what this {kind} plugin does"

[permissions]
{permissions}

[limits]
{limits}

[config]
{config}"#,
        major = ferry_plugin::contract::VERSION.major,
        minor = ferry_plugin::contract::VERSION.minor,
    )
}

fn lib_rs(kind: Kind) -> &'static str {
    match kind {
        Kind::Election => include_str!("templates/election.rs"),
        Kind::Schedule => include_str!("templates/schedule.rs"),
        Kind::Transport => include_str!("templates/transport.rs"),
        Kind::Installer => include_str!("templates/installer.rs"),
    }
}

fn scenario(kind: Kind) -> &'static str {
    match kind {
        Kind::Election => include_str!("templates/election.toml"),
        Kind::Schedule => include_str!("templates/schedule.toml"),
        Kind::Transport => include_str!("templates/transport.toml"),
        Kind::Installer => include_str!("templates/installer.toml"),
    }
}

/// Writes the crate into `dir`, which must not exist or be empty.
pub fn write(dir: &Path, kind: Kind, name: &str) -> anyhow::Result<()> {
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty; choose another --dir",
            dir.display()
        );
    }
    let mut files: Vec<(String, String)> = vec![
        ("Cargo.toml".into(), cargo_toml(name)),
        ("plugin.toml".into(), plugin_toml(kind, name)),
        ("src/lib.rs".into(), lib_rs(kind).to_string()),
        (
            "scenario.toml".into(),
            scenario(kind).replace("NAME.wasm", &format!("{}.wasm", name.replace('-', "_"))),
        ),
        (".gitignore".into(), "/target\n".into()),
        ("ferry-sdk/rust/Cargo.toml".into(), sdk_cargo_toml()),
    ];
    if kind == Kind::Installer {
        files.push((
            "staged/hello.txt".into(),
            "hello from the staged package\n".into(),
        ));
    }
    for (path, text) in SDK_FILES {
        files.push((format!("ferry-sdk/{path}"), text.to_string()));
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
