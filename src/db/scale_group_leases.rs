//! Leases on driving scale groups: with several carve processes on one database, only the
//! holder of a group's lease decides for it.

use super::Db;
use crate::domain::ids::PoolId;

/// Takes or renews the lease on driving this group for `owner` until `until_ms`; false if
/// another process holds a lease that has not run out at `now_ms`.
pub async fn take_lease(
    db: &Db,
    pool: &PoolId,
    owner: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "UPDATE scale_groups SET controller = $2, controller_until_ms = $4
             WHERE pool_id = $1 AND (controller IS NULL OR controller = $2 OR controller_until_ms < $3)",
        )
        .bind(pool)
        .bind(owner)
        .bind(now_ms)
        .bind(until_ms)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Whether `owner` still holds the group's lease at `now_ms` (checked inside a write
/// transaction before acting, so a pass that outlived its lease stops).
pub async fn holds_lease(
    db: impl Into<super::Ex<'_>>,
    pool: &PoolId,
    owner: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    crate::on_ex!(db, db => {
        let held: Option<String> = sqlx::query_scalar(
            "SELECT pool_id FROM scale_groups WHERE pool_id = $1 AND controller = $2 AND controller_until_ms >= $3",
        )
        .bind(pool)
        .bind(owner)
        .bind(now_ms)
        .fetch_optional(db)
        .await?;
        Ok(held.is_some())
    })
}

/// Takes the lease from `dead`, a holder known to have died; false if it changed hands.
pub async fn take_lease_from(
    db: &Db,
    pool: &PoolId,
    dead: &str,
    owner: &str,
    until_ms: i64,
) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "UPDATE scale_groups SET controller = $3, controller_until_ms = $4
             WHERE pool_id = $1 AND controller = $2",
        )
        .bind(pool)
        .bind(dead)
        .bind(owner)
        .bind(until_ms)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// The process holding the lease on driving this group, if any.
pub async fn lease_holder(db: &Db, pool: &PoolId) -> Result<Option<String>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_scalar("SELECT controller FROM scale_groups WHERE pool_id = $1")
            .bind(pool)
            .fetch_optional(db)
            .await
            .map(Option::flatten)
    })
}
