use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;
use url::Url;

use crate::api::{EnrollRequest, EnrollResponse};
use crate::{
    ClientCredentials, ClientInfo, EnrollmentToken, HubClient, NetError, fetch_ca_pinned,
    generate_client_key,
};

/// Enrolls this machine with the hub at `server` using a one-time `token`,
/// and saves the resulting credentials in `data`.
///
/// The hub is authenticated by the CA fingerprint inside the token before
/// anything is sent; the private key is generated here and never leaves.
pub async fn enroll(
    server: &Url,
    token: &str,
    data: &Path,
    hostname: Option<String>,
    server_names: Vec<String>,
) -> Result<ClientCredentials, NetError> {
    let token: EnrollmentToken = token.parse()?;
    if ClientCredentials::exists(data) {
        return Err(NetError::Credentials(format!(
            "{} already holds credentials; use another --data directory",
            data.display()
        )));
    }
    let ca_pem = fetch_ca_pinned(server, token.ca_sha256).await?;
    let key = generate_client_key()?;
    let client = HubClient::new(server.clone(), &ca_pem, None)?;
    let answer: EnrollResponse = client
        .post_json(
            crate::api::routes::relative(crate::api::routes::ENROLL),
            &EnrollRequest {
                token_id: token.id.clone(),
                token_secret: URL_SAFE_NO_PAD.encode(token.secret),
                csr_pem: key.csr_pem,
                hostname,
                server_names,
            },
        )
        .await?;
    if answer.ca_pem.trim() != ca_pem.trim() {
        return Err(NetError::Credentials(
            "the hub answered with a different CA than it presented; refusing to enroll".into(),
        ));
    }
    // The root to trust from now on must be the one the token pins: a relay
    // passing the enrollment on cannot substitute its own.
    if let Some(pin) = token.root_sha256
        && <[u8; 32]>::from(sha2::Sha256::digest(answer.tuf_root.as_bytes())) != pin
    {
        return Err(NetError::Credentials(
            "the answer carries another TUF root than the hub had when the token was made \
             (the hub rotated its root since, or something on the way replaced it); \
             refusing to enroll; create a new token"
                .into(),
        ));
    }
    let creds = ClientCredentials {
        dir: data.to_owned(),
        info: ClientInfo {
            server: client.base().clone(),
            id: answer.client_id,
            role: answer.role,
            site: answer.site,
        },
        ca_pem,
        cert_pem: answer.cert_pem,
        key_pem: key.key_pem,
        tuf_root: answer.tuf_root.into_bytes(),
    };
    creds.save()?;
    Ok(creds)
}
