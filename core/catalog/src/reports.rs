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
    /// Each agent's newest report about task `task` (the report with the
    /// highest `seq` in its body among those whose `task` field names it).
    fn latest_task_reports(&self, task: &str) -> Result<Vec<Report>, CatalogError>;
    /// Each agent's newest inventory report body (kind `inventory`), by
    /// agent id.
    fn inventories(&self) -> Result<Vec<(String, serde_json::Value)>, CatalogError>;
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
            let mut latest = tx.prepare_cached(
                "INSERT INTO task_states (task, agent, seq, created_at, report, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (task, agent) DO UPDATE SET
                   seq = excluded.seq, created_at = excluded.created_at,
                   report = excluded.report, body = excluded.body
                 WHERE excluded.seq > task_states.seq",
            )?;
            let mut inventory = tx.prepare_cached(
                "INSERT INTO inventories (agent, reported_at, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (agent) DO UPDATE SET
                   reported_at = excluded.reported_at, body = excluded.body
                 WHERE excluded.reported_at >= inventories.reported_at",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO reports (id, agent, kind, created_at, received_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in reports {
                let body = serde_json::to_string(&r.body)
                    .map_err(|e| CatalogError::Invalid(format!("report {}: {e}", r.id)))?;
                let added = insert.execute(params![
                    r.id,
                    r.agent,
                    r.kind,
                    r.created_at,
                    received_at,
                    body
                ])?;
                new += added;
                // Each agent's newest state per task, kept apart so a
                // task's view reads one row per agent, not every progress
                // report ever made.
                if added > 0
                    && let (Some(task), Some(seq)) = (
                        r.body.get("task").and_then(|t| t.as_str()),
                        r.body.get("seq").and_then(|s| s.as_i64()),
                    )
                {
                    latest.execute(params![task, r.agent, seq, r.created_at, r.id, body])?;
                }
                if added > 0 && r.kind == "inventory" {
                    inventory.execute(params![r.agent, r.created_at, body])?;
                }
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

    fn latest_task_reports(&self, task: &str) -> Result<Vec<Report>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT report, agent, 'task', created_at, body FROM task_states
             WHERE task = ?1 ORDER BY agent",
        )?;
        let rows = stmt.query_map(params![task], row)?;
        rows.map(|r| report(r?)).collect()
    }

    fn inventories(&self) -> Result<Vec<(String, serde_json::Value)>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT agent, body FROM inventories ORDER BY agent")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|r| {
            let (agent, body) = r?;
            let body = serde_json::from_str(&body)
                .map_err(|e| CatalogError::Corrupt(format!("inventory of {agent}: {e}")))?;
            Ok((agent, body))
        })
        .collect()
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
        // A task's newest report per agent, whatever order they arrive in.
        let about = |id: &str, agent: &str, seq: i64| Report {
            id: id.into(),
            agent: agent.into(),
            kind: "task".into(),
            created_at: seq,
            body: serde_json::json!({"task": "t9", "seq": seq}),
        };
        let batch = [
            about("a2", "pc-2", 2),
            about("a1", "pc-2", 1),
            about("b1", "pc-3", 1),
        ];
        catalog.store_reports(&batch, 102).unwrap();
        let latest = catalog.latest_task_reports("t9").unwrap();
        assert_eq!(latest, vec![batch[0].clone(), batch[2].clone()]);
        assert!(catalog.latest_task_reports("t8").unwrap().is_empty());
    }
}
