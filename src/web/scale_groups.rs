//! A pool's scale group on the pool's page: its members' health, the refresh and its steps,
//! the scaling history, and the forms that set it up, change it, refresh and delete it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::errors::{WebError, describe};
use super::form::{Fields, Posted};
use super::pools::pool_page;
use super::session::SessionUser;
use crate::app::AppState;
use crate::db::page::PageRequest;
use crate::domain::secret::Secret;
use crate::error::AppError;
use crate::provision::catalog;
use crate::request::{AuditNote, with_note};
use crate::scaling::{self as service, GroupInput, GroupView, RefreshAction, TemplateInput};

/// One line of the scaling history.
pub struct HistoryLine {
    pub at: String,
    pub what: String,
    pub failed: bool,
}

/// One step of the refresh.
pub struct StepLine {
    pub name: String,
}

/// What the pool page shows of its group.
pub struct GroupPart {
    pub group: GroupView,
    pub healthy: usize,
    pub steps: Vec<StepLine>,
    pub history: Vec<HistoryLine>,
}

impl GroupPart {
    /// The refresh's state in words.
    pub fn refresh_says(&self) -> String {
        use crate::domain::pool::RefreshState;
        let current = self
            .group
            .members
            .iter()
            .filter(|m| m.template_version >= self.group.template.version && !m.retiring)
            .count();
        match self.group.refresh.state {
            RefreshState::None => "none".into(),
            RefreshState::Running => format!(
                "running: {current} of {} members on template v{}",
                self.group.desired, self.group.template.version
            ),
            RefreshState::Paused => format!(
                "paused: {current} of {} members on template v{}",
                self.group.desired, self.group.template.version
            ),
        }
    }
}

/// The group form's choices and values.
pub struct GroupForm {
    /// The group follows load (desired may be left empty).
    pub tracking: bool,
    pub plans: Vec<(String, String)>,
    pub images: Vec<(String, String)>,
    pub plan: String,
    pub image: String,
    pub port: String,
    pub min: String,
    pub max: String,
    pub desired: String,
    pub replace_after_s: String,
    pub max_surge: String,
    pub min_healthy_percent: String,
    pub user_data: String,
}

