//! Builds every plugin under `plugins/` (a crate with a plugin.toml) for
//! wasm32-wasip2 and embeds the components with their plugin.toml files.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let root = ferry_wasm_build::workspace_root(2);
    let plugins = ferry_wasm_build::crates_in(&root.join("plugins"), Some("plugin.toml"));
    let names: Vec<String> = plugins.iter().map(|(n, _)| n.clone()).collect();
    let wasm_dir = ferry_wasm_build::build(&root, &names);

    let mut code = String::from(
        "/// The default plugins, embedded.\npub static BUILTINS: &[ferry_plugin::BuiltinPlugin] = &[\n",
    );
    for (name, dir) in &plugins {
        let wasm = wasm_dir.join(format!("{}.wasm", name.replace('-', "_")));
        writeln!(
            code,
            "    ferry_plugin::BuiltinPlugin {{ manifest: include_str!({:?}), wasm: include_bytes!({:?}) }},",
            dir.join("plugin.toml").display().to_string(),
            wasm.display().to_string(),
        )
        .expect("write to a String");
    }
    code.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out_dir.join("builtins.rs"), code).expect("write builtins.rs");
}
