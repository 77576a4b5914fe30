//! Tasks as the hub signed them: the task body an admin reads and the
//! signed document agents get, under one growing sequence number.

use rusqlite::{OptionalExtension, params};

use crate::{CatalogError, SqliteCatalog};

/// One task as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// `t` and a number.
    pub id: String,
    /// The task's sequence number: the signed document's version. A
    /// changed task (cancelled) gets a new, higher one.
    pub seq: u64,
    /// Unix time of creation.
    pub created_at: i64,
    /// Unix time the signed document expires.
    pub expires_at: i64,
    /// The task body (JSON).
    pub body: String,
    /// The signed document (JSON) agents verify.
    pub document: String,
}

/// The settings as kept: every scope's values and their signed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsRecord {
    /// The signed document's version; grows with every change.
    pub seq: u64,
    /// Unix time the signed document expires.
    pub expires_at: i64,
    /// The settings body (JSON).
    pub body: String,
    /// The signed document (JSON) agents verify.
    pub document: String,
}

/// Where tasks are kept.
pub trait TaskStore: Send + Sync {
    /// The highest sequence number used so far (0 if none).
    fn last_task_seq(&self) -> Result<u64, CatalogError>;
    /// Keeps a task durably, new or replacing the one with its id (whose
    /// sequence number must be lower).
    fn put_task(&self, task: &TaskRecord) -> Result<(), CatalogError>;
    /// A task by id.
    fn task(&self, id: &str) -> Result<Option<TaskRecord>, CatalogError>;
    /// All tasks, oldest first.
    fn tasks(&self) -> Result<Vec<TaskRecord>, CatalogError>;
    /// Creates a group with `selectors` (JSON); `false` if it exists.
    fn create_group(&self, name: &str, selectors: &str, now: i64) -> Result<bool, CatalogError>;
    /// Replaces a group's selectors (JSON); `false` if there is no such
    /// group.
    fn set_group(&self, name: &str, selectors: &str) -> Result<bool, CatalogError>;
    /// Every group: name and selectors (JSON), by name.
    fn groups(&self) -> Result<Vec<(String, String)>, CatalogError>;
    /// The settings, if any were ever set.
    fn settings(&self) -> Result<Option<SettingsRecord>, CatalogError>;
    /// Replaces the settings; the new sequence number must be higher.
    fn put_settings(&self, settings: &SettingsRecord) -> Result<(), CatalogError>;
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        id: r.get(0)?,
        seq: r.get::<_, i64>(1)? as u64,
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        body: r.get(4)?,
        document: r.get(5)?,
    })
}

