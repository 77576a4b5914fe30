//! Tasks on the wire: what an admin asks for, what the hub signs, what an
//! agent hears at check-in and reports back.
//!
//! A task is signed by the hub's control key as a `ferry-task` document
//! (`ferry_trust::documents`) whose body is a [`Task`]; its document
//! version is the hub's task sequence number, which grows with every new
//! or changed task, so an agent keeping the highest it saw per task refuses
//! replays and an un-cancel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The document kind of a signed task (`ferry-task`).
pub const TASK_DOCUMENT: &str = "task";
/// The report kind an agent uses for a task's progress.
pub const TASK_REPORT: &str = "task";
/// The report kind an agent uses for its inventory.
pub const INVENTORY_REPORT: &str = "inventory";
/// Longest a check-in is held open waiting for news, in seconds: below a
/// client's 30 s wait for an answer's headers.
pub const MAX_CHECKIN_WAIT: u64 = 20;

/// `POST /v1/tasks`: what an admin asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Package name.
    pub package: String,
    /// Version requirement; resolved at creation to the newest signed
    /// version matching it.
    pub requirement: String,
    /// `site:NAME`, `agent:ID` or `group:NAME`, at least one.
    pub targets: Vec<String>,
    /// Unix time before which agents do not start.
    #[serde(default)]
    pub not_before: Option<i64>,
    /// Unix time by which it must be done; agents refuse it afterwards.
    #[serde(default)]
    pub deadline: Option<i64>,
    /// Subnet multicast is allowed (`true`) or forbidden (`false`);
    /// `None`: the agents' `multicast` setting decides.
    #[serde(default)]
    pub multicast: Option<bool>,
    /// Seconds a subnet waits for agents to join a multicast session;
    /// `None`: the `multicast-delay` setting decides.
    #[serde(default)]
    pub multicast_delay_s: Option<u32>,
    /// Download and keep only; do not install.
    #[serde(default)]
    pub precache_only: bool,
    /// Install only what is already cached once the install may start;
    /// never download inside the install window (from `not_before`, or
    /// while `install_window` is open).
    #[serde(default)]
    pub install_from_cache_only: bool,
    /// When installs may start, in each agent's local time (see
    /// [`crate::window::InstallWindow`]); none: at any time.
    #[serde(default)]
    pub install_window: Option<String>,
    /// Install-step parameters laid over the package's own.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// The body of a signed task: everything an agent acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task's id, `t` and a number.
    pub id: String,
    /// Package name.
    pub package: String,
    /// The exact version to deploy.
    pub version: String,
    /// The requirement the admin gave.
    pub requirement: String,
    /// Sites whose agents are targets.
    pub sites: Vec<String>,
    /// Agents that are targets by id (named, or members of `groups` when
    /// the task was created).
    pub agents: Vec<String>,
    /// Groups the admin named, for display (their members are in `sites`
    /// and `agents`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Unix time before which agents do not start.
    pub not_before: Option<i64>,
    /// Unix time by which it must be done.
    pub deadline: Option<i64>,
    /// Subnet multicast is allowed.
    pub multicast: bool,
    /// Subnet multicast is forbidden; with neither this nor `multicast`,
    /// the agents' `multicast` setting decides. (Two fields, so agents
    /// that know only `multicast` still read the task.)
    #[serde(default)]
    pub multicast_forbidden: bool,
    /// Seconds a subnet waits for agents to join a multicast session;
    /// `None`: the `multicast-delay` setting decides.
    pub multicast_delay_s: Option<u32>,
    /// Download and keep only.
    pub precache_only: bool,
    /// Never download inside the install window.
    pub install_from_cache_only: bool,
    /// When installs may start, in each agent's local time (see
    /// [`crate::window::InstallWindow`]); none: at any time from
    /// `not_before`.
    #[serde(default)]
    pub install_window: Option<String>,
    /// Install-step parameters laid over the package's own.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Cancelled: agents stop and drop what they pinned for it.
    pub cancelled: bool,
    /// Unix time of creation.
    pub created_at: i64,
    /// Client id of the admin who created it.
    pub created_by: String,
}

