//! What the API and the panel show of a scale group: its template, counts, members, refresh
//! and load.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::db;
use crate::db::scale_groups::{GroupRow, MemberFacts};
use crate::domain::pool::{MemberStatus, RefreshState, TargetMetric};
use crate::domain::vm_state::VmState;
use crate::error::AppError;

/// What every member is made of.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    /// The plan's name.
    pub plan: String,
    /// The image's name.
    pub image: String,
    pub user_data: Option<String>,
    pub ssh_keys: Vec<String>,
    /// The guest port the pool sends traffic to.
    pub port: u16,
    /// Whether members get a root password for the console (it is never shown).
    pub root_password_set: bool,
    /// Bumped by every template change and refresh.
    pub version: i64,
}

/// Target tracking.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetView {
    pub metric: TargetMetric,
    /// The metric per healthy member the group keeps near.
    pub value: u32,
    pub scale_out_cooldown_s: u32,
    pub scale_in_cooldown_s: u32,
}

/// A rolling replacement.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefreshView {
    pub state: RefreshState,
    /// Its operation (`GET /api/v1/operations/{id}` shows its steps).
    pub operation_id: Option<String>,
}

/// A member of the group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupMemberView {
    pub vm_id: String,
    pub vm_name: String,
    pub vm_state: VmState,
    /// The pool's view of it (absent once it left the pool).
    pub health: Option<MemberStatus>,
    /// The template version it was made of.
    pub template_version: i64,
    /// Chosen to go: drained, then deleted.
    pub retiring: bool,
}

/// What the balancer last measured.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoadView {
    /// Open requests (HTTP) or connections (TCP) over all members.
    pub connections: i64,
    pub requests_per_second: f64,
    pub healthy_members: i64,
    pub at: DateTime<Utc>,
}

/// A pool's scale group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub pool_id: String,
    pub tenant_id: String,
    pub template: TemplateView,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub replace_after_s: u32,
    pub health_grace_s: u32,
    pub max_surge: u32,
    pub min_healthy_percent: u32,
    pub target: Option<TargetView>,
    pub refresh: RefreshView,
    /// Why the group has fewer members than it wants, while it does (retried).
    pub shortfall: Option<String>,
    /// Being deleted: its members are drained and deleted, then the group goes.
    pub deleting: bool,
    pub members: Vec<GroupMemberView>,
    pub load: Option<LoadView>,
    pub last_scaled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The view of a stored group.
pub(super) async fn view(app: &App, g: &GroupRow) -> Result<GroupView, AppError> {
    let members = db::scale_groups::member_facts(&app.db, &g.pool_id).await?;
    let plan = db::plans::find(&app.db, &g.plan_id).await?;
    let image = db::images::find(&app.db, &g.image_id).await?;
    let load = db::pool_load::latest(&app.db, &g.pool_id).await?;
    let n = |v: i64| u32::try_from(v).unwrap_or(0);
    Ok(GroupView {
        pool_id: g.pool_id.to_string(),
        tenant_id: g.tenant_id.to_string(),
        template: TemplateView {
            plan: plan.map_or_else(|| g.plan_id.clone(), |p| p.name),
            image: image.map_or_else(|| g.image_id.clone(), |i| i.name),
            user_data: g.user_data.clone(),
            ssh_keys: g.ssh_keys(),
            port: u16::try_from(g.port).unwrap_or(0),
            root_password_set: g.root_password_hash.is_some(),
            version: g.template_version,
        },
        min: n(g.min_size),
        max: n(g.max_size),
        desired: n(g.desired),
        replace_after_s: n(g.replace_after_s),
        health_grace_s: n(g.health_grace_s),
        max_surge: n(g.max_surge),
        min_healthy_percent: n(g.min_healthy_percent),
        target: g.target_metric.map(|metric| TargetView {
            metric,
            value: g.target_value.map_or(1, n),
            scale_out_cooldown_s: n(g.scale_out_cooldown_s),
            scale_in_cooldown_s: n(g.scale_in_cooldown_s),
        }),
        refresh: RefreshView {
            state: g.refresh,
            operation_id: g.refresh_operation.clone(),
        },
        shortfall: g.shortfall.clone(),
        deleting: g.deleting,
        members: members
            .iter()
            .filter(|m| !m.deleted)
            .map(member_view)
            .collect(),
        load: load.map(|l| LoadView {
            connections: l.connections,
            requests_per_second: l.requests_per_second,
            healthy_members: l.healthy_members,
            at: l.at,
        }),
        last_scaled_at: g.last_scaled_at,
        created_at: g.created_at,
        updated_at: g.updated_at,
    })
}

fn member_view(m: &MemberFacts) -> GroupMemberView {
    GroupMemberView {
        vm_id: m.vm_id.to_string(),
        vm_name: m.vm_name.clone(),
        vm_state: m.vm_state,
        health: m.member_state,
        template_version: m.template_version,
        retiring: m.retiring,
    }
}
