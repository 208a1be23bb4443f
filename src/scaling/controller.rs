//! Keeps every scale group converging on what it wants, from the database alone: each pass
//! reads a group's members, decides ([`super::decide`]), and creates or retires VMs through the
//! normal operations. Nothing is held in memory between passes, so after a crash (or in
//! another process) the next pass simply carries on: a member is recorded in the same
//! transaction as its VM, so none is made twice or lost. With several processes on one
//! database, each group is driven by the one holding its lease.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::Utc;

use super::decide::{self, Condition, Member, Reason, Rules};
use super::tracking::{self, Tracking};
use crate::db::scale_groups::{GroupRow, MemberFacts};
use crate::db::{self, Scope};
use crate::domain::ids::OperationId;
use crate::domain::names::VmName;
use crate::domain::outcome::Outcome;
use crate::domain::pool::{MemberStatus, RefreshState, TargetMetric};
use crate::domain::vm_state::VmState;
use crate::error::AppError;
use crate::provision::{OpKind, OpState, Provisioner};
use crate::tenancy::audit::{self, NewEntry};

/// Who the audit log names for the groups' decisions.
pub const ACTOR: &str = "scale group";
/// Time between passes.
const INTERVAL: Duration = Duration::from_secs(1);
/// Most VMs one pass creates for one group (the rest follow in the next passes).
const MAX_CREATES_PER_PASS: u32 = 10;

/// One pass at a time in this process: two passes deciding at once could both create.
static PASS: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// Runs passes forever.
pub async fn run_forever(p: Arc<Provisioner>) {
    loop {
        pass(&p).await;
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Runs a pass now (after a change through the API), without waiting for it.
pub fn wake(p: Arc<Provisioner>) {
    tokio::spawn(async move { pass(&p).await });
}

/// One pass over every group; a failure is logged and retried next pass.
pub async fn pass(p: &Arc<Provisioner>) {
    let _one = PASS.lock().await;
    let groups = match db::scale_groups::all(&p.db).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read scale groups; retrying");
            return;
        }
    };
    for g in groups {
        if let Err(e) = converge(p, g.clone()).await {
            tracing::warn!(pool = %g.pool_id, error = format!("{e:#}"), "scale group pass failed; retrying");
        }
    }
}

/// How the controller sees one member, and its health bookkeeping.
fn classify(m: &MemberFacts) -> Condition {
    if m.deleted || m.vm_state == VmState::Deleting {
        return Condition::Gone;
    }
    match m.vm_state {
        VmState::Creating => Condition::NotHealthy,
        _ if m.busy => Condition::Busy,
        VmState::Running if m.member_state == Some(MemberStatus::Healthy) => Condition::Healthy,
        VmState::Running => Condition::NotHealthy,
        VmState::Stopped | VmState::Crashed | VmState::Paused | VmState::Missing => Condition::Down,
        _ => Condition::NotHealthy,
    }
}

