//! Attaching VMs to pools and detaching them: a member is a VM of the pool's tenant with a
//! forwarded guest port; it takes traffic only once its health check passes, and leaves by
//! draining.

use std::net::SocketAddr;
use std::time::Duration;

use super::{PoolView, load, probe, view};
use crate::app::App;
use crate::auth::Principal;
use crate::db::pools::PoolRow;
use crate::db::vms::VmRow;
use crate::db::{self, Scope};
use crate::domain::Invalid;
use crate::domain::ids::{PoolId, TenantId, VmId};
use crate::domain::pool::{CheckKind, MemberStatus};
use crate::domain::vm_state::VmState;
use crate::error::AppError;

/// Largest member weight.
pub const MAX_WEIGHT: u32 = 256;

/// A request to attach a VM.
#[derive(Debug, Clone)]
pub struct AddMember {
    pub vm_id: String,
    /// The guest port traffic goes to (it must be forwarded).
    pub port: u16,
    /// Share of new work relative to other members (1 to 256, default 1).
    pub weight: Option<u32>,
}

/// Attaches a VM: refused unless the VM is the pool's tenant's, forwards the port and, when
/// it runs, answers the pool's health check there.
pub async fn attach(
    app: &App,
    actor: &Principal,
    pool_id: &str,
    req: AddMember,
) -> Result<PoolView, AppError> {
    let pool = load(&app.db, &actor.scope(), pool_id).await?;
    let weight = check_weight(req.weight)?;
    if req.port == 0 {
        return Err(AppError::invalid(
            "port",
            "0 is not a TCP port: use 1 to 65535",
        ));
    }
    let vm = vm_of_tenant(&app.db, &pool.tenant_id, &req.vm_id).await?;
    let forwards = db::ports::for_vm(&app.db, &vm.id).await?;
    let Some(forward) = forwards
        .iter()
        .find(|f| f.guest_port == i64::from(req.port))
    else {
        let listed: Vec<String> = forwards.iter().map(|f| f.guest_port.to_string()).collect();
        return Err(AppError::invalid(
            "port",
            format!(
                "VM {} does not forward guest port {} (it forwards [{}]); only forwarded ports can be pool members",
                vm.name,
                req.port,
                listed.join(", ")
            ),
        ));
    };
    if db::pools::members(&app.db, &pool.id)
        .await?
        .iter()
        .any(|m| m.vm_id == vm.id)
    {
        return Err(already_member(&vm, &pool));
    }
    let running = vm.state == VmState::Running;
    if running {
        let addr = SocketAddr::new(
            app.config.network.forward_address,
            u16::try_from(forward.host_port).unwrap_or(0),
        );
        if let Err(why) = answers(&pool, addr).await {
            return Err(AppError::invalid(
                "port",
                format!(
                    "VM {} does not answer on guest port {}: {why}; start the service in the guest, then attach it",
                    vm.name, req.port
                ),
            ));
        }
    }
    let state = if running {
        MemberStatus::Joining
    } else {
        MemberStatus::Inactive
    };
    let mut tx = db::begin_write(&app.db).await?;
    add(&mut tx, &pool, &vm, req.port, weight, state).await?;
    tx.commit().await?;
    tracing::info!(pool = %pool.id, vm = %vm.id, port = req.port, "VM attached to pool");
    view(&app.db, &pool).await
}

/// Adds the member row; a VM already in the pool is a conflict.
async fn add(
    conn: &mut crate::db::Tx,
    pool: &PoolRow,
    vm: &VmRow,
    port: u16,
    weight: u32,
    state: MemberStatus,
) -> Result<(), AppError> {
    match db::pools::add_member(conn, &pool.id, &vm.id, port, weight, state).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AppError::Conflict(format!(
            "VM {} is being deleted, or pool {} was just deleted; nothing was attached",
            vm.name, pool.name
        ))),
        Err(e) if db::is_unique_violation(&e) => Err(already_member(vm, pool)),
        Err(e) => Err(e.into()),
    }
}

fn already_member(vm: &VmRow, pool: &PoolRow) -> AppError {
    AppError::Conflict(format!(
        "VM {} is already a member of pool {}; detach it first to change its port",
        vm.name, pool.name
    ))
}

/// Detaches a VM: it leaves rotation at once and its open work drains; the member is gone
/// when the drain ends.
pub async fn detach(
    app: &App,
    actor: &Principal,
    pool_id: &str,
    vm_id: &str,
) -> Result<PoolView, AppError> {
    let pool = load(&app.db, &actor.scope(), pool_id).await?;
    let vm = VmId::parse(vm_id).ok_or_else(|| AppError::not_found("pool member", vm_id))?;
    let members = db::pools::members(&app.db, &pool.id).await?;
    let Some(member) = members.iter().find(|m| m.vm_id == vm) else {
        return Err(AppError::not_found("pool member", vm_id));
    };
    if member.state == MemberStatus::Inactive {
        // Not in the balancer: nothing to drain.
        db::pools::remove_member(&app.db, &pool.id, &vm).await?;
    } else {
        db::pools::mark_leaving(&app.db, &pool.id, &vm).await?;
    }
    tracing::info!(pool = %pool.id, vm = %vm, "VM detached from pool");
    view(&app.db, &pool).await
}

