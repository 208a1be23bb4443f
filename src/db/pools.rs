//! The pools and pool_members tables: a tenant's balancers and the VMs behind them, with the
//! state the balancer last saw for each member.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest};
use super::{Db, Scope, now};
use crate::domain::ids::{PoolId, TenantId, VmId};
use crate::domain::pool::{CheckKind, MemberStatus, PoolAlgorithm, PoolProtocol};
use crate::domain::vm_state::VmState;

/// A pool row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PoolRow {
    pub id: PoolId,
    pub tenant_id: TenantId,
    pub name: String,
    pub protocol: PoolProtocol,
    pub listen_address: String,
    pub listen_port: i64,
    pub algorithm: PoolAlgorithm,
    pub check_kind: CheckKind,
    pub check_path: Option<String>,
    pub check_expect_status: Option<i64>,
    pub check_interval_s: i64,
    pub check_timeout_s: i64,
    pub check_rise: i64,
    pub check_fall: i64,
    pub drain_timeout_s: i64,
    pub sticky_cookie: Option<String>,
    pub proxy_protocol: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns every pool query reads.
macro_rules! pool_columns {
    () => {
        "id, tenant_id, name, protocol, listen_address, listen_port, algorithm, check_kind, \
         check_path, check_expect_status, check_interval_s, check_timeout_s, check_rise, \
         check_fall, drain_timeout_s, sticky_cookie, proxy_protocol, created_at, updated_at"
    };
}

/// A member row, with what the balancer needs of its VM.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub pool_id: PoolId,
    pub vm_id: VmId,
    pub vm_name: String,
    pub vm_state: VmState,
    pub port: i64,
    pub weight: i64,
    pub state: MemberStatus,
    pub leaving: bool,
    /// The host port the VM's guest port is forwarded from, if it is.
    pub host_port: Option<i64>,
    pub state_changed_at: DateTime<Utc>,
    /// Where the VM's host listens for forwards (`None`: the configured default).
    pub forward_address: Option<String>,
}

/// The member query, joined with the VM and its forward for the member's port.
const MEMBER_SELECT: &str =
    "SELECT m.pool_id, m.vm_id, v.name AS vm_name, v.state AS vm_state, m.port,
        m.weight, m.state, m.leaving, f.host_port, m.state_changed_at, h.forward_address
     FROM pool_members m JOIN vms v ON v.id = m.vm_id
     LEFT JOIN hosts h ON h.id = v.host_id
     LEFT JOIN port_forwards f ON f.vm_id = m.vm_id AND f.guest_port = m.port";

/// Inserts a pool (the caller has checked the port; a taken name or port is a unique
/// violation).
pub async fn insert(conn: &mut super::Tx, p: &PoolRow) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(concat!(
            "INSERT INTO pools (",
            pool_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        ))
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.name)
        .bind(p.protocol)
        .bind(&p.listen_address)
        .bind(p.listen_port)
        .bind(p.algorithm)
        .bind(p.check_kind)
        .bind(&p.check_path)
        .bind(p.check_expect_status)
        .bind(p.check_interval_s)
        .bind(p.check_timeout_s)
        .bind(p.check_rise)
        .bind(p.check_fall)
        .bind(p.drain_timeout_s)
        .bind(&p.sticky_cookie)
        .bind(p.proxy_protocol)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Writes a pool's changeable settings (everything but id, tenant, listen and created_at).
pub async fn update(db: &Db, p: &PoolRow) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "UPDATE pools SET name = $2, algorithm = $3, check_kind = $4, check_path = $5,
            check_expect_status = $6, check_interval_s = $7, check_timeout_s = $8, check_rise = $9,
            check_fall = $10, drain_timeout_s = $11, sticky_cookie = $12, proxy_protocol = $13,
            updated_at = $14
         WHERE id = $1",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(p.algorithm)
        .bind(p.check_kind)
        .bind(&p.check_path)
        .bind(p.check_expect_status)
        .bind(p.check_interval_s)
        .bind(p.check_timeout_s)
        .bind(p.check_rise)
        .bind(p.check_fall)
        .bind(p.drain_timeout_s)
        .bind(&p.sticky_cookie)
        .bind(p.proxy_protocol)
        .bind(now())
        .execute(db)
        .await?;
        Ok(())
    })
}

