//! Load-balanced pools: the service functions behind `/api/v1/pools`. A pool is a tenant's
//! listener in front of its VMs' guest ports; the balancer (`lb::control`) serves what these
//! rows say and writes back what it sees.

pub mod members;
pub mod probe;
pub mod settings;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::Principal;
use crate::db::pools::{MemberRow, PoolRow};
use crate::db::{self, Db, Scope};
use crate::domain::ids::PoolId;
use crate::domain::names::ResourceName;
use crate::domain::pool::{CheckKind, MemberStatus, PoolAlgorithm, PoolProtocol};
use crate::error::AppError;
pub use settings::{CreatePool, HealthCheckInput, UpdatePool};

/// A pool's health check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthCheckView {
    pub kind: CheckKind,
    /// `http` checks: the path asked.
    pub path: Option<String>,
    /// `http` checks: the status that counts as healthy.
    pub expect_status: Option<u16>,
    pub interval_s: u32,
    pub timeout_s: u32,
    /// Consecutive passes that bring a member into rotation.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

/// A member of a pool as the balancer last saw it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub vm_id: String,
    pub vm_name: String,
    /// The guest port traffic goes to.
    pub port: u16,
    pub weight: u32,
    pub state: MemberStatus,
    /// Detached: draining, then gone.
    pub leaving: bool,
    pub state_changed_at: DateTime<Utc>,
}

/// A load-balanced pool and its members.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub protocol: PoolProtocol,
    /// Where clients connect, `address:port`.
    pub listen: String,
    pub algorithm: PoolAlgorithm,
    pub health_check: HealthCheckView,
    /// How long a leaving member's open requests or connections may go on.
    pub drain_timeout_s: u32,
    /// `http`: the cookie that keeps a client on one member.
    pub sticky_cookie: Option<String>,
    /// `tcp`: members get a PROXY protocol v2 header naming the client.
    pub proxy_protocol: bool,
    pub members: Vec<MemberView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MemberView {
    fn from(m: &MemberRow) -> Self {
        Self {
            vm_id: m.vm_id.to_string(),
            vm_name: m.vm_name.clone(),
            port: u16::try_from(m.port).unwrap_or(0),
            weight: u32::try_from(m.weight).unwrap_or(1),
            state: m.state,
            leaving: m.leaving,
            state_changed_at: m.state_changed_at,
        }
    }
}