/// Checks the `pool` and `pool_port` of a VM create request: the pool (by id or name) of the
/// VM's tenant, and a port among those the VM forwards.
pub async fn check_join(
    conn: &mut crate::db::Tx,
    tenant: &TenantId,
    pool: &str,
    pool_port: Option<u16>,
    ports: &[u16],
) -> Result<(PoolId, u16), AppError> {
    let found = match PoolId::parse(pool) {
        Some(id) => db::pools::get(&mut *conn, &Scope::Tenant(tenant.clone()), &id).await?,
        None => db::pools::find_by_name(&mut *conn, tenant, pool).await?,
    };
    let found = found.ok_or_else(|| AppError::not_found("pool", pool))?;
    let port = match (pool_port, ports) {
        (Some(p), _) => p,
        (None, [only]) => *only,
        (None, _) => {
            return Err(AppError::invalid(
                "pool_port",
                "say which of the VM's ports the pool sends traffic to (pool_port)",
            ));
        }
    };
    if !ports.contains(&port) {
        return Err(AppError::Invalid(vec![Invalid::new(
            "pool_port",
            format!("guest port {port} must be one of the VM's forwarded ports; add it to ports"),
        )]));
    }
    Ok((found.id, port))
}

/// Adds a new VM (not running yet) to a pool checked by [`check_join`]: it joins when it
/// runs and takes traffic once its first health check passes.
pub async fn join_new_vm(
    conn: &mut crate::db::Tx,
    pool: &PoolId,
    vm: &VmId,
    port: u16,
) -> Result<(), AppError> {
    if !db::pools::add_member(conn, pool, vm, port, 1, MemberStatus::Inactive).await? {
        return Err(AppError::not_found("pool", pool.as_str()));
    }
    Ok(())
}

/// A VM's place in a pool, as its page shows it.
#[derive(Debug, Clone)]
pub struct Membership {
    pub pool_id: String,
    pub pool_name: String,
    pub port: u16,
    pub state: MemberStatus,
    pub leaving: bool,
}

/// The pools a VM the actor may see is in.
pub async fn of_vm(app: &App, actor: &Principal, vm_id: &str) -> Result<Vec<Membership>, AppError> {
    let vm = VmId::parse(vm_id).ok_or_else(|| AppError::not_found("vm", vm_id))?;
    let scope = actor.scope();
    let mut out = Vec::new();
    for m in db::pools::memberships_of(&app.db, &vm).await? {
        // Scoped: a membership shows only when the pool is the actor's to see.
        if let Some(p) = db::pools::get(&app.db, &scope, &m.pool_id).await? {
            out.push(Membership {
                pool_id: p.id.to_string(),
                pool_name: p.name,
                port: u16::try_from(m.port).unwrap_or(0),
                state: m.state,
                leaving: m.leaving,
            });
        }
    }
    out.sort_by(|a, b| a.pool_name.cmp(&b.pool_name));
    Ok(out)
}

/// The VM with this id if it belongs to `tenant` and is not deleted (else not found).
async fn vm_of_tenant(db: &db::Db, tenant: &TenantId, raw: &str) -> Result<VmRow, AppError> {
    let id = VmId::parse(raw).ok_or_else(|| AppError::not_found("vm", raw))?;
    let vm = db::vms::get(db, &Scope::Tenant(tenant.clone()), &id)
        .await?
        .filter(|v| v.deleted_at.is_none())
        .ok_or_else(|| AppError::not_found("vm", raw))?;
    if vm.state == VmState::Deleting {
        return Err(AppError::Conflict(format!(
            "VM {} is being deleted; it cannot join a pool",
            vm.name
        )));
    }
    Ok(vm)
}

fn check_weight(weight: Option<u32>) -> Result<u32, AppError> {
    let w = weight.unwrap_or(1);
    if !(1..=MAX_WEIGHT).contains(&w) {
        return Err(AppError::invalid(
            "weight",
            format!("must be 1 to {MAX_WEIGHT} (got {w})"),
        ));
    }
    Ok(w)
}

/// Runs the pool's health check once against `addr`; the error says what failed.
async fn answers(pool: &PoolRow, addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(pool.check_timeout_s.clamp(1, 60) as u64);
    match pool.check_kind {
        CheckKind::Tcp => match tokio::time::timeout(timeout, probe::tcp_accepts(addr)).await {
            Ok(true) => Ok(()),
            _ => Err("nothing accepts TCP connections there".into()),
        },
        CheckKind::Http => {
            let path = pool.check_path.as_deref().unwrap_or("/");
            let want = pool.check_expect_status.unwrap_or(200);
            match tokio::time::timeout(timeout, probe::http_status(addr, path)).await {
                Ok(Some(s)) if i64::from(s) == want => Ok(()),
                Ok(Some(s)) => Err(format!("GET {path} answered {s}, not {want}")),
                Ok(None) => Err(format!("GET {path} got no HTTP answer")),
                Err(_) => Err(format!(
                    "GET {path} did not answer within {} s",
                    timeout.as_secs()
                )),
            }
        }
    }
}
