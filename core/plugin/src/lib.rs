//! Ferry's plugin runtime: loads WebAssembly components written against
//! `sdk/wit` and calls them, sandboxed.
//!
//! - [`PluginEngine`]: wasmtime with pooled instances, epoch deadlines and
//!   compiled code cached on disk.
//! - [`Manifest`]: a plugin's `plugin.toml`.
//! - [`Plugin`]: one loaded plugin; policy calls reuse instances,
//!   installer calls get a fresh one with only the granted directories and
//!   commands.
//! - [`Registry`]: a node's plugins: built-ins, a site directory that
//!   overrides them and is reloaded while the node runs, and the fallback to
//!   the built-in when a site plugin fails.
//!
//! Calls block the calling thread (installers may run for minutes; the
//! engine's own runtime drives what a call waits on inside the host, so it
//! can be abandoned at its deadline): from async code, make them on a
//! blocking thread (`tokio::task::spawn_blocking`), never on an async worker.
//!
//! ```no_run
//! use ferry_plugin::{PluginEngine, PluginSettings, Registry};
//! # fn builtins() -> Vec<ferry_plugin::BuiltinPlugin> { Vec::new() }
//! let engine = PluginEngine::new(None)?;
//! let (registry, _report) = Registry::new(engine, PluginSettings::default(), &builtins())?;
//! let plugin = registry.policy(ferry_plugin::Kind::Election)?;
//! println!("{}", plugin.label());
//! # Ok::<(), ferry_plugin::PluginError>(())
//! ```

mod bindings;
mod budget;
mod cgroup;
pub mod contract;
mod engine;
mod error;
mod kind;
mod manifest;
mod outward;
mod plugin;
mod registry;
mod settings;
mod state;
mod text;

pub use bindings::ferry::plugin::installer_host::CommandOutput;
pub use bindings::ferry::plugin::types::LogLevel;
pub use engine::PluginEngine;
pub use error::PluginError;
pub use kind::Kind;
pub use manifest::{EffectiveLimits, LimitSource, Limits, Manifest, Permissions, valid_name};
pub use plugin::*;
pub use registry::{BuiltinPlugin, Decision, Registry, ReloadReport, WatchHandle, read_plugin_dir};
pub use settings::{Grant, LimitCaps, PluginSettings};
pub use state::{LogLine, ProgressSink, level_name};
pub use text::{MAX_ERROR_TEXT, MAX_SHORT_TEXT, plugin_text};
