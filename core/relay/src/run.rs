//! `ferry relay run`: serve the office's agents and sync with the upstream
//! when the schedule plugin says (or when asked).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_catalog::ReportStore;
use ferry_net::Rate;
use ferry_net::api::{EnrollRequest, EnrollResponse, ErrorCode, MetadataVersion, routes};
use ferry_plugin::{BuiltinPlugin, LastSync, PluginEngine, Registry, ScheduleRequest, SyncOutcome};
use ferry_serve::{ApiError, Authentication, Caller};
use tokio::sync::{Notify, watch};

use crate::source::RelaySource;
use crate::status::{NextSync, Outcome, SyncRecord};
use crate::sync::Mode;
use crate::{RelayError, RelayState};

/// Options of `ferry relay run` that override `relay.toml`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
}

/// Serves the relay in `data` until `shutdown` resolves, syncing in the
/// background. `builtins` are the plugins embedded in the binary (the
/// default schedule among them); `ready` is called with the bound address
/// once the relay accepts connections.
pub async fn run(
    data: &Path,
    options: RunOptions,
    builtins: &'static [BuiltinPlugin],
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    let _lock = crate::lock(data)?;
    let state = Arc::new(RelayState::open(data).await?);
    let settings = state.config.plugins.clone();
    let cache = data.join("plugin-cache");
    let registry = tokio::task::spawn_blocking(move || {
        let engine = PluginEngine::new(Some(cache))?;
        Registry::new(engine, settings, builtins)
    })
    .await
    .map_err(|e| RelayError::DataDir(format!("loading plugins failed: {e}")))??;
    let (registry, report) = registry;
    for failed in &report.failed {
        tracing::warn!("site plugin not loaded: {failed}");
    }
    let registry = Arc::new(registry);
    let _watch = registry.watch();

    let creds = &state.creds;
    let tls = ferry_net::server_config(&creds.ca_pem, &creds.cert_pem, &creds.key_pem)?;
    let listen = options.listen.unwrap_or(state.config.listen);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        RelayError::DataDir(format!(
            "cannot listen on {listen}: {e}; pick another address with --listen or `listen` in relay.toml"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| RelayError::DataDir(format!("listener has no address: {e}")))?;
    let control = Arc::new(SyncControl::default());
    state
        .update_status(|s| {
            s.address = Some(bound.to_string());
            s.pid = Some(std::process::id());
        })
        .await;
    let registry_for_settings = registry.clone();
    let syncer = tokio::spawn(sync_loop(state.clone(), registry, control.clone()));
    let watcher = tokio::spawn(watch_upstream(state.clone(), control.clone()));
    let forwarder = tokio::spawn(forward_reports(state.clone()));
    let tasks = tokio::spawn(crate::tasks::watch_tasks(state.clone()));
    let settings = tokio::spawn(apply_settings(
        state.clone(),
        registry_for_settings,
        control.clone(),
    ));
    let counters = tokio::spawn(write_counters(state.clone()));
    tracing::info!(%bound, data = %data.display(), "relay serving");
    ready(bound);
    ferry_net::serve(listener, tls, router(state.clone(), control), shutdown).await;
    syncer.abort();
    watcher.abort();
    forwarder.abort();
    tasks.abort();
    settings.abort();
    counters.abort();
    state
        .update_status(|s| {
            s.address = None;
            s.pid = None;
            s.next_sync = None;
        })
        .await;
    Ok(())
}

/// Sync requests and the syncs that ran, so a request can wait for the
/// first sync that started after it.
#[derive(Default)]
struct SyncControl {
    requested: Notify,
    upstream_changed: Notify,
    /// The schedule plugin changed: ask it again.
    replan: Notify,
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Clone, Default)]
struct Progress {
    started: u64,
    finished: u64,
    last: Option<SyncRecord>,
}

impl SyncControl {
    /// Asks for a sync; returns the number the sync that answers it will
    /// have.
    fn request(&self) -> u64 {
        let next = self.progress.borrow().started + 1;
        self.requested.notify_one();
        next
    }

