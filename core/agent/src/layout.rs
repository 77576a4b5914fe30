use std::path::{Path, PathBuf};

/// Where an agent keeps things in its data directory.
#[derive(Debug, Clone)]
pub struct AgentLayout {
    data: PathBuf,
}

impl AgentLayout {
    /// The layout of `data`.
    pub fn new(data: &Path) -> Self {
        AgentLayout {
            data: data.to_owned(),
        }
    }

    /// The data directory (also its client credentials).
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// `agent.toml`.
    pub fn config(&self) -> PathBuf {
        self.data.join("agent.toml")
    }

    /// The local distribution cache: content store, manifests, spool.
    pub fn content(&self) -> PathBuf {
        self.data.join("cache").join("content")
    }

    /// One file per task: its signed document and where the agent is.
    pub fn tasks(&self) -> PathBuf {
        self.data.join("tasks")
    }

    /// Packages installed, by name.
    pub fn installed(&self) -> PathBuf {
        self.data.join("installed.json")
    }

    /// Staged packages handed to installers.
    pub fn staging(&self) -> PathBuf {
        self.data.join("staging")
    }

    /// Reports not yet acknowledged by the server.
    pub fn outbox(&self) -> PathBuf {
        self.data.join("outbox.db")
    }

    /// Compiled plugin code.
    pub fn plugin_cache(&self) -> PathBuf {
        self.data.join("plugin-cache")
    }

    /// What the running agent last said about itself.
    pub fn status(&self) -> PathBuf {
        self.data.join("status.json")
    }

    /// The newest signed settings that verified.
    pub fn settings(&self) -> PathBuf {
        self.data.join("settings.json")
    }

    /// Plugins delivered as Ferry packages (the `plugin-packages` setting),
    /// one directory each.
    pub fn plugin_packages(&self) -> PathBuf {
        self.data.join("plugin-packages")
    }

    /// Which version of each plugin package is laid out.
    pub fn plugin_packages_state(&self) -> PathBuf {
        self.data.join("plugin-packages.json")
    }

    /// The run lock.
    pub fn lock(&self) -> PathBuf {
        self.data.join("agent.lock")
    }
}