/// The pool with this id, if the scope may see it.
pub async fn get(
    db: impl Into<super::Ex<'_>>,
    scope: &Scope,
    id: &PoolId,
) -> Result<Option<PoolRow>, sqlx::Error> {
    crate::on_ex!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            pool_columns!(),
            " FROM pools WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)"
        ))
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(db)
        .await
    })
}

/// The pool with this name in a tenant.
pub async fn find_by_name(
    db: impl Into<super::Ex<'_>>,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<PoolRow>, sqlx::Error> {
    crate::on_ex!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            pool_columns!(),
            " FROM pools WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional(db)
        .await
    })
}

/// One page of the pools the scope may see, by name then id.
pub async fn page(
    db: &Db,
    scope: &Scope,
    page: &PageRequest,
) -> Result<Page<PoolRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            pool_columns!(),
            " FROM pools WHERE ($1 IS NULL OR tenant_id = $1)
              AND ($2 IS NULL OR (name, id) > ($2, $3)) ORDER BY name, id LIMIT $4"
        ))
        .bind(scope.tenant())
        .bind(page.key(0))
        .bind(page.key(1))
        .bind(page.fetch())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |p: &PoolRow| vec![p.name.clone(), p.id.to_string()]))
    })
}

/// Every pool (the balancer).
pub async fn all(db: &Db) -> Result<Vec<PoolRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            pool_columns!(),
            " FROM pools ORDER BY id"
        ))
        .fetch_all(db)
        .await
    })
}

/// Listen ports of every pool.
pub async fn listen_ports(conn: impl Into<super::Ex<'_>>) -> Result<Vec<i64>, sqlx::Error> {
    crate::on_ex!(conn, conn => {
        sqlx::query_scalar("SELECT listen_port FROM pools")
            .fetch_all(conn)
            .await
    })
}

/// How many pools a tenant has.
pub async fn count_of_tenant(
    conn: impl Into<super::Ex<'_>>,
    tenant: &TenantId,
) -> Result<i64, sqlx::Error> {
    crate::on_ex!(conn, conn => {
        sqlx::query_scalar("SELECT COUNT(*) FROM pools WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(conn)
            .await
    })
}

/// Deletes a pool and its members.
pub async fn delete(db: &Db, id: &PoolId) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        let mut tx = super::WritePool::begin_write(db).await?;
        sqlx::query("DELETE FROM pool_members WHERE pool_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM pools WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    })
}

/// Adds a member in state `joining` (or `inactive` when its VM does not run), only while the
/// pool exists and the VM is neither deleted nor being deleted (false otherwise); a VM
/// already in the pool is a unique violation.
pub async fn add_member(
    conn: &mut super::Tx,
    pool: &PoolId,
    vm: &VmId,
    port: u16,
    weight: u32,
    state: MemberStatus,
) -> Result<bool, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        let at = now();
        let done = sqlx::query(
            "INSERT INTO pool_members (pool_id, vm_id, port, weight, state, state_changed_at, created_at)
         SELECT $1, $2, $3, $4, $5, $6, $6
         WHERE EXISTS (SELECT 1 FROM pools WHERE id = $1)
           AND EXISTS (SELECT 1 FROM vms WHERE id = $2 AND deleted_at IS NULL AND state != 'deleting')",
        )
        .bind(pool)
        .bind(vm)
        .bind(i64::from(port))
        .bind(i64::from(weight))
        .bind(state)
        .bind(at)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() > 0)
    })
}

/// The members of a pool, by VM name.
pub async fn members(
    db: impl Into<super::Ex<'_>>,
    pool: &PoolId,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    crate::on_ex!(db, db => {
        sqlx::query_as(&format!(
            "{MEMBER_SELECT} WHERE m.pool_id = $1 ORDER BY v.name, m.vm_id"
        ))
        .bind(pool)
        .fetch_all(db)
        .await
    })
}

/// The members of the listed pools (one query for a page of pools), by VM name.
pub async fn members_of_pools(db: &Db, pools: &[PoolId]) -> Result<Vec<MemberRow>, sqlx::Error> {
    crate::on_db!(db, db, pg => {
        let list = serde_json::to_string(pools).unwrap_or_else(|_| "[]".into());
        sqlx::query_as(&super::dialect(pg, &format!(
            "{MEMBER_SELECT} WHERE m.pool_id IN (SELECT value FROM json_each($1)) ORDER BY v.name, m.vm_id"
        )))
        .bind(list)
        .fetch_all(db)
        .await
    })
}

