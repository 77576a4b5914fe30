//! What a plugin's store holds, and the host functions it may call.

use std::io::Read;
use std::path::{Component as PathPart, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, format_err};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::ferry::plugin::installer_host::CommandOutput;
use crate::bindings::ferry::plugin::types::LogLevel;
use crate::bindings::ferry::plugin::{host, installer_host, types};
use crate::cgroup::{CommandCgroup, join_from_child};
use crate::text::{MAX_SHORT_TEXT, plugin_text};

/// The most output kept of each stream of a command.
const MAX_COMMAND_OUTPUT: u64 = 1024 * 1024;
/// The longest log line kept from a plugin.
const MAX_LOG_LINE: usize = 4096;
/// The most log lines a plugin may write per call; the rest are counted and
/// reported in one line, so a plugin cannot flood the node's log.
pub(crate) const MAX_LOG_LINES_PER_CALL: usize = 200;
/// Progress reports passed on per call; an installer reporting in a loop
/// cannot flood the operator's screen or the node's log.
pub(crate) const MAX_PROGRESS_PER_CALL: usize = 1000;
/// The `PATH` commands run with: system directories only.
pub(crate) const COMMAND_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Receives an installer's progress reports.
pub type ProgressSink = Arc<dyn Fn(&str, u8, &str) + Send + Sync>;

/// A log level's name as operators write it (`warn`, not `LogLevel::Warn`).
pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// A log line a plugin wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// How important.
    pub level: LogLevel,
    /// What it said.
    pub message: String,
}

/// The data of one plugin store.
pub(crate) struct HostState {
    pub(crate) plugin: Arc<str>,
    pub(crate) config: Arc<str>,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) capture_logs: bool,
    pub(crate) logs: Vec<LogLine>,
    /// Lines logged and dropped in the current call.
    pub(crate) logged: usize,
    pub(crate) suppressed: usize,
    /// Progress reports passed on and dropped in the current call.
    progressed: usize,
    progress_suppressed: usize,
    /// Log lines and progress reports passed on per call.
    max_log_lines: usize,
    max_progress: usize,
    pub(crate) installer: Option<InstallerGrants>,
}

/// What an installer call may touch.
pub(crate) struct InstallerGrants {
    /// Directories it may write, as the plugin sees them (the same path as
    /// on the host).
    pub(crate) directories: Vec<PathBuf>,
    /// Programs it may run, by absolute path.
    pub(crate) commands: Vec<String>,
    /// When the whole call must be over.
    pub(crate) deadline: Instant,
    /// What the call may add to the disks of its grants; commands it runs
    /// are killed when over.
    pub(crate) budget: Arc<crate::budget::DiskBudget>,
    /// Where progress goes.
    pub(crate) progress: Option<ProgressSink>,
}

impl HostState {
    pub(crate) fn new(
        plugin: Arc<str>,
        config: Arc<str>,
        wasi: WasiCtx,
        memory_bytes: usize,
        capture_logs: bool,
        per_call: (usize, usize),
    ) -> HostState {
        HostState {
            plugin,
            config,
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_bytes),
            capture_logs,
            logs: Vec::new(),
            logged: 0,
            suppressed: 0,
            progressed: 0,
            progress_suppressed: 0,
            max_log_lines: per_call.0,
            max_progress: per_call.1,
            installer: None,
        }
    }

    /// Starts a call: a fresh log budget.
    pub(crate) fn begin_call(&mut self) {
        self.logged = 0;
        self.suppressed = 0;
        self.progressed = 0;
        self.progress_suppressed = 0;
    }

    /// Ends a call: says how many log lines were dropped, if any.
    pub(crate) fn end_call(&mut self) {
        if self.progress_suppressed > 0 {
            tracing::warn!(
                plugin = &*self.plugin,
                "{} more progress reports of this call dropped (at most {} per call)",
                self.progress_suppressed,
                self.max_progress
            );
        }
        if self.suppressed > 0 {
            tracing::warn!(
                plugin = &*self.plugin,
                "{} more log lines of this call suppressed (at most {} per call)",
                self.suppressed,
                self.max_log_lines
            );
        }
    }
}

/// A plugin's text made safe for one log line (see [`plugin_text`]).
fn one_line(text: &str, max: usize) -> String {
    plugin_text(text, max)
}

