//! Enrollment tokens, created on the hub's machine with direct access to its
//! data directory (no network API can mint one).

use std::path::Path;
use std::time::Duration;

use ferry_catalog::{Enrollment, Role, SqliteCatalog, TokenRecord};
use ferry_net::{CertificateAuthority, EnrollmentToken};

use crate::{HubError, HubLayout};

/// A freshly created token and what it allows.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    /// The full token text to hand to the enrolling client.
    pub token: EnrollmentToken,
    /// Role it enrolls.
    pub role: Role,
    /// Site it enrolls into.
    pub site: Option<String>,
    /// Unix time it expires.
    pub expires_at: i64,
}

/// Validates a site name: the same rules as package names.
pub fn validate_site(site: &str) -> Result<(), HubError> {
    ferry_content::PackageName::new(site)
        .map(|_| ())
        .map_err(|_| {
            HubError::DataDir(format!(
                "invalid site name {site:?}: use 1-64 characters of a-z, 0-9, '-', '_' or '.'"
            ))
        })
}

/// Creates a one-time token for `role` (and `site`) valid for `lifetime`.
pub fn create_token(
    data: &Path,
    role: Role,
    site: Option<String>,
    lifetime: Duration,
) -> Result<CreatedToken, HubError> {
    let layout = HubLayout::new(data);
    if !layout.config().exists() {
        return Err(HubError::DataDir(format!(
            "{} is not a hub data directory; run this on the hub's machine with --data pointing at the hub's data directory",
            data.display()
        )));
    }
    if lifetime.is_zero() {
        return Err(HubError::DataDir(
            "--expires must be longer than zero (e.g. 30m, 24h, 7d)".into(),
        ));
    }
    if let Some(site) = &site {
        validate_site(site)?;
    }
    if role != Role::Publisher && site.is_none() {
        return Err(HubError::DataDir(format!(
            "a {role} token needs --site NAME: relays and agents belong to a site"
        )));
    }
    let ca = CertificateAuthority::load(&layout.tls())?;
    let root = ferry_trust::latest_root_bytes(&layout.tuf())?;
    let token = EnrollmentToken::generate(ca.fingerprint()?, ferry_content::Digest::of(&root).0);
    let now = chrono::Utc::now().timestamp();
    let expires_at = now.saturating_add(lifetime.as_secs().min(i64::MAX as u64) as i64);
    let catalog = SqliteCatalog::open(&layout.catalog())?;
    catalog.insert_token(&TokenRecord {
        id: token.id.clone(),
        secret_sha256: token.secret_sha256(),
        role,
        site: site.clone(),
        created_at: now,
        expires_at,
    })?;
    Ok(CreatedToken {
        token,
        role,
        site,
        expires_at,
    })
}
