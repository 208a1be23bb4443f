//! The events table: a change feed that triggers write (migration 0006) whenever a VM,
//! operation or usage changes, so every carve process on the database can stream it.

use chrono::{DateTime, Utc};

use super::Db;
use crate::domain::ids::TenantId;

/// One change.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub tenant_id: TenantId,
    /// `vm`, `operation` or `usage`.
    pub kind: String,
    /// The id of what changed.
    pub subject: String,
    /// A JSON object describing the change.
    pub data: String,
}

/// Up to `limit` events after `after`, oldest first, optionally of one tenant only.
pub async fn after(
    db: &Db,
    after: i64,
    tenant: Option<&TenantId>,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, tenant_id, kind, subject, data FROM events
         WHERE id > ?1 AND (?2 IS NULL OR tenant_id = ?2) ORDER BY id LIMIT ?3",
    )
    .bind(after)
    .bind(tenant)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The newest event's id (0 when there is none).
pub async fn last_id(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
        .fetch_one(db)
        .await
}

/// The oldest event's id still kept (0 when there is none).
pub async fn first_id(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MIN(id), 0) FROM events")
        .fetch_one(db)
        .await
}

/// Removes events older than `keep` or beyond the newest `max_events`; returns how many.
pub async fn purge(db: &Db, keep: chrono::Duration, max_events: i64) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - keep;
    let done = sqlx::query(
        "DELETE FROM events WHERE at < ?1 OR id <= (SELECT COALESCE(MAX(id), 0) FROM events) - ?2",
    )
    .bind(cutoff)
    .bind(max_events)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