impl Task {
    /// Whether the task allows (`Some(true)`) or forbids multicast, or
    /// leaves it to the settings (`None`).
    pub fn multicast_choice(&self) -> Option<bool> {
        match (self.multicast, self.multicast_forbidden) {
            (true, _) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        }
    }

    /// Whether the agent `id` of `site` is one of the task's targets.
    pub fn targets(&self, id: &str, site: Option<&str>) -> bool {
        self.agents.iter().any(|a| a == id)
            || site.is_some_and(|s| self.sites.iter().any(|t| t == s))
    }

    /// Whether any agent of `site` may be a target (for a relay, which
    /// passes tasks on to its site's agents).
    pub fn may_target_site(&self, site: Option<&str>) -> bool {
        !self.agents.is_empty() || site.is_some_and(|s| self.sites.iter().any(|t| t == s))
    }
}

/// `POST /v1/tasks` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCreated {
    /// The new task's id.
    pub id: String,
    /// The version the requirement resolved to.
    pub version: String,
    /// Unix time the signed task expires.
    pub expires_at: i64,
}

/// `POST /v1/checkin` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckinRequest {
    /// The task list version the caller holds; the answer waits until the
    /// server's passes it (or the wait ends).
    pub after: u64,
    /// The version of the settings the caller holds: a server holding
    /// newer ones answers at once with them.
    #[serde(default)]
    pub settings: u64,
}

/// `POST /v1/checkin` answer: the signed tasks that may concern the
/// caller, and the signed settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckinResponse {
    /// The version of what the server answers (tasks and settings).
    pub version: u64,
    /// `hub` or `relay`: what kind of source the server is.
    pub server: String,
    /// Signed task documents (JSON text), unexpired, cancelled ones
    /// included so agents learn of the cancellation.
    pub tasks: Vec<String>,
    /// The signed settings document ([`crate::settings`]), if the hub has
    /// any.
    #[serde(default)]
    pub settings: Option<String>,
}

/// Where an agent is with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Known, not started.
    Pending,
    /// Waiting for `not_before`, or for a retry.
    Waiting,
    /// Getting the bytes.
    Downloading,
    /// Every byte is cached and verified.
    Downloaded,
    /// The installer runs.
    Installing,
    /// Done.
    Installed,
    /// Given up; the reason says why.
    Failed,
    /// Cancelled by the admin.
    Cancelled,
}

impl TaskState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Waiting => "waiting",
            TaskState::Downloading => "downloading",
            TaskState::Downloaded => "downloaded",
            TaskState::Installing => "installing",
            TaskState::Installed => "installed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Installed | TaskState::Failed | TaskState::Cancelled
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// The subnet's multicast session.
    Multicast,
    /// Agents on the same LAN.
    Peer,
    /// The site's relay.
    Relay,
    /// The hub.
    Hub,
    /// A mirror by URL.
    Mirror,
    /// Content already on the machine (earlier versions, resumed fetches).
    Local,
}

impl SourceKind {
    /// The source kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Multicast => "multicast",
            SourceKind::Peer => "peer",
            SourceKind::Relay => "relay",
            SourceKind::Hub => "hub",
            SourceKind::Mirror => "mirror",
            SourceKind::Local => "local",
        }
    }
}

/// Bytes an agent got for a task, by source kind.
pub type BytesBySource = BTreeMap<SourceKind, u64>;

