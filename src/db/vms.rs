//! The vms table. Rows are soft-deleted (`deleted_at`) once a VM is gone from libvirt and
//! disk, so operations and the audit trail keep their target.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest, time_key};
use super::{Db, Scope, now};
use crate::domain::ids::{HostId, ImageId, PlanId, TenantId, VmId};
use crate::domain::sizes::Resources;

/// A VM row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VmRow {
    pub id: VmId,
    pub tenant_id: TenantId,
    pub name: String,
    pub host_id: HostId,
    pub plan_id: String,
    pub image_id: ImageId,
    pub vcpus: i64,
    pub memory_mib: i64,
    pub disk_gib: i64,
    pub state: crate::domain::vm_state::VmState,
    pub ssh_keys: String,
    pub user_data: Option<String>,
    pub domain_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub instance_id: Option<String>,
    /// The host the VM is being moved to, during a move.
    pub moving_to: Option<HostId>,
}

impl VmRow {
    /// The cloud-init instance id its seed carries (a new one after each reinstall).
    pub fn instance_id(&self) -> &str {
        self.instance_id.as_deref().unwrap_or(self.id.as_str())
    }

    /// The resources this VM holds.
    pub fn resources(&self) -> Resources {
        Resources {
            vcpus: self.vcpus as u32,
            memory_mib: self.memory_mib as u64,
            disk_gib: self.disk_gib as u64,
        }
    }

    /// The SSH public keys given at creation.
    pub fn ssh_keys(&self) -> Vec<String> {
        serde_json::from_str(&self.ssh_keys).unwrap_or_default()
    }
}

/// The columns every query of this table reads.
macro_rules! vm_columns {
    () => {
        "id, tenant_id, name, host_id, plan_id, image_id, vcpus, memory_mib, disk_gib, state, \
         ssh_keys, user_data, domain_name, created_at, updated_at, deleted_at, instance_id, \
         moving_to"
    };
}

/// What a new VM row holds.
pub struct NewVm<'a> {
    pub id: &'a VmId,
    pub tenant_id: &'a TenantId,
    pub name: &'a str,
    pub host_id: &'a HostId,
    pub plan_id: &'a PlanId,
    pub image_id: &'a ImageId,
    pub resources: Resources,
    pub ssh_keys: &'a [String],
    pub user_data: Option<&'a str>,
    pub domain_name: &'a str,
}

/// Inserts a VM in state `creating`; fails with a unique violation if the tenant already has a
/// live VM of that name.
pub async fn insert(conn: &mut super::Tx, vm: NewVm<'_>) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        let at = now();
        sqlx::query(
            "INSERT INTO vms (id, tenant_id, name, host_id, plan_id, image_id, vcpus, memory_mib,
            disk_gib, state, ssh_keys, user_data, domain_name, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'creating', $10, $11, $12, $13, $13)",
        )
        .bind(vm.id)
        .bind(vm.tenant_id)
        .bind(vm.name)
        .bind(vm.host_id)
        .bind(vm.plan_id)
        .bind(vm.image_id)
        .bind(i64::from(vm.resources.vcpus))
        .bind(vm.resources.memory_mib as i64)
        .bind(vm.resources.disk_gib as i64)
        .bind(serde_json::to_string(vm.ssh_keys).unwrap_or_else(|_| "[]".into()))
        .bind(vm.user_data)
        .bind(vm.domain_name)
        .bind(at)
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// The live VM with this id, if the scope may see it.
pub async fn get(db: &Db, scope: &Scope, id: &VmId) -> Result<Option<VmRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            vm_columns!(),
            " FROM vms WHERE id = $1 AND deleted_at IS NULL AND ($2 IS NULL OR tenant_id = $2)"
        ))
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(db)
        .await
    })
}

/// The VM with this id whether or not it is deleted (workers and the reconciler).
pub async fn get_any(db: &Db, id: &VmId) -> Result<Option<VmRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!("SELECT ", vm_columns!(), " FROM vms WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await
    })
}

