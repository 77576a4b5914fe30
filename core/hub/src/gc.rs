//! Garbage collection: objects no published version references, and
//! uploaded chunks that waited too long for a publish.

use std::time::Duration;

use crate::{HubError, HubState};

/// What a collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Objects removed.
    pub objects: usize,
    /// Staged chunks removed.
    pub staged: usize,
}

/// Runs one collection. Takes the publish lock so no publish is assembling
/// from a chunk being removed.
pub async fn collect(state: &HubState, staged_max_age: Duration) -> Result<GcReport, HubError> {
    let _guard = state.publish_lock.lock().await;
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
    for digest in state.store.staged_older_than(staged_max_age)? {
        state.store.remove_staged(&digest)?;
        report.staged += 1;
    }
    Ok(report)
}
