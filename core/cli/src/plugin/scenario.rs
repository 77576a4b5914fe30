//! Scenario files for `ferry plugin test`: the inputs a plugin is tried on.
//!
//! ```toml
//! [config]                 # optional: laid over the plugin's [config]
//! every-minutes = 30
//!
//! [limits]                 # optional: the node's caps for this plugin's kind
//! timeout-ms = 500         # (absent: the kind's defaults, see `ferry plugin inspect`)
//!
//! [grant]                  # optional, installers: what the node grants
//! directories = ["out"]    # relative to the scenario file, created if missing
//! commands = ["/usr/bin/true"]  # by absolute path
//!
//! [[case]]
//! name = "desktop beats laptop"
//! task = "t1"
//! self-id = "a"
//! volunteers = [{ id = "a", laptop = true }, { id = "b", wired = true }]
//! expect = "b"             # optional: the winner expected (elections)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use ferry_plugin::{
    Candidate, ElectionRequest, Grant, InstallRequest, LastSync, LimitCaps, ScheduleRequest,
    SourceHealth, StagedFile, SyncOutcome, TaskOptions, TransportRequest,
};

/// A parsed scenario file.
pub struct Scenario {
    pub config: Option<toml::Table>,
    pub limits: Option<LimitCaps>,
    pub grant: Option<Grant>,
    pub cases: Vec<toml::Table>,
    pub base: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    config: Option<toml::Table>,
    limits: Option<LimitCaps>,
    grant: Option<Grant>,
    #[serde(default)]
    case: Vec<toml::Table>,
}

