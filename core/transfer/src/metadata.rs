use ferry_content::{Manifest, ManifestLimits, PackageName};
use ferry_net::{ClientCredentials, HubClient, NetError};
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

/// Largest compressed body accepted before decoding it.
const MAX_COMPRESSED: u64 = ferry_content::MAX_MANIFEST_BYTES;

#[tough::async_trait]
impl Transport for TufTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match self.client.get_accepting_zstd(&url).await {
            Ok(response) => {
                let zstd = response
                    .headers()
                    .get("content-encoding")
                    .is_some_and(|v| v.as_bytes() == b"zstd");
                if zstd {
                    return decoding_stream(url, response).await;
                }
                let u = url.clone();
                let stream = response.bytes_stream().map(move |piece| {
                    piece.map_err(|e| {
                        TransportError::new_with_cause(TransportErrorKind::Other, &u, e)
                    })
                });
                Ok(Box::pin(stream))
            }
            Err(NetError::Status { status: 404, .. }) => {
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

/// Decodes a zstd body lazily, 64 KiB at a time, so tough's check of the
/// signed length stops a decompression bomb as early as it stops a plain
/// endless response.
async fn decoding_stream(
    url: Url,
    response: ferry_net::Response,
) -> Result<TransportStream, TransportError> {
    let other = |e: &dyn std::fmt::Display| {
        TransportError::new_with_cause(
            TransportErrorKind::Other,
            &url,
            std::io::Error::other(e.to_string()),
        )
    };
    let compressed = ferry_net::read_limited(&url, response, MAX_COMPRESSED)
        .await
        .map_err(|e| other(&e))?;
    let decoder = zstd::stream::read::Decoder::new(std::io::Cursor::new(compressed))
        .map_err(|e| other(&e))?;
    let stream = futures_util::stream::unfold(Some(decoder), move |state| {
        let url = url.clone();
        async move {
            let mut decoder = state?;
            let mut piece = vec![0u8; 64 << 10];
            match std::io::Read::read(&mut decoder, &mut piece) {
                Ok(0) => None,
                Ok(n) => {
                    piece.truncate(n);
                    Some((Ok(bytes::Bytes::from(piece)), Some(decoder)))
                }
                Err(e) => Some((
                    Err(TransportError::new_with_cause(
                        TransportErrorKind::Other,
                        &url,
                        e,
                    )),
                    None,
                )),
            }
        }
    });
    Ok(Box::pin(stream))
}

/// Loads and verifies the repository metadata from `client`'s base URL (the
/// hub, or any mirror), starting from the credentials' pinned root and
/// refusing anything older than what was verified before.
pub async fn load_repository(
    creds: &ClientCredentials,
    client: &HubClient,
) -> Result<TrustedRepository, TransferError> {
    let metadata = client.url("v1/tuf/")?;
    let targets = client.url("v1/tuf/targets/")?;
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

/// Downloads a version's manifest as a TUF target (length and hash checked
/// against signed metadata), then checks that it describes exactly the
/// package and version it was listed under.
pub async fn fetch_manifest(
    repo: &TrustedRepository,
    name: &PackageName,
    version: &semver::Version,
) -> Result<(Manifest, Vec<u8>), TransferError> {
    let target = ferry_content::target_name(name, version);
    let bytes = repo.read_target(&target).await?;
    let manifest = Manifest::from_slice(&bytes, ManifestLimits::default())?;
    if &manifest.name != name || &manifest.version != version {
        return Err(TransferError::Trust(ferry_trust::TrustError::Tampered(
            format!(
                "target {target} holds the manifest of {} {}",
                manifest.name, manifest.version
            ),
        )));
    }
    Ok((manifest, bytes))
}
