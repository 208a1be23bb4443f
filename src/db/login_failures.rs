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
    crate::on_db!(db, db => {
        let row: Option<(i64, DateTime<Utc>)> =
            sqlx::query_as("SELECT failures, window_started_at FROM login_failures WHERE key = $1")
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
    })
}

/// Counts an attempt for `key` before its password is checked (so a concurrent burst cannot
/// slip past the limit); the seconds to wait instead if `limit` attempts already failed in the
/// window. A successful attempt is taken back with [`clear`] or [`forgive`].
pub async fn attempt(
    db: &Db,
    key: &str,
    limit: u32,
    window: Duration,
) -> Result<Option<u64>, sqlx::Error> {
    crate::on_db!(db, db => {
        let at = now();
        let (failures, started): (i64, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO login_failures (key, failures, window_started_at) VALUES ($1, 1, $2)
         ON CONFLICT(key) DO UPDATE SET
            failures = CASE WHEN login_failures.window_started_at <= $3 THEN 1
                            WHEN login_failures.failures > $4 THEN login_failures.failures
                            ELSE login_failures.failures + 1 END,
            window_started_at = CASE WHEN login_failures.window_started_at <= $3 THEN $2
                                     ELSE login_failures.window_started_at END
         RETURNING failures, window_started_at",
        )
        .bind(key)
        .bind(at)
        .bind(at - window)
        .bind(i64::from(limit))
        .fetch_one(db)
        .await?;
        let left = started + window - at;
        Ok((failures > i64::from(limit)).then(|| left.num_seconds().max(1) as u64))
    })
}

/// Takes back one counted attempt of `key` (it succeeded).
pub async fn forgive(db: &Db, key: &str) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE login_failures SET failures = CASE WHEN failures > 1 THEN failures - 1 ELSE 0 END WHERE key = $1")
            .bind(key)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Counts one failure for `key`, starting a new window if the old one ended.
pub async fn record(db: &Db, key: &str, window: Duration) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        let at = now();
        sqlx::query(
            "INSERT INTO login_failures (key, failures, window_started_at) VALUES ($1, 1, $2)
         ON CONFLICT(key) DO UPDATE SET
            failures = CASE WHEN login_failures.window_started_at <= $3 THEN 1
                            ELSE login_failures.failures + 1 END,
            window_started_at = CASE WHEN login_failures.window_started_at <= $3 THEN $2
                                     ELSE login_failures.window_started_at END",
        )
        .bind(key)
        .bind(at)
        .bind(at - window)
        .execute(db)
        .await?;
        Ok(())
    })
}

/// Forgets the failures of `key` (after a successful login).
pub async fn clear(db: &Db, key: &str) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Removes counters whose window ended before `window` ago; returns how many went.
pub async fn purge(db: &Db, window: Duration) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        Ok(
            sqlx::query("DELETE FROM login_failures WHERE window_started_at < $1")
                .bind(now() - window)
                .execute(db)
                .await?
                .rows_affected(),
        )
    })
}
