//! A relay as a real `ferry relay run` process, enrolled with a test's hub
//! (directly or through another relay).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;

use crate::process::{Client, Hub, Run, ferry_in, serve_in};

/// A relay data directory and, while running, its process.
pub struct Relay {
    /// The relay's data directory.
    pub data: PathBuf,
    process: Option<Child>,
    addr: Option<SocketAddr>,
    /// What runs its commands (empty, or `ip netns exec NS`).
    launcher: Vec<String>,
}

impl Relay {
    /// `ferry relay init` in `hub.root/NAME` for `site`, syncing from
    /// `upstream` (the hub's URL or another relay's), listening on any free
    /// loopback port. Panics if init fails.
    pub fn init(hub: &Hub, name: &str, site: &str, upstream: &str) -> Relay {
        Relay::init_in(hub, name, site, upstream, Vec::new())
    }

    /// [`Relay::init`] with every command of the relay (init, run, sync)
    /// run through `launcher`, such as a network namespace's.
    pub fn init_in(
        hub: &Hub,
        name: &str,
        site: &str,
        upstream: &str,
        launcher: Vec<String>,
    ) -> Relay {
        let relay = Relay {
            data: hub.root.path().join(name),
            process: None,
            addr: None,
            launcher,
        };
        let token = hub.token("relay", Some(site), None);
        ferry_in(
            &relay.launcher,
            [
                "relay".as_ref(),
                "init".as_ref(),
                "--server".as_ref(),
                upstream.as_ref(),
                "--token".as_ref(),
                token.as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--data".as_ref(),
                relay.data.as_os_str(),
            ],
        )
        .success();
        relay
    }

    /// Replaces each `(old, new)` in `relay.toml` (the relay must be
    /// restarted to read it).
    pub fn edit_config(&self, edits: &[(&str, &str)]) {
        let path = self.data.join("relay.toml");
        let mut text = std::fs::read_to_string(&path).expect("relay.toml");
        for (old, new) in edits {
            assert!(text.contains(old), "relay.toml has no {old:?}:\n{text}");
            text = text.replacen(old, new, 1);
        }
        std::fs::write(&path, text).expect("relay.toml is writable");
    }

    /// Has the default schedule leave new upstream content for its next
    /// hourly sync (`sync-new-content = false`), so after the first sync
    /// at start, only `ferry relay sync` moves content: tests that assert
    /// on one sync's record.
    pub fn sync_on_request_only(&self) {
        self.edit_config(&[(
            "[plugins.config]\n",
            "[plugins.config.interval]\nsync-new-content = false\n",
        )]);
    }

    /// Starts `ferry relay run` and waits until it listens (on the address
    /// it had before, after a restart).
    pub fn run(&mut self) {
        assert!(self.process.is_none(), "the relay is already running");
        let listen = self
            .addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let args: Vec<std::ffi::OsString> = vec![
            "relay".into(),
            "run".into(),
            "--listen".into(),
            listen.into(),
            "--data".into(),
            self.data.clone().into_os_string(),
        ];
        let (child, addr) = serve_in(&self.launcher, &args, "ferry relay listening on https://");
        self.process = Some(child);
        self.addr = Some(addr);
    }

    /// Stops the relay (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The relay's URL (it must have run).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr.expect("the relay has run"))
    }

    /// `ferry relay ARGS --data DIR`.
    pub fn cmd(&self, args: &[&str]) -> Run {
        let mut all: Vec<std::ffi::OsString> = vec!["relay".into()];
        all.extend(args.iter().map(Into::into));
        all.push("--data".into());
        all.push(self.data.clone().into_os_string());
        ferry_in(&self.launcher, all)
    }

    /// `ferry relay sync --json`: the finished sync's record. Panics unless
    /// it succeeded.
    pub fn sync(&self) -> serde_json::Value {
        let run = self.cmd(&["sync", "--json"]);
        let record = run.json();
        assert_eq!(record["outcome"], "succeeded", "{record}");
        record
    }

    /// `ferry relay status --json`.
    pub fn status(&self) -> serde_json::Value {
        self.cmd(&["status", "--json"]).json()
    }

    /// Enrolls a new agent of `site` through this relay, in `hub.root/NAME`.
    pub fn enroll_agent(&self, hub: &Hub, name: &str, site: &str) -> Client {
        let token = hub.token("agent", Some(site), None);
        let client = Client {
            data: hub.root.path().join(name),
        };
        client.enroll(&self.url(), &token).success();
        client
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}
