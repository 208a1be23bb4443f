//! The scale_groups and scale_group_members tables: a pool's group of identical VMs and which
//! VM was made of which template.

use chrono::{DateTime, Utc};

use super::{Db, Scope, now};
use crate::domain::ids::{PoolId, TenantId, VmId};
use crate::domain::pool::{MemberStatus, RefreshState, TargetMetric};
use crate::domain::vm_state::VmState;

/// A scale group row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRow {
    pub pool_id: PoolId,
    pub tenant_id: TenantId,
    pub plan_id: String,
    pub image_id: String,
    pub user_data: Option<String>,
    pub ssh_keys: String,
    pub port: i64,
    pub root_password_hash: Option<String>,
    pub template_version: i64,
    pub min_size: i64,
    pub max_size: i64,
    pub desired: i64,
    pub replace_after_s: i64,
    pub health_grace_s: i64,
    pub max_surge: i64,
    pub min_healthy_percent: i64,
    pub target_metric: Option<TargetMetric>,
    pub target_value: Option<i64>,
    pub scale_out_cooldown_s: i64,
    pub scale_in_cooldown_s: i64,
    pub last_scaled_at: Option<DateTime<Utc>>,
    pub refresh: RefreshState,
    pub refresh_operation: Option<String>,
    pub shortfall: Option<String>,
    pub next_index: i64,
    pub deleting: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl GroupRow {
    /// The template's SSH public keys.
    pub fn ssh_keys(&self) -> Vec<String> {
        serde_json::from_str(&self.ssh_keys).unwrap_or_default()
    }
}

/// The columns every group query reads.
macro_rules! group_columns {
    () => {
        "pool_id, tenant_id, plan_id, image_id, user_data, ssh_keys, port, root_password_hash, \
         template_version, min_size, max_size, desired, replace_after_s, health_grace_s, \
         max_surge, min_healthy_percent, target_metric, target_value, scale_out_cooldown_s, \
         scale_in_cooldown_s, last_scaled_at, refresh, refresh_operation, shortfall, next_index, \
         deleting, created_at, updated_at"
    };
}

/// A member of a group with what the controller decides on: its VM's state, the balancer's
/// view and whether an operation holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberFacts {
    pub vm_id: VmId,
    pub vm_name: String,
    pub vm_state: VmState,
    pub deleted: bool,
    pub template_version: i64,
    pub retiring: bool,
    pub unhealthy_since: Option<DateTime<Utc>>,
    pub ever_healthy: bool,
    pub created_at: DateTime<Utc>,
    /// The pool member's state (None once it left the pool).
    pub member_state: Option<MemberStatus>,
    /// An unfinished operation on the VM.
    pub busy: bool,
}

/// Inserts a group (a pool has at most one: a second is a unique violation).
pub async fn insert(conn: &mut super::Tx, g: &GroupRow) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(concat!(
            "INSERT INTO scale_groups (",
            group_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)"
        ))
        .bind(&g.pool_id)
        .bind(&g.tenant_id)
        .bind(&g.plan_id)
        .bind(&g.image_id)
        .bind(&g.user_data)
        .bind(&g.ssh_keys)
        .bind(g.port)
        .bind(&g.root_password_hash)
        .bind(g.template_version)
        .bind(g.min_size)
        .bind(g.max_size)
        .bind(g.desired)
        .bind(g.replace_after_s)
        .bind(g.health_grace_s)
        .bind(g.max_surge)
        .bind(g.min_healthy_percent)
        .bind(g.target_metric)
        .bind(g.target_value)
        .bind(g.scale_out_cooldown_s)
        .bind(g.scale_in_cooldown_s)
        .bind(g.last_scaled_at)
        .bind(g.refresh)
        .bind(&g.refresh_operation)
        .bind(&g.shortfall)
        .bind(g.next_index)
        .bind(g.deleting)
        .bind(g.created_at)
        .bind(g.updated_at)
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Writes a group's settings and template (not its counters or refresh state).
pub async fn update(conn: &mut super::Tx, g: &GroupRow) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(
            "UPDATE scale_groups SET plan_id = $2, image_id = $3, user_data = $4, ssh_keys = $5,
            port = $6, root_password_hash = $7, template_version = $8, min_size = $9,
            max_size = $10, desired = $11, replace_after_s = $12, health_grace_s = $13,
            max_surge = $14, min_healthy_percent = $15, target_metric = $16, target_value = $17,
            scale_out_cooldown_s = $18, scale_in_cooldown_s = $19, updated_at = $20
         WHERE pool_id = $1",
        )
        .bind(&g.pool_id)
        .bind(&g.plan_id)
        .bind(&g.image_id)
        .bind(&g.user_data)
        .bind(&g.ssh_keys)
        .bind(g.port)
        .bind(&g.root_password_hash)
        .bind(g.template_version)
        .bind(g.min_size)
        .bind(g.max_size)
        .bind(g.desired)
        .bind(g.replace_after_s)
        .bind(g.health_grace_s)
        .bind(g.max_surge)
        .bind(g.min_healthy_percent)
        .bind(g.target_metric)
        .bind(g.target_value)
        .bind(g.scale_out_cooldown_s)
        .bind(g.scale_in_cooldown_s)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// The group of a pool, if the scope may see it.
