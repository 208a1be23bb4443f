//! The events table: a change feed that triggers write whenever a VM, operation, usage or
//! pool changes, so every carve process on the database can stream it. On PostgreSQL the
//! triggers also `NOTIFY carve_events`, so readers wake at once instead of polling.

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
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT id, at, tenant_id, kind, subject, data FROM events
             WHERE id > $1 AND ($2 IS NULL OR tenant_id = $2) ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(tenant)
        .bind(limit)
        .fetch_all(db)
        .await
    })
}

/// The newest event's id (0 when there is none).
pub async fn last_id(db: &Db) -> Result<i64, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(db)
            .await
    })
}

/// The oldest event's id still kept (0 when there is none).
pub async fn first_id(db: &Db) -> Result<i64, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_scalar("SELECT COALESCE(MIN(id), 0) FROM events")
            .fetch_one(db)
            .await
    })
}

/// Removes events older than `keep` or beyond the newest `max_events`; returns how many.
pub async fn purge(db: &Db, keep: chrono::Duration, max_events: i64) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        let cutoff = Utc::now() - keep;
        let done = sqlx::query(
            "DELETE FROM events WHERE at < $1 OR id <= (SELECT COALESCE(MAX(id), 0) FROM events) - $2",
        )
        .bind(cutoff)
        .bind(max_events)
        .execute(db)
        .await?;
        Ok(done.rows_affected())
    })
}

/// Waits for the next change to the events table: on PostgreSQL until a `carve_events`
/// notification arrives (or `most` passes, in case one was lost with a connection); on SQLite,
/// which cannot notify, for `most`.
pub struct ChangeWait {
    listener: Option<sqlx::postgres::PgListener>,
    /// The polling clock (SQLite), made on the first wait; cancel-safe inside `select!`.
    ticks: Option<tokio::time::Interval>,
}

/// The PostgreSQL channel the event triggers notify.
const CHANNEL: &str = "carve_events";

impl ChangeWait {
    /// Listens on the database, if it can notify; a failure to listen falls back to polling.
    pub async fn new(db: &Db) -> Self {
        let Db::Postgres(pool) = db else {
            return Self {
                listener: None,
                ticks: None,
            };
        };
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for changes; polling instead"))
        .ok();
        Self {
            listener,
            ticks: None,
        }
    }

    /// Whether changes are announced (rather than polled for).
    pub fn notified(&self) -> bool {
        self.listener.is_some()
    }

    /// Returns when a change may have happened, after at most `most`.
    pub async fn wait(&mut self, most: std::time::Duration) {
        let Some(listener) = self.listener.as_mut() else {
            let ticks = self.ticks.get_or_insert_with(|| {
                let mut t = tokio::time::interval(most);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            ticks.tick().await;
            return;
        };
        match tokio::time::timeout(most, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => {
                // Several changes may have been announced together: take them all at once.
                while listener.next_buffered().is_some() {}
            }
            // The connection broke (it reconnects on the next call): poll meanwhile.
            Ok(Err(_)) => tokio::time::sleep(most).await,
        }
    }
}
