//! The audit_log table: who did what to which object, when, and how it went. Never secrets.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest};
use super::{Db, Scope, now};
use crate::domain::outcome::Outcome;

/// An audit entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_id: Option<String>,
    pub actor: String,
    pub tenant_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub status: Option<i64>,
    pub client: Option<String>,
}

/// What to record.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub actor_id: Option<String>,
    pub actor: String,
    pub tenant_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub client: Option<String>,
}

/// Records an entry.
pub async fn insert(db: &Db, e: &NewEntry) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        insert_one(db, e).await
    })
}

/// Longest actor stored (an email is at most 254 characters), in characters.
const MAX_ACTOR: usize = 254;
/// Longest action, target or client address stored, in characters.
const MAX_FIELD: usize = 512;

/// `s` cut to at most `max` characters, so no request can grow the log by more than that.
fn bounded(s: &str, max: usize) -> String {
    let cut = match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    };
    // PostgreSQL text holds no NUL: a hostile one is recorded as U+FFFD, not lost.
    cut.replace('\0', "\u{FFFD}")
}

/// The INSERT of one entry, on any executor; every text is bounded in length.
async fn insert_one(conn: impl Into<super::Ex<'_>>, e: &NewEntry) -> Result<(), sqlx::Error> {
    crate::on_ex!(conn, conn => {
        let opt = |v: &Option<String>, max| v.as_deref().map(|s| bounded(s, max));
        sqlx::query(
            "INSERT INTO audit_log (at, actor_id, actor, tenant_id, action, target, outcome, status, client)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(now())
        .bind(opt(&e.actor_id, 64))
        .bind(bounded(&e.actor, MAX_ACTOR))
        .bind(opt(&e.tenant_id, 64))
        .bind(bounded(&e.action, MAX_FIELD))
        .bind(opt(&e.target, MAX_FIELD))
        .bind(e.outcome)
        .bind(e.status.map(i64::from))
        .bind(opt(&e.client, 64))
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// The newest entries the scope may see, older than `before` when given.
pub async fn list(
    db: &Db,
    scope: &Scope,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT id, at, actor_id, actor, tenant_id, action, target, outcome, status, client FROM audit_log
             WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(scope.tenant())
        .bind(before)
        .bind(limit)
        .fetch_all(db)
        .await
    })
}

/// One page of the entries the scope may see, newest first.
pub async fn page(
    db: &Db,
    scope: &Scope,
    page: &PageRequest,
) -> Result<Page<AuditRow>, sqlx::Error> {
    let rows = list(db, scope, page.int(0), page.fetch()).await?;
    Ok(page.finish(rows, |r: &AuditRow| vec![r.id.to_string()]))
}

/// Narrows the audit log; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Entries whose actor contains this text.
    pub actor: Option<String>,
    /// Entries whose action contains this text.
    pub action: Option<String>,
    /// Entries of this tenant only.
    pub tenant: Option<String>,
    pub outcome: Option<Outcome>,
    /// Entries of this acting user only.
    pub actor_id: Option<String>,
    /// Entries about this target only.
    pub target: Option<String>,
}

/// One page of the entries the scope may see that pass the filter, newest first.
pub async fn filtered_page(
    db: &Db,
    scope: &Scope,
    filter: &AuditFilter,
    page: &PageRequest,
) -> Result<Page<AuditRow>, sqlx::Error> {
    crate::on_db!(db, db, pg => {
        let rows = sqlx::query_as(&super::dialect(pg, "SELECT id, at, actor_id, actor, tenant_id, action, target, outcome, status, client FROM audit_log
         WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id < $2)
           AND ($4 IS NULL OR instr(actor, $4) > 0) AND ($5 IS NULL OR instr(action, $5) > 0)
           AND ($6 IS NULL OR tenant_id = $6) AND ($7 IS NULL OR outcome = $7)
           AND ($8 IS NULL OR actor_id = $8) AND ($9 IS NULL OR target = $9)
         ORDER BY id DESC LIMIT $3"))
        .bind(scope.tenant())
        .bind(page.int(0))
        .bind(page.fetch())
        .bind(filter.actor.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.tenant.as_deref())
        .bind(filter.outcome)
        .bind(filter.actor_id.as_deref())
        .bind(filter.target.as_deref())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |r: &AuditRow| vec![r.id.to_string()]))
    })
}

/// Removes entries older than `keep` and, past that, the oldest beyond `max_rows`; returns
/// how many went.
pub async fn purge(db: &Db, keep: chrono::Duration, max_rows: i64) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        let old = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(now() - keep)
            .execute(db)
            .await?
            .rows_affected();
        let excess = sqlx::query(
            "DELETE FROM audit_log WHERE id <= (SELECT id FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET $1)",
        )
        .bind(max_rows)
        .execute(db)
        .await?
        .rows_affected();
        Ok(old + excess)
    })
}

/// Records several entries in one transaction.
pub async fn insert_many(db: &Db, entries: &[NewEntry]) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        let mut tx = db.begin().await?;
        for e in entries {
            insert_one(&mut *tx, e).await?;
        }
        tx.commit().await
    })
}

/// Writes entries sent to it in batches (one transaction per batch), so a busy SFTP session
/// pays microseconds per audited file instead of a database round trip.
#[derive(Clone)]
pub struct Batcher {
    tx: tokio::sync::mpsc::Sender<NewEntry>,
}

impl Batcher {
    /// Starts the writer task.
    pub fn start(db: Db) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<NewEntry>(10_000);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            while rx.recv_many(&mut batch, 256).await > 0 {
                if let Err(e) = insert_many(&db, &batch).await {
                    tracing::error!(error = %e, lost = batch.len(), "cannot write the audit log");
                }
                batch.clear();
            }
        });
        Self { tx }
    }

    /// Queues an entry; waits only if 10,000 are already queued.
    pub async fn record(&self, entry: NewEntry) {
        if self.tx.send(entry).await.is_err() {
            tracing::error!("the audit writer has stopped; an entry is lost");
        }
    }
}
