//! The relay: a branch office's distribution server. It syncs what its
//! office needs from the hub (or from another relay) as a TUF client, when
//! its sync-schedule plugin says and within one WAN budget, keeps it, and
//! serves it to the office's agents with the hub's own API and signed
//! metadata, unchanged: agents verify every byte against the hub's root
//! and cannot tell a relay from the hub.
//!
//! - [`init::init`] enrolls and creates a data directory.
//! - [`run::run`] serves it and syncs in the background.
//! - [`RelayStatus`] is what `ferry relay status` shows.
//!
//! The relay uses building blocks, never the hub: `ferry_serve` for its LAN
//! side, `ferry_transfer` for its WAN side, `ferry_catalog` and
//! `ferry_store` for what it keeps, `ferry_plugin` for its schedule.

#![warn(missing_docs)]

mod cache;
pub mod config;
mod error;
pub mod init;
mod layout;
mod pull;
pub mod run;
mod snapshot;
mod source;
mod state;
pub mod status;
mod sync;
pub mod tasks;

use std::fs::{File, TryLockError};
use std::path::Path;

pub use config::RelayConfig;
pub use error::RelayError;
pub use layout::RelayLayout;
pub use snapshot::SnapshotInfo;
pub use source::RelaySource;
pub use state::RelayState;
pub use status::RelayStatus;

/// A held run lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RelayLock(#[allow(dead_code, reason = "held for its Drop")] File);

/// Whether a `ferry relay run` holds `data` now (a relay killed without
/// warning leaves its last address in the status file; this tells).
pub fn is_running(data: &Path) -> bool {
    let Ok(file) = File::open(RelayLayout::new(data).lock()) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

/// Takes the data directory's run lock, or says who holds it.
pub fn lock(data: &Path) -> Result<RelayLock, RelayError> {
    let path = RelayLayout::new(data).lock();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RelayError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(RelayLock(file)),
        Err(TryLockError::WouldBlock) => Err(RelayError::DataDir(format!(
            "another `ferry relay run` is using {} (it holds {})",
            data.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(RelayError::io(&path, e)),
    }
}
