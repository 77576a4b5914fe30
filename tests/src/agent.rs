//! An agent as a real `ferry agent run` process, enrolled through a relay
//! or with the hub, and tasks created and read through the hub's API.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Client, Hub, ferry, ferry_command};

/// An agent data directory, its install root and, while running, its
/// process.
pub struct Agent {
    /// The data directory.
    pub data: PathBuf,
    /// Where its installers write.
    pub install_root: PathBuf,
    process: Option<Child>,
}

impl Agent {
    /// `ferry agent init` in `hub.root/NAME` for `site`, checking in with
    /// `server` (a relay's URL or the hub's), with `fallback` (the hub) as
    /// the source past a relay. Panics if init fails.
    pub fn init(hub: &Hub, name: &str, site: &str, server: &str, fallback: Option<&str>) -> Agent {
        let data = hub.root.path().join(name);
        let install_root = hub.root.path().join(format!("{name}-installed"));
        let token = hub.token("agent", Some(site), None);
        let mut args: Vec<std::ffi::OsString> = vec![
            "agent".into(),
            "init".into(),
            "--server".into(),
            server.into(),
            "--token".into(),
            token.into(),
            "--name".into(),
            name.into(),
            "--install-root".into(),
            install_root.clone().into(),
            "--data".into(),
            data.clone().into(),
        ];
        if let Some(hub_url) = fallback {
            args.extend(["--hub".into(), hub_url.into()]);
        }
        ferry(args).success();
        Agent {
            data,
            install_root,
            process: None,
        }
    }

    /// Replaces each `(old, new)` in `agent.toml` (read at the next run).
    pub fn edit_config(&self, edits: &[(&str, &str)]) {
        let path = self.data.join("agent.toml");
        let mut text = std::fs::read_to_string(&path).expect("agent.toml");
        for (old, new) in edits {
            assert!(text.contains(old), "agent.toml has no {old:?}:\n{text}");
            text = text.replacen(old, new, 1);
        }
        std::fs::write(&path, text).expect("agent.toml is writable");
    }

    /// Starts `ferry agent run`.
    pub fn run(&mut self) {
        assert!(self.process.is_none(), "the agent is already running");
        let child = ferry_command(&[])
            .args(["agent", "run", "--data"])
            .arg(&self.data)
            .env("FERRY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry agent run starts");
        self.process = Some(child);
    }

    /// Stops the agent with SIGKILL (no chance to tidy up) and waits.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `ferry agent status --json`.
    pub fn status(&self) -> serde_json::Value {
        let args: [&std::ffi::OsStr; 5] = [
            "agent".as_ref(),
            "status".as_ref(),
            "--json".as_ref(),
            "--data".as_ref(),
            self.data.as_os_str(),
        ];
        ferry(args).json()
    }

    /// Waits (up to `limit`) until the agent's status satisfies `done`;
    /// returns it. Panics with the last status otherwise.
    pub fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "agent {}: {what} did not happen within {limit:?}; status: {status:#}",
                self.data.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent's own record of task `id`, if it holds one.
    pub fn task(&self, id: &str) -> Option<serde_json::Value> {
        self.status()["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["task"]["id"] == id)
            .cloned()
    }

    /// Waits (up to `limit`) until the agent lists a refused task document
    /// whose message contains `needle`.
    pub fn wait_refusal(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status();
            let refused = status["agent"]["refused"].as_array().cloned();
            if refused
                .unwrap_or_default()
                .iter()
                .any(|r| r["message"].as_str().is_some_and(|m| m.contains(needle)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no refusal saying {needle:?}: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to `limit`) until the agent's record of task `id`
    /// satisfies `done`; returns it. Panics with the last record otherwise.
    pub fn wait_task(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let record = self.task(id);
            if let Some(r) = &record
                && done(r)
            {
                return r.clone();
            }
            assert!(
                start.elapsed() < limit,
                "agent {} did not get task {id} to the expected state within {limit:?}; last: {}",
                self.data.display(),
                record
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "none".into())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Publishes `dir` as `name` `version`, installed by the built-in `copy`
/// installer into the agent's install root under `name`.
pub fn publish_copy(admin: &Client, dir: &std::path::Path, name: &str, version: &str) {
    let target = format!("target={name}");
    admin
        .publish_with(
            dir,
            name,
            version,
            &["--install", "copy", "--param", &target],
        )
        .success();
}

/// `ferry task create --package SPEC --target ... ARGS --json` by
/// `admin` (a publisher); returns the task's id. Panics on failure.
pub fn create_task(admin: &Client, package: &str, targets: &[&str], args: &[&str]) -> String {
    let mut all: Vec<String> = vec![
        "task".into(),
        "create".into(),
        "--package".into(),
        package.into(),
    ];
    for t in targets {
        all.extend(["--target".into(), (*t).into()]);
    }
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.push("--json".into());
    let created = admin.run(&all).json();
    created["id"].as_str().expect("a task id").to_owned()
}

/// `ferry task show ID --json`.
pub fn show_task(admin: &Client, id: &str) -> serde_json::Value {
    admin.run(&["task", "show", id, "--json"]).json()
}

/// Waits (up to `limit`) until the hub's view of task `id` satisfies
/// `done`; returns it.
pub fn wait_hub_task(
    admin: &Client,
    id: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let detail = show_task(admin, id);
        if done(&detail) {
            return detail;
        }
        assert!(
            start.elapsed() < limit,
            "the hub's view of task {id} did not reach the expected state within {limit:?}: {detail:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many of the task's targets the hub shows in `state`.
pub fn targets_in(detail: &serde_json::Value, state: &str) -> usize {
    detail["targets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["progress"]["state"] == state)
                .count()
        })
        .unwrap_or(0)
}
