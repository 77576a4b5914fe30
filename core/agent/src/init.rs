//! `ferry agent init`: enroll with a one-time agent token and write
//! `agent.toml`.

use std::path::PathBuf;

use crate::{AgentConfig, AgentError, AgentLayout};

/// What `ferry agent init` is told.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The server: the office's relay, or the hub.
    pub server: url::Url,
    /// The hub, as a fallback when `server` is a relay.
    pub hub: Option<url::Url>,
    /// A one-time token for the agent role.
    pub token: String,
    /// The data directory to create (new or empty).
    pub data: PathBuf,
    /// Where installers may write (absolute).
    pub install_root: PathBuf,
    /// The name in the hub's inventory (default: host name).
    pub name: Option<String>,
}

/// What init made.
#[derive(Debug, Clone)]
pub struct InitSummary {
    /// The agent's client id.
    pub id: String,
    /// Its site.
    pub site: Option<String>,
}

/// Enrolls and writes `agent.toml` (documented in place). Enrollment
/// writes the credentials into `data`; `agent.toml` is written last, so a
/// directory without it is not an agent.
pub async fn init(options: InitOptions) -> Result<InitSummary, AgentError> {
    let data = &options.data;
    if let Ok(mut entries) = std::fs::read_dir(data)
        && entries.next().is_some()
    {
        return Err(AgentError::DataDir(format!(
            "{} is not empty; give a new directory to `ferry agent init --data`",
            data.display()
        )));
    }
    if !options.install_root.is_absolute() {
        return Err(AgentError::DataDir(format!(
            "--install-root {} must be an absolute path",
            options.install_root.display()
        )));
    }
    std::fs::create_dir_all(data).map_err(|e| AgentError::io(data, e))?;
    let name = options.name.clone().or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    });
    let creds = ferry_net::enroll(&options.server, &options.token, data, name, Vec::new()).await?;
    if creds.info.role != "agent" {
        return Err(AgentError::DataDir(format!(
            "the token enrolled this machine as a {}, not an agent; create an agent token with \
             `ferry token create --role agent --site SITE` and use a new --data directory",
            creds.info.role
        )));
    }
    let layout = AgentLayout::new(data);
    let text = AgentConfig::template(&options.server, options.hub.as_ref(), &options.install_root);
    let path = layout.config();
    ferry_store::durable::write_file(&path, text.as_bytes(), 0o644)
        .map_err(|e| AgentError::io(&path, e))?;
    Ok(InitSummary {
        id: creds.info.id,
        site: creds.info.site,
    })
}
