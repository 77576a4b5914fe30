//! What the agent keeps per task (`tasks/ID.json`) and which packages it
//! installed (`installed.json`), each written whole and durably, so a
//! restart resumes every task in the state it reached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_net::tasks::{BytesBySource, Incident, ReasonCode, SourceKind, Task, TaskState};
use serde::{Deserialize, Serialize};

use crate::AgentError;

/// Most incidents kept per task (the newest).
const MAX_INCIDENTS: usize = 16;

/// One task as the agent holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task, from its verified document.
    pub task: Task,
    /// The signed document, as received.
    pub document: String,
    /// The document's version: a document for this task is accepted only
    /// with a higher one.
    pub seq: u64,
    /// Where the agent is with it.
    pub state: TaskState,
    /// Progress of the current step, 0-100.
    pub percent: u8,
    /// The source bytes come from now.
    pub source: Option<SourceKind>,
    /// Bytes received, by source.
    pub bytes: BytesBySource,
    /// Why it waits or failed.
    pub reason: Option<ReasonCode>,
    /// Fallbacks and failures so far, newest last.
    pub incidents: Vec<Incident>,
    /// One line for the operator.
    pub message: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Unix time of the next attempt, after a failure.
    pub next_attempt_at: Option<i64>,
    /// The number of the last report made.
    pub report_seq: u64,
    /// Every byte of the package is cached and verified.
    #[serde(default)]
    pub content_ready: bool,
}

impl TaskRecord {
    /// A task just heard of.
    pub fn new(task: Task, document: String, seq: u64) -> TaskRecord {
        TaskRecord {
            task,
            document,
            seq,
            state: TaskState::Pending,
            percent: 0,
            source: None,
            bytes: BytesBySource::new(),
            reason: None,
            incidents: Vec::new(),
            message: "heard of the task".into(),
            attempts: 0,
            next_attempt_at: None,
            report_seq: 0,
            content_ready: false,
        }
    }

    /// Records an incident, keeping the newest few.
    pub fn incident(&mut self, reason: ReasonCode, source: Option<SourceKind>, message: String) {
        self.incidents.push(Incident {
            reason,
            source,
            message,
        });
        if self.incidents.len() > MAX_INCIDENTS {
            self.incidents.remove(0);
        }
    }

    /// Nothing more will happen: installed, failed, cancelled, or a
    /// pre-cache task whose content is downloaded.
    pub fn is_done(&self) -> bool {
        self.state.is_final() || (self.task.precache_only && self.state == TaskState::Downloaded)
    }
}

/// The task records in a directory.
pub(crate) struct Records {
    dir: PathBuf,
}

impl Records {
    pub(crate) fn open(dir: &Path) -> Result<Records, AgentError> {
        std::fs::create_dir_all(dir).map_err(|e| AgentError::io(dir, e))?;
        Ok(Records {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Every record, by task sequence (oldest task first). A damaged file
    /// is reported and skipped: the next check-in brings the task again.
    pub(crate) fn load_all(&self) -> Result<Vec<TaskRecord>, AgentError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| AgentError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| AgentError::io(&self.dir, e))?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| AgentError::io(&path, e))?;
            match serde_json::from_slice::<TaskRecord>(&bytes) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("ignoring damaged task record {}: {e}", path.display()),
            }
        }
        out.sort_by_key(|r| task_number(&r.task.id));
        Ok(out)
    }

    pub(crate) fn save(&self, record: &TaskRecord) -> Result<(), AgentError> {
        let path = self.path(&record.task.id);
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| AgentError::DataDir(format!("task {}: {e}", record.task.id)))?;
        ferry_store::durable::write_file(&path, &bytes, 0o600).map_err(|e| AgentError::io(&path, e))
    }
}

fn task_number(id: &str) -> u64 {
    id.trim_start_matches('t').parse().unwrap_or(u64::MAX)
}

/// Installed packages: name → version.
pub(crate) type Installed = BTreeMap<String, String>;

pub(crate) fn load_installed(path: &Path) -> Result<Installed, AgentError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::DataDir(format!("{} is damaged: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Installed::new()),
        Err(e) => Err(AgentError::io(path, e)),
    }
}

pub(crate) fn save_installed(path: &Path, installed: &Installed) -> Result<(), AgentError> {
    let bytes = serde_json::to_vec_pretty(installed)
        .map_err(|e| AgentError::DataDir(format!("installed packages: {e}")))?;
    ferry_store::durable::write_file(path, &bytes, 0o644).map_err(|e| AgentError::io(path, e))
}
