//! `POST /v1/reports`: agents' status reports, accepted once they are
//! durable where the serving role keeps them (the hub's catalog, a relay's
//! outbox).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use ferry_net::api::{
    MAX_REPORTS_PER_BATCH, MAX_REPORTS_REQUEST, Report, ReportAck, ReportBatch, Role, routes,
};

use crate::{ApiError, Caller, blocking};

/// Where a role keeps reports. May block.
pub trait ReportSink: Send + Sync + 'static {
    /// Keeps `reports` durably before returning; reports whose id is held
    /// already are not kept again. Returns how many were new.
    fn keep(&self, reports: Vec<Report>) -> Result<usize, ApiError>;
}

/// The report route over `sink`; mount it with the role's other routes
/// (inside [`crate::Authentication::layer`]).
pub fn router(sink: Arc<dyn ReportSink>) -> Router {
    Router::new()
        .route(
            routes::REPORTS,
            post(accept).layer(DefaultBodyLimit::max(MAX_REPORTS_REQUEST)),
        )
        .with_state(sink)
}

async fn accept(
    State(sink): State<Arc<dyn ReportSink>>,
    caller: Caller,
    Json(batch): Json<ReportBatch>,
) -> Result<Json<ReportAck>, ApiError> {
    caller.require(&[Role::Agent, Role::Relay], "sending reports")?;
    if batch.reports.len() > MAX_REPORTS_PER_BATCH {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_REPORTS_PER_BATCH} reports per request; send the rest in another"
        )));
    }
    for report in &batch.reports {
        report.check().map_err(ApiError::bad_request)?;
        // An agent speaks for itself only; a relay forwards its agents'.
        if caller.0.role == Role::Agent && report.agent != caller.0.id {
            return Err(ApiError::forbidden(format!(
                "report {} is about agent {}, but client {} sent it; an agent reports for itself",
                report.id, report.agent, caller.0.id
            )));
        }
    }
    let accepted = batch.reports.len();
    let new = blocking(move || sink.keep(batch.reports)).await?;
    Ok(Json(ReportAck { accepted, new }))
}
