//! VM pages: create (errors beside their fields, what was typed kept), the VM's page with
//! live state, operation steps, console and a CPU/memory chart, and its power, resize and
//! delete forms.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::errors::{WebError, describe};
use super::form::{FieldErrors, Fields, Panel, Posted};
use super::layout::{Nav, page};
use crate::app::AppState;
use crate::db::page::PageRequest;
use crate::error::AppError;
use crate::provision::catalog::{self, ImageView, PlanView};
use crate::provision::vms::{self as service, CreateVm, OperationView, UpdateVm, VmAction};
use crate::request::{AuditNote, with_note};
use crate::tenancy::ssh_keys::{self, SshKeyView};

/// Plan names by id, for tables.
pub struct PlanNames(HashMap<String, String>);

impl PlanNames {
    /// The plan's name, or its id when it is gone.
    pub fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.0.get(id).map_or(id, String::as_str)
    }
}

/// Names of every plan.
pub async fn plan_names(app: &AppState) -> Result<PlanNames, WebError> {
    let plans = catalog::list_plans(&app.db, &PageRequest::FIRST_MAX).await?;
    Ok(PlanNames(
        plans.items.into_iter().map(|p| (p.id, p.name)).collect(),
    ))
}

/// A plan with what it would leave of the tenant's quota.
pub struct PlanChoice {
    pub plan: PlanView,
    pub leaves: String,
    pub fits: bool,
}

#[derive(Template)]
#[template(path = "vm_new.html")]
struct NewVmPage {
    nav: Nav,
    plans: Vec<PlanChoice>,
    images: Vec<ImageView>,
    keys: Vec<SshKeyView>,
    tenants: Vec<(String, String)>,
    /// Pools a new VM may join: id and label.
    pools: Vec<(String, String)>,
    /// Labels active hosts offer (the form shows the field only when there are some).
    host_labels: Vec<String>,
    form: Fields,
    errors: FieldErrors,
}

impl NewVmPage {
    /// Whether the saved key `id` is ticked.
    fn key_checked(&self, id: &str) -> bool {
        self.form.all("key").contains(&id)
    }
}

/// The create form, filled from `form`, with `errors` beside their fields.
async fn new_page(
    app: &AppState,
    user: &super::session::SessionUser,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    let plans = catalog::list_plans(&app.db, &PageRequest::FIRST_MAX)
        .await?
        .items;
    let usage = match &actor.tenant_id {
        Some(_) => Some(crate::tenancy::accounts::my_usage(app, actor).await?),
        None => None,
    };
    let plans = plans
        .into_iter()
        .map(|plan| match &usage {
            Some(u) => {
                let left = |max: i64, used: i64, need: u64| max - used - need as i64;
                let (vms, cpus, mem, disk) = (
                    left(u.quota.max_vms, u.usage.vms, 1),
                    left(u.quota.max_vcpus, u.usage.vcpus, plan.vcpus.into()),
                    left(u.quota.max_memory_mib, u.usage.memory_mib, plan.memory_mib),
                    left(u.quota.max_disk_gib, u.usage.disk_gib, plan.disk_gib),
                );
                let fits = vms >= 0 && cpus >= 0 && mem >= 0 && disk >= 0;
                let leaves = if fits {
                    format!(
                        "leaves {vms} VMs, {cpus} vCPUs, {mem} MiB memory and {disk} GiB disk of your quota"
                    )
                } else {
                    "does not fit in what is left of your quota".to_string()
                };
                PlanChoice { plan, leaves, fits }
            }
            None => PlanChoice {
                plan,
                leaves: String::new(),
                fits: true,
            },
        })
        .collect();
    let images = catalog::usable_images(&app.db, actor).await?;
    let tenants = if actor.is_admin() {
        crate::tenancy::accounts::list_tenants(&app.db, actor, &PageRequest::FIRST_MAX)
            .await?
            .items
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect()
    } else {
        Vec::new()
    };
    let keys = ssh_keys::list(&app.db, actor).await?;
    let pools = crate::pools::list(app, actor, &PageRequest::FIRST_MAX)
        .await?
        .items
        .into_iter()
        .map(|p| {
            let label = if actor.is_admin() {
                format!("{} ({}, tenant {})", p.name, p.listen, p.tenant_id)
            } else {
                format!("{} ({})", p.name, p.listen)
            };
            (p.id, label)
        })
        .collect();
    Ok(page(
        status,
        &NewVmPage {
            nav: Nav::of(user, "/vms/new").at("/vms/new"),
            plans,
            images,
            keys,
            tenants,
            pools,
            host_labels: crate::provision::host::offered_labels(&app.db).await?,
            form,
            errors,
        },
    ))
}

/// `GET /vms/new`.
pub async fn new_form(
    State(app): State<AppState>,
    Panel(user): Panel,
) -> Result<Response, WebError> {
    let form = Fields::parse(b"ports=22");
    new_page(&app, &user, form, FieldErrors::default(), StatusCode::OK).await
}

/// Guest ports typed as `22, 80 443`.
fn parse_ports(text: &str) -> Result<Vec<i64>, AppError> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<i64>().map_err(|_| {
                AppError::invalid(
                    "ports",
                    format!("{p:?} is not a port number; list TCP ports such as 22, 80"),
                )
            })
        })
        .collect()
}

