//! The hub: the central server. It owns the catalog, the content store, the
//! TUF signing keys and the CA, and serves the `/v1` API over mutual TLS.
//!
//! - [`init`] creates a hub data directory.
//! - [`run`] serves it.
//! - [`tasks`] signs and keeps tasks and answers what agents report.
//! - [`tokens`] creates enrollment tokens on the hub's machine.
//! - [`gc`] removes content no published version references.
//! - [`keys`] rotates the TUF signing keys.
//! - [`lock`] keeps two processes from working on one data directory.

pub mod api;
pub mod config;
pub mod error;
pub mod gc;
mod groups;
pub mod init;
pub mod keys;
mod layout;
pub mod lock;
mod publish;
pub mod run;
pub mod settings;
mod state;
pub mod tasks;
pub mod tokens;

pub use config::HubConfig;
pub use error::HubError;
pub use layout::HubLayout;
pub use state::HubState;