/// Caps a store's linear memory, summed over every memory of the plugin's
/// instances, and remembers whether the cap was hit, so a failed call can
/// say why.
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    used_bytes: usize,
    pub(crate) hit: bool,
}

impl MemoryLimiter {
    /// Linear memory the store's instances hold, in bytes.
    pub(crate) fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    fn new(max_bytes: usize) -> MemoryLimiter {
        MemoryLimiter {
            max_bytes,
            used_bytes: 0,
            hit: false,
        }
    }
}

/// Limits on how many instances, memories and tables a plugin may create;
/// components made from other languages (Python) need a few dozen.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .used_bytes
            .saturating_add(desired.saturating_sub(current));
        if total > self.max_bytes {
            self.hit = true;
            return Err(format_err!(
                "memory limit of {} MiB reached (asked for {} MiB in all)",
                self.max_bytes >> 20,
                total >> 20
            ));
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        if self.logged >= self.max_log_lines {
            self.suppressed += 1;
            return;
        }
        self.logged += 1;
        let message = one_line(&message, MAX_LOG_LINE);
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
        if self.capture_logs {
            self.logs.push(LogLine { level, message });
        }
    }

    fn config(&mut self) -> String {
        self.config.to_string()
    }

    fn now(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

impl installer_host::Host for HostState {
    fn run_command(
        &mut self,
        program: String,
        args: Vec<String>,
        timeout_ms: u32,
    ) -> Result<CommandOutput, String> {
        let Some(grants) = &self.installer else {
            return Err("only installers may run commands".into());
        };
        // A program is named by its granted absolute path or by that path's
        // file name; it runs by the absolute path, never found on PATH.
        let resolved = grants
            .commands
            .iter()
            .find(|c| {
                c.as_str() == program
                    || (!program.contains('/')
                        && Path::new(c.as_str()).file_name() == Some(program.as_ref()))
            })
            .cloned();
        let Some(path) = resolved else {
            let granted = if grants.commands.is_empty() {
                "none".to_string()
            } else {
                grants.commands.join(", ")
            };
            tracing::warn!(
                plugin = &*self.plugin,
                program,
                "refused a command not on the allow-list"
            );
            return Err(format!(
                "command {program:?} is not on this plugin's allow-list (granted: {granted}); \
                 a plugin may run a program when its plugin.toml asks for it under \
                 [permissions] commands and the node grants it under \
                 [plugins.grants.{}] commands",
                self.plugin
            ));
        };
        let remaining = grants.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "{program} not started: the call's time limit has passed"
            ));
        }
        let timeout = Duration::from_millis(timeout_ms.into()).min(remaining);
        run(&path, &args, timeout, Some(&grants.budget)).map_err(|e| format!("{path}: {e}"))
    }

    fn set_mode(&mut self, path: String, mode: u32) -> Result<(), String> {
        let Some(grants) = &self.installer else {
            return Err("only installers may set file modes".into());
        };
        if mode > 0o777 {
            return Err(format!(
                "mode {mode:o} for {path}: only permission bits (at most 0o777) may be set"
            ));
        }
        set_mode_beneath(&grants.directories, Path::new(&path), mode)
    }

    fn progress(&mut self, percent: u8, message: String) {
        if self.progressed >= self.max_progress {
            self.progress_suppressed += 1;
            return;
        }
        self.progressed += 1;
        if let Some(sink) = self.installer.as_ref().and_then(|g| g.progress.clone()) {
            sink(
                &self.plugin,
                percent.min(100),
                &one_line(&message, MAX_SHORT_TEXT),
            );
        }
    }
}

/// Sets `mode` on `path`, which must lie in a directory the plugin may
/// write. The path is resolved beneath that directory by cap-std, so `..`
/// and symlinks cannot lead out of it, even if they change while it runs.
fn set_mode_beneath(directories: &[PathBuf], path: &Path, mode: u32) -> Result<(), String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!(
            "{shown}: give the absolute path inside a granted directory"
        ));
    }
    let root = directories
        .iter()
        .find(|d| path.starts_with(d))
        .ok_or_else(|| format!("{shown} is outside the directories granted to this plugin"))?;
    let relative = path.strip_prefix(root).unwrap_or(path);
    if relative
        .components()
        .any(|c| matches!(c, PathPart::ParentDir | PathPart::CurDir))
    {
        return Err(format!("{shown}: '..' and '.' are not allowed"));
    }
    let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let meta = dir
        .symlink_metadata(relative)
        .map_err(|e| format!("{shown}: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(format!("{shown} is a symlink; modes are set on files only"));
    }
    set_permissions(&dir, relative, mode)
        .map_err(|e| format!("{shown}: {e} (paths may not leave {})", root.display()))
}