/// Narrows a VM list; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct VmFilter {
    /// VMs of this tenant only (within the scope).
    pub tenant: Option<String>,
    /// VMs in this state only.
    pub state: Option<String>,
    /// VMs on this host only.
    pub host: Option<String>,
    /// VMs whose name contains this text.
    pub name: Option<String>,
}

/// One page of the live VMs the scope may see, newest first.
pub async fn page(db: &Db, scope: &Scope, page: &PageRequest) -> Result<Page<VmRow>, sqlx::Error> {
    filtered_page(db, scope, &VmFilter::default(), page).await
}

/// One page of the live VMs the scope may see that pass the filter, newest first.
pub async fn filtered_page(
    db: &Db,
    scope: &Scope,
    filter: &VmFilter,
    page: &PageRequest,
) -> Result<Page<VmRow>, sqlx::Error> {
    crate::on_db!(db, db, pg => {
        let rows = sqlx::query_as(&super::dialect(pg, concat!(
            "SELECT ",
            vm_columns!(),
            " FROM vms WHERE deleted_at IS NULL AND ($1 IS NULL OR tenant_id = $1)
          AND ($2 IS NULL OR (created_at, id) < ($2, $3))
          AND ($5 IS NULL OR tenant_id = $5) AND ($6 IS NULL OR state = $6)
          AND ($7 IS NULL OR host_id = $7) AND ($8 IS NULL OR instr(name, $8) > 0)
          ORDER BY created_at DESC, id DESC LIMIT $4"
        )))
        .bind(scope.tenant())
        .bind(page.time(0))
        .bind(page.key(1))
        .bind(page.fetch())
        .bind(filter.tenant.as_deref())
        .bind(filter.state.as_deref())
        .bind(filter.host.as_deref())
        .bind(filter.name.as_deref())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |v: &VmRow| {
            vec![time_key(&v.created_at), v.id.to_string()]
        }))
    })
}

/// The live VMs the scope may see, newest first.
pub async fn list(db: &Db, scope: &Scope) -> Result<Vec<VmRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            vm_columns!(),
            " FROM vms WHERE deleted_at IS NULL AND ($1 IS NULL OR tenant_id = $1)
              ORDER BY created_at DESC, id"
        ))
        .bind(scope.tenant())
        .fetch_all(db)
        .await
    })
}

/// Every live VM on one host (the reconciler).
pub async fn list_on_host(db: &Db, host: &HostId) -> Result<Vec<VmRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            vm_columns!(),
            " FROM vms WHERE deleted_at IS NULL AND host_id = $1 ORDER BY id"
        ))
        .bind(host)
        .fetch_all(db)
        .await
    })
}

/// Running VMs on `host` whose tenant is suspended (they must be stopped).
pub async fn running_of_suspended_tenants(
    db: &Db,
    host: &HostId,
) -> Result<Vec<VmRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            vm_columns!(),
            " FROM vms WHERE deleted_at IS NULL AND host_id = $1 AND state = 'running'
              AND tenant_id IN (SELECT id FROM tenants WHERE suspended) ORDER BY id"
        ))
        .bind(host)
        .fetch_all(db)
        .await
    })
}

/// Sets a VM's state.
pub async fn set_state(
    db: impl Into<super::Ex<'_>>,
    id: &VmId,
    state: crate::domain::vm_state::VmState,
) -> Result<(), sqlx::Error> {
    crate::on_ex!(db, db => {
        sqlx::query("UPDATE vms SET state = $2, updated_at = $3 WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .bind(state)
            .bind(now())
            .execute(db)
            .await?;
        Ok(())
    })
}

/// SQL that holds when no unfinished operation targets the VM whose id is `$id` (a column or
/// parameter): the reconciler's writes leave such VMs to their operation.
macro_rules! no_open_operation_on {
    ($id:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM operations WHERE target_id = ",
            $id,
            " AND state IN ('pending', 'running'))"
        )
    };
}