/// The pool's group as its page shows it, if it has one.
pub async fn part(
    app: &AppState,
    user: &SessionUser,
    pool_id: &str,
) -> Result<Option<GroupPart>, AppError> {
    let Some(group) = service::of_pool(app, &user.principal, pool_id).await? else {
        return Ok(None);
    };
    let healthy = group
        .members
        .iter()
        .filter(|m| !m.retiring && m.health == Some(crate::domain::pool::MemberStatus::Healthy))
        .count();
    let steps = match &group.refresh.operation_id {
        Some(op) => crate::provision::vms::operation(&app.prov, &user.principal, op)
            .await
            .map(|o| {
                o.steps
                    .into_iter()
                    .map(|s| StepLine { name: s.name })
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let history = service::history(app, &user.principal, pool_id, 15)
        .await?
        .into_iter()
        .map(|e| HistoryLine {
            at: e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            what: e
                .action
                .strip_prefix("scale group: ")
                .unwrap_or(&e.action)
                .to_string(),
            failed: e.outcome != crate::domain::outcome::Outcome::Succeeded,
        })
        .collect();
    Ok(Some(GroupPart {
        group,
        healthy,
        steps,
        history,
    }))
}

/// The form's choices, filled with the group's values (or defaults for a new one).
pub async fn form(
    app: &AppState,
    actor: &crate::auth::Principal,
    group: Option<&GroupPart>,
) -> Result<GroupForm, AppError> {
    let plans = catalog::list_plans(&app.db, &PageRequest::FIRST_MAX)
        .await?
        .items
        .into_iter()
        .map(|p| {
            let label = format!(
                "{}: {} vCPU · {} MiB · {} GiB",
                p.name, p.vcpus, p.memory_mib, p.disk_gib
            );
            (p.name, label)
        })
        .collect();
    let images = catalog::usable_images(&app.db, actor)
        .await?
        .into_iter()
        .map(|i| {
            let label = format!("{} ({})", i.name, i.os);
            (i.name, label)
        })
        .collect();
    let form = match group.map(|g| &g.group) {
        Some(g) => GroupForm {
            tracking: g.target.is_some(),
            plans,
            images,
            plan: g.template.plan.clone(),
            image: g.template.image.clone(),
            port: g.template.port.to_string(),
            min: g.min.to_string(),
            max: g.max.to_string(),
            // Following load: left empty, a save keeps what tracking set.
            desired: if g.target.is_some() {
                String::new()
            } else {
                g.desired.to_string()
            },
            replace_after_s: g.replace_after_s.to_string(),
            max_surge: g.max_surge.to_string(),
            min_healthy_percent: g.min_healthy_percent.to_string(),
            user_data: g.template.user_data.clone().unwrap_or_default(),
        },
        None => GroupForm {
            tracking: false,
            plans,
            images,
            plan: String::new(),
            image: String::new(),
            port: "80".into(),
            min: "1".into(),
            max: "3".into(),
            desired: "1".into(),
            replace_after_s: "60".into(),
            max_surge: "1".into(),
            min_healthy_percent: "100".into(),
            user_data: String::new(),
        },
    };
    Ok(form)
}

/// A whole number from the form (`None` when left empty).
fn number(fields: &Fields, name: &'static str) -> Result<Option<u32>, AppError> {
    match fields.opt(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| AppError::invalid(name, format!("{v:?} is not a whole number"))),
    }
}

/// The group the form asks for (tracking, when set through the API, stays).
async fn input_of(
    app: &AppState,
    user: &SessionUser,
    pool_id: &str,
    fields: &Fields,
) -> Result<GroupInput, AppError> {
    let current = service::of_pool(app, &user.principal, pool_id).await?;
    let required = |name: &'static str| {
        number(fields, name)?.ok_or_else(|| AppError::invalid(name, "fill this in"))
    };
    Ok(GroupInput {
        template: TemplateInput {
            plan: fields.get("plan").to_string(),
            image: fields.get("image").to_string(),
            user_data: Some(fields.get("user_data").replace("\r\n", "\n"))
                .filter(|u| !u.trim().is_empty()),
            ssh_keys: current
                .as_ref()
                .map(|g| g.template.ssh_keys.clone())
                .unwrap_or_default(),
            port: required("port")?,
            root_password: fields.opt("root_password").map(Secret::new),
        },
        min: required("min")?,
        max: required("max")?,
        desired: number(fields, "desired")?,
        replace_after_s: number(fields, "replace_after_s")?,
        health_grace_s: current.as_ref().map(|g| g.health_grace_s),
        max_surge: number(fields, "max_surge")?,
        min_healthy_percent: number(fields, "min_healthy_percent")?,
        target: current
            .and_then(|g| g.target)
            .map(|t| service::TargetInput {
                metric: t.metric,
                value: t.value,
                scale_out_cooldown_s: Some(t.scale_out_cooldown_s),
                scale_in_cooldown_s: Some(t.scale_in_cooldown_s),
            }),
    })
}

/// Shows the pool again after a group change, with its outcome (or what to fix).
async fn after(
    app: &AppState,
    user: &SessionUser,
    id: &str,
    result: Result<GroupView, AppError>,
    done: &'static str,
) -> Result<Response, WebError> {
    match result {
        Ok(g) => {
            let r = pool_page(app, user, id, None, Some(done), StatusCode::OK).await?;
            let note = AuditNote {
                target: Some(g.pool_id.clone()),
                tenant_id: Some(g.tenant_id.clone()),
                actor: None,
            };
            Ok(with_note(r, note))
        }
        Err(e @ (AppError::NotFound { .. } | AppError::Internal(_))) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            pool_page(app, user, id, Some(describe(&e).1), None, status).await
        }
    }
}

/// `POST /pools/{id}/scale-group`: sets up or changes the group.
pub async fn set(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let result = async {
        let input = input_of(&app, &user, &id, &fields).await?;
        service::put(&app, &user.principal, &id, input)
            .await
            .map(|(g, _)| g)
    }
    .await;
    after(
        &app,
        &user,
        &id,
        result,
        "Saved. The group creates or retires VMs to match; a changed template is rolled through one member at a time.",
    )
    .await
}

/// `POST /pools/{id}/scale-group/refresh`: starts, pauses, resumes or cancels a refresh.
pub async fn refresh(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let (action, done) = match fields.get("action") {
        "pause" => (RefreshAction::Pause, "The refresh is paused."),
        "resume" => (RefreshAction::Resume, "The refresh goes on."),
        "cancel" => (
            RefreshAction::Cancel,
            "The refresh is cancelled; members already replaced stay.",
        ),
        _ => (
            RefreshAction::Start,
            "Refresh started: members are replaced one at a time.",
        ),
    };
    let result = service::refresh(&app, &user.principal, &id, action).await;
    after(&app, &user, &id, result, done).await
}

/// `POST /pools/{id}/scale-group/delete`: deletes the group and its VMs once the pool's name
/// is typed.
pub async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let pool = crate::pools::get(&app, &user.principal, &id).await?;
    if fields.get("confirm").trim() != pool.name {
        let message = format!(
            "Nothing was deleted: type the pool's name, {}, to delete its scale group and its VMs.",
            pool.name
        );
        return pool_page(
            &app,
            &user,
            &id,
            Some(message),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let result = service::delete(&app, &user.principal, &id).await;
    after(
        &app,
        &user,
        &id,
        result,
        "The scale group is being deleted: its VMs drain and go, then the group.",
    )
    .await
}
