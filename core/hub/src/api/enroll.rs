use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_catalog::ClientRecord;
use ferry_net::api::{EnrollRequest, EnrollResponse, Role};
use ferry_serve::blocking;

use super::ApiError;
use crate::HubState;

/// `GET /v1/ca`: the CA certificate. Public: a client checks it against the
/// fingerprint in its token before trusting it.
pub(super) async fn ca(State(state): State<Arc<HubState>>) -> String {
    state.ca.cert_pem().to_owned()
}

/// `POST /v1/enroll`: redeems a one-time token for a client certificate.
pub(super) async fn enroll(
    State(state): State<Arc<HubState>>,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let secret: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&req.token_secret)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("token secret is malformed"))?;
    let hint = req
        .hostname
        .as_deref()
        .map(|h| {
            h.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(40)
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "client".into());
    let client_id = format!("{hint}-{}", hex::encode(rand::random::<[u8; 4]>()));
    // Check the token before signing anything, so a bad token costs no
    // certificate; redemption below is the atomic, authoritative check.
    let now = chrono::Utc::now().timestamp();
    let secret_sha256 = ferry_content::Digest::of(&secret).0;
    let catalog = state.catalog.clone();
    let token_id = req.token_id.clone();
    let token = blocking(move || Ok(catalog.peek_token(&token_id, &secret_sha256, now)?)).await?;
    if !req.server_names.is_empty() && token.role != Role::Relay {
        return Err(ApiError::bad_request(format!(
            "only relays serve TLS; a {} enrolls without server names",
            token.role
        )));
    }
    let cert_pem = state
        .ca
        .sign_client_csr(
            &req.csr_pem,
            &client_id,
            token.role.as_str(),
            token.site.as_deref(),
            &req.server_names,
            state.config.client_cert_days,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let der = ferry_net::pem_cert_der(&cert_pem).map_err(|e| ApiError::internal(e.to_string()))?;
    let record = ClientRecord {
        id: client_id.clone(),
        role: token.role,
        site: token.site.clone(),
        cert_sha256: ferry_net::cert_sha256(&der),
        enrolled_at: now,
        revoked_at: None,
    };
    let catalog = state.catalog.clone();
    let tuf = state.tuf.clone();
    let token_id = req.token_id.clone();
    let (token, root) = blocking(move || {
        let token = catalog.redeem_token(&token_id, &secret_sha256, now, &record)?;
        let root = tuf
            .root_bytes()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((token, root))
    })
    .await?;
    let tuf_root =
        String::from_utf8(root).map_err(|_| ApiError::internal("root metadata is not UTF-8"))?;
    tracing::info!(client = %client_id, role = %token.role, site = ?token.site, "enrolled");
    Ok(Json(EnrollResponse {
        client_id,
        role: token.role.to_string(),
        site: token.site,
        cert_pem,
        ca_pem: state.ca.cert_pem().to_owned(),
        tuf_root,
    }))
}
