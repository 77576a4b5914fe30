//! Ferry's plugin SDK: write transport, schedule, election and installer
//! plugins as WebAssembly components.
//!
//! A plugin is a `cdylib` crate built with `cargo build --target
//! wasm32-wasip2`. It implements the trait of its kind and exports it with the
//! kind's macro:
//!
//! ```no_run
//! use ferry_plugin_sdk::election::{ElectionPolicy, ElectionRequest};
//!
//! struct Oldest;
//!
//! impl ElectionPolicy for Oldest {
//!     fn elect(request: ElectionRequest) -> Result<String, String> {
//!         request
//!             .volunteers
//!             .iter()
//!             .max_by(|a, b| a.uptime_secs.cmp(&b.uptime_secs).then(b.id.cmp(&a.id)))
//!             .map(|c| c.id.clone())
//!             .ok_or_else(|| "no volunteers".to_string())
//!     }
//! }
//!
//! ferry_plugin_sdk::export_election!(Oldest);
//! ```
//!
//! The same code compiles natively, where the host functions ([`config`],
//! [`log`], [`now`], and the installer's) are served by [`testing`], so a
//! plugin's logic can be unit-tested with `cargo test`.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings;
mod host;
pub mod testing;

pub use bindings::ferry::plugin::types::{LogLevel, Timestamp};
pub use host::{config, config_text, debug, error, info, log, now, warn};

/// The contract version this SDK builds plugins against.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// Transport policies: where an agent gets a package's bytes from.
pub mod transport {
    pub use crate::bindings::transport::exports::ferry::plugin::transport::{
        Guest as TransportPolicy, PlannedSource, Source, SourceHealth, TaskOptions, TransportPlan,
        TransportRequest,
    };
}

/// Sync schedules: when a relay syncs next and how fast.
pub mod schedule {
    pub use crate::bindings::schedule::exports::ferry::plugin::schedule::{
        Guest as SyncSchedule, LastSync, ScheduleDecision, ScheduleRequest, SyncOutcome,
    };
}

/// Election policies: which agent of a subnet becomes the representative.
pub mod election {
    pub use crate::bindings::election::exports::ferry::plugin::election::{
        Candidate, ElectionRequest, Guest as ElectionPolicy,
    };
}

/// Installers: what installing, removing and verifying a package means.
pub mod installer {
    pub use crate::bindings::installer::exports::ferry::plugin::install::{
        Guest as Installer, InstallReport, InstallRequest, StagedFile, VerifyReport,
    };
    pub use crate::host::{CommandOutput, progress, run_command, set_mode};
}

/// Exports a [`transport::TransportPolicy`] implementation as the plugin's
/// transport policy.
#[macro_export]
macro_rules! export_transport {
    ($ty:ident) => {
        // Only in the component: natively the crate is built for its unit
        // tests, and a native cdylib's linker rejects export names with ':'.
        #[cfg(target_family = "wasm")]
        $crate::bindings::transport::__export_transport_world!($ty with_types_in $crate::bindings::transport);
    };
}

/// Exports a [`schedule::SyncSchedule`] implementation as the plugin's sync
/// schedule.
#[macro_export]
macro_rules! export_schedule {
    ($ty:ident) => {
        // Only in the component: natively the crate is built for its unit
        // tests, and a native cdylib's linker rejects export names with ':'.
        #[cfg(target_family = "wasm")]
        $crate::bindings::schedule::__export_schedule_world!($ty with_types_in $crate::bindings::schedule);
    };
}

/// Exports an [`election::ElectionPolicy`] implementation as the plugin's
/// election policy.
#[macro_export]
macro_rules! export_election {
    ($ty:ident) => {
        // Only in the component: natively the crate is built for its unit
        // tests, and a native cdylib's linker rejects export names with ':'.
        #[cfg(target_family = "wasm")]
        $crate::bindings::election::__export_election_world!($ty with_types_in $crate::bindings::election);
    };
}

/// Exports an [`installer::Installer`] implementation as the plugin's
/// installer.
#[macro_export]
macro_rules! export_installer {
    ($ty:ident) => {
        // Only in the component: natively the crate is built for its unit
        // tests, and a native cdylib's linker rejects export names with ':'.
        #[cfg(target_family = "wasm")]
        $crate::bindings::installer::__export_installer_world!($ty with_types_in $crate::bindings::installer);
    };
}
