use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::Digest as _;
use time::{Duration, OffsetDateTime};

use crate::NetError;
use crate::error::cert_err;

/// SHA-256 of a certificate's DER encoding: how Ferry names certificates.
pub fn cert_sha256(der: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(der).into()
}

/// Who a client certificate says its holder is, as the hub's CA signed
/// it: client id, role and site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The client id (common name).
    pub id: String,
    /// The role (organizational unit).
    pub role: crate::api::Role,
    /// The site (locality), if any.
    pub site: Option<String>,
}

/// Reads the identity from a client certificate's DER. Only meaningful for
/// a certificate TLS has already verified against the hub's CA: the CA
/// alone chooses these names ([`CertificateAuthority::sign_client_csr`]).
pub fn certificate_identity(der: &[u8]) -> Result<CertificateIdentity, NetError> {
    let bad = |why: String| NetError::Certificate(format!("not a Ferry client certificate: {why}"));
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| bad(format!("unreadable: {e}")))?;
    let subject = cert.subject();
    let one = |mut values: Box<
        dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>> + '_,
    >,
               what: &str| {
        let value = values
            .next()
            .ok_or_else(|| bad(format!("no {what}")))?
            .as_str()
            .map_err(|e| bad(format!("its {what} is not text: {e}")))?
            .to_owned();
        if values.next().is_some() {
            return Err(bad(format!("more than one {what}")));
        }
        Ok(value)
    };
    let id = one(Box::new(subject.iter_common_name()), "common name")?;
    let role = one(Box::new(subject.iter_organizational_unit()), "role")?
        .parse()
        .map_err(bad)?;
    let site = match subject.iter_locality().count() {
        0 => None,
        _ => Some(one(Box::new(subject.iter_locality()), "site")?),
    };
    Ok(CertificateIdentity { id, role, site })
}

fn dn(common_name: &str, unit: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, common_name);
    d.push(DnType::OrganizationName, "Ferry");
    if let Some(u) = unit {
        d.push(DnType::OrganizationalUnitName, u);
    }
    d
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(days);
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The hub's certificate authority: it signs the hub's server certificate and
/// every enrolled client's certificate.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Creates a new CA valid for ten years.
    pub fn generate(name: &str) -> Result<(Self, IssuedCertificate), NetError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(name, Some("hub CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut p, 3650);
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = p.self_signed(&key).map_err(cert_err)?;
        let issued = IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let ca = Self::from_pem(&issued.cert_pem, &issued.key_pem)?;
        Ok((ca, issued))
    }

    /// Loads a CA from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(cert_err)?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// Loads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, NetError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| NetError::io(&path, e))
        };
        Self::from_pem(&read("ca.pem")?, &read("ca.key")?)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate's DER: what enrollment tokens pin.
    pub fn fingerprint(&self) -> Result<[u8; 32], NetError> {
        let der = pem_cert_der(&self.cert_pem)?;
        Ok(cert_sha256(&der))
    }

    /// Issues the hub's TLS server certificate for the given names and
    /// addresses (two years).
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCertificate, NetError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(
            dns_names.first().map(String::as_str).unwrap_or("ferry-hub"),
            Some("hub"),
        );
        for name in dns_names {
            p.subject_alt_names.push(SanType::DnsName(
                name.as_str().try_into().map_err(cert_err)?,
            ));
        }
        for ip in ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(rand::random::<u64>().into());
        validity(&mut p, 730);
        let key = KeyPair::generate().map_err(cert_err)?;
        Ok(IssuedCertificate {
            cert_pem: p.signed_by(&key, &self.issuer).map_err(cert_err)?.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a client's CSR. Only the public key is taken from the request;
    /// the CA decides the name (client id, role, site) and the validity.
    ///
    /// With `server_names` (DNS names or IP addresses, as a serving role
    /// such as a relay is reached on its LAN), the certificate also
    /// authenticates a TLS server under those names; each name is checked.
    pub fn sign_client_csr(
        &self,
        csr_pem: &str,
        client_id: &str,
        role: &str,
        site: Option<&str>,
        server_names: &[String],
        days: i64,
    ) -> Result<String, NetError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            NetError::Certificate(format!("the certificate request is invalid: {e}"))
        })?;
        let mut p = CertificateParams::default();
        let mut d = dn(client_id, Some(role));
        if let Some(site) = site {
            d.push(DnType::LocalityName, site);
        }
        p.distinguished_name = d;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if server_names.len() > MAX_SERVER_NAMES {
            return Err(NetError::Certificate(format!(
                "at most {MAX_SERVER_NAMES} server names per certificate"
            )));
        }
        for name in server_names {
            p.subject_alt_names.push(server_name(name)?);
        }
        if !server_names.is_empty() {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(rand::random::<u64>().into());
        validity(&mut p, days);
        Ok(p.signed_by(&csr.public_key, &self.issuer)
            .map_err(cert_err)?
            .pem())
    }
}

/// Most names one server certificate may carry.
pub const MAX_SERVER_NAMES: usize = 16;

