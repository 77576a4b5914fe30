//! The `/v1` HTTP API (see [`ferry_net::api`] for the route list and bodies).

mod auth;
mod content;
mod enroll;
mod packages;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use ferry_net::api::{ErrorBody, MAX_MISSING_QUERY, MAX_PACK_BODY};

pub use auth::Caller;

use crate::{HubError, HubState};

/// Largest manifest upload accepted.
const MAX_MANIFEST_BODY: usize = ferry_content::MAX_MANIFEST_BYTES as usize;

/// Builds the API router.
pub fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route("/v1/ca", get(enroll::ca))
        .route("/v1/enroll", post(enroll::enroll))
        .route("/v1/whoami", get(auth::whoami))
        .route(
            "/v1/chunks/missing",
            post(content::missing_chunks).layer(DefaultBodyLimit::max(MAX_MISSING_QUERY * 32)),
        )
        .route(
            "/v1/chunks",
            post(content::upload_pack).layer(DefaultBodyLimit::max(MAX_PACK_BODY)),
        )
        .route("/v1/chunks/{digest}", get(content::get_chunk))
        .route(
            "/v1/publish",
            post(packages::publish).layer(DefaultBodyLimit::max(MAX_MANIFEST_BODY)),
        )
        .route("/v1/packages", get(packages::list))
        .route("/v1/packages/{name}/{version}", delete(packages::unpublish))
        .route("/v1/objects/{id}", get(content::get_object))
        .route("/v1/tuf/{file}", get(content::get_metadata))
        .route("/v1/tuf/targets/{file}", get(content::get_target))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such API route; see `ferry --help`",
            )
        })
        .with_state(state)
}

/// An API failure: a status and a message for the operator.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 500: logged, since the operator of the hub must act on it.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!("{message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<ferry_catalog::CatalogError> for ApiError {
    fn from(e: ferry_catalog::CatalogError) -> Self {
        use ferry_catalog::CatalogError as C;
        match e {
            C::DuplicateVersion { .. } => ApiError::conflict(e.to_string()),
            C::TokenInvalid | C::TokenUsed | C::TokenExpired(_) => {
                ApiError::new(StatusCode::FORBIDDEN, e.to_string())
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<ferry_store::StoreError> for ApiError {
    fn from(e: ferry_store::StoreError) -> Self {
        use ferry_store::StoreError as S;
        match e {
            S::DigestMismatch { .. } | S::BadPack(_) => ApiError::bad_request(e.to_string()),
            S::Missing(_) => ApiError::not_found(e.to_string()),
            S::OutOfRange { .. } => ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<ferry_trust::TrustError> for ApiError {
    fn from(e: ferry_trust::TrustError) -> Self {
        ApiError::internal(format!("signing metadata failed: {e}"))
    }
}