pub async fn get(
    conn: impl Into<super::Ex<'_>>,
    scope: &Scope,
    pool: &PoolId,
) -> Result<Option<GroupRow>, sqlx::Error> {
    crate::on_ex!(conn, conn => {
        sqlx::query_as(concat!(
            "SELECT ",
            group_columns!(),
            " FROM scale_groups WHERE pool_id = $1 AND ($2 IS NULL OR tenant_id = $2)"
        ))
        .bind(pool)
        .bind(scope.tenant())
        .fetch_optional(conn)
        .await
    })
}

/// Every group (the controller).
pub async fn all(db: &Db) -> Result<Vec<GroupRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            group_columns!(),
            " FROM scale_groups ORDER BY created_at"
        ))
        .fetch_all(db)
        .await
    })
}

/// Starts deleting a group: no member is wanted any more; the row goes once they are gone.
pub async fn mark_deleting(conn: &mut super::Tx, pool: &PoolId) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(
            "UPDATE scale_groups SET deleting = TRUE, min_size = 0, desired = 0, target_metric = NULL,
            target_value = NULL, refresh = 'none', refresh_operation = NULL, updated_at = $2
         WHERE pool_id = $1",
        )
        .bind(pool)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Deletes a group's row (its member links go with it).
pub async fn delete(conn: &mut super::Tx, pool: &PoolId) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query("DELETE FROM scale_groups WHERE pool_id = $1")
            .bind(pool)
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Sets `desired` (tracking), and when it is a scaling decision, the time it was taken.
pub async fn set_desired(
    conn: &mut super::Tx,
    pool: &PoolId,
    desired: i64,
    scaled_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(
            "UPDATE scale_groups SET desired = $2, last_scaled_at = COALESCE($3, last_scaled_at),
                updated_at = $4 WHERE pool_id = $1",
        )
        .bind(pool)
        .bind(desired)
        .bind(scaled_at)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Records why the group is short of members (None: it is not).
pub async fn set_shortfall(db: &Db, pool: &PoolId, why: Option<&str>) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "UPDATE scale_groups SET shortfall = $2 WHERE pool_id = $1 AND shortfall IS DISTINCT FROM $2",
        )
        .bind(pool)
        .bind(why)
        .execute(db)
        .await?;
        Ok(())
    })
}

/// Sets the refresh state and its operation.
pub async fn set_refresh(
    conn: &mut super::Tx,
    pool: &PoolId,
    state: RefreshState,
    operation: Option<&str>,
) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(
            "UPDATE scale_groups SET refresh = $2, refresh_operation = $3, updated_at = $4
             WHERE pool_id = $1",
        )
        .bind(pool)
        .bind(state)
        .bind(operation)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Ends the refresh `operation` if it is still the group's and the template is still
/// `version` (a change meanwhile started or keeps another); true if it did.
pub async fn end_refresh_if(
    conn: &mut super::Tx,
    pool: &PoolId,
    operation: &str,
    version: i64,
) -> Result<bool, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        let done = sqlx::query(
            "UPDATE scale_groups SET refresh = 'none', refresh_operation = NULL, updated_at = $4
             WHERE pool_id = $1 AND refresh_operation = $2 AND template_version = $3",
        )
        .bind(pool)
        .bind(operation)
        .bind(version)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Whether the group's tenant is suspended (a suspended tenant's group makes nothing).
pub async fn tenant_suspended(db: &Db, pool: &PoolId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_scalar(
            "SELECT t.suspended FROM scale_groups g JOIN tenants t ON t.id = g.tenant_id
             WHERE g.pool_id = $1",
        )
        .bind(pool)
        .fetch_optional(db)
        .await
        .map(|s: Option<bool>| s.unwrap_or(false))
    })
}