impl PoolView {
    /// The view of a row and its members.
    pub fn of(p: &PoolRow, members: &[MemberRow]) -> Self {
        let n = |v: i64| u32::try_from(v).unwrap_or(0);
        Self {
            id: p.id.to_string(),
            tenant_id: p.tenant_id.to_string(),
            name: p.name.clone(),
            protocol: p.protocol,
            listen: format!("{}:{}", p.listen_address, p.listen_port),
            algorithm: p.algorithm,
            health_check: HealthCheckView {
                kind: p.check_kind,
                path: p.check_path.clone(),
                expect_status: p.check_expect_status.and_then(|s| u16::try_from(s).ok()),
                interval_s: n(p.check_interval_s),
                timeout_s: n(p.check_timeout_s),
                rise: n(p.check_rise),
                fall: n(p.check_fall),
            },
            drain_timeout_s: n(p.drain_timeout_s),
            sticky_cookie: p.sticky_cookie.clone(),
            proxy_protocol: p.proxy_protocol,
            members: members.iter().map(MemberView::from).collect(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// The pool with this id if the actor may see it (another tenant's is not found).
pub(crate) async fn load(db: &Db, scope: &Scope, id: &str) -> Result<PoolRow, AppError> {
    let pool_id = PoolId::parse(id).ok_or_else(|| AppError::not_found("pool", id))?;
    db::pools::get(db, scope, &pool_id)
        .await?
        .ok_or_else(|| AppError::not_found("pool", id))
}

/// The view of a stored pool.
async fn view(db: &Db, p: &PoolRow) -> Result<PoolView, AppError> {
    let members = db::pools::members(db, &p.id).await?;
    Ok(PoolView::of(p, &members))
}

/// One page of the pools the actor may see.
pub async fn list(
    app: &App,
    actor: &Principal,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<PoolView>, AppError> {
    let rows = db::pools::page(&app.db, &actor.scope(), page).await?;
    let ids: Vec<PoolId> = rows.items.iter().map(|p| p.id.clone()).collect();
    let members = db::pools::members_of_pools(&app.db, &ids).await?;
    Ok(rows.map(|p| {
        let mine: Vec<MemberRow> = members
            .iter()
            .filter(|m| m.pool_id == p.id)
            .cloned()
            .collect();
        PoolView::of(&p, &mine)
    }))
}

/// One pool with its members.
pub async fn get(app: &App, actor: &Principal, id: &str) -> Result<PoolView, AppError> {
    let p = load(&app.db, &actor.scope(), id).await?;
    view(&app.db, &p).await
}

/// Creates a pool: its listener starts at once; members come with `members::attach`.
pub async fn create(app: &App, actor: &Principal, req: CreatePool) -> Result<PoolView, AppError> {
    let tenant =
        crate::tenancy::principal::owning_tenant(&app.db, actor, req.tenant_id.as_deref(), "pools")
            .await?;
    let checked = settings::check_create(&req)?;
    let lb = &app.config.lb;
    let mut tx = db::begin_write(&app.db).await?;
    let have = db::pools::count_of_tenant(&mut tx, &tenant).await?;
    if have >= i64::from(lb.max_pools_per_tenant) {
        return Err(AppError::Forbidden(format!(
            "this tenant has {have} pools, the most allowed (lb.max_pools_per_tenant); delete one first"
        )));
    }
    let port = settings::listen_port(&mut tx, lb, req.listen.as_deref()).await?;
    let at = db::now();
    let row = PoolRow {
        id: PoolId::generate(),
        tenant_id: tenant,
        name: checked.name.as_str().to_string(),
        protocol: req.protocol,
        listen_address: lb.listen_address.to_string(),
        listen_port: i64::from(port),
        algorithm: checked.algorithm,
        check_kind: checked.check.kind,
        check_path: checked.check.path.clone(),
        check_expect_status: checked.check.expect_status.map(i64::from),
        check_interval_s: i64::from(checked.check.interval_s),
        check_timeout_s: i64::from(checked.check.timeout_s),
        check_rise: i64::from(checked.check.rise),
        check_fall: i64::from(checked.check.fall),
        drain_timeout_s: i64::from(checked.drain_timeout_s),
        sticky_cookie: checked.sticky_cookie.clone(),
        proxy_protocol: checked.proxy_protocol,
        created_at: at,
        updated_at: at,
    };
    if let Err(e) = db::pools::insert(&mut tx, &row).await {
        return Err(name_taken(e, &checked.name));
    }
    tx.commit().await?;
    tracing::info!(pool = %row.id, name = %row.name, listen = %format!("{}:{}", row.listen_address, row.listen_port), "pool created");
    view(&app.db, &row).await
}

/// A unique violation on insert or update: the name is taken in the tenant.
fn name_taken(e: sqlx::Error, name: &ResourceName) -> AppError {
    if db::is_unique_violation(&e) {
        AppError::Conflict(format!(
            "a pool named {name} already exists in this tenant; choose another name"
        ))
    } else {
        e.into()
    }
}

/// Changes a pool's settings; the balancer applies them in place (open connections stay).
pub async fn update(
    app: &App,
    actor: &Principal,
    id: &str,
    req: UpdatePool,
) -> Result<PoolView, AppError> {
    let mut p = load(&app.db, &actor.scope(), id).await?;
    let name = settings::apply_update(&mut p, req)?;
    if let Err(e) = db::pools::update(&app.db, &p).await {
        return Err(name_taken(e, &name));
    }
    let p = load(&app.db, &Scope::All, p.id.as_str()).await?;
    view(&app.db, &p).await
}

/// Deletes a pool: its listener closes and its members' open work drains.
pub async fn delete(app: &App, actor: &Principal, id: &str) -> Result<(), AppError> {
    let p = load(&app.db, &actor.scope(), id).await?;
    if crate::scaling::pool_has_group(&app.db, &p.id).await? {
        return Err(AppError::Conflict(format!(
            "pool {} has a scale group; delete it first (DELETE /api/v1/pools/{}/scale-group drains and deletes its VMs)",
            p.name, p.id
        )));
    }
    db::pools::delete(&app.db, &p.id).await?;
    tracing::info!(pool = %p.id, name = %p.name, "pool deleted");
    Ok(())
}
