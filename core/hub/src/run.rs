//! `ferry hub run`: serve a hub data directory.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::{HubError, HubState, api, gc};

/// Options of `ferry hub run` that override `hub.toml`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
}

/// Serves the hub in `data` until `shutdown` resolves. `ready` is called with
/// the bound address once the hub accepts connections.
pub async fn run(
    data: &Path,
    options: RunOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), HubError> {
    let _lock = crate::lock::lock(data)?;
    let state = Arc::new(HubState::open(data)?);
    sync_metadata(&state).await?;

    let tls_dir = state.layout.tls();
    let read = |name: &str| {
        let path = tls_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| HubError::io(&path, e))
    };
    let tls =
        ferry_net::server_config(&read("ca.pem")?, &read("server.pem")?, &read("server.key")?)?;
    let listen = options.listen.unwrap_or(state.config.listen);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        HubError::DataDir(format!(
            "cannot listen on {listen}: {e}; pick another address with --listen or `listen` in hub.toml"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| HubError::DataDir(format!("listener has no address: {e}")))?;

    let refresher = tokio::spawn(refresh_loop(state.clone()));
    let collector = tokio::spawn(gc_loop(state.clone()));
    tracing::info!(%bound, data = %data.display(), "hub serving");
    ready(bound);
    ferry_net::serve(listener, tls, api::router(state), shutdown).await;
    refresher.abort();
    collector.abort();
    Ok(())
}

/// Makes the served metadata list exactly the catalog's versions, and fresh.
/// A crash between a catalog commit and re-signing is repaired here.
async fn sync_metadata(state: &HubState) -> Result<(), HubError> {
    let _guard = state.metadata_lock.lock().await;
    if let Some(version) = state.refresh().await? {
        tracing::info!(version, "metadata re-signed at start-up");
    }
    for warning in state.expiry_warnings() {
        tracing::warn!("{warning}");
    }
    match state.refresh_revocations().await? {
        Some(version) => tracing::info!(version, "revocation list signed"),
        None if state.tuf.control_key()?.is_none() => tracing::warn!(
            "this hub has no control key, so relays get no signed revocation list; add one with \
             `ferry hub rotate-key --role control` (hub stopped, root key present)"
        ),
        None => {}
    }
    Ok(())
}

/// Re-signs every role before it expires, and repeats, hourly, the warning
/// that root cannot be renewed while its key is offline.
async fn refresh_loop(state: Arc<HubState>) {
    let period = (state.config.tuf.shortest() / 8)
        .clamp(Duration::from_millis(200), Duration::from_secs(60));
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(period).await;
        let guard = state.metadata_lock.lock().await;
        match state.refresh().await {
            Ok(Some(v)) => tracing::info!(version = v, "metadata re-signed before expiry"),
            Ok(None) => {}
            Err(e) => tracing::error!("re-signing metadata failed: {e}"),
        }
        drop(guard);
        match state.refresh_revocations().await {
            Ok(Some(v)) => tracing::info!(version = v, "revocation list signed"),
            Ok(None) => {}
            Err(e) => tracing::error!("signing the revocation list failed: {e}"),
        }
        if let Err(e) = state.refresh_settings().await {
            tracing::error!("signing the settings again failed: {e}");
        }
        let warnings = state.expiry_warnings();
        if warnings.is_empty() {
            last_warning = None;
        } else if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_warning = Some(tokio::time::Instant::now());
            for warning in warnings {
                tracing::warn!("{warning}");
            }
        }
    }
}

async fn gc_loop(state: Arc<HubState>) {
    loop {
        tokio::time::sleep(state.config.gc.interval).await;
        match gc::collect(&state, state.config.gc.staged_max_age).await {
            Ok(r) if r.objects + r.staged_chunks + r.packs > 0 => tracing::info!(
                objects = r.objects,
                staged_chunks = r.staged_chunks,
                packs = r.packs,
                "garbage collected"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!("garbage collection failed: {e}"),
        }
    }
}
