//! Key rotation, run on the hub's machine while the hub is stopped.

use std::path::Path;

use crate::{HubError, HubState};

/// Replaces the signing key of `role` and re-signs the metadata with it.
/// Returns the new root metadata version.
pub async fn rotate(data: &Path, role: &str) -> Result<u64, HubError> {
    let _lock = crate::lock::lock(data)?;
    let state = HubState::open(data)?;
    let _metadata = state.metadata_lock.lock().await;
    let root_version = state.tuf.rotate_key(role).await?;
    state.resign().await?;
    tracing::info!(role, root_version, "signing key rotated");
    Ok(root_version)
}
