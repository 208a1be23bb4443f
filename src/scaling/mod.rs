//! Scale groups: a pool keeps `desired` identical VMs made from a template, replaces
//! unhealthy ones, rolls template changes through, and can follow the load its balancer sees.
//! These are the service functions behind `/api/v1/pools/{id}/scale-group` and the panel; the
//! work is done by [`controller`], from what the database holds.

pub mod controller;
pub mod decide;
mod lease;
pub mod settings;
pub mod tracking;
mod views;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::Principal;
use crate::db::scale_groups::GroupRow;
use crate::db::{self, Scope};
use crate::domain::ids::PoolId;
use crate::domain::pool::RefreshState;
use crate::error::AppError;
use crate::provision::OpKind;
pub use settings::{GroupInput, TargetInput, TemplateInput};
use views::view;
pub use views::{GroupMemberView, GroupView, LoadView, RefreshView, TargetView, TemplateView};

/// What a refresh request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshAction {
    /// Replace every member made of an older template (or, with none, every member).
    Start,
    Pause,
    Resume,
    Cancel,
}

/// The group of a pool the actor may see (another tenant's pool is not found).
async fn load(app: &App, actor: &Principal, pool_id: &str) -> Result<GroupRow, AppError> {
    let pool = crate::pools::load(&app.db, &actor.scope(), pool_id).await?;
    db::scale_groups::get(&app.db, &Scope::All, &pool.id)
        .await?
        .ok_or_else(|| AppError::not_found("scale group of pool", pool_id))
}

/// A pool's scale group.
pub async fn get(app: &App, actor: &Principal, pool_id: &str) -> Result<GroupView, AppError> {
    let g = load(app, actor, pool_id).await?;
    view(app, &g).await
}