/// Why a task is stuck, failed, or used another source than planned.
/// Stable: scripts and consoles match these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    /// The relay did not answer (connect or stall timeout).
    RelayUnreachable,
    /// The hub did not answer.
    HubUnreachable,
    /// A mirror did not answer.
    MirrorUnreachable,
    /// A source sent bytes that do not match the signed metadata.
    BadBytesFromSource,
    /// A source sent too slowly.
    SourceTooSlow,
    /// The relay answers but does not serve the version yet (it is
    /// syncing); the agent waits for it, up to its patience.
    RelaySyncing,
    /// No multicast session exists for the task on this subnet.
    MulticastUnavailable,
    /// No peer on the LAN holds the content.
    PeerUnavailable,
    /// Every planned source failed.
    NoSourceLeft,
    /// Waiting for the task's `not_before`.
    NotBefore,
    /// Waiting for the task's install window to open; or it does not open
    /// before the deadline.
    WindowClosed,
    /// The install may not download any more and the content is not cached.
    NotCached,
    /// The deadline passed.
    DeadlinePassed,
    /// The disk is full.
    DiskFull,
    /// The installer failed.
    InstallerFailed,
    /// No installer plugin matches the package's install step.
    InstallerMissing,
    /// The signed metadata lists no such version.
    PackageNotFound,
    /// The signed task did not verify (tampered, expired, replayed).
    TaskRefused,
    /// Any other local failure; the message says what.
    LocalError,
}

impl ReasonCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::RelayUnreachable => "relay-unreachable",
            ReasonCode::HubUnreachable => "hub-unreachable",
            ReasonCode::MirrorUnreachable => "mirror-unreachable",
            ReasonCode::BadBytesFromSource => "bad-bytes-from-source",
            ReasonCode::SourceTooSlow => "source-too-slow",
            ReasonCode::RelaySyncing => "relay-syncing",
            ReasonCode::MulticastUnavailable => "multicast-unavailable",
            ReasonCode::PeerUnavailable => "peer-unavailable",
            ReasonCode::NoSourceLeft => "no-source-left",
            ReasonCode::NotBefore => "not-before",
            ReasonCode::WindowClosed => "window-closed",
            ReasonCode::NotCached => "not-cached",
            ReasonCode::DeadlinePassed => "deadline-passed",
            ReasonCode::DiskFull => "disk-full",
            ReasonCode::InstallerFailed => "installer-failed",
            ReasonCode::InstallerMissing => "installer-missing",
            ReasonCode::PackageNotFound => "package-not-found",
            ReasonCode::TaskRefused => "task-refused",
            ReasonCode::LocalError => "local-error",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that went another way than planned, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Why.
    pub reason: ReasonCode,
    /// The source concerned, if any.
    pub source: Option<SourceKind>,
    /// What happened, for the operator.
    pub message: String,
}

/// The body of a task report: an agent's state for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// The task.
    pub task: String,
    /// Grows with every report the agent makes for the task, so the
    /// newest wins however reports arrive.
    pub seq: u64,
    /// The state.
    pub state: TaskState,
    /// Download or install progress, 0-100.
    pub percent: u8,
    /// The source bytes are coming from now.
    pub source: Option<SourceKind>,
    /// Bytes received so far, by source.
    pub bytes: BytesBySource,
    /// Why it is stuck or failed, if it is.
    pub reason: Option<ReasonCode>,
    /// Fallbacks and refusals so far (at most the last 16).
    pub incidents: Vec<Incident>,
    /// One line for the operator.
    pub message: String,
}

/// What an agent reports about its machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Host name.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// Addresses with their prefix length (`10.1.2.3/24`).
    pub addresses: Vec<String>,
    /// Free bytes where the agent keeps its cache.
    pub free_disk: u64,
    /// On battery power, if known.
    pub on_battery: Option<bool>,
    /// The server the agent checks in with.
    pub server: String,
    /// Ferry's version.
    pub ferry_version: String,
}

/// `GET /v1/tasks` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task as signed.
    pub task: Task,
    /// Unix time the signed task expires.
    pub expires_at: i64,
    /// Targets known by state.
    pub states: BTreeMap<TaskState, u64>,
    /// Bytes by source, summed over the targets.
    pub bytes: BytesBySource,
}

