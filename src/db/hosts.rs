//! The hosts table: capacity facts read from libvirt and the disk store, the overcommit ratios,
//! and the allocation summed from the VMs placed on each host.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest, time_key};
use super::{Db, now};
use crate::domain::capacity::{Overcommit, Physical};
use crate::domain::host::HostState;
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
    pub state: HostState,
    /// Why the host is unreachable (libvirt's message), while it is.
    pub state_reason: Option<String>,
    /// A JSON array of labels.
    pub labels: String,
    /// Where forwards listen; `None`: the configured `network.forward_address`.
    pub forward_address: Option<String>,
    pub forward_port_first: Option<i64>,
    pub forward_port_last: Option<i64>,
    /// The libvirt storage pool that holds the host's VM disks.
    pub storage_pool: String,
    /// That pool's directory on the host.
    pub storage_path: String,
    /// libvirt's UUID of the machine.
    pub machine_id: String,
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

    /// The host's labels.
    pub fn labels(&self) -> Vec<String> {
        serde_json::from_str(&self.labels).unwrap_or_default()
    }
}

/// The columns every query of this table reads.
macro_rules! host_columns {
    () => {
        "id, name, libvirt_uri, domain_type, cpus, memory_mib, disk_gib, \
    cpu_overcommit, memory_overcommit, disk_overcommit, reserved_memory_mib, unmanaged_domains, \
    refreshed_at, created_at, state, state_reason, labels, forward_address, forward_port_first, \
    forward_port_last, storage_pool, storage_path, machine_id"
    };
}

/// All hosts, oldest first.
pub async fn list(db: impl Into<super::Ex<'_>>) -> Result<Vec<HostRow>, sqlx::Error> {
    crate::on_ex!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            host_columns!(),
            " FROM hosts WHERE removed_at IS NULL ORDER BY created_at, id"
        ))
        .fetch_all(db)
        .await
    })
}

/// One page of hosts, oldest first.
pub async fn page(db: &Db, page: &PageRequest) -> Result<Page<HostRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            host_columns!(),
            " FROM hosts WHERE removed_at IS NULL AND ($1 IS NULL OR (created_at, id) > ($1, $2))
              ORDER BY created_at, id LIMIT $3"
        ))
        .bind(page.time(0))
        .bind(page.key(1))
        .bind(page.fetch())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |h: &HostRow| {
            vec![time_key(&h.created_at), h.id.to_string()]
        }))
    })
}

/// The host with this id.
pub async fn get(db: &Db, id: &HostId) -> Result<Option<HostRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            host_columns!(),
            " FROM hosts WHERE id = $1 AND removed_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(db)
        .await
    })
}

/// The host reached through this libvirt URI.
pub async fn get_by_uri(db: &Db, uri: &str) -> Result<Option<HostRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            host_columns!(),
            " FROM hosts WHERE libvirt_uri = $1 AND removed_at IS NULL"
        ))
        .bind(uri)
        .fetch_optional(db)
        .await
    })
}

/// What a new host row holds.
#[derive(Debug, Clone)]
pub struct NewHost<'a> {
    pub name: &'a str,
    pub uri: &'a str,
    pub domain_type: &'a str,
    pub physical: Physical,
    pub ratios: Overcommit,
    pub labels: &'a [String],
    pub forward_address: Option<&'a str>,
    pub forward_ports: Option<(u16, u16)>,
    pub storage_pool: &'a str,
    pub storage_path: &'a str,
    pub machine_id: &'a str,
}

/// Registers a host with its facts and ratios. Fails with a unique violation when the name or
/// the URI is taken.
pub async fn insert(db: &Db, h: &NewHost<'_>) -> Result<HostId, sqlx::Error> {
    crate::on_db!(db, db => {
        let id = HostId::generate();
        let at = now();
        sqlx::query(
            "INSERT INTO hosts (id, name, libvirt_uri, domain_type, cpus, memory_mib, disk_gib,
            cpu_overcommit, memory_overcommit, disk_overcommit, reserved_memory_mib,
            refreshed_at, created_at, labels, forward_address, forward_port_first,
            forward_port_last, storage_pool, storage_path, machine_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(&id)
        .bind(h.name)
        .bind(h.uri)
        .bind(h.domain_type)
        .bind(i64::from(h.physical.cpus))
        .bind(h.physical.memory_mib as i64)
        .bind(h.physical.disk_gib as i64)
        .bind(h.ratios.cpu)
        .bind(h.ratios.memory)
        .bind(h.ratios.disk)
        .bind(h.ratios.reserved_memory_mib as i64)
        .bind(at)
        .bind(serde_json::to_string(h.labels).unwrap_or_else(|_| "[]".into()))
        .bind(h.forward_address)
        .bind(h.forward_ports.map(|p| i64::from(p.0)))
        .bind(h.forward_ports.map(|p| i64::from(p.1)))
        .bind(h.storage_pool)
        .bind(h.storage_path)
        .bind(h.machine_id)
        .execute(db)
        .await?;
        Ok(id)
    })
}

/// Records where the host's storage pool is, and its machine.
pub async fn set_storage(
    db: &Db,
    id: &HostId,
    pool: &str,
    path: &str,
    machine_id: &str,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "UPDATE hosts SET storage_pool = $2, storage_path = $3, machine_id = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(pool)
        .bind(path)
        .bind(machine_id)
        .execute(db)
        .await?;
        Ok(())
    })
}

