use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use tough::key_source::KeySource;
use tough::sign::{Sign, parse_keypair};

use crate::TrustError;

/// The four TUF role keys of a hub, as Ed25519 PKCS#8 DER files
/// (`root.der`, `targets.der`, `snapshot.der`, `timestamp.der`), mode 0600.
#[derive(Debug, Clone)]
pub struct RoleKeys {
    dir: PathBuf,
}

/// TUF role names, in the order keys are generated.
pub(crate) const ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// The key that signs documents other than packages (see
/// [`crate::documents`]); not a TUF role, named by root metadata.
pub(crate) const CONTROL: &str = "control";

impl RoleKeys {
    /// Generates the four TUF role keys and the control key into `dir`,
    /// refusing to overwrite any.
    pub fn generate(dir: &Path) -> Result<Self, TrustError> {
        std::fs::create_dir_all(dir).map_err(|e| TrustError::io(dir, e))?;
        let rng = SystemRandom::new();
        for role in ROLES.into_iter().chain([CONTROL]) {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| TrustError::Keys("key generation failed".into()))?;
            let path = dir.join(format!("{role}.der"));
            ferry_store::durable::create_file(&path, doc.as_ref(), 0o600)
                .map_err(|e| TrustError::io(&path, e))?;
        }
        Ok(RoleKeys {
            dir: dir.to_owned(),
        })
    }

    /// Opens existing keys in `dir`. The root key may be absent (kept
    /// offline); the online keys must be present. A key rotation that was
    /// cut short leaves `ROLE.der.next`; it is finished or dropped here
    /// depending on whether the newest root (`latest_root`) lists it.
    pub fn open(dir: &Path, latest_root: &tough::schema::Root) -> Result<Self, TrustError> {
        for role in ROLES.into_iter().chain([CONTROL]) {
            let next = dir.join(format!("{role}.der.next"));
            let Ok(der) = std::fs::read(&next) else {
                continue;
            };
            let listed = if role == CONTROL {
                let named = crate::documents::control_key(latest_root);
                crate::documents::ControlKey::of(&der)
                    .is_ok_and(|k| named.is_some_and(|n| n.keyid == k.keyid))
            } else {
                parse_keypair(&der)
                    .ok()
                    .and_then(|k| k.tuf_key().key_id().ok())
                    .is_some_and(|id| latest_root.keys.contains_key(&id))
            };
            if listed {
                ferry_store::durable::rename(&next, &dir.join(format!("{role}.der")))
                    .map_err(|e| TrustError::io(&next, e))?;
            } else {
                std::fs::remove_file(&next).map_err(|e| TrustError::io(&next, e))?;
            }
        }
        for role in ["targets", "snapshot", "timestamp"] {
            let path = dir.join(format!("{role}.der"));
            if !path.exists() {
                return Err(TrustError::Keys(format!(
                    "{} is missing; the hub cannot sign {role} metadata without it",
                    path.display()
                )));
            }
        }
        Ok(RoleKeys {
            dir: dir.to_owned(),
        })
    }

    /// Generates a new key for `role` as `ROLE.der.next`, returning it; it
    /// takes the place of the current key with [`RoleKeys::commit_next`].
    pub(crate) fn generate_next(&self, role: &str) -> Result<Box<dyn Sign>, TrustError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| TrustError::Keys("key generation failed".into()))?;
        let path = self.dir.join(format!("{role}.der.next"));
        ferry_store::durable::write_file(&path, doc.as_ref(), 0o600)
            .map_err(|e| TrustError::io(&path, e))?;
        let key = parse_keypair(doc.as_ref())
            .map_err(|e| TrustError::Keys(format!("the new {role} key does not parse: {e}")))?;
        Ok(Box::new(key))
    }

    /// Generates a new control key as `control.der.next`; returns its
    /// PKCS#8 DER.
    pub(crate) fn generate_next_control(&self) -> Result<Vec<u8>, TrustError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| TrustError::Keys("key generation failed".into()))?;
        let path = self.dir.join(format!("{CONTROL}.der.next"));
        ferry_store::durable::write_file(&path, doc.as_ref(), 0o600)
            .map_err(|e| TrustError::io(&path, e))?;
        Ok(doc.as_ref().to_vec())
    }

    /// The control key (PKCS#8 DER), if this hub has one.
    pub(crate) fn control(&self) -> Result<Vec<u8>, TrustError> {
        let path = self.dir.join(format!("{CONTROL}.der"));
        std::fs::read(&path).map_err(|e| {
            TrustError::Keys(format!(
                "cannot read the control key {}: {e}; a hub created before control keys existed \
                 gets one with `ferry hub rotate-key --role control`",
                path.display()
            ))
        })
    }

    /// Makes `ROLE.der.next` the key of `role`.
    pub(crate) fn commit_next(&self, role: &str) -> Result<(), TrustError> {
        let next = self.dir.join(format!("{role}.der.next"));
        ferry_store::durable::rename(&next, &self.dir.join(format!("{role}.der")))
            .map_err(|e| TrustError::io(&next, e))
    }

    /// The key source for one role.
    pub(crate) fn source(&self, role: &str) -> Result<Box<dyn KeySource>, TrustError> {
        let path = self.dir.join(format!("{role}.der"));
        let der = std::fs::read(&path).map_err(|e| {
            TrustError::Keys(format!(
                "cannot read the {role} key {}: {e}",
                path.display()
            ))
        })?;
        parse_keypair(&der).map_err(|e| {
            TrustError::Keys(format!(
                "{} is not an Ed25519 PKCS#8 key: {e}",
                path.display()
            ))
        })?;
        Ok(Box::new(DerKey(der)))
    }
}

/// A key held in memory as PKCS#8 DER.
#[derive(Debug)]
struct DerKey(Vec<u8>);

#[tough::async_trait]
impl KeySource for DerKey {
    async fn as_sign(
        &self,
    ) -> Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(Box::new(parse_keypair(&self.0)?))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("Ferry's role keys are written once, by `ferry hub init`".into())
    }
}
