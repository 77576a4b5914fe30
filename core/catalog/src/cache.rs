//! A relay's cache bookkeeping: when each version was last asked for (for
//! least-recently-used eviction), pins (content a task or a pre-cache
//! needs, never evicted and fetched if missing), and versions evicted for
//! the disk quota (not fetched again until asked for or pinned).

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};

use crate::{CatalogError, SqliteCatalog};

/// A pin on a version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    /// The version's TUF target name.
    pub target: String,
    /// Until when (unix seconds).
    pub until: i64,
    /// Who pinned it and why.
    pub reason: String,
}

/// What a relay keeps about its cache.
pub trait CacheIndex: Send + Sync {
    /// Records that versions were asked for at the given times.
    fn touch(&self, uses: &[(String, i64)]) -> Result<(), CatalogError>;
    /// When each version was last asked for.
    fn last_used(&self) -> Result<HashMap<String, i64>, CatalogError>;
    /// Pins a version until `until`, replacing an earlier pin on it.
    fn pin(&self, target: &str, until: i64, reason: &str) -> Result<(), CatalogError>;
    /// Removes a pin; returns whether there was one.
    fn unpin(&self, target: &str) -> Result<bool, CatalogError>;
    /// Pins in force at `now`.
    fn pins(&self, now: i64) -> Result<Vec<Pin>, CatalogError>;
    /// Marks versions evicted (or no longer evicted).
    fn set_evicted(&self, targets: &[String], evicted: bool) -> Result<(), CatalogError>;
    /// Versions evicted.
    fn evicted(&self) -> Result<HashSet<String>, CatalogError>;
}

impl CacheIndex for SqliteCatalog {
    fn touch(&self, uses: &[(String, i64)]) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO cache_entries (target, last_used) VALUES (?1, ?2)
                 ON CONFLICT(target) DO UPDATE SET last_used = MAX(last_used, excluded.last_used)",
            )?;
            for (target, at) in uses {
                upsert.execute(params![target, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn last_used(&self) -> Result<HashMap<String, i64>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT target, last_used FROM cache_entries")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn pin(&self, target: &str, until: i64, reason: &str) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO cache_entries (target, pinned_until, pin_reason) VALUES (?1, ?2, ?3)
             ON CONFLICT(target) DO UPDATE SET pinned_until = ?2, pin_reason = ?3",
            params![target, until, reason],
        )?;
        Ok(())
    }

    fn unpin(&self, target: &str) -> Result<bool, CatalogError> {
        let conn = self.conn();
        let had: Option<i64> = conn
            .query_row(
                "SELECT pinned_until FROM cache_entries WHERE target = ?1",
                [target],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        conn.execute(
            "UPDATE cache_entries SET pinned_until = NULL, pin_reason = NULL WHERE target = ?1",
            [target],
        )?;
        Ok(had.is_some())
    }

    fn pins(&self, now: i64) -> Result<Vec<Pin>, CatalogError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT target, pinned_until, COALESCE(pin_reason, '') FROM cache_entries
             WHERE pinned_until IS NOT NULL AND pinned_until > ?1 ORDER BY target",
        )?;
        let rows = stmt.query_map([now], |r| {
            Ok(Pin {
                target: r.get(0)?,
                until: r.get(1)?,
                reason: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_evicted(&self, targets: &[String], evicted: bool) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO cache_entries (target, evicted) VALUES (?1, ?2)
                 ON CONFLICT(target) DO UPDATE SET evicted = ?2",
            )?;
            for target in targets {
                upsert.execute(params![target, evicted])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn evicted(&self) -> Result<HashSet<String>, CatalogError> {
        let conn = self.read();
        let mut stmt =
            conn.prepare_cached("SELECT target FROM cache_entries WHERE evicted != 0")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_pins_and_evictions_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteCatalog::open(&dir.path().join("c.db")).unwrap();
        c.touch(&[("a@1.json".into(), 10), ("b@1.json".into(), 20)])
            .unwrap();
        c.touch(&[("a@1.json".into(), 5)]).unwrap();
        assert_eq!(c.last_used().unwrap()["a@1.json"], 10, "never moves back");
        c.pin("a@1.json", 100, "task 7").unwrap();
        c.pin("c@1.json", 50, "pre-cache").unwrap();
        let pins = c.pins(60).unwrap();
        assert_eq!(pins.len(), 1, "expired pins do not count: {pins:?}");
        assert_eq!(pins[0].reason, "task 7");
        assert!(c.unpin("a@1.json").unwrap());
        assert!(!c.unpin("a@1.json").unwrap());
        assert!(c.pins(0).unwrap().iter().all(|p| p.target != "a@1.json"));
        c.set_evicted(&["b@1.json".into()], true).unwrap();
        assert!(c.evicted().unwrap().contains("b@1.json"));
        c.set_evicted(&["b@1.json".into()], false).unwrap();
        assert!(c.evicted().unwrap().is_empty());
        assert_eq!(
            c.last_used().unwrap()["b@1.json"],
            20,
            "eviction keeps the use time"
        );
    }
}