impl Scenario {
    pub fn read(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        let file: File = toml::from_str(&text)
            .with_context(|| format!("scenario {} is not valid", path.display()))?;
        if file.case.is_empty() {
            bail!(
                "scenario {} has no [[case]]; add at least one with the inputs to try",
                path.display()
            );
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = parent
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", parent.display()))?;
        let grant = match file.grant {
            None => None,
            Some(mut g) => {
                let mut dirs = Vec::new();
                for d in &g.directories {
                    let dir = base.join(d);
                    std::fs::create_dir_all(&dir).with_context(|| {
                        format!("cannot create granted directory {}", dir.display())
                    })?;
                    dirs.push(dir.canonicalize()?);
                }
                g.directories = dirs;
                Some(g)
            }
        };
        Ok(Scenario {
            config: file.config,
            limits: file.limits,
            grant,
            cases: file.case,
            base,
        })
    }
}

/// A case's name, or its position.
pub fn case_name(case: &toml::Table, index: usize) -> String {
    case.get("name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("case {}", index + 1))
}

fn parse<'de, T: Deserialize<'de>>(case: &toml::Table) -> anyhow::Result<T> {
    let mut case = case.clone();
    case.remove("name");
    T::deserialize(toml::Value::Table(case)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A time: seconds since the epoch, or an RFC 3339 date-time.
#[derive(Deserialize)]
#[serde(untagged)]
enum Time {
    Seconds(u64),
    Text(String),
}

impl Time {
    fn seconds(&self) -> anyhow::Result<u64> {
        match self {
            Time::Seconds(s) => Ok(*s),
            Time::Text(t) => {
                let parsed = chrono::DateTime::parse_from_rfc3339(t).with_context(|| {
                    format!("{t:?} is not an RFC 3339 time like 2026-11-26T22:00:00Z")
                })?;
                u64::try_from(parsed.timestamp()).context("times before 1970 are not supported")
            }
        }
    }
}

fn now_or(time: &Option<Time>) -> anyhow::Result<u64> {
    match time {
        Some(t) => t.seconds(),
        None => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ElectionCase {
    task: String,
    self_id: String,
    volunteers: Vec<CandidateCase>,
    expect: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CandidateCase {
    id: String,
    #[serde(default)]
    free_disk_bytes: u64,
    #[serde(default)]
    uptime_secs: u64,
    #[serde(default = "yes")]
    on_mains_power: bool,
    #[serde(default)]
    wired: bool,
    #[serde(default)]
    laptop: bool,
    #[serde(default)]
    cached_bytes: u64,
}

fn yes() -> bool {
    true
}

/// An election case and the winner it expects, if any.
pub fn election(case: &toml::Table) -> anyhow::Result<(ElectionRequest, Option<String>)> {
    let c: ElectionCase = parse(case)?;
    let volunteers = c
        .volunteers
        .into_iter()
        .map(|v| Candidate {
            id: v.id,
            free_disk_bytes: v.free_disk_bytes,
            uptime_secs: v.uptime_secs,
            on_mains_power: v.on_mains_power,
            wired: v.wired,
            laptop: v.laptop,
            cached_bytes: v.cached_bytes,
        })
        .collect();
    Ok((
        ElectionRequest {
            task: c.task,
            self_id: c.self_id,
            volunteers,
        },
        c.expect,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TransportCase {
    package: String,
    version: String,
    size_bytes: u64,
    missing_bytes: Option<u64>,
    #[serde(default)]
    multicast_allowed: bool,
    deadline: Option<Time>,
    #[serde(default)]
    subnet_peers: u32,
    #[serde(default)]
    peers_with_content: u32,
    relay: Option<HealthCase>,
    hub: Option<HealthCase>,
    now: Option<Time>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HealthCase {
    #[serde(default = "yes")]
    reachable: bool,
    rtt_ms: Option<u32>,
    recent_throughput_bps: Option<u64>,
    #[serde(default)]
    consecutive_failures: u32,
}

impl From<HealthCase> for SourceHealth {
    fn from(h: HealthCase) -> SourceHealth {
        SourceHealth {
            reachable: h.reachable,
            rtt_ms: h.rtt_ms,
            recent_throughput_bps: h.recent_throughput_bps,
            consecutive_failures: h.consecutive_failures,
        }
    }
}

/// A transport case.
pub fn transport(case: &toml::Table) -> anyhow::Result<TransportRequest> {
    let c: TransportCase = parse(case)?;
    Ok(TransportRequest {
        package: c.package,
        version: c.version,
        size_bytes: c.size_bytes,
        missing_bytes: c.missing_bytes.unwrap_or(c.size_bytes),
        options: TaskOptions {
            multicast_allowed: c.multicast_allowed,
            deadline: c.deadline.as_ref().map(Time::seconds).transpose()?,
        },
        subnet_peers: c.subnet_peers,
        peers_with_content: c.peers_with_content,
        relay: c.relay.map(Into::into),
        hub: c.hub.map(Into::into).unwrap_or(SourceHealth {
            reachable: true,
            rtt_ms: None,
            recent_throughput_bps: None,
            consecutive_failures: 0,
        }),
        now: now_or(&c.now)?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ScheduleCase {
    now: Option<Time>,
    #[serde(default)]
    utc_offset_minutes: i32,
    last_sync: Option<LastSyncCase>,
    #[serde(default)]
    backlog_bytes: u64,
    #[serde(default)]
    urgent: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LastSyncCase {
    started: Time,
    finished: Option<Time>,
    outcome: String,
    error: Option<String>,
    #[serde(default)]
    bytes: u64,
}

/// A schedule case.
pub fn schedule(case: &toml::Table) -> anyhow::Result<ScheduleRequest> {
    let c: ScheduleCase = parse(case)?;
    let last_sync = match c.last_sync {
        None => None,
        Some(l) => {
            let started = l.started.seconds()?;
            Some(LastSync {
                started,
                finished: l
                    .finished
                    .as_ref()
                    .map(Time::seconds)
                    .transpose()?
                    .unwrap_or(started),
                outcome: match l.outcome.as_str() {
                    "succeeded" => SyncOutcome::Succeeded,
                    "partial" => SyncOutcome::Partial,
                    "failed" => SyncOutcome::Failed,
                    other => {
                        bail!("last-sync.outcome {other:?} must be succeeded, partial or failed")
                    }
                },
                error: l.error,
                bytes: l.bytes,
            })
        }
    };
    Ok(ScheduleRequest {
        now: now_or(&c.now)?,
        utc_offset_minutes: c.utc_offset_minutes,
        last_sync,
        backlog_bytes: c.backlog_bytes,
        urgent: c.urgent,
    })
}

/// What an installer case asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Install,
    Uninstall,
    Verify,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct InstallCase {
    action: Action,
    staged: PathBuf,
    package: String,
    version: String,
    #[serde(default)]
    params: toml::Table,
    previous_version: Option<String>,
}

/// An installer case: the action, the staged directory on the host and the
/// request (files listed from the staged directory).
pub fn install(
    case: &toml::Table,
    base: &Path,
) -> anyhow::Result<(Action, PathBuf, InstallRequest)> {
    let c: InstallCase = parse(case)?;
    let staged = base.join(&c.staged);
    let mut files = Vec::new();
    list_files(&staged, &staged, &mut files)
        .with_context(|| format!("cannot list the staged directory {}", staged.display()))?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    // A scenario names paths relative to itself; the plugin needs them as
    // the node would give them: absolute.
    let mut params = c.params;
    for (_, value) in params.iter_mut() {
        if let toml::Value::String(text) = value
            && let Some(rest) = text.strip_prefix("./")
        {
            let absolute = base.join(rest).to_string_lossy().into_owned();
            *value = toml::Value::String(absolute);
        }
    }
    let params = toml::to_string(&params)?;
    Ok((
        c.action,
        staged,
        InstallRequest {
            package: c.package,
            version: c.version,
            staged_dir: String::new(),
            files,
            params,
            previous_version: c.previous_version,
        },
    ))
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<StagedFile>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let path = entry.path();
        if meta.is_dir() {
            list_files(root, &path, out)?;
        } else if meta.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(StagedFile {
                path: rel.to_string_lossy().replace('\\', "/"),
                mode: mode_of(&meta),
                size: meta.len(),
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    0o644
}
