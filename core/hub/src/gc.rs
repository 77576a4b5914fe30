//! Garbage collection: objects no published version references, uploaded
//! chunks that waited too long for a publish, and staged packs that no
//! longer hold a chunk anyone waits for.

use std::collections::HashSet;
use std::time::Duration;

use crate::{HubError, HubState};

/// What a collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Objects removed.
    pub objects: usize,
    /// Staged chunks forgotten because no publish used them in time.
    pub staged_chunks: usize,
    /// Staged pack files removed.
    pub packs: usize,
}

/// Runs one collection.
pub async fn collect(state: &HubState, staged_max_age: Duration) -> Result<GcReport, HubError> {
    // No publish may decide an object exists and then see it vanish.
    let _metadata = state.metadata_lock.lock().await;
    let mut report = GcReport::default();
    for id in state.catalog.unreferenced_objects()? {
        // Catalog first: once the index forgets the object nothing serves
        // from it; a crash before the file is removed leaves only an orphan
        // file, collected below.
        state.catalog.delete_object(&id)?;
        state.store.remove_object(&id)?;
        report.objects += 1;
    }
    for id in state.store.objects()? {
        if !state.catalog.object_known(&id)? {
            state.store.remove_object(&id)?;
            report.objects += 1;
        }
    }
    // An age of zero reclaims every staged chunk, including this second's.
    let cutoff = if staged_max_age.is_zero() {
        i64::MAX
    } else {
        chrono::Utc::now().timestamp() - i64::try_from(staged_max_age.as_secs()).unwrap_or(i64::MAX)
    };
    report.staged_chunks = state.catalog.expire_staged(cutoff)?;
    report.packs = remove_dead_packs(state).await?;
    Ok(report)
}

/// Removes staged packs that hold no chunk still waiting for a publish.
pub(crate) async fn remove_dead_packs(state: &HubState) -> Result<usize, HubError> {
    let _staging = state.staging_lock.write().await;
    let live: HashSet<_> = state.catalog.live_packs()?.into_iter().collect();
    let mut removed = 0;
    for pack in state.store.staged_packs()? {
        if !live.contains(&pack) {
            state.store.remove_pack(&pack)?;
            removed += 1;
        }
    }
    Ok(removed)
}
