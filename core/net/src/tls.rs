use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::{NetError, cert_sha256};

/// The one crypto provider Ferry uses (aws-lc-rs), passed explicitly so no
/// process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> NetError {
    NetError::Tls(e.to_string())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_err)
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, NetError> {
    let mut r = RootCertStore::empty();
    for c in certs(ca_pem)? {
        r.add(c).map_err(tls_err)?;
    }
    Ok(Arc::new(r))
}

/// Server configuration: presents `[leaf, CA]` and asks for a client
/// certificate signed by the CA. Anonymous connections are let through TLS so
/// enrollment works; the API refuses them everywhere else.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>, NetError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(tls_err)?;
    let mut chain = certs(cert_pem)?;
    chain.extend(certs(ca_pem)?);
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls_err)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    Ok(Arc::new(config))
}

/// Client configuration trusting only the pinned hub CA, optionally
/// presenting a client certificate.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<ClientConfig, NetError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots(ca_pem)?);
    Ok(match identity {
        Some((cert_pem, key_pem)) => builder
            .with_client_auth_cert(
                certs(cert_pem)?,
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls_err)?,
            )
            .map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    })
}

/// Accepts a server only if its chain carries a CA with the pinned SHA-256
/// and the leaf verifies against that CA alone. Used on first contact, when
/// the client knows the hub only by the fingerprint in its token.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    seen_ca: Mutex<Option<[u8; 32]>>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(last) = intermediates.last() {
            *self.seen_ca.lock().unwrap_or_else(|p| p.into_inner()) = Some(cert_sha256(last));
        }
        let ca = intermediates
            .iter()
            .find(|c| cert_sha256(c) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General("hub CA does not match the pinned fingerprint".into())
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Fetches the hub's CA certificate over a connection authenticated by the
/// CA fingerprint `pin`, and checks the fingerprint of what it received.
pub async fn fetch_ca_pinned(server: &url::Url, pin: [u8; 32]) -> Result<String, NetError> {
    let verifier = Arc::new(PinnedCaVerifier {
        pin,
        provider: provider(),
        seen_ca: Mutex::new(None),
    });
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(tls_err)?;
    let url = server
        .join(crate::api::routes::relative(crate::api::routes::CA))
        .map_err(tls_err)?;
    let result = client.get(url.clone()).send().await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let seen = *verifier.seen_ca.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(actual) = seen.filter(|s| *s != pin) {
                return Err(NetError::CaMismatch {
                    url: server.to_string(),
                    expected: hex::encode(pin),
                    actual: hex::encode(actual),
                });
            }
            return Err(NetError::Request {
                url: url.to_string(),
                detail: crate::client::describe_error(&e),
            });
        }
    };
    // A CA certificate is a few KiB; an impostor must not make enrollment
    // buffer more.
    let pem = crate::client::read_limited(&url, response, 64 << 10).await?;
    let pem = String::from_utf8(pem.to_vec()).map_err(|_| NetError::Request {
        url: url.to_string(),
        detail: "the CA certificate is not text".into(),
    })?;
    let der = crate::identity::pem_cert_der(&pem)?;
    let actual = cert_sha256(&der);
    if actual != pin {
        return Err(NetError::CaMismatch {
            url: server.to_string(),
            expected: hex::encode(pin),
            actual: hex::encode(actual),
        });
    }
    Ok(pem)
}