/// Moves one group a step towards what it wants, if this process holds its lease.
async fn converge(p: &Arc<Provisioner>, mut g: GroupRow) -> anyhow::Result<()> {
    if !super::lease::take(p, &g.pool_id).await? {
        return Ok(());
    }
    db::scale_groups::forget_deleted(&p.db, &g.pool_id).await?;
    let facts = db::scale_groups::member_facts(&p.db, &g.pool_id).await?;
    let now = Utc::now();
    let mut members = Vec::with_capacity(facts.len());
    for f in &facts {
        let condition = classify(f);
        let (since, ever) = match condition {
            Condition::Healthy => (None, true),
            Condition::NotHealthy if f.vm_state == VmState::Running => {
                (Some(f.unhealthy_since.unwrap_or(now)), f.ever_healthy)
            }
            _ => (f.unhealthy_since, f.ever_healthy),
        };
        if since != f.unhealthy_since || ever != f.ever_healthy {
            db::scale_groups::set_member_health(&p.db, &g.pool_id, &f.vm_id, since, ever).await?;
        }
        members.push(Member {
            id: f.vm_id.to_string(),
            created_at: f.created_at,
            template_version: f.template_version,
            condition: if f.retiring && condition != Condition::Gone {
                // Chosen to go already: its delete is on its way.
                Condition::Gone
            } else {
                condition
            },
            unhealthy_since: since,
            ever_healthy: ever,
        });
    }
    // A member chosen to go whose delete did not finish (it failed, or carve died before it
    // began) is sent on its way again.
    for f in facts.iter().filter(|f| f.retiring && !f.deleted && !f.busy) {
        delete_again(p, f).await;
    }
    if g.deleting {
        return finish_deleting(p, &g, &facts, &members).await;
    }
    if db::scale_groups::tenant_suspended(&p.db, &g.pool_id).await? {
        // Its VMs are stopped by the reconciler; the group waits for the tenant's return.
        return Ok(());
    }
    follow_load(p, &mut g).await?;
    let rules = Rules {
        desired: u32::try_from(g.desired).unwrap_or(0),
        max_surge: u32::try_from(g.max_surge).unwrap_or(1),
        min_healthy_percent: u32::try_from(g.min_healthy_percent).unwrap_or(100),
        replace_after: Duration::from_secs(g.replace_after_s.max(0) as u64),
        health_grace: Duration::from_secs(g.health_grace_s.max(0) as u64),
        template_version: g.template_version,
        refreshing: g.refresh == RefreshState::Running,
    };
    let decision = decide::decide(&members, &rules, now);
    let mut live = members
        .iter()
        .filter(|m| m.condition != Condition::Gone)
        .count() as i64;
    for (vm, reason) in &decision.retire {
        let name = facts
            .iter()
            .find(|f| f.vm_id.as_str() == vm)
            .map_or(vm.as_str(), |f| f.vm_name.as_str());
        if retire(p, &g, vm, name, *reason).await {
            live -= 1;
        }
    }
    let mut made = 0;
    let wanted = decision.create.min(MAX_CREATES_PER_PASS);
    for _ in 0..wanted {
        match create_member(p, &g, live).await {
            Ok(None) => {
                tracing::info!(pool = %g.pool_id, "another pass added a member meanwhile, or the lease moved; deciding again");
                return Ok(());
            }
            Ok(Some(name)) => {
                made += 1;
                live += 1;
                note(
                    p,
                    &g,
                    &format!("created VM {name} from template v{}", g.template_version),
                    Outcome::Succeeded,
                )
                .await;
                if rules.refreshing {
                    step(
                        p,
                        &g,
                        &format!("create {name} (template v{})", g.template_version),
                    )
                    .await;
                }
            }
            Err(e) => {
                let why = format!(
                    "{} of the {} members wanted are missing: {}",
                    decision.create - made,
                    rules.desired,
                    e.detail()
                );
                if g.shortfall.as_deref() != Some(why.as_str()) {
                    note(p, &g, &format!("shortfall: {why}"), Outcome::Failed).await;
                    db::scale_groups::set_shortfall(&p.db, &g.pool_id, Some(&why)).await?;
                }
                return Ok(());
            }
        }
    }
    if g.shortfall.is_some() && made == decision.create {
        db::scale_groups::set_shortfall(&p.db, &g.pool_id, None).await?;
    }
    if decision.refresh_done {
        finish_refresh(p, &g).await?;
    }
    Ok(())
}

/// Target tracking: moves `desired` after the balancer's measure, within the cooldowns.
async fn follow_load(p: &Provisioner, g: &mut GroupRow) -> anyhow::Result<()> {
    let (Some(metric), Some(value)) = (g.target_metric, g.target_value) else {
        return Ok(());
    };
    let Some(load) = db::pool_load::latest(&p.db, &g.pool_id).await? else {
        return Ok(());
    };
    let (total, what) = match metric {
        TargetMetric::Connections => (load.connections as f64, "open connections"),
        TargetMetric::RequestsPerSecond => (load.requests_per_second, "requests per second"),
    };
    let t = Tracking {
        target: value as f64,
        min: u32::try_from(g.min_size).unwrap_or(0),
        max: u32::try_from(g.max_size).unwrap_or(0),
        desired: u32::try_from(g.desired).unwrap_or(0),
        scale_out_cooldown: Duration::from_secs(g.scale_out_cooldown_s.max(0) as u64),
        scale_in_cooldown: Duration::from_secs(g.scale_in_cooldown_s.max(0) as u64),
        last_scaled_at: g.last_scaled_at,
    };
    let now = Utc::now();
    if let Some(scale) = tracking::next(&t, total, what, load.at, now) {
        let mut conn = p.db.acquire().await?;
        db::scale_groups::set_desired(&mut conn, &g.pool_id, i64::from(scale.desired), Some(now))
            .await?;
        note(
            p,
            g,
            &format!(
                "desired {} -> {}: {}",
                g.desired, scale.desired, scale.reason
            ),
            Outcome::Succeeded,
        )
        .await;
        g.desired = i64::from(scale.desired);
        g.last_scaled_at = Some(now);
    }
    Ok(())
}