/// The members of every pool (the balancer).
pub async fn all_members(db: &Db) -> Result<Vec<MemberRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(&format!("{MEMBER_SELECT} ORDER BY m.pool_id, m.vm_id"))
            .fetch_all(db)
            .await
    })
}

/// Every membership of a VM.
pub async fn memberships_of(db: &Db, vm: &VmId) -> Result<Vec<MemberRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(&format!("{MEMBER_SELECT} WHERE m.vm_id = $1"))
            .bind(vm)
            .fetch_all(db)
            .await
    })
}

/// Marks a member as leaving (it is drained, then removed); false if there was none.
pub async fn mark_leaving(db: &Db, pool: &PoolId, vm: &VmId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("UPDATE pool_members SET leaving = TRUE WHERE pool_id = $1 AND vm_id = $2")
            .bind(pool)
            .bind(vm)
            .execute(db)
            .await?;
        Ok(done.rows_affected() > 0)
    })
}

/// Records the state the balancer saw; returns the previous one if it changed.
pub async fn set_member_state(
    db: &Db,
    pool: &PoolId,
    vm: &VmId,
    state: MemberStatus,
) -> Result<Option<MemberStatus>, sqlx::Error> {
    crate::on_db!(db, db => {
        let mut tx = super::WritePool::begin_write(db).await?;
        let before: Option<MemberStatus> =
            sqlx::query_scalar("SELECT state FROM pool_members WHERE pool_id = $1 AND vm_id = $2")
                .bind(pool)
                .bind(vm)
                .fetch_optional(&mut *tx)
                .await?;
        let changed = match before {
            Some(b) if b != state => {
                sqlx::query(
                    "UPDATE pool_members SET state = $3, state_changed_at = $4
                     WHERE pool_id = $1 AND vm_id = $2",
                )
                .bind(pool)
                .bind(vm)
                .bind(state)
                .bind(now())
                .execute(&mut *tx)
                .await?;
                Some(b)
            }
            _ => None,
        };
        tx.commit().await?;
        Ok(changed)
    })
}

/// Removes a member row.
pub async fn remove_member(db: &Db, pool: &PoolId, vm: &VmId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("DELETE FROM pool_members WHERE pool_id = $1 AND vm_id = $2")
            .bind(pool)
            .bind(vm)
            .execute(db)
            .await?;
        Ok(done.rows_affected() > 0)
    })
}

/// Removes every membership of a VM (it is being deleted).
pub async fn remove_vm(conn: &mut super::Tx, vm: &VmId) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query("DELETE FROM pool_members WHERE vm_id = $1")
            .bind(vm)
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// The newest change feed entry about pools or VMs after `after` (0: none), so the balancer
/// knows when to look again.
pub async fn changed_since(db: &Db, after: i64) -> Result<i64, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(id), 0) FROM events WHERE id > $1 AND kind IN ('pool', 'vm')",
        )
        .bind(after)
        .fetch_one(db)
        .await
    })
}

/// For a VM's memberships still in a balancer (not inactive): how many, and the longest
/// drain timeout of their pools in seconds.
pub async fn in_balancer(db: &Db, vm: &VmId) -> Result<(i64, i64), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT COUNT(*), COALESCE(MAX(p.drain_timeout_s), 0) FROM pool_members m
             JOIN pools p ON p.id = m.pool_id WHERE m.vm_id = $1 AND m.state != 'inactive'",
        )
        .bind(vm)
        .fetch_one(db)
        .await
    })
}

/// How many live members of `pool` run on `host`.
pub async fn members_on_host(
    conn: &mut super::Tx,
    pool: &PoolId,
    host: &crate::domain::ids::HostId,
) -> Result<i64, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM pool_members m JOIN vms v ON v.id = m.vm_id
             WHERE m.pool_id = $1 AND v.host_id = $2 AND v.deleted_at IS NULL",
        )
        .bind(pool)
        .bind(host)
        .fetch_one(conn)
        .await
    })
}
