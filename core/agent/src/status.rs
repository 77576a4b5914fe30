//! What `ferry agent status` shows: the running agent's own account
//! (`status.json`), its tasks and what it installed.

use std::path::Path;

use ferry_net::ClientCredentials;
use serde::{Deserialize, Serialize};

use crate::record::{Installed, Records, load_installed};
use crate::{AgentConfig, AgentError, AgentLayout, TaskRecord};

/// A task document the agent refused, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Unix time.
    pub at: i64,
    /// What was refused and why.
    pub message: String,
}

/// The running agent's account of itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Client id.
    pub id: String,
    /// Site.
    pub site: Option<String>,
    /// The server it checks in with.
    pub server: String,
    /// `relay` or `hub`, as the server said.
    pub server_kind: String,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Unix time of the last answered check-in.
    pub last_checkin_at: Option<i64>,
    /// The server's task list version at the last check-in.
    pub task_version: u64,
    /// Reports waiting in the outbox.
    pub outbox_pending: u64,
    /// Task documents refused lately (newest last).
    pub refused: Vec<Refusal>,
    /// The version of the settings set centrally that the agent holds (0:
    /// none).
    #[serde(default)]
    pub settings_version: u64,
    /// The settings that apply to this agent, with the scope that set each.
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, ferry_net::settings::Resolved>,
    /// What could not be applied, and why.
    #[serde(default)]
    pub settings_notes: Vec<String>,
    /// The policy plugin in use per kind.
    #[serde(default)]
    pub policies: std::collections::BTreeMap<String, String>,
    /// Plugin packages laid out, name → version.
    #[serde(default)]
    pub plugin_packages: std::collections::BTreeMap<String, String>,
}

impl AgentStatus {
    pub(crate) fn start(creds: &ClientCredentials, config: &AgentConfig) -> AgentStatus {
        AgentStatus {
            id: creds.info.id.clone(),
            site: creds.info.site.clone(),
            server: config.server.to_string(),
            pid: Some(std::process::id()),
            ..AgentStatus::default()
        }
    }

    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        ferry_store::durable::write_file(path, &bytes, 0o644)
    }
}

/// Everything `ferry agent status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The agent's own account (empty before its first run).
    pub agent: AgentStatus,
    /// Tasks held, oldest first.
    pub tasks: Vec<TaskRecord>,
    /// Installed packages, name → version.
    pub installed: Installed,
}

/// Reads an agent data directory's status (the agent may be running).
pub fn read(data: &Path) -> Result<StatusReport, AgentError> {
    let layout = AgentLayout::new(data);
    if !layout.config().exists() {
        return Err(AgentError::DataDir(format!(
            "{} is not an agent data directory (no agent.toml)",
            data.display()
        )));
    }
    let agent = std::fs::read(layout.status())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let tasks = if layout.tasks().exists() {
        Records::open(&layout.tasks())?.load_all()?
    } else {
        Vec::new()
    };
    Ok(StatusReport {
        agent,
        tasks,
        installed: load_installed(&layout.installed())?,
    })
}