/// Drains and deletes a member through a normal delete operation; false if it could not
/// start (tried again next pass).
async fn retire(p: &Arc<Provisioner>, g: &GroupRow, vm: &str, name: &str, reason: Reason) -> bool {
    let Some(id) = crate::domain::ids::VmId::parse(vm) else {
        return false;
    };
    // A pass that outlived its lease leaves the choice to the new holder.
    let now_ms = Utc::now().timestamp_millis();
    if !matches!(
        db::scale_group_leases::holds_lease(&p.db, &g.pool_id, &p.owner.id, now_ms).await,
        Ok(true)
    ) {
        return false;
    }
    let row = match db::vms::get(&p.db, &Scope::All, &id).await {
        Ok(Some(row)) => row,
        _ => return false,
    };
    match crate::provision::vms::begin_operation(
        p,
        &row,
        OpKind::Delete,
        VmState::Deleting,
        serde_json::json!({}),
        None,
    )
    .await
    {
        Ok(_) => {
            if let Err(e) = db::scale_groups::set_retiring(&p.db, &g.pool_id, &id).await {
                tracing::warn!(vm = %id, error = %e, "cannot mark a retiring member");
            }
            note(
                p,
                g,
                &format!("retired VM {name}: {}", reason.says()),
                Outcome::Succeeded,
            )
            .await;
            if reason == Reason::Refresh {
                step(p, g, &format!("retire {name} (older template)")).await;
            }
            true
        }
        // Busy with another operation: tried again next pass.
        Err(e) => {
            tracing::info!(vm = %id, error = %e, "a member to retire is busy; retrying");
            false
        }
    }
}

/// Starts the delete of a retiring member again (logged, not audited: its retirement was).
async fn delete_again(p: &Arc<Provisioner>, f: &MemberFacts) {
    let Ok(Some(row)) = db::vms::get(&p.db, &Scope::All, &f.vm_id).await else {
        return;
    };
    match crate::provision::vms::begin_operation(
        p,
        &row,
        OpKind::Delete,
        VmState::Deleting,
        serde_json::json!({}),
        None,
    )
    .await
    {
        Ok(op) => {
            tracing::warn!(vm = %f.vm_id, op = %op.id, "deleting a retired member again (its delete did not finish)")
        }
        Err(e) => {
            tracing::info!(vm = %f.vm_id, error = %e, "a retired member cannot be deleted yet; retrying")
        }
    }
}