    async fn wait_for(&self, number: u64) -> Option<SyncRecord> {
        let mut rx = self.progress.subscribe();
        let progress = rx.wait_for(|p| p.finished >= number).await.ok()?;
        progress.last.clone()
    }
}

/// The relay's API: the shared read routes over what it synced, enrollment
/// passed on to the upstream, and its own sync trigger.
fn router(state: Arc<RelayState>, control: Arc<SyncControl>) -> Router {
    let lan = state.clone();
    let source = Arc::new(RelaySource::new(state.clone()));
    let auth = Authentication::new(source.clone());
    let reports = ferry_serve::reports::router(source.clone());
    let checkin = ferry_serve::checkin::router(source.clone());
    let own = Router::new()
        .route(routes::CA, get(ca))
        .route(routes::ENROLL, post(enroll))
        .route(routes::RELAY_SYNC, post(sync_now))
        .with_state((state, control));
    own.merge(reports)
        .merge(checkin)
        .merge(ferry_serve::router(source))
        .fallback(ferry_serve::not_found)
        .layer(axum::middleware::from_fn_with_state(lan, count_lan))
        .layer(auth.layer())
}

type Shared = (Arc<RelayState>, Arc<SyncControl>);

/// `GET /v1/ca`: the hub's CA, as pinned at enrollment (a client checks it
/// against the fingerprint in its token).
async fn ca(State((state, _)): State<Shared>) -> String {
    state.creds.ca_pem.clone()
}

/// `POST /v1/enroll`: passed on to the upstream, which passes it on to the
/// hub; only the hub redeems tokens and signs certificates.
async fn enroll(
    State((state, _)): State<Shared>,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    state
        .upstream
        .post_json(routes::relative(routes::ENROLL), &req)
        .await
        .map(Json)
        .map_err(upstream_error)
}

/// An upstream failure as this relay's answer: the upstream's own refusal
/// (a bad token) passes through with its code; not reaching it is
/// `upstream-unavailable`.
fn upstream_error(e: ferry_net::NetError) -> ApiError {
    match &e {
        ferry_net::NetError::Status {
            status,
            code,
            message,
            ..
        } => {
            let code = code
                .as_deref()
                .and_then(|c| serde_json::from_value(serde_json::Value::from(c)).ok())
                .unwrap_or(ErrorCode::Unknown);
            let status = axum::http::StatusCode::from_u16(*status)
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            ApiError::new(status, code, message.clone())
        }
        _ => ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamUnavailable,
            format!("this relay cannot reach its upstream: {e}; retry later"),
        ),
    }
}

#[derive(serde::Deserialize)]
struct SyncQuery {
    #[serde(default)]
    wait: bool,
}

/// `POST /v1/relay/sync[?wait=true]`: only the relay's own certificate
/// (`ferry relay sync` on its machine) may ask.
async fn sync_now(
    State((state, control)): State<Shared>,
    caller: Caller,
    Query(query): Query<SyncQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if caller.0.id != state.creds.info.id {
        return Err(ApiError::forbidden(format!(
            "only the relay itself may start its sync; run `ferry relay sync --data DIR` on \
             its machine (client {} asked)",
            caller.0.id
        )));
    }
    let number = control.request();
    if !query.wait {
        return Ok(Json(serde_json::json!({ "requested": number })));
    }
    let record = control
        .wait_for(number)
        .await
        .ok_or_else(|| ApiError::internal("the relay stopped before the sync ended"))?;
    Ok(Json(
        serde_json::to_value(record).expect("records serialize"),
    ))
}

