//! The base_copies table: which process is putting a base file on a host, so carve processes
//! on one database never write one base at the same time.

use super::Db;
use crate::domain::ids::HostId;

/// Claims the copy of `volume` to `host` for `owner`: free, already its, or taken from a
/// holder `is_dead` says is gone (or that started more than `stale_ms` ago). One write
/// transaction, so two processes cannot both claim it.
pub async fn claim(
    db: &Db,
    host: &HostId,
    volume: &str,
    owner: &str,
    now_ms: i64,
    stale_ms: i64,
    is_dead: impl Fn(&str) -> bool,
) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let mut tx = super::WritePool::begin_write(db).await?;
        let held: Option<(String, i64)> = sqlx::query_as(
            "SELECT owner, started_ms FROM base_copies WHERE host_id = $1 AND volume = $2",
        )
        .bind(host)
        .bind(volume)
        .fetch_optional(&mut *tx)
        .await?;
        let free = match &held {
            None => true,
            Some((holder, started)) => {
                holder == owner || is_dead(holder) || now_ms - started > stale_ms
            }
        };
        if free {
            sqlx::query(
                "INSERT INTO base_copies (host_id, volume, owner, started_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (host_id, volume) DO UPDATE SET owner = $3, started_ms = $4",
            )
            .bind(host)
            .bind(volume)
            .bind(owner)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(free)
    })
}

/// Gives a claim back.
pub async fn release(db: &Db, host: &HostId, volume: &str, owner: &str) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("DELETE FROM base_copies WHERE host_id = $1 AND volume = $2 AND owner = $3")
            .bind(host)
            .bind(volume)
            .bind(owner)
            .execute(db)
            .await?;
        Ok(())
    })
}
