use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ferry_catalog::SqliteCatalog;
use ferry_net::CertificateAuthority;
use ferry_store::{ContentStore, durable};
use ferry_trust::SigningRepository;

use crate::{HubConfig, HubError, HubLayout};

/// Options of `ferry hub init`.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Extra DNS names or IP addresses clients will use to reach the hub;
    /// `localhost`, `127.0.0.1`, `::1` and the host name are always included.
    pub names: Vec<String>,
    /// Address to listen on, written to `hub.toml`.
    pub listen: Option<SocketAddr>,
}

/// What `init` created.
#[derive(Debug, Clone)]
pub struct InitSummary {
    /// The data directory.
    pub data: PathBuf,
    /// SHA-256 of the CA certificate, hex.
    pub ca_fingerprint: String,
    /// Names and addresses in the server certificate.
    pub names: Vec<String>,
    /// The configured listen address.
    pub listen: SocketAddr,
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Creates a hub data directory: catalog, content store, TUF keys and
/// metadata, CA and server certificate, and `hub.toml`.
///
/// Everything is built in a temporary sibling directory that is renamed into
/// place at the end, so an interrupted init leaves no half-made hub. An
/// existing hub, or any non-empty directory, is never overwritten.
pub async fn init(data: &Path, options: InitOptions) -> Result<InitSummary, HubError> {
    if HubLayout::new(data).config().exists() {
        return Err(HubError::DataDir(format!(
            "{} already holds a hub; refusing to overwrite it (choose another --data directory, or remove this one if you really mean to start over)",
            data.display()
        )));
    }
    if let Ok(mut entries) = std::fs::read_dir(data)
        && entries.next().is_some()
    {
        return Err(HubError::DataDir(format!(
            "{} exists and is not empty; `ferry hub init` needs a new or empty directory",
            data.display()
        )));
    }
    let parent = match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| HubError::io(&parent, e))?;
    let leaf = data.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        HubError::DataDir(format!("{} is not a usable directory name", data.display()))
    })?;
    let staging = parent.join(format!(".{leaf}.init-{:08x}", rand::random::<u32>()));
    let result = build(&staging, options).await;
    match result {
        Ok(mut summary) => {
            if data.exists() {
                std::fs::remove_dir(data).map_err(|e| HubError::io(data, e))?;
            }
            if let Err(e) = durable::rename(&staging, data) {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(HubError::io(data, e));
            }
            summary.data = data.to_owned();
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

async fn build(dir: &Path, options: InitOptions) -> Result<InitSummary, HubError> {
    let layout = HubLayout::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
    let config = HubConfig {
        listen: options.listen.unwrap_or(HubConfig::default().listen),
        ..HubConfig::default()
    };
    SqliteCatalog::open(&layout.catalog())?;
    ContentStore::open(&layout.store())?;
    SigningRepository::create(&layout.tuf(), config.tuf).await?;

    let mut dns = vec!["localhost".to_owned()];
    let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
    if let Some(h) = host_name() {
        dns.push(h);
    }
    for name in options.names {
        match name.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !dns.contains(&name) => dns.push(name),
            Err(_) => {}
        }
    }
    let tls = layout.tls();
    std::fs::create_dir_all(&tls).map_err(|e| HubError::io(&tls, e))?;
    let (ca, ca_files) = CertificateAuthority::generate("Ferry hub CA")?;
    let server = ca.issue_server(&dns, &ips)?;
    for (name, text, mode) in [
        ("ca.pem", &ca_files.cert_pem, 0o644),
        ("ca.key", &ca_files.key_pem, 0o600),
        ("server.pem", &server.cert_pem, 0o644),
        ("server.key", &server.key_pem, 0o600),
    ] {
        let path = tls.join(name);
        durable::create_file(&path, text.as_bytes(), mode).map_err(|e| HubError::io(&path, e))?;
    }
    let config_path = layout.config();
    durable::create_file(&config_path, config.render().as_bytes(), 0o644)
        .map_err(|e| HubError::io(&config_path, e))?;
    let mut names = dns;
    names.extend(ips.iter().map(IpAddr::to_string));
    Ok(InitSummary {
        data: dir.to_owned(),
        ca_fingerprint: hex::encode(ca.fingerprint()?),
        names,
        listen: config.listen,
    })
}