/// The group of a pool, if it has one (the pool's page).
pub async fn of_pool(
    app: &App,
    actor: &Principal,
    pool_id: &str,
) -> Result<Option<GroupView>, AppError> {
    match load(app, actor, pool_id).await {
        Ok(g) => Ok(Some(view(app, &g).await?)),
        Err(AppError::NotFound {
            what: "scale group of pool",
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates or changes a pool's scale group; a changed template starts a rolling refresh.
/// Returns the group and whether it is new.
pub async fn put(
    app: &App,
    actor: &Principal,
    pool_id: &str,
    req: GroupInput,
) -> Result<(GroupView, bool), AppError> {
    let pool = crate::pools::load(&app.db, &actor.scope(), pool_id).await?;
    let existing = db::scale_groups::get(&app.db, &Scope::All, &pool.id).await?;
    if existing.as_ref().is_some_and(|g| g.deleting) {
        return Err(AppError::Conflict(format!(
            "the scale group of pool {} is being deleted; wait until it is gone, then create it again",
            pool.name
        )));
    }
    let current = existing
        .as_ref()
        .map(|g| u32::try_from(g.desired).unwrap_or(0));
    let (template, numbers) = settings::check(&req, current).map_err(AppError::Invalid)?;
    // A group keeps its image after an admin hides it; only a new choice must be offered.
    let keeps_image = match &existing {
        Some(g) => db::images::find(&app.db, &req.template.image)
            .await?
            .is_some_and(|i| i.id.as_str() == g.image_id),
        None => false,
    };
    let (plan, image) = crate::provision::vms::plan_and_image(
        &app.db,
        &req.template.plan,
        &req.template.image,
        actor.is_admin() || keeps_image,
    )
    .await
    .map_err(|e| match e {
        AppError::Invalid(mut errors) => {
            for err in &mut errors {
                err.field = match err.field {
                    "plan" => "template.plan",
                    "image" => "template.image",
                    other => other,
                };
            }
            AppError::Invalid(errors)
        }
        other => other,
    })?;
    let hash = match &req.template.root_password {
        Some(pw) => Some(crate::provision::crypt::hash_off_thread(pw).await?),
        None => existing.as_ref().and_then(|g| g.root_password_hash.clone()),
    };
    let at = db::now();
    let ssh_keys = serde_json::to_string(&template.ssh_keys).map_err(anyhow::Error::from)?;
    let mut row = GroupRow {
        pool_id: pool.id.clone(),
        tenant_id: pool.tenant_id.clone(),
        plan_id: plan.id.to_string(),
        image_id: image.id.to_string(),
        user_data: template.user_data.clone(),
        ssh_keys,
        port: i64::from(template.port),
        root_password_hash: hash,
        template_version: 1,
        min_size: i64::from(numbers.min),
        max_size: i64::from(numbers.max),
        desired: i64::from(numbers.desired),
        replace_after_s: i64::from(numbers.replace_after_s),
        health_grace_s: i64::from(numbers.health_grace_s),
        max_surge: i64::from(numbers.max_surge),
        min_healthy_percent: i64::from(numbers.min_healthy_percent),
        target_metric: numbers.target.map(|t| t.0),
        target_value: numbers.target.map(|t| i64::from(t.1)),
        scale_out_cooldown_s: i64::from(numbers.target.map_or(60, |t| t.2)),
        scale_in_cooldown_s: i64::from(numbers.target.map_or(300, |t| t.3)),
        last_scaled_at: None,
        refresh: RefreshState::None,
        refresh_operation: None,
        shortfall: None,
        next_index: 1,
        deleting: false,
        created_at: at,
        updated_at: at,
    };
    let mut tx = db::begin_write(&app.db).await?;
    // Read again under the write lock: the controller or another request may have changed the
    // group (ended a refresh, started deleting) since.
    let existing = db::scale_groups::get(&mut tx, &Scope::All, &pool.id).await?;
    if !db::images::is_usable(&mut tx, image.id.as_str()).await? {
        return Err(AppError::Conflict(format!(
            "image {} was removed a moment ago; choose another image",
            image.name
        )));
    }
    if existing.as_ref().is_some_and(|g| g.deleting) {
        return Err(AppError::Conflict(format!(
            "the scale group of pool {} is being deleted; wait until it is gone, then create it again",
            pool.name
        )));
    }
    let created = match &existing {
        None => {
            if let Err(e) = db::scale_groups::insert(&mut tx, &row).await {
                return Err(if db::is_unique_violation(&e) {
                    AppError::Conflict(format!(
                        "pool {} got a scale group meanwhile; read it and change it with PUT",
                        pool.name
                    ))
                } else {
                    e.into()
                });
            }
            true
        }
        Some(old) => {
            let changed = old.plan_id != row.plan_id
                || old.image_id != row.image_id
                || old.user_data != row.user_data
                || old.ssh_keys != row.ssh_keys
                || old.port != row.port
                || req.template.root_password.is_some();
            row.template_version = old.template_version + i64::from(changed);
            row.created_at = old.created_at;
            if old.target_metric.is_some() && req.desired.is_none() {
                // Tracking moved it; a change that does not name desired keeps it.
                row.desired = old.desired.clamp(row.min_size, row.max_size);
            }
            db::scale_groups::update(&mut tx, &row).await?;
            if changed && old.refresh == RefreshState::None {
                start_refresh(&mut tx, &row).await?;
            }
            false
        }
    };
    tx.commit().await?;
    tracing::info!(pool = %pool.id, desired = numbers.desired, version = row.template_version, created, "scale group set");
    controller::wake(app.prov.clone());
    let g = load(app, actor, pool_id).await?;
    Ok((view(app, &g).await?, created))
}

/// Records a running refresh operation for the group.
async fn start_refresh(tx: &mut db::WriteTx, g: &GroupRow) -> Result<(), AppError> {
    let op = db::operations::insert(
        tx,
        &g.tenant_id,
        OpKind::Refresh,
        "pool",
        g.pool_id.as_str(),
        &serde_json::json!({"template_version": g.template_version}),
    )
    .await?;
    db::operations::mark_running(tx, &op.id).await?;
    db::scale_groups::set_refresh(tx, &g.pool_id, RefreshState::Running, Some(op.id.as_str()))
        .await?;
    Ok(())
}

/// Starts, pauses, resumes or cancels the group's rolling refresh.
pub async fn refresh(
    app: &App,
    actor: &Principal,
    pool_id: &str,
    action: RefreshAction,
) -> Result<GroupView, AppError> {
    let g = load(app, actor, pool_id).await?;
    if g.deleting {
        return Err(AppError::Conflict(
            "the scale group is being deleted; nothing to refresh".into(),
        ));
    }
    let mut tx = db::begin_write(&app.db).await?;
    // Read again under the write lock: two requests cannot both start one.
    let g = db::scale_groups::get(&mut tx, &Scope::All, &g.pool_id)
        .await?
        .ok_or_else(|| AppError::not_found("scale group of pool", pool_id))?;
    match (action, g.refresh) {
        (RefreshAction::Start, RefreshState::None) => {
            // Every current member counts as outdated from now on.
            let mut next = g.clone();
            next.template_version += 1;
            db::scale_groups::update(&mut tx, &next).await?;
            start_refresh(&mut tx, &next).await?;
        }
        (RefreshAction::Start, _) => {
            return Err(AppError::Conflict(
                "a refresh is already under way; pause, resume or cancel it".into(),
            ));
        }
        (RefreshAction::Pause, RefreshState::Running) => {
            db::scale_groups::set_refresh(
                &mut tx,
                &g.pool_id,
                RefreshState::Paused,
                g.refresh_operation.as_deref(),
            )
            .await?;
        }
        (RefreshAction::Resume, RefreshState::Paused) => {
            db::scale_groups::set_refresh(
                &mut tx,
                &g.pool_id,
                RefreshState::Running,
                g.refresh_operation.as_deref(),
            )
            .await?;
        }
        (RefreshAction::Cancel, RefreshState::Running | RefreshState::Paused) => {
            if let Some(op) = g
                .refresh_operation
                .as_deref()
                .and_then(crate::domain::ids::OperationId::parse)
            {
                db::operations::finish(
                    &mut tx,
                    &op,
                    crate::provision::OpState::Failed,
                    Some(&format!(
                        "cancelled by {}; members already replaced stay, the others keep their template",
                        actor.email
                    )),
                )
                .await?;
            }
            db::scale_groups::set_refresh(&mut tx, &g.pool_id, RefreshState::None, None).await?;
        }
        (action, state) => {
            return Err(AppError::Conflict(format!(
                "cannot {} a refresh that is {}",
                match action {
                    RefreshAction::Start => "start",
                    RefreshAction::Pause => "pause",
                    RefreshAction::Resume => "resume",
                    RefreshAction::Cancel => "cancel",
                },
                match state {
                    RefreshState::None => "not running (start one first)",
                    RefreshState::Running => "running",
                    RefreshState::Paused => "paused",
                }
            )));
        }
    }
    tx.commit().await?;
    controller::wake(app.prov.clone());
    let g = load(app, actor, pool_id).await?;
    view(app, &g).await
}

/// Deletes the group: its members are drained and deleted, then the group goes (the pool
/// stays).
pub async fn delete(app: &App, actor: &Principal, pool_id: &str) -> Result<GroupView, AppError> {
    let g = load(app, actor, pool_id).await?;
    let mut tx = db::begin_write(&app.db).await?;
    if let Some(op) = g
        .refresh_operation
        .as_deref()
        .and_then(crate::domain::ids::OperationId::parse)
    {
        db::operations::finish(
            &mut tx,
            &op,
            crate::provision::OpState::Failed,
            Some("the scale group was deleted"),
        )
        .await?;
    }
    db::scale_groups::mark_deleting(&mut tx, &g.pool_id).await?;
    tx.commit().await?;
    controller::wake(app.prov.clone());
    let g = load(app, actor, pool_id).await?;
    view(app, &g).await
}

/// Whether the pool has a scale group (a pool with one cannot be deleted).
pub async fn pool_has_group(db: &db::Db, pool: &PoolId) -> Result<bool, AppError> {
    Ok(db::scale_groups::get(db, &Scope::All, pool)
        .await?
        .is_some())
}

/// The group's recent decisions and their reasons, newest first (from the audit log).
pub async fn history(
    app: &App,
    actor: &Principal,
    pool_id: &str,
    limit: u32,
) -> Result<Vec<crate::tenancy::audit::AuditView>, AppError> {
    let g = load(app, actor, pool_id).await?;
    let filter = db::audit::AuditFilter {
        actor: Some(controller::ACTOR.into()),
        target: Some(g.pool_id.to_string()),
        ..Default::default()
    };
    let page = db::page::PageRequest::parse(Some(i64::from(limit.clamp(1, 100))), None)
        .map_err(|(f, why)| AppError::invalid(f, why.to_string()))?;
    Ok(
        crate::tenancy::audit::search(&app.db, actor, &filter, &page)
            .await?
            .items,
    )
}
