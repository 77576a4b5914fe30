//! Signed documents that are not packages (a revocation list now; agents'
//! tasks later), signed by the hub's **control** key, which chains to the
//! TUF root: root metadata names the control key's public half in its
//! `x-ferry-control` field, so whoever trusts the root can check a document
//! without trusting whoever delivered it (a relay, a peer).
//!
//! ```json
//! {"signed": {"_type": "ferry-revocations", "version": 7,
//!             "issued": "2026-12-01T20:00:00Z", "expires": "2026-12-02T20:00:00Z",
//!             "body": {...}},
//!  "signatures": [{"keyid": "...", "sig": "..."}]}
//! ```
//!
//! The signature is Ed25519 over the canonical JSON of `signed`. `version`
//! only grows per kind, so a receiver that keeps the highest version it saw
//! refuses replays; `expires` bounds how long a withheld update goes
//! unnoticed.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::TrustError;

/// The root metadata field naming the control key.
pub const CONTROL_FIELD: &str = "x-ferry-control";

/// The control key as root metadata names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlKey {
    /// SHA-256 of the public key, hex: what signatures refer to.
    pub keyid: String,
    /// The Ed25519 public key, hex.
    pub ed25519: String,
}

impl ControlKey {
    /// The public half of a PKCS#8 Ed25519 key.
    pub(crate) fn of(pkcs8: &[u8]) -> Result<Self, TrustError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| TrustError::Keys("the control key is not an Ed25519 PKCS#8 key".into()))?;
        let public = pair.public_key().as_ref();
        Ok(ControlKey {
            keyid: hex::encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                public,
            )),
            ed25519: hex::encode(public),
        })
    }
}

/// What a signed document says, once its signature and expiry are checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentBody {
    /// `ferry-KIND`.
    #[serde(rename = "_type")]
    pub kind: String,
    /// Grows with every new document of the kind.
    pub version: u64,
    /// When it was signed (`YYYY-MM-DDTHH:MM:SSZ`).
    pub issued: Timestamp,
    /// When it stops being valid.
    pub expires: Timestamp,
    /// The content.
    pub body: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct Signature {
    keyid: String,
    sig: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    signed: DocumentBody,
    signatures: Vec<Signature>,
}

fn canonical(doc: &DocumentBody) -> Result<Vec<u8>, TrustError> {
    let mut out = Vec::new();
    doc.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out,
        olpc_cjson::CanonicalFormatter::new(),
    ))
    .map_err(|e| TrustError::Other(format!("serializing a document: {e}")))?;
    Ok(out)
}

/// Signs `doc` with the control key (PKCS#8 DER); returns the document's
/// bytes as served.
pub(crate) fn sign(pkcs8: &[u8], doc: DocumentBody) -> Result<Vec<u8>, TrustError> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
        .map_err(|_| TrustError::Keys("the control key is not an Ed25519 PKCS#8 key".into()))?;
    let key = ControlKey::of(pkcs8)?;
    let sig = pair.sign(&canonical(&doc)?);
    let envelope = Envelope {
        signed: doc,
        signatures: vec![Signature {
            keyid: key.keyid,
            sig: hex::encode(sig.as_ref()),
        }],
    };
    serde_json::to_vec_pretty(&envelope).map_err(|e| TrustError::Other(e.to_string()))
}

/// Checks a document of `kind` against the control key `key` (taken from
/// verified root metadata): signature, kind, and expiry at `now`.
pub fn verify(
    key: &ControlKey,
    bytes: &[u8],
    kind: &str,
    now: Timestamp,
) -> Result<DocumentBody, TrustError> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| TrustError::Tampered(format!("a signed {kind} document is malformed: {e}")))?;
    let public = hex::decode(&key.ed25519)
        .map_err(|_| TrustError::Keys("the root names a malformed control key".into()))?;
    let message = canonical(&envelope.signed)?;
    let good = envelope.signatures.iter().any(|s| {
        s.keyid == key.keyid
            && hex::decode(&s.sig).is_ok_and(|sig| {
                UnparsedPublicKey::new(&ED25519, &public)
                    .verify(&message, &sig)
                    .is_ok()
            })
    });
    if !good {
        return Err(TrustError::Tampered(format!(
            "the {kind} document is not signed by the hub's control key"
        )));
    }
    let doc = envelope.signed;
    if doc.kind != format!("ferry-{kind}") {
        return Err(TrustError::Tampered(format!(
            "a {} document was offered as {kind}",
            doc.kind
        )));
    }
    if doc.expires <= now {
        return Err(TrustError::Expired {
            role: format!("{kind} document"),
        });
    }
    Ok(doc)
}

/// Reads a document without checking it, for routing only (a relay
/// choosing which of its agents a task may concern): nothing read this
/// way may be acted on; the receiver verifies.
pub fn peek(bytes: &[u8]) -> Result<DocumentBody, TrustError> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| TrustError::Tampered(format!("a signed document is malformed: {e}")))?;
    Ok(envelope.signed)
}

/// The control key a root metadata document names, if any.
pub fn control_key(root: &tough::schema::Root) -> Option<ControlKey> {
    serde_json::from_value(root._extra.get(CONTROL_FIELD)?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn doc(kind: &str, expires_in: i64) -> DocumentBody {
        let now = Timestamp::now().as_second();
        DocumentBody {
            kind: format!("ferry-{kind}"),
            version: 3,
            issued: Timestamp::from_second(now).unwrap(),
            expires: Timestamp::from_second(now + expires_in).unwrap(),
            body: serde_json::json!({"revoked": ["a"]}),
        }
    }

    #[test]
    fn documents_verify_only_with_their_key_kind_and_time() {
        let k = key();
        let public = ControlKey::of(&k).unwrap();
        let bytes = sign(&k, doc("revocations", 60)).unwrap();
        let got = verify(&public, &bytes, "revocations", Timestamp::now()).unwrap();
        assert_eq!(got.version, 3);
        assert_eq!(got.body["revoked"][0], "a");
        // Another key, another kind, an altered body, an expired document.
        let other = ControlKey::of(&key()).unwrap();
        assert!(verify(&other, &bytes, "revocations", Timestamp::now()).is_err());
        let err = verify(&public, &bytes, "task", Timestamp::now()).unwrap_err();
        assert!(err.to_string().contains("offered as task"), "{err}");
        let altered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"a\"", "\"b\"");
        let err = verify(&public, altered.as_bytes(), "revocations", Timestamp::now()).unwrap_err();
        assert!(err.to_string().contains("not signed"), "{err}");
        let later = Timestamp::from_second(Timestamp::now().as_second() + 120).unwrap();
        assert!(matches!(
            verify(&public, &bytes, "revocations", later),
            Err(TrustError::Expired { .. })
        ));
        assert!(verify(&public, b"{not json", "revocations", Timestamp::now()).is_err());
    }
}
