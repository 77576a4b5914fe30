//! Ferry's default plugins, built from `plugins/` for wasm32-wasip2 during
//! the normal build and embedded, so a fresh install works with no plugin
//! files on disk.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