/// Marks a host unreachable with libvirt's reason, remembering the state it goes back to;
/// false if it already was.
pub async fn mark_unreachable(db: &Db, id: &HostId, reason: &str) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "UPDATE hosts SET resume_state = state, state = 'unreachable', state_reason = $2
             WHERE id = $1 AND state != 'unreachable'",
        )
        .bind(id)
        .bind(reason)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// A host that answers again goes back to the state it had; false if it was not unreachable.
pub async fn mark_reachable(db: &Db, id: &HostId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "UPDATE hosts SET state = resume_state, state_reason = NULL
             WHERE id = $1 AND state = 'unreachable'",
        )
        .bind(id)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Changes a host's state; `reason` says why it is unreachable.
pub async fn set_state(
    db: &Db,
    id: &HostId,
    state: HostState,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        // An unreachable host's state is the reconciler's: it goes back by itself.
        let done = sqlx::query(
            "UPDATE hosts SET state = $2, state_reason = $3 WHERE id = $1 AND state != 'unreachable'",
        )
        .bind(id)
        .bind(state)
        .bind(reason)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// What an admin may change of a host besides its ratios; `None` keeps a value.
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    pub name: Option<String>,
    pub labels: Option<Vec<String>>,
    /// `Some(None)` goes back to the configured default.
    pub forward_address: Option<Option<String>>,
    pub forward_ports: Option<Option<(u16, u16)>>,
}

/// Changes a host's name, labels or forward settings. Fails with a unique violation when the
/// name is taken.
pub async fn update_settings(db: &Db, id: &HostId, s: &HostSettings) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        let labels = s
            .labels
            .as_ref()
            .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".into()));
        let ports = s
            .forward_ports
            .map(|p| p.map(|(a, b)| (i64::from(a), i64::from(b))));
        sqlx::query(
            "UPDATE hosts SET name = COALESCE($2, name), labels = COALESCE($3, labels),
            forward_address = CASE WHEN $4 THEN $5 ELSE forward_address END,
            forward_port_first = CASE WHEN $6 THEN $7 ELSE forward_port_first END,
            forward_port_last = CASE WHEN $6 THEN $8 ELSE forward_port_last END
         WHERE id = $1",
        )
        .bind(id)
        .bind(s.name.as_deref())
        .bind(labels)
        .bind(s.forward_address.is_some())
        .bind(s.forward_address.clone().flatten())
        .bind(ports.is_some())
        .bind(ports.flatten().map(|p| p.0))
        .bind(ports.flatten().map(|p| p.1))
        .execute(db)
        .await?;
        Ok(())
    })
}

/// Removes a host that holds no VM (deleted ones aside); false if it holds one or is gone.
/// Checked and done in one write transaction, so a VM placed meanwhile keeps its host.
pub async fn delete_if_empty(db: &Db, id: &HostId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let mut tx = super::WritePool::begin_write(db).await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM vms WHERE (host_id = $1 OR moving_to = $1) AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if live > 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM port_forwards WHERE host_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Deleted VMs' rows keep pointing at it: it stays as a tombstone, its name and URI freed.
        let done = sqlx::query(
            "UPDATE hosts SET removed_at = $2, name = 'removed-' || id, libvirt_uri = 'removed:' || id
             WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Records freshly read physical facts.
pub async fn update_physical(db: &Db, id: &HostId, physical: Physical) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "UPDATE hosts SET cpus = $2, memory_mib = $3, disk_gib = $4, refreshed_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(i64::from(physical.cpus))
        .bind(physical.memory_mib as i64)
        .bind(physical.disk_gib as i64)
        .bind(now())
        .execute(db)
        .await?;
        Ok(())
    })
}

/// Records the domain type in use (after a probe or a configuration change).
pub async fn update_domain_type(
    db: &Db,
    id: &HostId,
    domain_type: &str,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE hosts SET domain_type = $2 WHERE id = $1")
            .bind(id)
            .bind(domain_type)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Changes a host's overcommit ratios and reserve.
pub async fn update_overcommit(db: &Db, id: &HostId, r: Overcommit) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "UPDATE hosts SET cpu_overcommit = $2, memory_overcommit = $3, disk_overcommit = $4,
                reserved_memory_mib = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(r.cpu)
        .bind(r.memory)
        .bind(r.disk)
        .bind(r.reserved_memory_mib as i64)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Records the libvirt domains on this host that carve does not manage.
pub async fn set_unmanaged(db: &Db, id: &HostId, names: &[String]) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        let json = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
        sqlx::query("UPDATE hosts SET unmanaged_domains = $2 WHERE id = $1")
            .bind(id)
            .bind(json)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// What the live VMs on a host (and those being moved to it) have reserved, counted from the
/// rows that exist.
pub async fn allocated(conn: &mut super::Tx, id: &HostId) -> Result<Resources, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        let (vcpus, memory_mib, disk_gib): (i64, i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(vcpus), 0) AS BIGINT), CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT), CAST(COALESCE(SUM(disk_gib), 0) AS BIGINT)
             FROM vms WHERE (host_id = $1 OR moving_to = $1) AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_one(conn)
        .await?;
        Ok(Resources {
            vcpus: vcpus as u32,
            memory_mib: memory_mib as u64,
            disk_gib: disk_gib as u64,
        })
    })
}

/// A host's state, read inside a transaction (`None`: no such host).
pub async fn state_of(conn: &mut super::Tx, id: &HostId) -> Result<Option<HostState>, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query_scalar("SELECT state FROM hosts WHERE id = $1 AND removed_at IS NULL")
            .bind(id)
            .fetch_optional(conn)
            .await
    })
}
