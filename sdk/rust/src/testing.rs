//! Native stand-ins for the host functions, so a plugin's logic runs in plain
//! `cargo test`. State is per thread, as tests run on threads of their own.
//!
//! ```
//! use ferry_plugin_sdk::testing;
//!
//! testing::set_config("interval-minutes = 5");
//! testing::set_now(1_700_000_000);
//! assert_eq!(ferry_plugin_sdk::now(), 1_700_000_000);
//! ferry_plugin_sdk::info("hello");
//! assert_eq!(testing::take_logs()[0].1, "hello");
//! ```

use std::cell::RefCell;

use crate::LogLevel;
use crate::host::CommandOutput;

type CommandHandler = Box<dyn FnMut(&str, &[String]) -> Result<CommandOutput, String>>;

#[derive(Default)]
struct State {
    config: String,
    now: Option<u64>,
    logs: Vec<(LogLevel, String)>,
    progress: Vec<(u8, String)>,
    commands: Vec<(String, Vec<String>)>,
    on_command: Option<CommandHandler>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Sets the configuration text [`crate::config`] returns.
pub fn set_config(toml: &str) {
    STATE.with(|s| s.borrow_mut().config = toml.to_string());
}

/// Fixes the time [`crate::now`] returns; without it, the system clock.
pub fn set_now(now: u64) {
    STATE.with(|s| s.borrow_mut().now = Some(now));
}

/// Returns and clears the log lines written so far.
pub fn take_logs() -> Vec<(LogLevel, String)> {
    STATE.with(|s| std::mem::take(&mut s.borrow_mut().logs))
}

/// Returns and clears the progress reports made so far.
pub fn take_progress() -> Vec<(u8, String)> {
    STATE.with(|s| std::mem::take(&mut s.borrow_mut().progress))
}

/// Returns and clears the commands run so far.
pub fn take_commands() -> Vec<(String, Vec<String>)> {
    STATE.with(|s| std::mem::take(&mut s.borrow_mut().commands))
}

/// Answers [`crate::installer::run_command`] with `handler`; without one,
/// every command is refused as the node refuses commands it did not grant.
pub fn on_command(handler: impl FnMut(&str, &[String]) -> Result<CommandOutput, String> + 'static) {
    STATE.with(|s| s.borrow_mut().on_command = Some(Box::new(handler)));
}

/// The native host functions the SDK calls outside a component.
#[cfg(not(target_family = "wasm"))]
pub(crate) mod native {
    use super::*;

    pub(crate) fn log(level: LogLevel, message: &str) {
        STATE.with(|s| s.borrow_mut().logs.push((level, message.to_string())));
    }

    pub(crate) fn now() -> u64 {
        STATE.with(|s| s.borrow().now).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
    }

    pub(crate) fn config() -> String {
        STATE.with(|s| s.borrow().config.clone())
    }

    pub(crate) fn run_command(
        program: &str,
        args: &[String],
        _timeout_ms: u32,
    ) -> Result<CommandOutput, String> {
        let handler = STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.commands.push((program.to_string(), args.to_vec()));
            s.on_command.take()
        });
        let Some(mut handler) = handler else {
            return Err(format!("command {program:?} is not granted to this plugin"));
        };
        let result = handler(program, args);
        STATE.with(|s| s.borrow_mut().on_command = Some(handler));
        result
    }

    pub(crate) fn set_mode(path: &str, mode: u32) -> Result<(), String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{path}: {e}"))
        }
        #[cfg(not(unix))]
        {
            let _ = (path, mode);
            Ok(())
        }
    }

    pub(crate) fn progress(percent: u8, message: &str) {
        STATE.with(|s| s.borrow_mut().progress.push((percent, message.to_string())));
    }
}
