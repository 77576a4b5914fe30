//! The agent: an endpoint. It checks in with its server (the office's
//! relay, or the hub for roaming machines) through a held request, learns
//! of its tasks within seconds, verifies each task against the hub's
//! control key, gets the package's bytes from the sources its transport
//! plugin plans (falling back to the next one, with the reason recorded),
//! verifies every byte against the hub-signed metadata, installs through
//! the installer plugin the package names, and reports each step through a
//! durable outbox.
//!
//! - [`init::init`] enrolls and creates a data directory with `agent.toml`.
//! - [`run::run`] checks in, works through tasks, reports.
//! - [`status::AgentStatus`] is what `ferry agent status` shows.
//!
//! The agent uses building blocks, never another role: `ferry_transfer` to
//! fetch, `ferry_plugin` for its transport plan and installers,
//! `ferry_catalog` for its outbox.

#![warn(missing_docs)]

pub mod config;
mod error;
mod execute;
pub mod init;
mod inventory;
mod layout;
mod outbox;
mod record;
pub mod run;
mod settings;
pub mod status;

pub use config::AgentConfig;
pub use error::AgentError;
pub use layout::AgentLayout;
pub use record::TaskRecord;