/// A subject alternative name for `name`: an IP address, or a DNS name
/// that rustls would accept as a server name (no wildcards, no URLs).
fn server_name(name: &str) -> Result<SanType, NetError> {
    let bad = |why: &str| {
        NetError::Certificate(format!(
            "{name:?} cannot name a server: {why}; give a DNS name (relay.berlin.example) or an IP address"
        ))
    };
    match rustls::pki_types::ServerName::try_from(name) {
        Ok(rustls::pki_types::ServerName::IpAddress(ip)) => {
            Ok(SanType::IpAddress(std::net::IpAddr::from(ip)))
        }
        Ok(rustls::pki_types::ServerName::DnsName(dns)) => Ok(SanType::DnsName(
            dns.as_ref()
                .try_into()
                .map_err(|_| bad("not an ASCII DNS name"))?,
        )),
        Ok(_) => Err(bad("unsupported kind of name")),
        Err(_) => Err(bad("not a valid DNS name or IP address")),
    }
}

/// A client's fresh key and the certificate request carrying its public half.
/// The private key never leaves the client.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The certificate signing request (PEM).
    pub csr_pem: String,
}

/// Generates a client key pair and CSR.
pub fn generate_client_key() -> Result<ClientKey, NetError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn("ferry-client", None);
    let csr = p.serialize_request(&key).map_err(cert_err)?;
    Ok(ClientKey {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(cert_err)?,
    })
}

/// DER of the first certificate in a PEM text.
pub fn pem_cert_der(pem: &str) -> Result<Vec<u8>, NetError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| NetError::Certificate(format!("not a PEM certificate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_roundtrip_keeps_ca_chosen_name() {
        let (ca, issued) = CertificateAuthority::generate("test hub").unwrap();
        let reloaded = CertificateAuthority::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        assert_eq!(ca.fingerprint().unwrap(), reloaded.fingerprint().unwrap());
        let client = generate_client_key().unwrap();
        let cert = reloaded
            .sign_client_csr(&client.csr_pem, "agent-1", "agent", Some("berlin"), &[], 30)
            .unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            ca.sign_client_csr("garbage", "x", "agent", None, &[], 1)
                .is_err()
        );
    }

    /// Serves "pong" over TLS with `cert`/`key` on a free loopback port.
    async fn pong_server(ca: &str, cert: &str, key: &str) -> std::net::SocketAddr {
        let tls = crate::server_config(ca, cert, key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
        tokio::spawn(crate::serve(listener, tls, app, std::future::pending()));
        addr
    }

    async fn ping(ca: &str, host: &str, port: u16) -> Result<bytes::Bytes, NetError> {
        let base = format!("https://{host}:{port}/").parse().unwrap();
        let client = crate::HubClient::new(base, ca, None)?;
        let url = client.url("ping")?;
        client.get_bytes(&url, 64).await
    }

    #[test]
    fn the_identity_the_ca_signed_is_read_back() {
        let (ca, _) = CertificateAuthority::generate("test hub").unwrap();
        let key = generate_client_key().unwrap();
        let cert = ca
            .sign_client_csr(&key.csr_pem, "pc-7", "agent", Some("berlin"), &[], 30)
            .unwrap();
        let id = certificate_identity(&pem_cert_der(&cert).unwrap()).unwrap();
        assert_eq!(
            id,
            CertificateIdentity {
                id: "pc-7".into(),
                role: crate::api::Role::Agent,
                site: Some("berlin".into())
            }
        );
        let cert = ca
            .sign_client_csr(&key.csr_pem, "pub", "publisher", None, &[], 30)
            .unwrap();
        let id = certificate_identity(&pem_cert_der(&cert).unwrap()).unwrap();
        assert_eq!((id.role, id.site), (crate::api::Role::Publisher, None));
        // The CA's own certificate names no client role.
        let err = certificate_identity(&pem_cert_der(ca.cert_pem()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("not a Ferry client"), "{err}");
        assert!(certificate_identity(b"junk").is_err());
    }

    #[tokio::test]
    async fn a_relay_certificate_serves_tls_under_its_names_only() {
        let (ca, issued) = CertificateAuthority::generate("test hub").unwrap();
        let key = generate_client_key().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let cert = ca
            .sign_client_csr(&key.csr_pem, "relay-1", "relay", Some("berlin"), &names, 30)
            .unwrap();
        let addr = pong_server(&issued.cert_pem, &cert, &key.key_pem).await;
        for host in ["localhost", "127.0.0.1"] {
            let body = ping(&issued.cert_pem, host, addr.port()).await.unwrap();
            assert_eq!(&body[..], b"pong");
        }
        // Issued for another name: clients refuse it at 127.0.0.1.
        let other = ca
            .sign_client_csr(
                &key.csr_pem,
                "relay-2",
                "relay",
                None,
                &["relay.berlin.example".to_owned()],
                30,
            )
            .unwrap();
        let addr = pong_server(&issued.cert_pem, &other, &key.key_pem).await;
        let err = ping(&issued.cert_pem, "127.0.0.1", addr.port())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        // A plain client certificate cannot serve at all.
        let plain = ca
            .sign_client_csr(&key.csr_pem, "agent-1", "agent", None, &[], 30)
            .unwrap();
        let addr = pong_server(&issued.cert_pem, &plain, &key.key_pem).await;
        assert!(
            ping(&issued.cert_pem, "127.0.0.1", addr.port())
                .await
                .is_err()
        );
        // Names that cannot name a server are refused, naming them.
        for bad in ["https://relay", "bad name", "", "relay..example"] {
            let err = ca
                .sign_client_csr(&key.csr_pem, "r", "relay", None, &[bad.to_owned()], 1)
                .unwrap_err();
            assert!(
                err.to_string().contains("cannot name a server"),
                "{bad}: {err}"
            );
        }
    }
}