/// Takes the next member index (for the member's name).
pub async fn take_index(conn: &mut super::Tx, pool: &PoolId) -> Result<i64, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query_scalar(
            "UPDATE scale_groups SET next_index = next_index + 1 WHERE pool_id = $1
             RETURNING next_index - 1",
        )
        .bind(pool)
        .fetch_one(conn)
        .await
    })
}

/// Records a new member made of `version`.
pub async fn add_member(
    conn: &mut super::Tx,
    pool: &PoolId,
    vm: &VmId,
    version: i64,
) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(
            "INSERT INTO scale_group_members (pool_id, vm_id, template_version, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(pool)
        .bind(vm)
        .bind(version)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// A group's members with their VM's and pool member's states, oldest first.
pub async fn member_facts(db: &Db, pool: &PoolId) -> Result<Vec<MemberFacts>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT s.vm_id, v.name AS vm_name, v.state AS vm_state,
            v.deleted_at IS NOT NULL AS deleted, s.template_version, s.retiring,
            s.unhealthy_since, s.ever_healthy, s.created_at, m.state AS member_state,
            EXISTS (SELECT 1 FROM operations o WHERE o.target_id = s.vm_id
                    AND o.state IN ('pending', 'running')) AS busy
         FROM scale_group_members s JOIN vms v ON v.id = s.vm_id
         LEFT JOIN pool_members m ON m.pool_id = s.pool_id AND m.vm_id = s.vm_id
         WHERE s.pool_id = $1 ORDER BY s.created_at, s.vm_id",
        )
        .bind(pool)
        .fetch_all(db)
        .await
    })
}

/// Members that are neither retiring nor going (counted inside the write transaction that
/// adds one, so two deciders cannot both add the same member).
pub async fn count_live(conn: &mut super::Tx, pool: &PoolId) -> Result<i64, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM scale_group_members s JOIN vms v ON v.id = s.vm_id
         WHERE s.pool_id = $1 AND NOT s.retiring AND v.deleted_at IS NULL
           AND v.state <> 'deleting'",
        )
        .bind(pool)
        .fetch_one(conn)
        .await
    })
}

/// Records a member's health as the controller sees it.
pub async fn set_member_health(
    db: &Db,
    pool: &PoolId,
    vm: &VmId,
    unhealthy_since: Option<DateTime<Utc>>,
    ever_healthy: bool,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query(
            "UPDATE scale_group_members SET unhealthy_since = $3, ever_healthy = $4
             WHERE pool_id = $1 AND vm_id = $2",
        )
        .bind(pool)
        .bind(vm)
        .bind(unhealthy_since)
        .bind(ever_healthy)
        .execute(db)
        .await?;
        Ok(())
    })
}

/// Marks a member as chosen to go.
pub async fn set_retiring(db: &Db, pool: &PoolId, vm: &VmId) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE scale_group_members SET retiring = TRUE WHERE pool_id = $1 AND vm_id = $2")
            .bind(pool)
            .bind(vm)
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Forgets members whose VM is deleted.
pub async fn forget_deleted(db: &Db, pool: &PoolId) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "DELETE FROM scale_group_members WHERE pool_id = $1
               AND vm_id IN (SELECT id FROM vms WHERE deleted_at IS NOT NULL)",
        )
        .bind(pool)
        .execute(db)
        .await?;
        Ok(done.rows_affected())
    })
}

/// The group a VM is a member of, if any.
pub async fn group_of_vm(
    conn: impl Into<super::Ex<'_>>,
    vm: &VmId,
) -> Result<Option<PoolId>, sqlx::Error> {
    crate::on_ex!(conn, conn => {
        sqlx::query_scalar("SELECT pool_id FROM scale_group_members WHERE vm_id = $1")
            .bind(vm)
            .fetch_optional(conn)
            .await
    })
}

/// The root password hash of the group a VM was made for, if any (a create resumed after a
/// crash finds it here, the in-memory copy being gone).
pub async fn root_password_hash_of_vm(db: &Db, vm: &VmId) -> Result<Option<String>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_scalar(
            "SELECT g.root_password_hash FROM scale_groups g
             JOIN scale_group_members m ON m.pool_id = g.pool_id WHERE m.vm_id = $1",
        )
        .bind(vm)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
    })
}
