use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
    recorded: Option<Recorded>,
}

/// Metadata files as a load read them, by file name.
type Recorded = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// Largest metadata file a recording load keeps in memory (tough's own
/// limit for targets metadata is the same).
const MAX_RECORDED_FILE: u64 = 64 << 20;

impl TufTransport {
    /// A transport over `client`.
    pub fn new(client: HubClient) -> Self {
        TufTransport {
            client,
            recorded: None,
        }
    }
}

#[tough::async_trait]
impl Transport for TufTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match self.client.get(&url, None).await {
            Ok(response) if self.recorded.is_some() => {
                // Kept whole, as received: what tough verifies is exactly
                // what a relay serves on.
                let bytes = self
                    .client
                    .read_limited(&url, response, MAX_RECORDED_FILE)
                    .await
                    .map_err(|e| {
                        TransportError::new_with_cause(TransportErrorKind::Other, url.clone(), e)
                    })?;
                if let (Some(recorded), Some(name)) = (
                    &self.recorded,
                    url.path_segments().and_then(|mut s| s.next_back()),
                ) {
                    recorded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.to_owned(), bytes.to_vec());
                }
                Ok(Box::pin(futures_util::stream::iter([Ok(bytes)])))
            }
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

/// [`load_repository`] that also returns the metadata files it read, by
/// file name (`timestamp.json`, `N.snapshot.json`, `N.targets.json`, new
/// `N.root.json`), byte for byte: a relay serves them on unchanged.
pub async fn load_repository_recorded(
    creds: &ClientCredentials,
    client: &HubClient,
) -> Result<(TrustedRepository, BTreeMap<String, Vec<u8>>), TransferError> {
    let metadata = client.url(routes::TUF_METADATA_DIR)?;
    let targets = client.url(routes::TUF_TARGETS_DIR)?;
    let recorded = Recorded::default();
    let transport = TufTransport {
        client: client.clone(),
        recorded: Some(recorded.clone()),
    };
    let repo = TrustedRepository::load(
        &creds.tuf_root,
        &creds.tuf_datastore(),
        metadata,
        targets,
        transport,
    )
    .await?;
    let files = std::mem::take(&mut *recorded.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((repo, files))
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
