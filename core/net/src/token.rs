use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;

use crate::NetError;

/// A one-time enrollment token as handed to an operator:
/// `ferry1.<id>.<secret>.<hub CA SHA-256>`.
///
/// The id finds the token on the hub, the secret proves possession (the hub
/// stores only its SHA-256), and the CA fingerprint lets the enrolling client
/// authenticate the hub on first contact, so no VPN or pre-shared CA file is
/// needed and a man in the middle cannot pose as the hub.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Public id (16 hex characters).
    pub id: String,
    /// 32 random bytes.
    pub secret: [u8; 32],
    /// SHA-256 of the hub CA certificate's DER.
    pub ca_sha256: [u8; 32],
}

const PREFIX: &str = "ferry1";

impl EnrollmentToken {
    /// A fresh random token pinning `ca_sha256`.
    pub fn generate(ca_sha256: [u8; 32]) -> Self {
        EnrollmentToken {
            id: hex::encode(rand::random::<[u8; 8]>()),
            secret: rand::random(),
            ca_sha256,
        }
    }

    /// What the hub stores instead of the secret.
    pub fn secret_sha256(&self) -> [u8; 32] {
        sha2::Sha256::digest(self.secret).into()
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret),
            hex::encode(self.ca_sha256)
        )
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
        let [prefix, id, secret, ca] = parts[..] else {
            return Err(bad("expected four dot-separated parts"));
        };
        if prefix != PREFIX {
            return Err(bad("it does not start with \"ferry1.\""));
        }
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
        Ok(EnrollmentToken {
            id: id.to_owned(),
            secret,
            ca_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        let t = EnrollmentToken::generate([9u8; 32]);
        let parsed: EnrollmentToken = t.to_string().parse().unwrap();
        assert_eq!(parsed, t);
        let text = t.to_string();
        for bad in [
            "",
            "ferry1.abc",
            &text.replacen("ferry1", "ferry2", 1),
            &text[..text.len() - 2],
        ] {
            assert!(bad.parse::<EnrollmentToken>().is_err(), "{bad}");
        }
    }
}