impl TaskStore for SqliteCatalog {
    fn settings(&self) -> Result<Option<SettingsRecord>, CatalogError> {
        let conn = self.read();
        Ok(conn
            .query_row(
                "SELECT seq, expires_at, body, document FROM settings WHERE id = 1",
                [],
                |r| {
                    Ok(SettingsRecord {
                        seq: r.get::<_, i64>(0)? as u64,
                        expires_at: r.get(1)?,
                        body: r.get(2)?,
                        document: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    fn put_settings(&self, settings: &SettingsRecord) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let held: Option<i64> = tx
            .query_row("SELECT seq FROM settings WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        if let Some(held) = held
            && held as u64 >= settings.seq
        {
            return Err(CatalogError::Invalid(format!(
                "the settings are held with sequence {held} already; a change needs a higher one"
            )));
        }
        tx.execute(
            "INSERT OR REPLACE INTO settings (id, seq, expires_at, body, document)
             VALUES (1, ?1, ?2, ?3, ?4)",
            params![
                settings.seq as i64,
                settings.expires_at,
                settings.body,
                settings.document
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn last_task_seq(&self) -> Result<u64, CatalogError> {
        let conn = self.read();
        let n: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM tasks", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn put_task(&self, task: &TaskRecord) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let held: Option<i64> = tx
            .query_row("SELECT seq FROM tasks WHERE id = ?1", [&task.id], |r| {
                r.get(0)
            })
            .optional()?;
        if held.is_some_and(|s| s as u64 >= task.seq) {
            return Err(CatalogError::Invalid(format!(
                "task {} is held with sequence {} already; a change needs a higher one",
                task.id,
                held.unwrap_or_default()
            )));
        }
        tx.execute(
            "INSERT OR REPLACE INTO tasks (id, seq, created_at, expires_at, body, document)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                task.id,
                task.seq as i64,
                task.created_at,
                task.expires_at,
                task.body,
                task.document
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn task(&self, id: &str) -> Result<Option<TaskRecord>, CatalogError> {
        let conn = self.read();
        Ok(conn
            .query_row(
                "SELECT id, seq, created_at, expires_at, body, document FROM tasks WHERE id = ?1",
                [id],
                record,
            )
            .optional()?)
    }

    fn tasks(&self) -> Result<Vec<TaskRecord>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, seq, created_at, expires_at, body, document FROM tasks ORDER BY created_at, seq",
        )?;
        let rows = stmt.query_map([], record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn create_group(&self, name: &str, selectors: &str, now: i64) -> Result<bool, CatalogError> {
        let conn = self.conn();
        let added = conn.execute(
            "INSERT OR IGNORE INTO groups (name, created_at, selectors) VALUES (?1, ?2, ?3)",
            params![name, now, selectors],
        )?;
        Ok(added > 0)
    }

    fn set_group(&self, name: &str, selectors: &str) -> Result<bool, CatalogError> {
        let conn = self.conn();
        let changed = conn.execute(
            "UPDATE groups SET selectors = ?2 WHERE name = ?1",
            params![name, selectors],
        )?;
        Ok(changed > 0)
    }

    fn groups(&self) -> Result<Vec<(String, String)>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT name, selectors FROM groups ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, seq: u64) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            seq,
            created_at: 10,
            expires_at: 20,
            body: "{}".into(),
            document: format!("doc{seq}"),
        }
    }

    #[test]
    fn a_task_changes_only_to_a_higher_sequence_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert_eq!(catalog.last_task_seq().unwrap(), 0);
        catalog.put_task(&rec("t1", 1)).unwrap();
        catalog.put_task(&rec("t2", 2)).unwrap();
        catalog.put_task(&rec("t1", 3)).unwrap();
        let err = catalog.put_task(&rec("t1", 3)).unwrap_err();
        assert!(err.to_string().contains("higher"), "{err}");
        assert_eq!(catalog.last_task_seq().unwrap(), 3);
        drop(catalog);
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert_eq!(catalog.task("t1").unwrap().unwrap().document, "doc3");
        assert!(catalog.task("t9").unwrap().is_none());
        let all: Vec<String> = catalog.tasks().unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(all, ["t2", "t1"]);
        // Groups: created once, changed, listed.
        assert!(catalog.create_group("canary", "[]", 1).unwrap());
        assert!(!catalog.create_group("canary", "[\"x\"]", 2).unwrap());
        assert!(catalog.set_group("canary", "[\"agent:pc-1\"]").unwrap());
        assert!(!catalog.set_group("nope", "[]").unwrap());
        assert_eq!(
            catalog.groups().unwrap(),
            vec![("canary".to_owned(), "[\"agent:pc-1\"]".to_owned())]
        );
    }

    #[test]
    fn settings_change_only_to_a_higher_sequence_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert_eq!(catalog.settings().unwrap(), None);
        let rec = |seq: u64| SettingsRecord {
            seq,
            expires_at: 99,
            body: format!("body{seq}"),
            document: format!("doc{seq}"),
        };
        catalog.put_settings(&rec(1)).unwrap();
        catalog.put_settings(&rec(2)).unwrap();
        let err = catalog.put_settings(&rec(2)).unwrap_err();
        assert!(err.to_string().contains("higher"), "{err}");
        drop(catalog);
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert_eq!(catalog.settings().unwrap(), Some(rec(2)));
    }
}
