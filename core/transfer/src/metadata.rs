use ferry_content::PackageName;
use ferry_net::api::routes;
use ferry_net::{ClientCredentials, HubClient};
use ferry_trust::{
    Transport, TransportError, TransportErrorKind, TransportStream, TrustedRepository,
};
use futures_util::StreamExt;
use url::Url;

use crate::TransferError;

/// Fetches TUF metadata and targets over Ferry's HTTPS client, so tough's
/// requests use the pinned CA and this client's certificate.
#[derive(Debug, Clone)]
pub struct TufTransport {
    client: HubClient,
}

impl TufTransport {
    /// A transport over `client`.
    pub fn new(client: HubClient) -> Self {
        TufTransport { client }
    }
}

#[tough::async_trait]
impl Transport for TufTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match self.client.get(&url, None).await {
            Ok(response) => {
                // Paced: a source dripping metadata is dropped, not waited on.
                let u = url.clone();
                let stream = self.client.body(&url, response).map(move |piece| {
                    piece.map_err(|e| {
                        TransportError::new_with_cause(TransportErrorKind::Other, &u, e)
                    })
                });
                Ok(Box::pin(stream))
            }
            Err(e) if e.status() == Some(404) => {
                Err(TransportError::new(TransportErrorKind::FileNotFound, url))
            }
            Err(e) => Err(TransportError::new_with_cause(
                TransportErrorKind::Other,
                url,
                e,
            )),
        }
    }
}

/// Loads and verifies the repository metadata from `client`'s base URL (the
/// hub, or any mirror), starting from the credentials' pinned root and
/// refusing anything older than what was verified before.
pub async fn load_repository(
    creds: &ClientCredentials,
    client: &HubClient,
) -> Result<TrustedRepository, TransferError> {
    let metadata = client.url(routes::TUF_METADATA_DIR)?;
    let targets = client.url(routes::TUF_TARGETS_DIR)?;
    Ok(TrustedRepository::load(
        &creds.tuf_root,
        &creds.tuf_datastore(),
        metadata,
        targets,
        TufTransport::new(client.clone()),
    )
    .await?)
}

/// The newest signed version of `name` matching `req`.
pub fn resolve_version(
    repo: &TrustedRepository,
    name: &PackageName,
    req: &semver::VersionReq,
) -> Result<semver::Version, TransferError> {
    let prefix = format!("{name}@");
    repo.targets()
        .iter()
        .filter_map(|t| t.name.strip_prefix(&prefix)?.strip_suffix(".json"))
        .filter_map(|v| semver::Version::parse(v).ok())
        .filter(|v| req.matches(v))
        .max()
        .ok_or_else(|| {
            TransferError::NoSuchVersion(format!(
                "no signed version of {name} matches {req}; list them with `ferry packages {name}`"
            ))
        })
}
