//! The login_failures table: failed logins counted per key within a window, in the database so
//! every carve process behind a balancer enforces the same limit.

use chrono::{DateTime, Duration, Utc};

use super::{Db, now};

/// Seconds until `key` may try again, if it has used up `limit` failures in the window.
pub async fn retry_after(
    db: &Db,
    key: &str,
    limit: u32,
    window: Duration,
) -> Result<Option<u64>, sqlx::Error> {
    let row: Option<(i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT failures, window_started_at FROM login_failures WHERE key = ?1")
            .bind(key)
            .fetch_optional(db)
            .await?;
    let Some((failures, started)) = row else {
        return Ok(None);
    };
    let ends = started + window;
    let left = ends - now();
    Ok((failures >= i64::from(limit) && left > Duration::zero())
        .then(|| left.num_seconds().max(1) as u64))
}

/// Counts one failure for `key`, starting a new window if the old one ended.
pub async fn record(db: &Db, key: &str, window: Duration) -> Result<(), sqlx::Error> {
    let at = now();
    sqlx::query(
        "INSERT INTO login_failures (key, failures, window_started_at) VALUES (?1, 1, ?2)
         ON CONFLICT(key) DO UPDATE SET
            failures = CASE WHEN window_started_at <= ?3 THEN 1 ELSE failures + 1 END,
            window_started_at = CASE WHEN window_started_at <= ?3 THEN ?2 ELSE window_started_at END",
    )
    .bind(key)
    .bind(at)
    .bind(at - window)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets the failures of `key` (after a successful login).
pub async fn clear(db: &Db, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE key = ?1")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}
