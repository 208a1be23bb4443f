//! The sftp_reservations table: bytes and files of a tenant's SFTP quota that one carve
//! process may charge without asking again (see `sftp::quota`).

use chrono::{DateTime, Duration, Utc};

use super::{WriteTx, now};
use crate::domain::ids::TenantId;

/// A tenant's usage as the database knows it, with every process's reservation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Booked {
    /// Bytes and files flushed to the accounts.
    pub used_bytes: i64,
    pub used_files: i64,
    /// Bytes and files reserved by every process (this one included).
    pub reserved_bytes: i64,
    pub reserved_files: i64,
}

/// Drops reservations whose lease ended (their process died) and reads the tenant's usage
/// and reservations, inside a write transaction.
pub async fn booked(tx: &mut WriteTx, tenant: &TenantId) -> Result<Booked, sqlx::Error> {
    crate::on_tx!(tx, tx => {
        sqlx::query("DELETE FROM sftp_reservations WHERE expires_at < $1")
            .bind(now())
            .execute(&mut *tx)
            .await?;
        let (used_bytes, used_files) = super::sftp_accounts::tenant_usage(&mut *tx, tenant).await?;
        let (reserved_bytes, reserved_files): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT), CAST(COALESCE(SUM(files), 0) AS BIGINT) FROM sftp_reservations WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        Ok(Booked {
            used_bytes,
            used_files,
            reserved_bytes,
            reserved_files,
        })
    })
}

/// Adds to (or, with negative amounts, takes from) `owner`'s reservation for a tenant and
/// renews its lease.
pub async fn add(
    tx: &mut WriteTx,
    owner: &str,
    tenant: &TenantId,
    bytes: i64,
    files: i64,
    lease: Duration,
) -> Result<(), sqlx::Error> {
    crate::on_tx!(tx, tx => {
        let expires: DateTime<Utc> = now() + lease;
        sqlx::query(
            "INSERT INTO sftp_reservations (owner, tenant_id, bytes, files, expires_at)
         VALUES ($1, $2, CASE WHEN $3 > 0 THEN $3 ELSE 0 END, CASE WHEN $4 > 0 THEN $4 ELSE 0 END, $5)
         ON CONFLICT(owner, tenant_id) DO UPDATE SET
            bytes = CASE WHEN sftp_reservations.bytes + $3 > 0 THEN sftp_reservations.bytes + $3 ELSE 0 END,
            files = CASE WHEN sftp_reservations.files + $4 > 0 THEN sftp_reservations.files + $4 ELSE 0 END, expires_at = $5",
        )
        .bind(owner)
        .bind(tenant)
        .bind(bytes)
        .bind(files)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
        Ok(())
    })
}

/// Removes `owner`'s empty reservations.
pub async fn drop_empty(tx: &mut WriteTx, owner: &str) -> Result<(), sqlx::Error> {
    crate::on_tx!(tx, tx => {
        sqlx::query("DELETE FROM sftp_reservations WHERE owner = $1 AND bytes = 0 AND files = 0")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        Ok(())
    })
}
