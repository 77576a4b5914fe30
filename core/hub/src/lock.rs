//! One process at a time works on a hub data directory: `ferry hub run`
//! holds `hub.lock` for as long as it serves, and offline commands that
//! change what the running hub relies on (collection, key rotation) take
//! it too, so they refuse to run beside a live hub instead of racing it.

use std::fs::{File, TryLockError};
use std::path::Path;

use crate::{HubError, HubLayout};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct HubLock(#[allow(dead_code, reason = "held for its Drop")] File);

/// Takes the data directory's lock, or says who holds it.
pub fn lock(data: &Path) -> Result<HubLock, HubError> {
    let path = HubLayout::new(data).lock();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| HubError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(HubLock(file)),
        Err(TryLockError::WouldBlock) => Err(HubError::DataDir(format!(
            "another process is using the hub in {} (it holds {}); stop `ferry hub run` first",
            data.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(HubError::io(&path, e)),
    }
}
