//! The hub's `/v1` API: the shared read side from [`ferry_serve`] over the
//! hub's catalog and store ([`HubSource`]), plus what only the hub does:
//! enrollment, uploads, publishing, withdrawal and tasks (see [`ferry_net::api`]
//! for the route list and bodies).

mod content;
mod enroll;
mod packages;
mod source;
mod tasks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use ferry_net::api::{MAX_MISSING_QUERY, MAX_PACK_BODY, routes};
use ferry_serve::Authentication;

pub use ferry_serve::{ApiError, Caller};
pub use source::HubSource;

use crate::{HubError, HubState};

/// Largest manifest upload accepted.
const MAX_MANIFEST_BODY: usize = ferry_content::MAX_MANIFEST_BYTES as usize;

/// Builds the API router.
pub fn router(state: Arc<HubState>) -> Router {
    let source = Arc::new(HubSource::new(state.clone()));
    let auth = Authentication::new(source.clone());
    let relays_cap = state.config.egress.relays_cap_bps;
    let hub_routes = Router::new()
        .route(routes::CA, get(enroll::ca))
        .route(routes::ENROLL, post(enroll::enroll))
        .route(
            routes::CHUNKS_MISSING,
            post(content::missing_chunks).layer(DefaultBodyLimit::max(MAX_MISSING_QUERY * 32)),
        )
        .route(
            routes::CHUNKS,
            post(content::upload_pack).layer(DefaultBodyLimit::max(MAX_PACK_BODY)),
        )
        .route(
            routes::PUBLISH,
            post(packages::publish).layer(DefaultBodyLimit::max(MAX_MANIFEST_BODY)),
        )
        .route(routes::PACKAGE_VERSION, delete(packages::unpublish))
        .route(routes::TASKS, post(tasks::create).get(tasks::list))
        .route(routes::TASK, get(tasks::show).delete(tasks::cancel))
        .route(
            routes::GROUPS,
            post(tasks::create_group).get(tasks::list_groups),
        )
        .route(routes::GROUP, post(tasks::change_group))
        .route(
            routes::SETTINGS,
            post(tasks::change_settings).get(tasks::settings),
        )
        .with_state(state);
    let router = hub_routes
        .merge(ferry_serve::reports::router(source.clone()))
        .merge(ferry_serve::checkin::router(source.clone()))
        .merge(ferry_serve::router(source))
        .fallback(ferry_serve::not_found);
    let router = match relays_cap {
        Some(bps) => router.layer(axum::middleware::from_fn_with_state(
            ferry_serve::egress::Egress::new(bps, &[ferry_net::api::Role::Relay]),
            ferry_serve::egress::pace,
        )),
        None => router,
    };
    router.layer(auth.layer())
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::Store(s) => s.into(),
            HubError::Catalog(c) => c.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}