/// Sets a VM's state only if it is still `expected` and no unfinished operation targets it
/// (the reconciler never overwrites a transition an operation has started meanwhile).
pub async fn set_state_if(
    db: &Db,
    id: &VmId,
    expected: crate::domain::vm_state::VmState,
    state: crate::domain::vm_state::VmState,
) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        // In the write lock, so an operation admitted since the caller looked is seen.
        let mut tx = super::WritePool::begin_write(db).await?;
        let done = sqlx::query(
            concat!(
                "UPDATE vms SET state = $3, updated_at = $4
                 WHERE id = $1 AND state = $2 AND deleted_at IS NULL AND ",
                no_open_operation_on!("$1")
            ),
        )
        .bind(id)
        .bind(expected)
        .bind(state)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Gives back the room a move reserved on its target, unless an operation (the move) still
/// holds the VM; whether it did.
pub async fn drop_stale_move(db: &Db, id: &VmId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let mut tx = super::WritePool::begin_write(db).await?;
        let done = sqlx::query(
            concat!(
                "UPDATE vms SET moving_to = NULL, updated_at = $2
                 WHERE id = $1 AND moving_to IS NOT NULL AND ",
                no_open_operation_on!("$1")
            ),
        )
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Records a VM's new size (a resize reserves it before the work starts).
pub async fn set_resources(
    conn: &mut super::Tx,
    id: &VmId,
    plan_id: &str,
    r: Resources,
) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(
            "UPDATE vms SET plan_id = $2, vcpus = $3, memory_mib = $4, disk_gib = $5, updated_at = $6
             WHERE id = $1",
        )
        .bind(id)
        .bind(plan_id)
        .bind(i64::from(r.vcpus))
        .bind(r.memory_mib as i64)
        .bind(r.disk_gib as i64)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Records a reinstall: the VM's new image and cloud-init instance id.
pub async fn set_image(
    db: &Db,
    id: &VmId,
    image: &ImageId,
    instance_id: &str,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE vms SET image_id = $2, instance_id = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(image)
            .bind(instance_id)
            .bind(now())
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Marks a VM deleted: its resources and name are free again.
pub async fn mark_deleted(conn: &mut super::Tx, id: &VmId) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        let at = now();
        sqlx::query(
            "UPDATE vms SET state = 'deleted', deleted_at = $2, updated_at = $2
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(at)
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Live VMs counted by state (metrics).
pub async fn count_by_state(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as("SELECT state, COUNT(*) FROM vms WHERE deleted_at IS NULL GROUP BY state")
            .fetch_all(db)
            .await
    })
}

/// Marks the settled VMs of a host `unknown` (its libvirt does not answer); VMs an operation
/// is changing are left to it. Returns how many.
pub async fn mark_unknown_on_host(db: &Db, host: &HostId) -> Result<u64, sqlx::Error> {
    crate::on_db!(db, db => {
        // In the write lock, so an operation admitted meanwhile keeps its VM.
        let mut tx = super::WritePool::begin_write(db).await?;
        let done = sqlx::query(
            concat!(
                "UPDATE vms SET state = 'unknown', updated_at = $2
                 WHERE host_id = $1 AND deleted_at IS NULL
                   AND state IN ('running', 'stopped', 'paused', 'crashed', 'missing') AND ",
                no_open_operation_on!("vms.id")
            ),
        )
        .bind(host)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    })
}

/// Reserves room on `to` for a move of the VM (or, with `None`, gives it back).
pub async fn set_moving_to(
    conn: &mut super::Tx,
    id: &VmId,
    to: Option<&HostId>,
) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query("UPDATE vms SET moving_to = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(to)
            .bind(now())
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Records that the VM now lives on `to` (the end of a move).
pub async fn switch_host(conn: &mut super::Tx, id: &VmId, to: &HostId) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query("UPDATE vms SET host_id = $2, moving_to = NULL, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(to)
            .bind(now())
            .execute(conn)
            .await?;
        Ok(())
    })
}
