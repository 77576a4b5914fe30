use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use ferry_net::Peer;
use ferry_net::api::{ErrorCode, Role};
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// Who an enrolled client is: what `GET /v1/whoami` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientIdentity {
    /// Client id (the certificate's common name).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its site, if any.
    pub site: Option<String>,
}

/// What an [`Authorizer`] knows of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// An enrolled client in good standing.
    Client(ClientIdentity),
    /// A certificate this server does not know.
    Unknown,
    /// A revoked client, by id.
    Revoked(String),
}

/// Who may read: maps a client certificate (TLS has already checked it
/// against the hub CA) to a client. May block.
pub trait Authorizer: Send + Sync + 'static {
    /// Looks a certificate up by its SHA-256 (the hub's client list) or
    /// its DER (the identity the CA signed into it, as a relay does).
    fn lookup(&self, cert_sha256: &[u8; 32], cert_der: &[u8]) -> Result<Lookup, ApiError>;
}

/// How long a looked-up certificate is trusted without asking the
/// [`Authorizer`] again: a revocation takes effect within this time, and a
/// busy client costs one lookup a second instead of one per request.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// Most certificates remembered; the cache is emptied when it is full.
const CACHE_MAX: usize = 1 << 16;

/// Authenticates requests through an [`Authorizer`], remembering answers
/// for a few seconds so a busy server does not query its database on every
/// request.
pub struct Authentication {
    authorizer: Arc<dyn Authorizer>,
    cache: Mutex<HashMap<[u8; 32], (Instant, Lookup)>>,
}

impl Authentication {
    /// Authentication through `authorizer`.
    pub fn new(authorizer: Arc<dyn Authorizer>) -> Arc<Self> {
        Arc::new(Authentication {
            authorizer,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// A layer that lets handlers extract [`Caller`].
    pub fn layer(self: &Arc<Self>) -> axum::Extension<Arc<Authentication>> {
        axum::Extension(self.clone())
    }

    async fn lookup(self: &Arc<Self>, cert: [u8; 32], der: Arc<[u8]>) -> Result<Lookup, ApiError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, found)) = cache.get(&cert)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(found.clone());
            }
        }
        let authorizer = self.authorizer.clone();
        let found = crate::blocking(move || authorizer.lookup(&cert, &der)).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(cert, (Instant::now(), found.clone()));
        Ok(found)
    }
}

/// The enrolled, non-revoked client behind a request.
#[derive(Debug, Clone)]
pub struct Caller(pub ClientIdentity);

impl Caller {
    /// Refuses the call unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], action: &str) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            return Ok(());
        }
        let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::forbidden(format!(
            "{action} needs the {} role; client {} is enrolled as {}",
            wanted.join(" or "),
            self.0.id,
            self.0.role
        )))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let auth = parts
            .extensions
            .get::<Arc<Authentication>>()
            .cloned()
            .ok_or_else(|| ApiError::internal("authentication layer missing from the router"))?;
        let (fingerprint, der) = parts
            .extensions
            .get::<Peer>()
            .and_then(|p| Some((p.cert_sha256?, p.cert_der.clone()?)))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthenticated,
                    "no client certificate presented; enroll first with `ferry enroll --server URL --token TOKEN`",
                )
            })?;
        match auth.lookup(fingerprint, der).await? {
            Lookup::Client(client) => Ok(Caller(client)),
            Lookup::Unknown => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "this client certificate is not enrolled with this hub; enroll again with a new token",
            )),
            Lookup::Revoked(id) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Revoked,
                format!("client {id} has been revoked; ask the hub's admin for a new token"),
            )),
        }
    }
}