/// `POST /vms`: creates the VM and opens its page, or shows the form again with the errors.
pub async fn create(
    State(app): State<AppState>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    let saved = ssh_keys::list(&app.db, actor).await?;
    let mut keys: Vec<String> = fields
        .all("key")
        .iter()
        .filter_map(|id| saved.iter().find(|k| k.id == *id))
        .map(|k| k.public_key.clone())
        .collect();
    if let Some(pasted) = fields.opt("new_key") {
        if fields.checked("save_key")
            && let Err(e) = ssh_keys::add(&app.db, actor, None, pasted).await
        {
            let errors = match &e {
                AppError::Invalid(_) => FieldErrors::from_error(&e),
                _ => FieldErrors::field("public_key", describe(&e).1),
            };
            return new_page(&app, &user, fields, errors, e.status()).await;
        }
        keys.push(pasted.to_string());
    }
    let ports = match parse_ports(fields.get("ports")) {
        Ok(p) => p,
        Err(e) => {
            return new_page(&app, &user, fields, FieldErrors::from_error(&e), e.status()).await;
        }
    };
    let req = CreateVm {
        host_labels: fields.words("host_labels"),
        name: fields.get("name").trim().to_string(),
        plan: fields.get("plan").to_string(),
        image: fields.get("image").to_string(),
        ssh_keys: keys,
        user_data: fields.opt("user_data").map(|u| u.replace("\r\n", "\n")),
        root_password: fields
            .opt("root_password")
            .filter(|p| !p.is_empty())
            .map(crate::domain::secret::Secret::new),
        ports,
        pool: fields.opt("pool").map(str::to_string),
        pool_port: match fields
            .opt("pool_port")
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(port) => Some(port),
                Err(_) => {
                    let errors = FieldErrors::field(
                        "pool_port",
                        format!("{p:?} is not a port: use 1 to 65535"),
                    );
                    return new_page(
                        &app,
                        &user,
                        fields,
                        errors,
                        StatusCode::UNPROCESSABLE_ENTITY,
                    )
                    .await;
                }
            },
        },
        tenant_id: fields.opt("tenant_id").map(str::to_string),
    };
    match service::create(&app.prov, actor, req).await {
        Ok((vm, _op)) => {
            let note = AuditNote {
                target: Some(vm.id.clone()),
                tenant_id: Some(vm.tenant_id.clone()),
                actor: None,
            };
            Ok(with_note(
                Redirect::to(&format!("/vms/{}", vm.id)).into_response(),
                note,
            ))
        }
        Err(AppError::Internal(e)) => Err(WebError(AppError::Internal(e))),
        Err(e) => {
            let errors = FieldErrors::from_error(&e);
            new_page(&app, &user, fields, errors, e.status()).await
        }
    }
}

pub use super::vm_live::live;
pub(super) use super::vm_page::vm_page;
pub use super::vm_page::{console_ticket, show};

/// After a VM form: back to its page (303), or the page with the error.
pub(super) async fn after_action(
    app: &AppState,
    user: &super::session::SessionUser,
    id: &str,
    result: Result<OperationView, AppError>,
) -> Result<Response, WebError> {
    match result {
        Ok(op) => Ok(with_note(
            Redirect::to(&format!("/vms/{id}")).into_response(),
            AuditNote {
                target: Some(op.target.clone()),
                tenant_id: Some(op.tenant_id.clone()),
                actor: None,
            },
        )),
        Err(e @ (AppError::NotFound { .. } | AppError::Internal(_))) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            vm_page(app, user, id, Some(describe(&e).1), status).await
        }
    }
}

/// `POST /vms/{id}/actions`: start, stop, reboot or force stop.
pub async fn act(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let action = match fields.get("action") {
        "start" => VmAction::Start,
        "stop" => VmAction::Stop,
        "reboot" => VmAction::Reboot,
        "force_stop" => VmAction::ForceStop,
        other => {
            return Err(WebError(AppError::invalid(
                "action",
                format!("{other:?} is not an action: use start, stop, reboot or force_stop"),
            )));
        }
    };
    let result = service::act(&app.prov, &user.principal, &id, action).await;
    after_action(&app, &user, &id, result).await
}

/// `POST /vms/{id}/password`: sets root's password (a running VM reboots to take it).
pub async fn reset_password(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let password = crate::domain::secret::Secret::new(fields.get("root_password"));
    let result = service::reset_password(&app.prov, &user.principal, &id, &password).await;
    after_action(&app, &user, &id, result).await
}

/// `POST /vms/{id}/resize`: moves the VM to another plan.
pub async fn resize(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let req = UpdateVm {
        plan: Some(fields.get("plan").to_string()),
    };
    let result = service::update(&app.prov, &user.principal, &id, req).await;
    after_action(&app, &user, &id, result).await
}

/// `POST /vms/{id}/delete`: deletes the VM once its name is typed to confirm.
pub async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let vm = service::get(&app.prov, &user.principal, &id).await?;
    if fields.get("confirm").trim() != vm.name {
        let message = format!(
            "Nothing was deleted: type the VM's name, {}, to confirm.",
            vm.name
        );
        return vm_page(
            &app,
            &user,
            &id,
            Some(message),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    match service::delete(&app.prov, &user.principal, &id).await {
        Ok(op) => Ok(with_note(
            Redirect::to("/").into_response(),
            AuditNote {
                target: Some(op.target.clone()),
                tenant_id: Some(op.tenant_id.clone()),
                actor: None,
            },
        )),
        Err(e) => after_action(&app, &user, &id, Err(e)).await,
    }
}
