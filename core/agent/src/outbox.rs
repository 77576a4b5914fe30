//! The agent's outbox: reports are kept durably (SQLite) before anything
//! else happens and sent to the server until it acknowledges them, so
//! reports made while the server or the WAN was down arrive later, once.

use std::sync::Arc;
use std::time::Duration;

use ferry_catalog::{ReportStore, SqliteCatalog};
use ferry_net::HubClient;
use ferry_net::api::{MAX_REPORTS_PER_BATCH, Report, ReportAck, ReportBatch, routes};
use sha2::Digest as _;

use crate::AgentError;

/// Reports kept for the server.
pub(crate) struct Outbox {
    catalog: SqliteCatalog,
    agent: String,
    waiting: tokio::sync::Notify,
}

impl Outbox {
    pub(crate) fn open(path: &std::path::Path, agent: &str) -> Result<Outbox, AgentError> {
        Ok(Outbox {
            catalog: SqliteCatalog::open(path)?,
            agent: agent.to_owned(),
            waiting: tokio::sync::Notify::new(),
        })
    }

    /// Keeps a report of `kind` about `key` (its id is derived from the
    /// agent, `key` and `seq`, so making it again is harmless). Blocks.
    pub(crate) fn keep(
        &self,
        kind: &str,
        key: &str,
        seq: u64,
        body: serde_json::Value,
    ) -> Result<(), AgentError> {
        let digest = sha2::Sha256::digest(format!("{}\n{key}\n{seq}", self.agent).as_bytes());
        let report = Report {
            id: hex::encode(&digest[..16]),
            agent: self.agent.clone(),
            kind: kind.to_owned(),
            created_at: chrono::Utc::now().timestamp(),
            body,
        };
        self.catalog
            .store_reports(&[report], chrono::Utc::now().timestamp())?;
        self.waiting.notify_one();
        Ok(())
    }

    /// Reports not yet acknowledged.
    pub(crate) fn pending(&self) -> u64 {
        self.catalog.report_count().unwrap_or(0)
    }
}

/// Sends kept reports to `server` (past it, to `fallback`: the hub),
/// oldest first, forgetting each batch once acknowledged. The hub keeps a
/// report once however often it arrives, also through both ways.
pub(crate) async fn forward(outbox: Arc<Outbox>, server: HubClient, fallback: Option<HubClient>) {
    let mut failures = 0u32;
    loop {
        let batch = {
            let outbox = outbox.clone();
            tokio::task::spawn_blocking(move || {
                outbox.catalog.oldest_reports(MAX_REPORTS_PER_BATCH)
            })
            .await
        };
        let batch = match batch {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!("cannot read the report outbox: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            Err(e) => {
                tracing::error!("the outbox reader failed: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = outbox.waiting.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            continue;
        }
        let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
        let batch = ReportBatch { reports: batch };
        let path = routes::relative(routes::REPORTS);
        let mut sent = server.post_json::<_, ReportAck>(path, &batch).await;
        if sent.is_err()
            && failures > 0
            && let Some(hub) = &fallback
        {
            sent = hub.post_json::<_, ReportAck>(path, &batch).await;
        }
        match sent {
            Ok(_) => {
                failures = 0;
                let outbox = outbox.clone();
                let removed =
                    tokio::task::spawn_blocking(move || outbox.catalog.remove_reports(&ids)).await;
                if !matches!(removed, Ok(Ok(()))) {
                    tracing::error!("cannot remove sent reports from the outbox: {removed:?}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_secs(1)
                    .saturating_mul(1 << failures.min(5))
                    .min(Duration::from_secs(30))
                    .mul_f64(0.75 + rand::random::<f64>() * 0.5);
                tracing::debug!("sending reports failed ({e}); again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
