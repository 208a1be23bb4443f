//! The port_forwards table: host ports reserved for guest port forwards. The primary key on
//! (host, port) makes a double reservation impossible, across processes too.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener};

use super::Db;
use crate::config::PortRange;
use crate::domain::ids::{HostId, VmId};

/// One forward: the host's address and port to the guest's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Forward {
    pub guest_port: i64,
    pub host_port: i64,
}

/// No free host port was left in the configured range.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// The range is used up.
    #[error("no free host port left in the forward range {0}; widen network.forward_ports")]
    Exhausted(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Reserves one host port per guest port, lowest free first; with `probe` (the address
/// forwards listen on, when the host is this machine) skipping ports another program listens on.
pub async fn allocate(
    conn: &mut super::Tx,
    host: &HostId,
    vm: &VmId,
    guest_ports: &[u16],
    range: PortRange,
    probe: Option<IpAddr>,
) -> Result<Vec<Forward>, AllocateError> {
    crate::on_tx!(conn, conn => {
        if guest_ports.is_empty() {
            return Ok(Vec::new());
        }
        let taken: HashSet<i64> = sqlx::query_scalar(
            "SELECT host_port FROM port_forwards WHERE host_id = $1 AND host_port BETWEEN $2 AND $3",
        )
        .bind(host)
        .bind(i64::from(range.first))
        .bind(i64::from(range.last))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let mut free = (range.first..=range.last)
            .filter(|p| !taken.contains(&i64::from(*p)) && probe.is_none_or(|a| port_is_free(a, *p)));
        let mut forwards = Vec::with_capacity(guest_ports.len());
        for &guest_port in guest_ports {
            let host_port = free
                .next()
                .ok_or_else(|| AllocateError::Exhausted(String::from(range)))?;
            sqlx::query(
                "INSERT INTO port_forwards (host_id, host_port, vm_id, guest_port) VALUES ($1, $2, $3, $4)",
            )
            .bind(host)
            .bind(i64::from(host_port))
            .bind(vm)
            .bind(i64::from(guest_port))
            .execute(&mut *conn)
            .await?;
            forwards.push(Forward {
                guest_port: i64::from(guest_port),
                host_port: i64::from(host_port),
            });
        }
        Ok(forwards)
    })
}

/// Whether nothing on the host listens on this port now.
fn port_is_free(address: IpAddr, port: u16) -> bool {
    TcpListener::bind(SocketAddr::new(address, port)).is_ok()
}

/// A VM's forwards, by guest port.
pub async fn for_vm(db: &Db, vm: &VmId) -> Result<Vec<Forward>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT guest_port, host_port FROM port_forwards WHERE vm_id = $1 ORDER BY guest_port",
        )
        .bind(vm)
        .fetch_all(db)
        .await
    })
}

/// Frees a VM's host ports.
pub async fn release(conn: &mut super::Tx, vm: &VmId) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query("DELETE FROM port_forwards WHERE vm_id = $1")
            .bind(vm)
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Port reservations whose VM is gone (should be none; the reconciler checks).
pub async fn release_orphans(db: &Db) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "DELETE FROM port_forwards WHERE vm_id IN (SELECT id FROM vms WHERE deleted_at IS NOT NULL)",
        )
        .execute(db)
        .await?;
        Ok(done.rows_affected())
    })
}

/// The forwards of the given VMs, as (vm, guest port, host port).
pub async fn for_vms(db: &Db, vms: &[VmId]) -> Result<Vec<(VmId, i64, i64)>, sqlx::Error> {
    crate::on_db!(db, db, pg => {
        let ids = serde_json::to_string(vms).unwrap_or_else(|_| "[]".into());
        sqlx::query_as(&super::dialect(pg, "SELECT vm_id, guest_port, host_port FROM port_forwards
         WHERE vm_id IN (SELECT value FROM json_each($1))
         ORDER BY vm_id, guest_port"))
        .bind(ids)
        .fetch_all(db)
        .await
    })
}
