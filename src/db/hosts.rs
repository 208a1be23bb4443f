//! The hosts table: capacity facts read from libvirt and the disk store, the overcommit ratios,
//! and the allocation summed from the VMs placed on each host.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::page::{Page, PageRequest, time_key};
use super::{Db, now};
use crate::domain::capacity::{Overcommit, Physical};
use crate::domain::ids::HostId;
use crate::domain::sizes::Resources;

/// A host row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HostRow {
    pub id: HostId,
    pub name: String,
    pub libvirt_uri: String,
    pub domain_type: String,
    pub cpus: i64,
    pub memory_mib: i64,
    pub disk_gib: i64,
    pub cpu_overcommit: f64,
    pub memory_overcommit: f64,
    pub disk_overcommit: f64,
    pub reserved_memory_mib: i64,
    pub unmanaged_domains: String,
    pub refreshed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl HostRow {
    /// The physical facts as capacity arithmetic takes them.
    pub fn physical(&self) -> Physical {
        Physical {
            cpus: self.cpus as u32,
            memory_mib: self.memory_mib as u64,
            disk_gib: self.disk_gib as u64,
        }
    }

    /// The overcommit ratios and reserve.
    pub fn overcommit(&self) -> Overcommit {
        Overcommit {
            cpu: self.cpu_overcommit,
            memory: self.memory_overcommit,
            disk: self.disk_overcommit,
            reserved_memory_mib: self.reserved_memory_mib as u64,
        }
    }

    /// Names of libvirt domains on this host that carve does not manage.
    pub fn unmanaged(&self) -> Vec<String> {
        serde_json::from_str(&self.unmanaged_domains).unwrap_or_default()
    }
}

/// The columns every query of this table reads.
macro_rules! host_columns {
    () => {
        "id, name, libvirt_uri, domain_type, cpus, memory_mib, disk_gib, \
    cpu_overcommit, memory_overcommit, disk_overcommit, reserved_memory_mib, unmanaged_domains, \
    refreshed_at, created_at"
    };
}

/// All hosts, oldest first.
pub async fn list(db: impl sqlx::SqliteExecutor<'_>) -> Result<Vec<HostRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        host_columns!(),
        " FROM hosts ORDER BY created_at, id"
    ))
    .fetch_all(db)
    .await
}

/// One page of hosts, oldest first.
pub async fn page(db: &Db, page: &PageRequest) -> Result<Page<HostRow>, sqlx::Error> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        host_columns!(),
        " FROM hosts WHERE (?1 IS NULL OR (created_at, id) > (?1, ?2))
          ORDER BY created_at, id LIMIT ?3"
    ))
    .bind(page.time(0))
    .bind(page.key(1))
    .bind(page.fetch())
    .fetch_all(db)
    .await?;
    Ok(page.finish(rows, |h: &HostRow| {
        vec![time_key(&h.created_at), h.id.to_string()]
    }))
}

/// The host with this id.
pub async fn get(db: &Db, id: &HostId) -> Result<Option<HostRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        host_columns!(),
        " FROM hosts WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The host reached through this libvirt URI.
pub async fn get_by_uri(db: &Db, uri: &str) -> Result<Option<HostRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        host_columns!(),
        " FROM hosts WHERE libvirt_uri = ?1"
    ))
    .bind(uri)
    .fetch_optional(db)
    .await
}

/// Registers a host with its facts and ratios.
pub async fn insert(
    db: &Db,
    name: &str,
    uri: &str,
    domain_type: &str,
    physical: Physical,
    ratios: Overcommit,
) -> Result<HostId, sqlx::Error> {
    let id = HostId::generate();
    let at = now();
    sqlx::query(
        "INSERT INTO hosts (id, name, libvirt_uri, domain_type, cpus, memory_mib, disk_gib,
            cpu_overcommit, memory_overcommit, disk_overcommit, reserved_memory_mib,
            refreshed_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
    )
    .bind(&id)
    .bind(name)
    .bind(uri)
    .bind(domain_type)
    .bind(i64::from(physical.cpus))
    .bind(physical.memory_mib as i64)
    .bind(physical.disk_gib as i64)
    .bind(ratios.cpu)
    .bind(ratios.memory)
    .bind(ratios.disk)
    .bind(ratios.reserved_memory_mib as i64)
    .bind(at)
    .execute(db)
    .await?;
    Ok(id)
}

/// Records freshly read physical facts.
pub async fn update_physical(db: &Db, id: &HostId, physical: Physical) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE hosts SET cpus = ?2, memory_mib = ?3, disk_gib = ?4, refreshed_at = ?5 WHERE id = ?1",
    )
    .bind(id)
    .bind(i64::from(physical.cpus))
    .bind(physical.memory_mib as i64)
    .bind(physical.disk_gib as i64)
    .bind(now())
    .execute(db)
    .await?;
    Ok(())
}

/// Records the domain type in use (after a probe or a configuration change).
pub async fn update_domain_type(
    db: &Db,
    id: &HostId,
    domain_type: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE hosts SET domain_type = ?2 WHERE id = ?1")
        .bind(id)
        .bind(domain_type)
        .execute(db)
        .await?;
    Ok(())
}

/// Changes a host's overcommit ratios and reserve.
pub async fn update_overcommit(db: &Db, id: &HostId, r: Overcommit) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE hosts SET cpu_overcommit = ?2, memory_overcommit = ?3, disk_overcommit = ?4,
            reserved_memory_mib = ?5 WHERE id = ?1",
    )
    .bind(id)
    .bind(r.cpu)
    .bind(r.memory)
    .bind(r.disk)
    .bind(r.reserved_memory_mib as i64)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the libvirt domains on this host that carve does not manage.
pub async fn set_unmanaged(db: &Db, id: &HostId, names: &[String]) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
    sqlx::query("UPDATE hosts SET unmanaged_domains = ?2 WHERE id = ?1")
        .bind(id)
        .bind(json)
        .execute(db)
        .await?;
    Ok(())
}

/// What the live VMs on a host have reserved, counted from the rows that exist.
pub async fn allocated(conn: &mut SqliteConnection, id: &HostId) -> Result<Resources, sqlx::Error> {
    let (vcpus, memory_mib, disk_gib): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(vcpus), 0), COALESCE(SUM(memory_mib), 0), COALESCE(SUM(disk_gib), 0)
         FROM vms WHERE host_id = ?1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(Resources {
        vcpus: vcpus as u32,
        memory_mib: memory_mib as u64,
        disk_gib: disk_gib as u64,
    })
}
