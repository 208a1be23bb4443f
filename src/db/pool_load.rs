//! The pool_load table: what the balancer last measured per pool, which scale groups that
//! follow a load target read.

use chrono::{DateTime, Utc};

use super::{Db, now};
use crate::domain::ids::PoolId;

/// What the balancer last measured for a pool.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PoolLoad {
    pub connections: i64,
    pub requests_per_second: f64,
    pub healthy_members: i64,
    pub at: DateTime<Utc>,
}

/// Records what the balancer measured for a pool.
pub async fn put(
    db: &Db,
    pool: &PoolId,
    connections: i64,
    requests_per_second: f64,
    healthy_members: i64,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "INSERT INTO pool_load (pool_id, connections, requests_per_second, healthy_members, at)
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM pools WHERE id = $1)
         ON CONFLICT (pool_id) DO UPDATE SET connections = $2, requests_per_second = $3,
            healthy_members = $4, at = $5",
        )
        .bind(pool)
        .bind(connections)
        .bind(requests_per_second)
        .bind(healthy_members)
        .bind(now())
        .execute(db)
        .await?;
        Ok(())
    })
}

/// The pools whose group follows a load target (the balancer measures these).
pub async fn tracked_pools(db: &Db) -> Result<Vec<PoolId>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_scalar(
            "SELECT pool_id FROM scale_groups WHERE target_metric IS NOT NULL AND NOT deleting",
        )
        .fetch_all(db)
        .await
    })
}

/// What the balancer last measured for a pool, if it did.
pub async fn latest(db: &Db, pool: &PoolId) -> Result<Option<PoolLoad>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT connections, requests_per_second, healthy_members, at FROM pool_load
             WHERE pool_id = $1",
        )
        .bind(pool)
        .fetch_optional(db)
        .await
    })
}