/// Counts every body byte the relay serves on its LAN.
async fn count_lan(
    State(state): State<Arc<RelayState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures_util::StreamExt as _;
    let package = request
        .headers()
        .get(ferry_net::api::PACKAGE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|name| state.lan_counter(name));
    let (parts, body) = next.run(request).await.into_parts();
    let counted = body.into_data_stream().map(move |piece| {
        if let Ok(bytes) = &piece {
            state.count_lan(bytes.len() as u64);
            if let Some(counter) = &package {
                counter.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        piece
    });
    axum::response::Response::from_parts(parts, axum::body::Body::from_stream(counted))
}

/// Writes the traffic counters to the status file every few seconds while
/// they move, so `ferry relay status` shows them between syncs.
async fn write_counters(state: Arc<RelayState>) {
    let mut last = (0, 0, 0);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s = state.status();
        let now = (s.wan.received, s.wan.sent, s.lan_served);
        if now != last {
            last = now;
            state.update_status(|_| {}).await;
        }
    }
}

/// Reports forwarded per request.
const FORWARD_BATCH: usize = 500;

/// Passes the outbox's reports upstream, oldest first, in batches, and
/// removes each batch once the upstream acknowledged it (it is durable
/// there). While the upstream is unreachable they wait, across restarts;
/// a batch resent after a lost acknowledgement is applied once upstream,
/// by report id.
async fn forward_reports(state: Arc<RelayState>) {
    let mut failures = 0u32;
    loop {
        let oldest = {
            let state = state.clone();
            tokio::task::spawn_blocking(move || {
                Ok::<_, ferry_catalog::CatalogError>((
                    state.catalog.oldest_reports(FORWARD_BATCH)?,
                    state.catalog.report_count()?,
                ))
            })
            .await
        };
        let (batch, pending) = match oldest {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::error!("cannot read the report outbox: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            Err(e) => {
                tracing::error!("the outbox reader failed: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        state.change_status(|s| s.outbox.pending = pending);
        if batch.is_empty() {
            state.update_status(|_| {}).await;
            tokio::select! {
                _ = state.reports_waiting.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            continue;
        }
        let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
        let sent = state
            .upstream
            .post_json::<_, ferry_net::api::ReportAck>(
                routes::relative(routes::REPORTS),
                &ferry_net::api::ReportBatch { reports: batch },
            )
            .await;
        match sent {
            Ok(_) => {
                failures = 0;
                let removed = {
                    let (state, ids) = (state.clone(), ids.clone());
                    tokio::task::spawn_blocking(move || state.catalog.remove_reports(&ids)).await
                };
                if !matches!(removed, Ok(Ok(()))) {
                    // Kept, so sent again: applied once upstream anyway.
                    tracing::error!("cannot remove forwarded reports from the outbox");
                }
                let n = ids.len() as u64;
                state
                    .update_status(|s| {
                        s.outbox.forwarded += n;
                        s.outbox.pending = s.outbox.pending.saturating_sub(n);
                        s.outbox.last_forwarded_at = Some(chrono::Utc::now().to_rfc3339());
                        s.outbox.last_error = None;
                    })
                    .await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_secs(1)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(60))
                    .mul_f64(0.75 + rand::random::<f64>() * 0.5);
                tracing::debug!("forwarding reports failed ({e}); retrying in {wait:?}");
                let reason = e.to_string();
                state
                    .update_status(|s| s.outbox.last_error = Some(reason))
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // The metadata watcher saw the upstream answer again.
                    _ = state.upstream_back.notified() => {}
                }
            }
        }
    }
}

/// Seconds an upstream holds a long-poll for new metadata.
const LONG_POLL_SECS: u64 = 20;

/// Learns of new upstream metadata within seconds: long-polls the
/// upstream's metadata version and says when it passes the one served
/// here. Where the long-poll fails (an upstream down, or a proxy cutting
/// held requests), it falls back to asking for a refresh after a back-off
/// of 2 s doubling to 60 s, which is a poll.
async fn watch_upstream(state: Arc<RelayState>, control: Arc<SyncControl>) {
    let mut after = *state.snapshots.version().borrow();
    let mut failures = 0u32;
    loop {
        // Answered before the client's own wait for headers runs out.
        let hold = LONG_POLL_SECS.min(state.config.sync.stall.as_secs().saturating_sub(5).max(1));
        let path = routes::metadata_wait(after, hold);
        match state.upstream.get_json::<MetadataVersion>(&path).await {
            Ok(seen) => {
                if failures > 0 {
                    state.upstream_back.notify_one();
                }
                failures = 0;
                if seen.version != after {
                    // Newer: refresh. Older (an upstream relay that has
                    // not caught up, or restored from backup): wait for
                    // its next change instead of spinning.
                    if seen.version > after {
                        control.upstream_changed.notify_one();
                    }
                    after = seen.version;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_secs(2)
                    .saturating_mul(1 << failures.min(5))
                    .min(Duration::from_secs(60))
                    .mul_f64(0.75 + rand::random::<f64>() * 0.5);
                tracing::debug!("long-poll of the upstream failed ({e}); polling in {wait:?}");
                tokio::time::sleep(wait).await;
                control.upstream_changed.notify_one();
            }
        }
    }
}

/// Takes the schedule plugin the hub's signed settings name for this relay
/// (`plugins.schedule` in its `site:` or `agent:` scope, over
/// `relay.toml`'s) whenever they change: verified against the hub's
/// control key, never an older version than the one applied.
async fn apply_settings(
    state: Arc<RelayState>,
    registry: Arc<Registry>,
    control: Arc<SyncControl>,
) {
    let mut applied = 0u64;
    loop {
        if let Some((version, document)) = state.tasks.settings()
            && version > applied
        {
            match verified_schedule(&state, &document).await {
                Ok((version, schedule)) if version > applied => {
                    applied = version;
                    match registry.choose(ferry_plugin::Kind::Schedule, schedule.as_deref()) {
                        Ok(()) => {
                            tracing::info!(
                                schedule = registry
                                    .policy_name(ferry_plugin::Kind::Schedule)
                                    .unwrap_or_default(),
                                version,
                                "settings applied"
                            );
                            control.replan.notify_one();
                        }
                        Err(e) => tracing::warn!("settings: {e}"),
                    }
                }
                Ok((version, _)) => tracing::warn!(
                    "settings of version {version} refused: version {applied} is applied (a replay)"
                ),
                Err(e) => {
                    tracing::warn!("settings refused or not checked ({e}); again in a minute");
                    tokio::select! {
                        _ = state.tasks.settings_changed.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                    continue;
                }
            }
        }
        state.tasks.settings_changed.notified().await;
    }
}

/// The version and this relay's `plugins.schedule` of a settings document,
/// once it verifies against the control key the hub's root names.
async fn verified_schedule(
    state: &Arc<RelayState>,
    document: &str,
) -> Result<(u64, Option<String>), String> {
    let repo = ferry_transfer::load_repository(&state.creds, &state.upstream)
        .await
        .map_err(|e| e.to_string())?;
    // Signature checks are CPU work: off the async threads.
    let document = document.to_owned();
    let doc = tokio::task::spawn_blocking(move || {
        repo.verify_document(document.as_bytes(), ferry_net::settings::SETTINGS_DOCUMENT)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let body: ferry_net::settings::Settings =
        serde_json::from_value(doc.body).map_err(|e| e.to_string())?;
    let resolved = body.resolve(&state.creds.info.id, state.creds.info.site.as_deref(), None);
    let typed = ferry_net::settings::AgentSettings::from_resolved(&resolved);
    Ok((doc.version, typed.schedule))
}

/// Asks the schedule plugin when to sync and at what cap, waits, syncs,
/// and asks again. New upstream metadata is fetched at once; if content
/// the relay keeps is missing, the plugin hears of the backlog and decides
/// when it moves. After failures in a row, the next attempt waits at
/// least a doubling back-off with jitter, whatever the plugin says; a
/// request (`ferry relay sync`) tells the plugin the sync is urgent.
async fn sync_loop(state: Arc<RelayState>, registry: Arc<Registry>, control: Arc<SyncControl>) {
    let mut failures = 0u32;
    let mut urgent = false;
    let mut backlog = 0u64;
    loop {
        let now = unix_now();
        let request = ScheduleRequest {
            now,
            utc_offset_minutes: chrono::Local::now().offset().local_minus_utc() / 60,
            last_sync: state.status().last_sync.as_ref().and_then(last_sync),
            backlog_bytes: backlog,
            urgent,
        };
        let asked = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || registry.schedule(&request)).await
        };
        let (next, cap_until, decided_by, fallback, rate) = match asked {
            Ok(Ok(d)) => (
                d.value.next_sync,
                d.value.cap_until,
                d.plugin,
                d.fallback,
                Rate::from_bits_per_second(d.value.bandwidth_cap_bps),
            ),
            // Not even the built-in schedule answered: keep the link's
            // rate and ask again after the longest back-off.
            Ok(Err(e)) => {
                tracing::error!("no schedule plugin decided: {e}");
                let later = now + state.config.sync.retry_max.as_secs();
                (
                    later,
                    later,
                    "none".into(),
                    Some(e.to_string()),
                    state.link.rate(),
                )
            }
            Err(e) => {
                tracing::error!("the schedule call failed: {e}");
                let later = now + state.config.sync.retry_max.as_secs();
                (later, later, "none".into(), None, state.link.rate())
            }
        };
        state.link.set_rate(rate);
        let floor = if failures > 0 && !urgent {
            now + backoff(&state, failures).as_secs()
        } else {
            now
        };
        let at = next.max(floor);
        let reason = if at > next {
            format!("retry after {failures} failed sync(s)")
        } else if urgent {
            "requested".to_owned()
        } else {
            "schedule".to_owned()
        };
        let trigger = if urgent { "request" } else { "schedule" };
        let shown = NextSync {
            at: rfc3339(at),
            decided_by,
            fallback,
            cap: rate.to_string(),
            reason,
        };
        state.update_status(|s| s.next_sync = Some(shown)).await;
        let wake = at.min(cap_until.max(now + 1));
        tokio::select! {
            // A request is never lost to a refresh that is also ready.
            biased;
            _ = control.requested.notified() => {
                urgent = true;
                continue;
            }
            _ = sleep_until_unix(wake) => {}
            _ = control.replan.notified() => continue,
            _ = control.upstream_changed.notified() => {
                match crate::sync::sync(&state, "upstream-changed", Mode::MetadataOnly).await {
                    Ok(record) => {
                        backlog = 0;
                        failures = next_failures(failures, &record);
                    }
                    Err(missing) => backlog = missing,
                }
                continue;
            }
        }
        if unix_now() < at {
            continue;
        }
        urgent = false;
        control.progress.send_modify(|p| p.started += 1);
        let record = match crate::sync::sync(&state, trigger, Mode::Full).await {
            Ok(record) => record,
            Err(_) => unreachable!("a full sync switches or fails"),
        };
        failures = next_failures(failures, &record);
        if record.outcome == Outcome::Succeeded {
            backlog = 0;
        }
        control.progress.send_modify(|p| {
            p.finished = p.started;
            p.last = Some(record);
        });
    }
}

fn next_failures(failures: u32, record: &SyncRecord) -> u32 {
    match record.outcome {
        Outcome::Succeeded => 0,
        _ => failures.saturating_add(1),
    }
}

/// Back-off after `failures` failed syncs in a row: `retry-min` doubled
/// per failure up to `retry-max`, then between 75% and 125% of that, so
/// relays that failed together do not retry together.
fn backoff(state: &RelayState, failures: u32) -> Duration {
    let sync = &state.config.sync;
    let base = sync
        .retry_min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(sync.retry_max);
    base.mul_f64(0.75 + rand::random::<f64>() * 0.5)
}

fn last_sync(record: &SyncRecord) -> Option<LastSync> {
    let secs = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.timestamp().max(0) as u64)
    };
    Some(LastSync {
        started: secs(&record.started)?,
        finished: secs(&record.finished)?,
        outcome: match record.outcome {
            Outcome::Succeeded => SyncOutcome::Succeeded,
            Outcome::Partial => SyncOutcome::Partial,
            Outcome::Failed => SyncOutcome::Failed,
        },
        error: record.error.clone(),
        bytes: record.wan_bytes,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn rfc3339(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// Sleeps until a wall-clock time (schedules are in wall-clock seconds).
async fn sleep_until_unix(at: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let target = Duration::from_secs(at);
    if target > now {
        tokio::time::sleep(target - now).await;
    }
}
