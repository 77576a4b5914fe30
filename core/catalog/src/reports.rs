//! Agents' reports, kept by id so each is applied once however often it
//! arrives: the hub keeps them, a relay keeps them until its upstream
//! acknowledged them (its outbox).

use ferry_net::api::Report;
use rusqlite::params;

use crate::{CatalogError, SqliteCatalog};

/// Where reports are kept.
pub trait ReportStore: Send + Sync {
    /// Keeps `reports` durably (committed with `synchronous=FULL` before it
    /// returns); one whose id is held already is not stored again. Returns
    /// how many were new.
    fn store_reports(&self, reports: &[Report], received_at: i64) -> Result<usize, CatalogError>;
    /// Up to `limit` reports, oldest arrival first.
    fn oldest_reports(&self, limit: usize) -> Result<Vec<Report>, CatalogError>;
    /// Forgets reports (a relay's, once its upstream holds them).
    fn remove_reports(&self, ids: &[String]) -> Result<(), CatalogError>;
    /// How many reports are kept.
    fn report_count(&self) -> Result<u64, CatalogError>;
    /// Kept reports, newest first, optionally only one agent's.
    fn list_reports(&self, agent: Option<&str>, limit: usize) -> Result<Vec<Report>, CatalogError>;
    /// Reports of `kind` about `subject` (the `task` field of their
    /// body), in the order they were created.
    fn reports_about(&self, kind: &str, subject: &str) -> Result<Vec<Report>, CatalogError>;
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn report(
    (id, agent, kind, created_at, body): (String, String, String, i64, String),
) -> Result<Report, CatalogError> {
    Ok(Report {
        body: serde_json::from_str(&body)
            .map_err(|e| CatalogError::Corrupt(format!("report {id}: {e}")))?,
        id,
        agent,
        kind,
        created_at,
    })
}

impl ReportStore for SqliteCatalog {
    fn store_reports(&self, reports: &[Report], received_at: i64) -> Result<usize, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut new = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO reports (id, agent, kind, created_at, received_at, body, subject)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for r in reports {
                let body = serde_json::to_string(&r.body)
                    .map_err(|e| CatalogError::Invalid(format!("report {}: {e}", r.id)))?;
                // What the report is about (a task's id), so a task's
                // reports are found without reading every body.
                let subject = r.body.get("task").and_then(|t| t.as_str());
                new += insert.execute(params![
                    r.id,
                    r.agent,
                    r.kind,
                    r.created_at,
                    received_at,
                    body,
                    subject
                ])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn oldest_reports(&self, limit: usize) -> Result<Vec<Report>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, agent, kind, created_at, body FROM reports
             ORDER BY received_at, rowid LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], row)?;
        rows.map(|r| report(r?)).collect()
    }

    fn remove_reports(&self, ids: &[String]) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM reports WHERE id = ?1")?;
            for id in ids {
                delete.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn report_count(&self) -> Result<u64, CatalogError> {
        let conn = self.read();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn list_reports(&self, agent: Option<&str>, limit: usize) -> Result<Vec<Report>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, agent, kind, created_at, body FROM reports
             WHERE ?1 IS NULL OR agent = ?1
             ORDER BY created_at DESC, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![agent, limit as i64], row)?;
        rows.map(|r| report(r?)).collect()
    }

    fn reports_about(&self, kind: &str, subject: &str) -> Result<Vec<Report>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, agent, kind, created_at, body FROM reports
             WHERE kind = ?1 AND subject = ?2 ORDER BY created_at, rowid",
        )?;
        let rows = stmt.query_map(params![kind, subject], row)?;
        rows.map(|r| report(r?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, at: i64) -> Report {
        Report {
            id: id.into(),
            agent: "pc-1".into(),
            kind: "test".into(),
            created_at: at,
            body: serde_json::json!({"n": at}),
        }
    }

    #[test]
    fn a_report_is_kept_once_however_often_it_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(&dir.path().join("c.db")).unwrap();
        let batch: Vec<Report> = (0..5).map(|i| report(&format!("r{i}"), i)).collect();
        assert_eq!(catalog.store_reports(&batch, 100).unwrap(), 5);
        assert_eq!(catalog.store_reports(&batch[2..], 101).unwrap(), 0);
        assert_eq!(catalog.report_count().unwrap(), 5);
        let oldest = catalog.oldest_reports(2).unwrap();
        assert_eq!(oldest, batch[..2].to_vec());
        catalog.remove_reports(&["r0".into(), "r1".into()]).unwrap();
        assert_eq!(catalog.report_count().unwrap(), 3);
        let newest = catalog.list_reports(Some("pc-1"), 10).unwrap();
        assert_eq!(newest.first().unwrap().id, "r4");
        assert!(catalog.list_reports(Some("other"), 10).unwrap().is_empty());
        // Reopened: still there (committed, not cached).
        drop(catalog);
        let catalog = SqliteCatalog::open(&dir.path().join("c.db")).unwrap();
        assert_eq!(catalog.report_count().unwrap(), 3);
        // Found by subject: only reports whose body names the task.
        let about = Report {
            id: "t-r".into(),
            agent: "pc-2".into(),
            kind: "task".into(),
            created_at: 7,
            body: serde_json::json!({"task": "t9", "state": "installed"}),
        };
        catalog.store_reports(std::slice::from_ref(&about), 102).unwrap();
        assert_eq!(catalog.reports_about("task", "t9").unwrap(), vec![about]);
        assert!(catalog.reports_about("task", "t8").unwrap().is_empty());
        assert!(catalog.reports_about("test", "t9").unwrap().is_empty());
    }
}
