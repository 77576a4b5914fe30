//! The hub: the central server. It owns the catalog, the content store, the
//! TUF signing keys and the CA, and serves the `/v1` API over mutual TLS.
//!
//! - [`init`] creates a hub data directory.
//! - [`run`] serves it.
//! - [`tokens`] creates enrollment tokens on the hub's machine.
//! - [`gc`] removes content no published version references.

pub mod api;
pub mod config;
pub mod error;
pub mod gc;
pub mod init;
mod layout;
mod publish;
pub mod run;
mod state;
pub mod tokens;

pub use config::HubConfig;
pub use error::HubError;
pub use layout::HubLayout;
pub use state::HubState;
