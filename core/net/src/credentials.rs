use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::NetError;

/// What a client knows about itself and its hub (`client.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The hub's URL.
    pub server: Url,
    /// This client's id.
    pub id: String,
    /// This client's role.
    pub role: String,
    /// This client's site, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// A client data directory after enrollment: `client.toml`, `ca.pem` (the
/// pinned hub CA), `client.pem` and `client.key` (its certificate and key),
/// `root.json` (the pinned TUF root) and `tuf/` (verified metadata kept to
/// detect rollback).
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    /// The data directory.
    pub dir: PathBuf,
    /// Identity and hub.
    pub info: ClientInfo,
    /// Pinned hub CA.
    pub ca_pem: String,
    /// Client certificate.
    pub cert_pem: String,
    /// Client private key.
    pub key_pem: String,
    /// Pinned TUF root.
    pub tuf_root: Vec<u8>,
}

impl ClientCredentials {
    /// Whether `dir` already holds credentials.
    pub fn exists(dir: &Path) -> bool {
        dir.join("client.toml").exists()
    }

    /// Loads credentials from `dir`.
    pub fn load(dir: &Path) -> Result<Self, NetError> {
        if !Self::exists(dir) {
            return Err(NetError::Credentials(format!(
                "{} holds no Ferry credentials; run `ferry enroll --server URL --token TOKEN --data {}` first",
                dir.display(),
                dir.display()
            )));
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| NetError::io(&path, e))
        };
        let text = |name: &str| {
            read(name).and_then(|b| {
                String::from_utf8(b)
                    .map_err(|_| NetError::Credentials(format!("{name} is not UTF-8")))
            })
        };
        let info: ClientInfo = toml::from_str(&text("client.toml")?).map_err(|e| {
            NetError::Credentials(format!("{}: {e}", dir.join("client.toml").display()))
        })?;
        Ok(ClientCredentials {
            dir: dir.to_owned(),
            info,
            ca_pem: text("ca.pem")?,
            cert_pem: text("client.pem")?,
            key_pem: text("client.key")?,
            tuf_root: read("root.json")?,
        })
    }

    /// Writes credentials to `dir`, refusing to replace existing ones.
    /// `client.toml` is written last: a crash part-way leaves a directory
    /// that [`ClientCredentials::exists`] does not count as enrolled.
    pub fn save(&self) -> Result<(), NetError> {
        if Self::exists(&self.dir) {
            return Err(NetError::Credentials(format!(
                "{} already holds credentials for {}; use another --data directory",
                self.dir.display(),
                self.info.id
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| NetError::io(&self.dir, e))?;
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let path = self.dir.join(name);
            ferry_store::durable::write_file(&path, bytes, mode).map_err(|e| NetError::io(&path, e))
        };
        write("ca.pem", self.ca_pem.as_bytes(), 0o644)?;
        write("client.key", self.key_pem.as_bytes(), 0o600)?;
        write("client.pem", self.cert_pem.as_bytes(), 0o644)?;
        write("root.json", &self.tuf_root, 0o644)?;
        let info = toml::to_string(&self.info).expect("client info serializes");
        write("client.toml", info.as_bytes(), 0o644)
    }

    /// Where verified TUF metadata is kept between runs.
    pub fn tuf_datastore(&self) -> PathBuf {
        self.dir.join("tuf")
    }

    /// A cache directory for this client.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
}
