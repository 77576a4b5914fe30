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

impl RoleKeys {
    /// Generates all four keys into `dir`, refusing to overwrite any.
    pub fn generate(dir: &Path) -> Result<Self, TrustError> {
        std::fs::create_dir_all(dir).map_err(|e| TrustError::io(dir, e))?;
        let rng = SystemRandom::new();
        for role in ROLES {
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
    /// offline); the online keys must be present.
    pub fn open(dir: &Path) -> Result<Self, TrustError> {
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
