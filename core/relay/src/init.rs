//! `ferry relay init`: enroll with the hub (or an upstream relay) and
//! create the relay's data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::{RelayConfig, RelayError, RelayLayout};

/// What `ferry relay init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The upstream: the hub, or a relay enrolled with it.
    pub server: url::Url,
    /// A one-time token for the relay role (`ferry token create --role
    /// relay --site SITE` on the hub).
    pub token: String,
    /// The data directory to create (new or empty).
    pub data: PathBuf,
    /// Address agents reach the relay at.
    pub listen: SocketAddr,
    /// DNS names and IP addresses agents use for the relay, beyond
    /// `localhost`, `127.0.0.1`, `::1` and the host name, which are always
    /// added.
    pub names: Vec<String>,
    /// The name for this relay in the hub's inventory (default: host name).
    pub hostname: Option<String>,
}

/// What init created.
#[derive(Debug, Clone)]
pub struct InitSummary {
    /// The data directory.
    pub data: PathBuf,
    /// The relay's client id.
    pub id: String,
    /// Its site.
    pub site: Option<String>,
    /// Names its certificate serves under.
    pub names: Vec<String>,
    /// The listen address written to relay.toml.
    pub listen: SocketAddr,
}

/// Enrolls and writes the data directory: credentials and `relay.toml`
/// are made in a temporary sibling and renamed into place, so an
/// interrupted init leaves nothing that looks like a relay.
pub async fn init(options: InitOptions) -> Result<InitSummary, RelayError> {
    let data = &options.data;
    if let Ok(mut entries) = std::fs::read_dir(data)
        && entries.next().is_some()
    {
        return Err(RelayError::DataDir(format!(
            "{} is not empty; give a new directory to `ferry relay init --data`",
            data.display()
        )));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    let mut names = options.names.clone();
    for always in [
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ]
    .into_iter()
    .chain(host.clone())
    {
        if !names.contains(&always) {
            names.push(always);
        }
    }
    let parent = match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| RelayError::io(&parent, e))?;
    let building = parent.join(format!(".ferry-relay-init-{:016x}", rand::random::<u64>()));
    let result = build(&options, &building, &names, host).await;
    let creds = match result {
        Ok(creds) => creds,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(e);
        }
    };
    // An empty directory given as --data is replaced.
    if data.exists() {
        std::fs::remove_dir(data).map_err(|e| RelayError::io(data, e))?;
    }
    ferry_store::durable::rename(&building, data).map_err(|e| RelayError::io(data, e))?;
    Ok(InitSummary {
        data: data.clone(),
        id: creds.info.id,
        site: creds.info.site,
        names,
        listen: options.listen,
    })
}

async fn build(
    options: &InitOptions,
    dir: &Path,
    names: &[String],
    host: Option<String>,
) -> Result<ferry_net::ClientCredentials, RelayError> {
    let creds = ferry_net::enroll(
        &options.server,
        &options.token,
        dir,
        options.hostname.clone().or(host),
        names.to_vec(),
    )
    .await?;
    if creds.info.role != "relay" {
        return Err(RelayError::DataDir(format!(
            "the token enrolls a {}, not a relay; create one with `ferry token create --role relay \
             --site SITE` on the hub",
            creds.info.role
        )));
    }
    let layout = RelayLayout::new(dir);
    let config = RelayConfig::new(options.listen, options.server.clone());
    ferry_store::durable::write_file(&layout.config(), config.render().as_bytes(), 0o644)
        .map_err(|e| RelayError::io(&layout.config(), e))?;
    Ok(creds)
}
