//! The `ferry` binary as a process: a running hub and enrolled clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `ferry` binary of this build: it sits beside the directory holding
/// the test executable (`target/<profile>/deps/..`). `cargo test` builds it
/// because the `ferry-cli` package has integration tests of its own.
pub fn ferry_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = profile_dir.join("ferry");
    assert!(
        bin.exists(),
        "{} does not exist; build it with `cargo build -p ferry-cli` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A finished `ferry` invocation.
#[derive(Debug)]
pub struct Run {
    /// The arguments, for messages.
    pub args: Vec<String>,
    /// Exit status, stdout and stderr.
    pub output: Output,
}

impl Run {
    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Whether the command succeeded.
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }

    /// Panics with both streams unless the command succeeded; returns stdout.
    pub fn success(&self) -> String {
        assert!(
            self.ok(),
            "ferry {} failed ({}):\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Panics unless the command failed with `needle` in its stderr; returns
    /// stderr.
    pub fn failure(&self, needle: &str) -> String {
        let err = self.stderr();
        assert!(
            !self.ok(),
            "ferry {} succeeded but should have failed:\nstdout: {}\nstderr: {err}",
            self.args.join(" "),
            self.stdout()
        );
        assert!(
            err.contains(needle),
            "ferry {} failed without saying {needle:?}:\nstderr: {err}",
            self.args.join(" ")
        );
        assert!(
            !err.contains("panicked"),
            "ferry {} panicked:\n{err}",
            self.args.join(" ")
        );
        err
    }

    /// Stdout parsed as JSON, after checking success.
    pub fn json(&self) -> serde_json::Value {
        let out = self.success();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// Runs `ferry ARGS` to completion.
pub fn ferry<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    ferry_in(&[], args)
}

/// The `ferry` binary as a command, run through `launcher` (such as
/// `ip netns exec NS`) when that is not empty.
pub fn ferry_command(launcher: &[String]) -> Command {
    match launcher.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(ferry_bin());
            command
        }
        None => Command::new(ferry_bin()),
    }
}

/// [`ferry`] run through `launcher` (see [`ferry_command`]).
pub fn ferry_in<I, S>(launcher: &[String], args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = ferry_command(launcher)
        .args(&args)
        .env_remove("FERRY_DATA")
        .env_remove("FERRY_LISTEN")
        .env_remove("FERRY_TOKEN")
        .env("FERRY_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("ferry starts");
    Run {
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        output,
    }
}

/// A hub data directory and, while running, its `ferry hub run` process.
pub struct Hub {
    /// Holds every file of the test.
    pub root: tempfile::TempDir,
    /// The hub's data directory.
    pub data: PathBuf,
    process: Option<Child>,
    addr: Option<SocketAddr>,
}

impl Hub {
    /// `ferry hub init`, then each `(old, new)` of `edits` replaced in the
    /// generated `hub.toml` (e.g. a shorter metadata lifetime).
    pub fn init(edits: &[(&str, &str)]) -> Hub {
        Hub::init_with(&[], edits)
    }

    /// [`Hub::init`] with more arguments for `ferry hub init` (such as
    /// `--san ADDRESS`).
    pub fn init_with(args: &[&str], edits: &[(&str, &str)]) -> Hub {
        let root = tempfile::tempdir().expect("temporary directory");
        let data = root.path().join("hub");
        let mut all: Vec<std::ffi::OsString> = vec![
            "hub".into(),
            "init".into(),
            "--data".into(),
            data.clone().into_os_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        all.extend(args.iter().map(Into::into));
        let run = ferry(all);
        run.success();
        if !edits.is_empty() {
            let path = data.join("hub.toml");
            let mut text = std::fs::read_to_string(&path).expect("hub.toml");
            for (old, new) in edits {
                assert!(text.contains(old), "hub.toml has no {old:?}:\n{text}");
                text = text.replace(old, new);
            }
            std::fs::write(&path, text).expect("hub.toml is writable");
        }
        Hub {
            root,
            data,
            process: None,
            addr: None,
        }
    }

    /// Initializes and starts a hub with the default configuration.
    pub fn start() -> Hub {
        let mut hub = Hub::init(&[]);
        hub.run();
        hub
    }

    /// Starts `ferry hub run` on any free port and waits until it reports
    /// its address.
    pub fn run(&mut self) {
        self.run_on("127.0.0.1:0");
    }

    /// Starts the hub again on the address it had, after [`Hub::stop`].
    pub fn run_again(&mut self) {
        let addr = self.addr.expect("the hub ran before").to_string();
        self.run_on(&addr);
    }

    /// Stops the hub and starts it again on the same address, so enrolled
    /// clients (which keep the hub's URL) reach it.
    pub fn restart(&mut self) {
        let addr = self.addr.expect("the hub is running").to_string();
        self.stop();
        self.run_on(&addr);
    }

    /// Starts `ferry hub run --listen LISTEN` (a hub listening on every
    /// address is reached on loopback by [`Hub::url`]).
    pub fn run_on(&mut self, listen: &str) {
        assert!(self.process.is_none(), "the hub is already running");
        let mut args: Vec<std::ffi::OsString> =
            vec!["hub".into(), "run".into(), "--listen".into(), listen.into()];
        args.extend(["--data".into(), self.data.clone().into_os_string()]);
        let (child, mut addr) = serve(&args, "ferry hub listening on https://");
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        self.process = Some(child);
        self.addr = Some(addr);
    }

    /// Asks the hub to stop (SIGTERM, as `systemctl stop` would) and waits
    /// for it; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let mut child = self.process.take().expect("the hub is running");
        // SAFETY: kill(2) on a child process we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("hub exit status").success()
    }

    /// Whether the hub process is still running (it was started and has
    /// not exited).
    pub fn running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The hub's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the hub is running")
    }

    /// Stops the hub process (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs an offline admin command (one that needs the hub stopped):
    /// stops the hub, runs `ferry ARGS --data DIR`, starts the hub again on
    /// the same address.
    pub fn offline(&mut self, args: &[&str]) -> Run {
        let addr = self.addr.expect("the hub is running").to_string();
        self.stop();
        let run = self.admin(args);
        self.run_on(&addr);
        run
    }

    /// The hub's URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr.expect("the hub is running"))
    }

    /// A one-time token: `ferry token create --role ROLE [--site SITE]
    /// [--expires E]`.
    pub fn token(&self, role: &str, site: Option<&str>, expires: Option<&str>) -> String {
        let mut args = vec![
            "token".to_owned(),
            "create".into(),
            "--data".into(),
            self.data.display().to_string(),
            "--role".into(),
            role.into(),
        ];
        if let Some(site) = site {
            args.extend(["--site".into(), site.into()]);
        }
        if let Some(expires) = expires {
            args.extend(["--expires".into(), expires.into()]);
        }
        ferry(args).success().trim().to_owned()
    }

    /// Enrolls a new client in `root/NAME` with a fresh token for `role`.
    pub fn enroll(&self, name: &str, role: &str) -> Client {
        let site = (role != "publisher").then_some("berlin");
        let token = self.token(role, site, None);
        let client = Client {
            data: self.root.path().join(name),
        };
        client.enroll(&self.url(), &token).success();
        client
    }

    /// Runs `ferry ARGS` with the hub's data directory appended as `--data`.
    pub fn admin(&self, args: &[&str]) -> Run {
        let mut all: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        all.push("--data".into());
        all.push(self.data.clone().into_os_string());
        ferry(all)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a serving `ferry ARGS` (a hub or a relay) and waits until it
/// prints `ready` followed by its address: readiness is that line, printed
/// once it accepts connections. Its stdout keeps being drained so it never
/// blocks on a full pipe.
pub fn serve(args: &[std::ffi::OsString], ready: &str) -> (Child, SocketAddr) {
    serve_in(&[], args, ready)
}

/// [`serve`] run through `launcher` (see [`ferry_command`]).
pub fn serve_in(
    launcher: &[String],
    args: &[std::ffi::OsString],
    ready: &str,
) -> (Child, SocketAddr) {
    let mut child = ferry_command(launcher)
        .args(args)
        .env("FERRY_LOG", "warn")
        .env_remove("FERRY_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ferry starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix(ready) {
                    break addr.trim().parse::<SocketAddr>().expect("an address");
                }
            }
            _ => {
                let status = child.wait().expect("exit status");
                panic!("ferry {args:?} exited ({status}) before listening");
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// A client data directory (enrolled or not).
#[derive(Debug, Clone)]
pub struct Client {
    /// The data directory.
    pub data: PathBuf,
}

impl Client {
    /// `ferry enroll --server URL --token TOKEN --data DIR`.
    pub fn enroll(&self, server: &str, token: &str) -> Run {
        ferry([
            "enroll".as_ref(),
            "--server".as_ref(),
            server.as_ref(),
            "--token".as_ref(),
            token.as_ref(),
            "--data".as_ref(),
            self.data.as_os_str(),
        ])
    }

    /// Runs `ferry ARGS --data DIR`.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let mut all: Vec<std::ffi::OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        all.push("--data".into());
        all.push(self.data.clone().into_os_string());
        ferry(all)
    }

    /// `ferry publish DIR --name NAME --version VERSION --json`.
    pub fn publish(&self, dir: &Path, name: &str, version: &str) -> Run {
        self.publish_with(dir, name, version, &["--json"])
    }

    /// `ferry publish DIR --name NAME --version VERSION EXTRA...`.
    pub fn publish_with(&self, dir: &Path, name: &str, version: &str, extra: &[&str]) -> Run {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "publish".as_ref(),
            dir.as_os_str(),
            "--name".as_ref(),
            name.as_ref(),
            "--version".as_ref(),
            version.as_ref(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        self.run(&args)
    }

    /// `ferry fetch SPEC --out OUT --json [--mirror URL]`.
    pub fn fetch(&self, spec: &str, out: &Path, mirror: Option<&str>) -> Run {
        let mut args: Vec<std::ffi::OsString> = vec![
            "fetch".into(),
            spec.into(),
            "--out".into(),
            out.as_os_str().to_owned(),
            "--json".into(),
        ];
        if let Some(m) = mirror {
            args.extend(["--mirror".into(), m.into()]);
        }
        self.run(&args)
    }

    /// The version of each role in the verified TUF metadata this client
    /// keeps (`root`, `timestamp`, `snapshot`, `targets`).
    pub fn trusted_versions(&self) -> std::collections::BTreeMap<String, u64> {
        let dir = self.data.join("tuf");
        let mut out = std::collections::BTreeMap::new();
        for role in ["root", "timestamp", "snapshot", "targets"] {
            if let Ok(bytes) = std::fs::read(dir.join(format!("{role}.json"))) {
                let doc: serde_json::Value =
                    serde_json::from_slice(&bytes).expect("trusted metadata is JSON");
                let version = doc["signed"]["version"].as_u64().expect("a version");
                out.insert(role.to_owned(), version);
            }
        }
        out
    }

    /// Removes the content this client keeps locally (files, manifests,
    /// spooled chunks), so its next fetch takes everything from the source.
    /// Fails the test if there was none: a fetch must have kept some.
    pub fn forget_content(&self) {
        let dir = self.data.join("cache/content");
        assert!(
            dir.join("store").is_dir(),
            "{} holds no content",
            dir.display()
        );
        std::fs::remove_dir_all(&dir).expect("local content removed");
    }

    /// An HTTPS client with this client's credentials, for raw API calls.
    pub fn http(&self) -> ferry_net::HubClient {
        let creds = ferry_net::ClientCredentials::load(&self.data).expect("enrolled");
        ferry_net::HubClient::from_credentials(&creds).expect("client")
    }
}

/// Waits until `deadline` has passed (for tests about expiry, where the
/// passing of time is the point, not a stand-in for readiness).
pub fn wait_until(deadline: std::time::SystemTime) {
    while let Ok(left) = deadline.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left.min(Duration::from_millis(200)) + Duration::from_millis(1));
    }
}

/// Runs a future to completion on a fresh runtime (for raw API calls).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}
