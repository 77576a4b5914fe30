use std::sync::Arc;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use ferry_catalog::{ClientRecord, Role};
use ferry_net::Peer;

use super::ApiError;
use crate::HubState;

/// The enrolled, non-revoked client behind a request, identified by the
/// certificate it presented (rustls has checked it against the hub CA; the
/// catalog maps its fingerprint to a client, so revocation takes effect at
/// once).
#[derive(Debug, Clone)]
pub struct Caller(pub ClientRecord);

impl Caller {
    /// Refuses the call unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], action: &str) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            return Ok(());
        }
        let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{action} needs the {} role; client {} is enrolled as {}",
                wanted.join(" or "),
                self.0.id,
                self.0.role
            ),
        ))
    }
}

impl FromRequestParts<Arc<HubState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<HubState>,
    ) -> Result<Self, ApiError> {
        let fingerprint = parts
            .extensions
            .get::<Peer>()
            .and_then(|p| p.cert_sha256)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "no client certificate presented; enroll first with `ferry enroll --server URL --token TOKEN`",
                )
            })?;
        let client = state.catalog.client_by_cert(&fingerprint)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this client certificate is not enrolled with this hub; enroll again with a new token",
            )
        })?;
        if client.revoked_at.is_some() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "client {} has been revoked; ask the hub's admin for a new token",
                    client.id
                ),
            ));
        }
        Ok(Caller(client))
    }
}

/// `GET /v1/whoami`: the caller's own record.
pub(super) async fn whoami(caller: Caller) -> Json<ClientRecord> {
    Json(caller.0)
}
