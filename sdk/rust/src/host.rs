//! The host functions, wrapped. In a component they call the node; natively
//! (in a plugin's unit tests) they are served by [`crate::testing`].

use std::any::{Any, TypeId};
use std::cell::RefCell;

use serde::de::DeserializeOwned;

use crate::bindings::ferry::plugin::types::{LogLevel, Timestamp};

#[cfg(target_family = "wasm")]
use crate::bindings::ferry::plugin::{host as imports, installer_host as installer_imports};
#[cfg(not(target_family = "wasm"))]
use crate::testing::native as imports;
#[cfg(not(target_family = "wasm"))]
use crate::testing::native as installer_imports;

/// Writes a line to the node's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    imports::log(level, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// Logs at error level.
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

/// The node's clock, in seconds since the Unix epoch (UTC).
pub fn now() -> Timestamp {
    imports::now()
}

/// The plugin's configuration as TOML text: its plugin.toml `[config]` with
/// the node's settings laid over.
pub fn config_text() -> String {
    imports::config()
}

/// The plugin's configuration, deserialized. Fields the node did not set keep
/// their serde defaults; an error names the field that is wrong, so return it
/// to the node as the call's error.
///
/// The parsed value is kept and reused while the configuration text stays
/// the same: nodes reuse a plugin instance for many calls, and parsing TOML
/// on each would cost more than most decisions.
pub fn config<T: DeserializeOwned + Clone + 'static>() -> Result<T, String> {
    let text = config_text();
    let key = TypeId::of::<T>();
    let hit = CONFIG_CACHE.with(|cache| {
        cache
            .borrow()
            .iter()
            .find_map(|(k, t, v)| (*k == key && *t == text).then(|| v.downcast_ref::<T>().cloned()))
    });
    if let Some(Some(value)) = hit {
        return Ok(value);
    }
    let value: T =
        toml::from_str(&text).map_err(|e| format!("invalid plugin configuration: {e}"))?;
    CONFIG_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        cache.retain(|(k, _, _)| *k != key);
        cache.push((key, text, Box::new(value.clone())));
    });
    Ok(value)
}

type CachedConfig = (TypeId, String, Box<dyn Any>);

thread_local! {
    static CONFIG_CACHE: RefCell<Vec<CachedConfig>> = const { RefCell::new(Vec::new()) };
}

/// What a command printed and how it ended.
pub use crate::bindings::ferry::plugin::installer_host::CommandOutput;

/// Runs `program` with `args`, without a shell, if the node granted this
/// plugin that program; the node kills it after `timeout_ms`.
pub fn run_command(
    program: &str,
    args: &[String],
    timeout_ms: u32,
) -> Result<CommandOutput, String> {
    installer_imports::run_command(program, args, timeout_ms)
}

/// Sets the permission bits of a file in a directory the plugin may write.
pub fn set_mode(path: &str, mode: u32) -> Result<(), String> {
    installer_imports::set_mode(path, mode)
}

/// Reports how far the current install step is, 0 to 100.
pub fn progress(percent: u8, message: &str) {
    installer_imports::progress(percent, message);
}
