//! Pull-through: an agent asking for a signed version the relay does not
//! keep gets it, fetched once upstream (concurrent requests for it share
//! the transfer), then kept and served like a synced one.

use std::sync::Arc;

use axum::http::StatusCode;
use ferry_net::api::ErrorCode;
use ferry_serve::ApiError;
use tokio::sync::watch;

use crate::sync::{blocking, fetch_version, split_target};
use crate::{RelayError, RelayState};

/// A pull in flight: its outcome once it ended (`Err` holds the reason).
pub(crate) type InFlight = watch::Receiver<Option<Result<(), String>>>;

/// Gets `target` from upstream unless it is served already; waits for a
/// pull of the same target in flight instead of starting another. The
/// transfer runs on its own task, so a request that gives up does not
/// stop it: the next request finds the version served.
pub(crate) async fn pull(state: &Arc<RelayState>, target: &str) -> Result<(), ApiError> {
    let mut outcome = {
        let mut pulls = state.pulls.lock().unwrap_or_else(|p| p.into_inner());
        match pulls.get(target) {
            Some(rx) => rx.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                pulls.insert(target.to_owned(), rx.clone());
                let (state, target) = (state.clone(), target.to_owned());
                tokio::spawn(async move {
                    let result = pull_target(&state, &target).await;
                    if let Err(e) = &result {
                        tracing::warn!(%target, "pull-through failed: {e}");
                    }
                    state
                        .pulls
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&target);
                    tx.send_replace(Some(result.map_err(|e| e.to_string())));
                });
                rx
            }
        }
    };
    let ended = outcome
        .wait_for(Option::is_some)
        .await
        .map_err(|_| ApiError::internal("a pull-through task stopped"))?
        .clone();
    match ended {
        Some(Ok(())) | None => Ok(()),
        Some(Err(reason)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamUnavailable,
            format!("this relay could not get {target} from its upstream: {reason}"),
        )),
    }
}

async fn pull_target(state: &Arc<RelayState>, target: &str) -> Result<(), RelayError> {
    let _fetching = state.fetching.lock().await;
    if state.snapshots.served().contains(target) {
        return Ok(());
    }
    let (name, version) = split_target(target)
        .ok_or_else(|| RelayError::DataDir(format!("{target:?} does not name a version")))?;
    // Only versions the metadata agents were served signs: an agent asks
    // for nothing else, and anything else is not this relay's to fetch.
    let signed = {
        let (state, target) = (state.clone(), target.to_owned());
        blocking(move || {
            Ok(state
                .snapshots
                .served_file(&format!("{}.targets.json", served_targets_version(&state)))
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .is_some_and(|doc| doc["signed"]["targets"].get(&target).is_some()))
        })
        .await?
    };
    if !signed {
        return Err(RelayError::DataDir(format!(
            "{target} is not signed in the metadata this relay serves"
        )));
    }
    // One pull-through is judged as a whole, like a sync.
    let upstream = state.upstream.clone().sharing_pace();
    let repo = ferry_transfer::load_repository(&state.creds, &upstream).await?;
    let fetched = fetch_version(state, &upstream, &repo, &name, &version, None).await?;
    tracing::info!(
        %target,
        chunk_bytes = fetched.objects.bytes_downloaded,
        "pulled through"
    );
    let (snapshots_state, pulled) = (state.clone(), target.to_owned());
    blocking(move || {
        use ferry_catalog::CacheIndex as _;
        // Asked for again: no longer evicted.
        snapshots_state
            .catalog
            .set_evicted(std::slice::from_ref(&pulled), false)?;
        snapshots_state.snapshots.add_pulled(&pulled)
    })
    .await?;
    let name = name.to_string();
    let (wan, full) = (
        fetched.objects.bytes_downloaded
            + fetched.objects.bytes_delta
            + fetched.manifest.bytes_received,
        fetched.total_size,
    );
    state
        .update_status(move |s| {
            let t = s.packages.entry(name).or_default();
            t.wan_bytes += wan;
            t.full_bytes += full;
        })
        .await;
    Ok(())
}

fn served_targets_version(state: &RelayState) -> u64 {
    state
        .snapshots
        .info()
        .map(|i| i.targets_version)
        .unwrap_or_default()
}