/// One target's row in `GET /v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// The agent.
    pub agent: String,
    /// Its site.
    pub site: Option<String>,
    /// Unix time of its last report for the task.
    pub updated_at: Option<i64>,
    /// Its last report, `None` if it sent none yet (shown as pending).
    pub progress: Option<TaskProgress>,
}

/// `GET /v1/tasks/{id}` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The summary.
    pub summary: TaskSummary,
    /// Each target.
    pub targets: Vec<TargetStatus>,
}

/// Who belongs to a group: an agent matching any of its selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `agent:ID`: one agent.
    Agent(String),
    /// `site:NAME`: every agent of a site, also those enrolled later.
    Site(String),
    /// `os:NAME`: agents whose inventory names this operating system.
    Os(String),
    /// `arch:NAME`: agents whose inventory names this CPU architecture.
    Arch(String),
    /// `subnet:ADDR/LEN`: agents with an address inside the subnet.
    Subnet(std::net::IpAddr, u8),
}

impl std::str::FromStr for Selector {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, value) = text.split_once(':').ok_or_else(|| {
            format!("{text:?} is not a selector: use agent:ID, site:NAME, os:NAME, arch:NAME or subnet:ADDR/LEN")
        })?;
        let word = |v: &str| {
            if v.is_empty()
                || v.len() > 64
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                Err(format!(
                    "{text:?}: the value must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"
                ))
            } else {
                Ok(v.to_owned())
            }
        };
        match kind {
            "agent" => Ok(Selector::Agent(word(value)?)),
            "site" => Ok(Selector::Site(word(value)?)),
            "os" => Ok(Selector::Os(word(value)?)),
            "arch" => Ok(Selector::Arch(word(value)?)),
            "subnet" => {
                let (addr, len) = value.split_once('/').ok_or_else(|| {
                    format!("{text:?}: give the subnet as ADDR/LEN, e.g. 10.1.2.0/24")
                })?;
                let addr: std::net::IpAddr = addr
                    .parse()
                    .map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("{text:?}: the prefix length must be 0-{max}"))?;
                Ok(Selector::Subnet(addr, len))
            }
            other => Err(format!(
                "{text:?}: unknown selector {other:?}; use agent, site, os, arch or subnet"
            )),
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Agent(v) => write!(f, "agent:{v}"),
            Selector::Site(v) => write!(f, "site:{v}"),
            Selector::Os(v) => write!(f, "os:{v}"),
            Selector::Arch(v) => write!(f, "arch:{v}"),
            Selector::Subnet(a, l) => write!(f, "subnet:{a}/{l}"),
        }
    }
}

/// The address as the top bits of a u128 (IPv4 in the top 32), so one
/// prefix mask fits both families.
fn prefix_bits(addr: std::net::IpAddr) -> u128 {
    match addr {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

impl Selector {
    /// Whether the agent `id` of `site`, with `inventory` (its newest, if
    /// any), is selected.
    pub fn matches(&self, id: &str, site: Option<&str>, inventory: Option<&Inventory>) -> bool {
        match self {
            Selector::Agent(a) => a == id,
            Selector::Site(s) => site == Some(s.as_str()),
            Selector::Os(os) => inventory.is_some_and(|i| &i.os == os),
            Selector::Arch(arch) => inventory.is_some_and(|i| &i.arch == arch),
            Selector::Subnet(net, len) => inventory.is_some_and(|i| {
                i.addresses.iter().any(|a| {
                    let Some(Ok(addr)) = a.split('/').next().map(str::parse::<std::net::IpAddr>)
                    else {
                        return false;
                    };
                    if addr.is_ipv4() != net.is_ipv4() {
                        return false;
                    }
                    let bits = u32::from(*len);
                    let mask = if bits == 0 {
                        0
                    } else {
                        u128::MAX << (128 - bits.min(128))
                    };
                    prefix_bits(addr) & mask == prefix_bits(*net) & mask
                })
            }),
        }
    }
}

/// `POST /v1/groups`: a new group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The group's name.
    pub name: String,
    /// Its selectors ([`Selector`] as text).
    pub selectors: Vec<String>,
}

/// `POST /v1/groups/{name}`: selectors to add and remove.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupChange {
    /// Selectors to add.
    #[serde(default)]
    pub add: Vec<String>,
    /// Selectors to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `GET /v1/groups` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Its selectors.
    pub selectors: Vec<String>,
    /// Enrolled agents it selects now.
    pub members: Vec<String>,
}

