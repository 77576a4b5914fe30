//! Builds the misbehaving plugins under `tests/plugins/` for wasm32-wasip2;
//! the tests find them in `FERRY_FIXTURE_PLUGINS`.

fn main() {
    let root = ferry_wasm_build::workspace_root(1);
    let crates: Vec<String> = ferry_wasm_build::crates_in(&root.join("tests/plugins"), None)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let dir = ferry_wasm_build::build(&root, &crates);
    println!("cargo:rustc-env=FERRY_FIXTURE_PLUGINS={}", dir.display());
}
