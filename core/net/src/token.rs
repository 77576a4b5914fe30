use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;

use crate::NetError;

/// A one-time enrollment token as handed to an operator:
/// `ferry2.<id>.<secret>.<hub CA SHA-256>.<root SHA-256>`.
///
/// The id finds the token on the hub, the secret proves possession (the hub
/// stores only its SHA-256), and the CA fingerprint lets the enrolling client
/// authenticate the hub on first contact, so no VPN or pre-shared CA file is
/// needed and a man in the middle cannot pose as the hub. The root
/// fingerprint pins the TUF root the client will trust, so whoever passes
/// the enrollment on (a relay) cannot substitute a root of its own.
/// `ferry1` tokens (without the root) are still read.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Public id (16 hex characters).
    pub id: String,
    /// 32 random bytes.
    pub secret: [u8; 32],
    /// SHA-256 of the hub CA certificate's DER.
    pub ca_sha256: [u8; 32],
    /// SHA-256 of the hub's newest root metadata when the token was made
    /// (absent in `ferry1` tokens).
    pub root_sha256: Option<[u8; 32]>,
}

const PREFIX: &str = "ferry2";
const LEGACY_PREFIX: &str = "ferry1";

impl EnrollmentToken {
    /// A fresh random token pinning `ca_sha256` and the root metadata
    /// whose SHA-256 is `root_sha256`.
    pub fn generate(ca_sha256: [u8; 32], root_sha256: [u8; 32]) -> Self {
        EnrollmentToken {
            id: hex::encode(rand::random::<[u8; 8]>()),
            secret: rand::random(),
            ca_sha256,
            root_sha256: Some(root_sha256),
        }
    }

    /// What the hub stores instead of the secret.
    pub fn secret_sha256(&self) -> [u8; 32] {
        sha2::Sha256::digest(self.secret).into()
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.root_sha256 {
            Some(root) => write!(
                f,
                "{PREFIX}.{}.{}.{}.{}",
                self.id,
                URL_SAFE_NO_PAD.encode(self.secret),
                hex::encode(self.ca_sha256),
                hex::encode(root)
            ),
            None => write!(
                f,
                "{LEGACY_PREFIX}.{}.{}.{}",
                self.id,
                URL_SAFE_NO_PAD.encode(self.secret),
                hex::encode(self.ca_sha256)
            ),
        }
    }
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnrollmentToken({})", self.id)
    }
}

impl FromStr for EnrollmentToken {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| NetError::BadToken(why.to_owned());
        let parts: Vec<&str> = s.trim().split('.').collect();
        let (id, secret, ca, root) = match parts[..] {
            [PREFIX, id, secret, ca, root] => (id, secret, ca, Some(root)),
            [LEGACY_PREFIX, id, secret, ca] => (id, secret, ca, None),
            [PREFIX, ..] => return Err(bad("expected five dot-separated parts")),
            [LEGACY_PREFIX, ..] => return Err(bad("expected four dot-separated parts")),
            _ => return Err(bad("it does not start with \"ferry2.\"")),
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the id part is not 16 hexadecimal characters"));
        }
        let secret: [u8; 32] = URL_SAFE_NO_PAD
            .decode(secret)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("the secret part is not 32 bytes of base64url"))?;
        let mut ca_sha256 = [0u8; 32];
        hex::decode_to_slice(ca, &mut ca_sha256)
            .map_err(|_| bad("the CA fingerprint part is not 64 hexadecimal characters"))?;
        let root_sha256 = root
            .map(|root| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(root, &mut out).map_err(|_| {
                    bad("the root fingerprint part is not 64 hexadecimal characters")
                })?;
                Ok::<_, NetError>(out)
            })
            .transpose()?;
        Ok(EnrollmentToken {
            id: id.to_owned(),
            secret,
            ca_sha256,
            root_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        let t = EnrollmentToken::generate([9u8; 32], [7u8; 32]);
        let parsed: EnrollmentToken = t.to_string().parse().unwrap();
        assert_eq!(parsed, t);
        let text = t.to_string();
        // A ferry1 token (no root pin) still reads.
        let legacy = EnrollmentToken {
            root_sha256: None,
            ..t.clone()
        };
        assert!(legacy.to_string().starts_with("ferry1."));
        assert_eq!(
            legacy.to_string().parse::<EnrollmentToken>().unwrap(),
            legacy
        );
        for bad in [
            "",
            "ferry1.abc",
            &text.replacen("ferry2", "ferry1", 1),
            &text.replacen("ferry2", "ferry3", 1),
            &text[..text.len() - 2],
        ] {
            assert!(bad.parse::<EnrollmentToken>().is_err(), "{bad}");
        }
    }
}