/// Creates one member from the group's template if the group still has `live` members (else
/// another decider added one meanwhile: None); returns its name.
async fn create_member(
    p: &Arc<Provisioner>,
    g: &GroupRow,
    live: i64,
) -> Result<Option<String>, AppError> {
    let (plan, image) =
        crate::provision::vms::plan_and_image(&p.db, &g.plan_id, &g.image_id, true).await?;
    let pool = db::pools::get(&p.db, &Scope::All, &g.pool_id)
        .await?
        .ok_or_else(|| AppError::not_found("pool", g.pool_id.as_str()))?;
    let port = u16::try_from(g.port).unwrap_or(0);
    let ssh_keys = g.ssh_keys();
    // A name the tenant already uses is skipped (a few tries, then reported).
    for _ in 0..8 {
        let mut tx = db::begin_write(&p.db).await?;
        let now_ms = Utc::now().timestamp_millis();
        if !db::scale_group_leases::holds_lease(&mut tx, &g.pool_id, &p.owner.id, now_ms).await?
            || db::scale_groups::count_live(&mut tx, &g.pool_id).await? != live
        {
            return Ok(None);
        }
        let index = db::scale_groups::take_index(&mut tx, &g.pool_id).await?;
        let name = VmName::for_member(&pool.name, index);
        let name = name.as_str();
        let admitted = crate::provision::vms::admit(
            p,
            &mut tx,
            crate::provision::vms::Admission {
                tenant: &g.tenant_id,
                name,
                plan: &plan,
                image: &image,
                ssh_keys: &ssh_keys,
                user_data: g.user_data.as_deref(),
                ports: &[port],
                host: crate::provision::vms::HostWants {
                    labels: &[],
                    pool: Some(&g.pool_id),
                    exclude: None,
                },
            },
        )
        .await;
        let (vm, op) = match admitted {
            Ok(done) => done,
            Err(AppError::Conflict(why)) if why.contains("already exists") => {
                drop(tx);
                let mut conn = p.db.acquire().await?;
                db::scale_groups::take_index(&mut conn, &g.pool_id).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        crate::pools::members::join_new_vm(&mut tx, &g.pool_id, &vm, port).await?;
        db::scale_groups::add_member(&mut tx, &g.pool_id, &vm, g.template_version).await?;
        tx.commit().await?;
        if let Some(hash) = &g.root_password_hash {
            p.root_password_hashes.put(&op.id, hash.clone());
        }
        p.spawn_operation(op.id.clone(), None);
        return Ok(Some(name.to_string()));
    }
    Err(AppError::Conflict(format!(
        "VM names for pool {} are taken; rename the tenant's VMs named after the pool",
        pool.name
    )))
}

/// A deleting group: every member goes, then the group.
async fn finish_deleting(
    p: &Arc<Provisioner>,
    g: &GroupRow,
    facts: &[MemberFacts],
    members: &[Member],
) -> anyhow::Result<()> {
    let mut left = 0;
    for m in members {
        if m.condition == Condition::Gone {
            if facts.iter().any(|f| f.vm_id.as_str() == m.id && !f.deleted) {
                left += 1;
            }
            continue;
        }
        left += 1;
        if m.condition != Condition::Busy {
            let name = facts
                .iter()
                .find(|f| f.vm_id.as_str() == m.id)
                .map_or(m.id.as_str(), |f| f.vm_name.as_str());
            retire(p, g, &m.id, name, Reason::ScaleIn).await;
        }
    }
    if left == 0 {
        let mut tx = db::begin_write(&p.db).await?;
        db::scale_groups::delete(&mut tx, &g.pool_id).await?;
        tx.commit().await?;
        note(p, g, "deleted: every member is gone", Outcome::Succeeded).await;
    }
    Ok(())
}

/// Ends a refresh that has replaced every member (unless the group changed meanwhile).
async fn finish_refresh(p: &Provisioner, g: &GroupRow) -> anyhow::Result<()> {
    let Some(op) = g.refresh_operation.as_deref() else {
        return Ok(());
    };
    let mut tx = db::begin_write(&p.db).await?;
    if !db::scale_groups::end_refresh_if(&mut tx, &g.pool_id, op, g.template_version).await? {
        return Ok(());
    }
    if let Some(op) = OperationId::parse(op) {
        db::operations::finish(&mut tx, &op, OpState::Succeeded, None).await?;
    }
    tx.commit().await?;
    note(
        p,
        g,
        &format!(
            "refresh done: every member is made of template v{}",
            g.template_version
        ),
        Outcome::Succeeded,
    )
    .await;
    Ok(())
}

/// Adds a step to the group's refresh operation.
async fn step(p: &Provisioner, g: &GroupRow, what: &str) {
    let Some(op) = g.refresh_operation.as_deref().and_then(OperationId::parse) else {
        return;
    };
    let result = async {
        let mut conn = p.db.acquire().await?;
        db::operations::push_step(&mut conn, &op, what).await
    };
    if let Err(e) = result.await {
        tracing::warn!(op = %op, error = %e, "cannot record a refresh step");
    }
}

/// Records a decision and its reason in the audit log, under the group's tenant.
async fn note(p: &Provisioner, g: &GroupRow, what: &str, outcome: Outcome) {
    tracing::info!(pool = %g.pool_id, "{ACTOR}: {what}");
    audit::record(
        &p.db,
        &NewEntry {
            actor_id: None,
            actor: ACTOR.into(),
            tenant_id: Some(g.tenant_id.to_string()),
            action: format!("{ACTOR}: {what}"),
            target: Some(g.pool_id.to_string()),
            outcome,
            status: None,
            client: None,
        },
    )
    .await;
}
