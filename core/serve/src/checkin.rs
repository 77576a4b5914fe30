//! `POST /v1/checkin`: agents (and relays, for their site's agents) learn
//! of their tasks through a held request that answers as soon as the task
//! list changes, never through a tight poll.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::post;
use axum::{Json, Router};
use ferry_net::api::{Role, routes};
use ferry_net::tasks::{CheckinRequest, CheckinResponse, MAX_CHECKIN_WAIT};
use serde::Deserialize;
use tokio::sync::watch;

use crate::{ApiError, Caller, ClientIdentity};

/// Where a role's signed tasks come from: the hub's own, or what a relay
/// heard from its upstream. Must not block.
pub trait TaskSource: Send + Sync + 'static {
    /// `hub` or `relay`, told to agents so they know what their server is.
    fn server_kind(&self) -> &'static str;
    /// The version of what check-ins answer; grows whenever a task or the
    /// settings change.
    fn task_version(&self) -> watch::Receiver<u64>;
    /// The unexpired signed task documents that may concern `caller`: an
    /// agent's own, or for a relay, those its site's agents may need.
    fn tasks_for(&self, caller: &ClientIdentity) -> Vec<String>;
    /// The hub's signed settings document with its version, if any; its
    /// changes grow [`TaskSource::task_version`] too. Shared, not copied:
    /// every check-in asks.
    fn settings(&self) -> Option<(u64, Arc<str>)>;
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait: u64,
}

/// The check-in route over `source`; mount it inside the role's
/// [`crate::Authentication::layer`].
pub fn router(source: Arc<dyn TaskSource>) -> Router {
    Router::new()
        .route(routes::CHECKIN, post(checkin))
        .with_state(source)
}

async fn checkin(
    State(source): State<Arc<dyn TaskSource>>,
    caller: Caller,
    Query(query): Query<WaitQuery>,
    Json(request): Json<CheckinRequest>,
) -> Result<Json<CheckinResponse>, ApiError> {
    caller.require(&[Role::Agent, Role::Relay], "checking in")?;
    let mut versions = source.task_version();
    let wait = std::time::Duration::from_secs(query.wait.min(MAX_CHECKIN_WAIT));
    // A caller behind on settings (one that came up to date on tasks while
    // this server had none) is answered at once.
    let behind = |held: &Option<(u64, Arc<str>)>| {
        held.as_ref()
            .is_some_and(|(version, _)| *version > request.settings)
    };
    if !behind(&source.settings()) {
        // A caller ahead of this server (which was reset, or whose own copy
        // was tampered with) is answered at once, so it takes this server's
        // list.
        let _ = tokio::time::timeout(wait, versions.wait_for(|v| *v != request.after)).await;
    }
    let version = *versions.borrow();
    let settings = source.settings();
    Ok(Json(CheckinResponse {
        version,
        server: source.server_kind().to_owned(),
        tasks: source.tasks_for(&caller.0),
        // A caller that holds these settings is not sent the document (up
        // to 1 MiB) again at every held check-in.
        settings: behind(&settings)
            .then_some(settings)
            .flatten()
            .map(|(_, document)| document.to_string()),
    }))
}