#[cfg(unix)]
fn set_permissions(dir: &cap_std::fs::Dir, path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let perms = cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(mode));
    dir.set_permissions(path, perms)
}

#[cfg(not(unix))]
fn set_permissions(_dir: &cap_std::fs::Dir, _path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// How long output is still collected after a command ended: a daemon it
/// started may hold its pipes open for good.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Runs a granted program without a shell, with a clean environment, in a
/// process group of its own that is killed whole at `timeout`.
fn run(
    program: &str,
    args: &[String],
    timeout: Duration,
    budget: Option<&crate::budget::DiskBudget>,
) -> std::io::Result<CommandOutput> {
    let cgroup = CommandCgroup::create();
    if cgroup.is_none() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "no writable cgroup for installer commands: what a command starts in a new \
                 session (setsid) can outlive the call; run the node as root or with a \
                 delegated cgroup"
            )
        });
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    if let Some(cgroup) = &cgroup {
        let procs = cgroup.procs_file();
        // SAFETY: the hook only opens, writes and closes a file.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                join_from_child(&procs)
            });
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            if let Some(cgroup) = cgroup {
                cgroup.kill_all();
            }
            return Err(e);
        }
    };
    let out = capture(child.stdout.take());
    let err = capture(child.stderr.take());
    // Waits in short steps, so a command writing past the call's disk
    // budget is stopped while it runs.
    let deadline = Instant::now() + timeout;
    let waited: std::io::Result<i32> = loop {
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(BUDGET_CHECK);
        match child.wait_timeout(step) {
            Ok(Some(status)) => break Ok(status.code().unwrap_or(-1)),
            Ok(None) if Instant::now() >= deadline => break Ok(-1),
            Ok(None) => {
                if let Some(over) = budget.and_then(|b| b.exceeded()) {
                    break Err(std::io::Error::other(format!("killed: the call {over}")));
                }
            }
            Err(e) => break Err(e),
        }
    };
    // What it started does not outlive it, however it ended: its process
    // group, and in its cgroup even what left the group (a daemon that
    // called setsid).
    kill_group(&mut child);
    let _ = child.wait();
    if let Some(cgroup) = cgroup {
        cgroup.kill_all();
    }
    let status = waited?;
    // Once everything holding the pipes is gone they end; without a cgroup
    // a survivor may keep them open, so take what arrived within the grace.
    let until = Instant::now() + OUTPUT_GRACE;
    Ok(CommandOutput {
        status,
        stdout: out.collect(until),
        stderr: err.collect(until),
    })
}

/// How often a running command's disk use is checked against the budget.
const BUDGET_CHECK: Duration = Duration::from_millis(20);

/// A command's output stream, read on a thread of its own into a buffer
/// that can be taken before the stream ends.
struct Captured {
    kept: Arc<std::sync::Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Captured {
    /// What was read, once the stream ended or `until` passed.
    fn collect(self, until: Instant) -> Vec<u8> {
        let _ = self
            .done
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Kills the command and everything it started in its process group.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group the
        // child leads (it was spawned with process_group(0)); no memory is
        // involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        return;
    }
    let _ = child.kill();
}

/// Reads a stream on its own thread, keeping the first MiB and draining the
/// rest so the command never blocks on a full pipe.
fn capture(stream: Option<impl Read + Send + 'static>) -> Captured {
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (done_tx, done) = std::sync::mpsc::channel();
    if let Some(mut stream) = stream {
        let buffer = kept.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut kept = buffer.lock().unwrap_or_else(|p| p.into_inner());
                        let room = (MAX_COMMAND_OUTPUT as usize).saturating_sub(kept.len());
                        kept.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
            }
            let _ = done_tx.send(());
        });
    } else {
        let _ = done_tx.send(());
    }
    Captured { kept, done }
}
