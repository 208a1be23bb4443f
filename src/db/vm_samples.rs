//! The vm_samples table: CPU and memory of each running VM, one row per 10-second slot.

use super::Db;
use crate::domain::ids::VmId;

/// Seconds in one sampling slot.
pub const SLOT_SECS: i64 = 10;

/// One sample.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct SampleRow {
    /// Unix time of the slot's start.
    pub slot: i64,
    pub cpu_time_ns: i64,
    /// CPU use since the previous slot, in percent of all the VM's vCPUs.
    pub cpu_percent: Option<f64>,
    pub memory_used_kib: i64,
    pub memory_total_kib: i64,
}

/// The VM's sample of the slot just before `slot`, if any (to compute CPU use).
pub async fn previous(db: &Db, vm: &VmId, slot: i64) -> Result<Option<SampleRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT slot, cpu_time_ns, cpu_percent, memory_used_kib, memory_total_kib FROM vm_samples
             WHERE vm_id = $1 AND slot < $2 ORDER BY slot DESC LIMIT 1",
        )
        .bind(vm)
        .bind(slot)
        .fetch_optional(db)
        .await
    })
}

/// Records a sample; a second sample of the same slot (another process) is ignored.
pub async fn insert(db: &Db, vm: &VmId, s: &SampleRow) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "INSERT INTO vm_samples (vm_id, slot, cpu_time_ns, cpu_percent, memory_used_kib, memory_total_kib)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(vm)
        .bind(s.slot)
        .bind(s.cpu_time_ns)
        .bind(s.cpu_percent)
        .bind(s.memory_used_kib)
        .bind(s.memory_total_kib)
        .execute(db)
        .await?;
        Ok(())
    })
}

/// The VM's samples since `since_slot`, oldest first.
pub async fn since(db: &Db, vm: &VmId, since_slot: i64) -> Result<Vec<SampleRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT slot, cpu_time_ns, cpu_percent, memory_used_kib, memory_total_kib FROM vm_samples
             WHERE vm_id = $1 AND slot >= $2 ORDER BY slot LIMIT 200",
        )
        .bind(vm)
        .bind(since_slot)
        .fetch_all(db)
        .await
    })
}

/// Removes samples older than `before_slot`.
pub async fn purge(db: &Db, before_slot: i64) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("DELETE FROM vm_samples WHERE slot < $1")
            .bind(before_slot)
            .execute(db)
            .await?;
        Ok(done.rows_affected())
    })
}

/// What a guest's agent last said: hostname, addresses (JSON list) and when.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GuestInfoRow {
    pub hostname: Option<String>,
    pub addresses: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Records what a guest's agent said.
pub async fn put_guest_info(
    db: &Db,
    vm: &crate::domain::ids::VmId,
    hostname: Option<&str>,
    addresses: &[String],
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "INSERT INTO vm_guest_info (vm_id, hostname, addresses, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (vm_id) DO UPDATE SET hostname = $2, addresses = $3, at = $4",
        )
        .bind(vm)
        .bind(hostname)
        .bind(serde_json::to_string(addresses).unwrap_or_else(|_| "[]".into()))
        .bind(super::now())
        .execute(db)
        .await?;
        Ok(())
    })
}

/// What a guest's agent last said, if it ever did.
pub async fn guest_info(
    db: &Db,
    vm: &crate::domain::ids::VmId,
) -> Result<Option<GuestInfoRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as("SELECT hostname, addresses, at FROM vm_guest_info WHERE vm_id = $1")
            .bind(vm)
            .fetch_optional(db)
            .await
    })
}