/// Checks a task id's form (`t` and digits).
pub fn valid_task_id(id: &str) -> bool {
    id.len() > 1
        && id.len() <= 24
        && id.starts_with('t')
        && id[1..].bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            id: "t1".into(),
            package: "app".into(),
            version: "1.0.0".into(),
            requirement: "^1".into(),
            sites: vec!["berlin".into()],
            agents: vec!["pc-9".into()],
            groups: Vec::new(),
            not_before: None,
            deadline: None,
            multicast: false,
            multicast_forbidden: false,
            multicast_delay_s: None,
            precache_only: false,
            install_from_cache_only: false,
            install_window: None,
            params: BTreeMap::new(),
            cancelled: false,
            created_at: 0,
            created_by: "admin".into(),
        }
    }

    #[test]
    fn a_task_targets_its_sites_and_agents_only() {
        let t = task();
        assert!(t.targets("pc-1", Some("berlin")));
        assert!(t.targets("pc-9", Some("paris")));
        assert!(!t.targets("pc-1", Some("paris")));
        assert!(!t.targets("pc-1", None));
        let mut site_only = t.clone();
        site_only.agents.clear();
        assert!(site_only.may_target_site(Some("berlin")));
        assert!(!site_only.may_target_site(Some("paris")));
        assert!(
            t.may_target_site(Some("paris")),
            "agent targets may be anywhere"
        );
    }

    #[test]
    fn selectors_parse_and_match_by_id_site_and_inventory() {
        let inv = Inventory {
            os: "linux".into(),
            arch: "x86_64".into(),
            addresses: vec!["10.1.2.3/24".into(), "fe80::1/64".into()],
            ..Inventory::default()
        };
        let sel = |t: &str| t.parse::<Selector>().unwrap();
        assert!(sel("agent:pc-1").matches("pc-1", None, None));
        assert!(!sel("agent:pc-1").matches("pc-2", None, None));
        assert!(sel("site:berlin").matches("x", Some("berlin"), None));
        assert!(!sel("site:berlin").matches("x", Some("paris"), None));
        assert!(sel("os:linux").matches("x", None, Some(&inv)));
        assert!(
            !sel("os:linux").matches("x", None, None),
            "no inventory, no match"
        );
        assert!(sel("arch:x86_64").matches("x", None, Some(&inv)));
        assert!(sel("subnet:10.1.0.0/16").matches("x", None, Some(&inv)));
        assert!(sel("subnet:10.1.2.3/32").matches("x", None, Some(&inv)));
        assert!(!sel("subnet:10.1.3.0/24").matches("x", None, Some(&inv)));
        assert!(sel("subnet:0.0.0.0/0").matches("x", None, Some(&inv)));
        assert!(sel("subnet:fe80::/10").matches("x", None, Some(&inv)));
        assert_eq!(sel("subnet:10.1.0.0/16").to_string(), "subnet:10.1.0.0/16");
        for bad in [
            "pc-1",
            "color:red",
            "subnet:10.1.0.0",
            "subnet:10.1.0.0/33",
            "agent:",
            "os:a b",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reason_codes_are_spelled_as_on_the_wire() {
        for code in [ReasonCode::RelayUnreachable, ReasonCode::BadBytesFromSource] {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::from(code.as_str()));
        }
        assert!(valid_task_id("t42"));
        assert!(!valid_task_id("t"));
        assert!(!valid_task_id("x42"));
        assert!(!valid_task_id("t4/2"));
    }
}
