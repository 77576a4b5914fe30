//! Used by build scripts to build plugin crates of this workspace for
//! `wasm32-wasip2`, the way wasmtime's test-programs are built: a nested
//! cargo with its own target directory (so it never waits on the outer
//! build's lock) and without the outer build's host-only settings.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target every plugin is built for.
pub const TARGET: &str = "wasm32-wasip2";
/// The cargo profile plugins are built with (see the workspace Cargo.toml).
pub const PROFILE: &str = "plugin";

/// The workspace root, from a build script's `CARGO_MANIFEST_DIR` and how
/// many levels below the root that crate lives.
pub fn workspace_root(levels: usize) -> PathBuf {
    let mut dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    for _ in 0..levels {
        dir.pop();
    }
    dir
}

/// `(crate name, directory)` of each crate directly under `dir` that has a
/// Cargo.toml and, if `marker` is given, that file too.
pub fn crates_in(dir: &Path, marker: Option<&str>) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("read directory entry").path();
        let cargo_toml = path.join("Cargo.toml");
        if !cargo_toml.exists() || marker.is_some_and(|m| !path.join(m).exists()) {
            continue;
        }
        let text = std::fs::read_to_string(&cargo_toml).expect("read Cargo.toml");
        let table: toml::Table = text.parse().expect("parse Cargo.toml");
        let name = table["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_string();
        found.push((name, path));
    }
    found.sort();
    found
}

/// Makes sure the compiler has the standard library for [`TARGET`]. With
/// rustup set not to install what `rust-toolchain.toml` names on its own
/// (`RUSTUP_AUTO_INSTALL=0`), a toolchain that is already there lacks the
/// target, and the nested build would stop with "can't find crate for
/// `std`"; adding a target explicitly is still allowed, so do that.
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot
        .as_ref()
        .is_some_and(|s| s.join("lib/rustlib").join(TARGET).join("lib").is_dir());
    if installed {
        return;
    }
    println!("cargo:warning=the {TARGET} target is missing; adding it with rustup");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        added,
        "the {TARGET} target is missing and `rustup target add {TARGET}` failed; \
         install it for this toolchain ({}) and build again",
        sysroot.map(|s| s.display().to_string()).unwrap_or_default()
    );
}

/// Builds `crates` of the workspace at `root` and returns the directory
/// holding their `.wasm` files (crate name with `_` for `-`).
pub fn build(root: &Path, crates: &[String]) -> PathBuf {
    for watched in [
        "plugins",
        "sdk",
        "tests/plugins",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    ensure_target();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>/out.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR lies inside cargo's target directory")
        .join("ferry-plugins");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg(format!("--profile={PROFILE}"))
        .arg(format!("--target={TARGET}"))
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for name in crates {
        cmd.arg("-p").arg(name);
    }
    // The outer build's flags are for the host, not for wasm, and clippy's
    // wrapper would lint the plugins a second time.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building {crates:?} for {TARGET} failed (see above); if the target is missing, \
         run `rustup target add {TARGET}`"
    );
    let dir = target_dir.join(TARGET).join(PROFILE);
    for name in crates {
        let wasm = dir.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(wasm.exists(), "{} was not built", wasm.display());
    }
    dir
}
