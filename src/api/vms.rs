//! `/vms`: create, list, read, resize, act on and delete VMs; read their console.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiQuery, AuditNote, Auth, ReadErrors, WriteErrors, accepted, with_note};
use crate::app::AppState;
use crate::error::AppError;
use crate::provision::vms::{self as service, OperationView, VmView};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_vms, create_vm))
        .routes(routes!(get_vm, update_vm, delete_vm))
        .routes(routes!(vm_action))
        .routes(routes!(vm_console))
        .routes(routes!(vm_stats))
}

/// The answer to a create: the operation, and the VM as it now stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VmAccepted {
    #[serde(flatten)]
    pub operation: OperationView,
    /// The new VM (state `creating`).
    pub vm: VmView,
}

/// 202 with the operation, noting its VM's tenant for the audit log.
fn op_accepted(op: OperationView) -> Response {
    let note = AuditNote {
        target: Some(op.target.clone()),
        tenant_id: Some(op.tenant_id.clone()),
        actor: None,
    };
    with_note(accepted(&op, &op), note)
}

/// List the VMs the caller may see.
#[utoipa::path(get, path = "/vms", tag = "vms", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "VMs, newest first (a page; `Link: rel=\"next\"` when more follow)", body = Vec<VmView>), ReadErrors))]
async fn list_vms(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<Response, AppError> {
    let (body, next) = service::list_json(&app.prov, &actor, &q.request()?).await?;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    super::add_next_link(&mut response, &uri, next.as_deref());
    Ok(response)
}

/// Create a VM; it is built and booted by an operation.
#[utoipa::path(post, path = "/vms", tag = "vms", security(("bearer" = [])), request_body = CreateVmRequest,
    responses((status = 202, description = "Admitted; follow the operation", body = VmAccepted,
        headers(("Location" = String, description = "The operation's URL"))), WriteErrors))]
async fn create_vm(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<CreateVmRequest>,
) -> Result<Response, AppError> {
    let (vm, operation) = service::create(&app.prov, &actor, req.into()).await?;
    let note = AuditNote {
        target: Some(vm.id.clone()),
        tenant_id: Some(vm.tenant_id.clone()),
        actor: None,
    };
    Ok(with_note(
        accepted(&operation.clone(), VmAccepted { operation, vm }),
        note,
    ))
}

/// Read one VM.
#[utoipa::path(get, path = "/vms/{id}", tag = "vms", security(("bearer" = [])),
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, description = "The VM", body = VmView), ReadErrors))]
async fn get_vm(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<VmView>, AppError> {
    Ok(Json(service::get(&app.prov, &actor, &id).await?))
}

/// Resize a VM to another plan (a running VM is restarted; the disk never shrinks).
#[utoipa::path(patch, path = "/vms/{id}", tag = "vms", security(("bearer" = [])), request_body = UpdateVmRequest,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 202, description = "Admitted; follow the operation", body = OperationView,
        headers(("Location" = String, description = "The operation's URL"))), WriteErrors))]
async fn update_vm(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateVmRequest>,
) -> Result<Response, AppError> {
    let op = service::update(&app.prov, &actor, &id, req.into()).await?;
    Ok(op_accepted(op))
}

/// Delete a VM with its domain, disk, seed and port forwards.
#[utoipa::path(delete, path = "/vms/{id}", tag = "vms", security(("bearer" = [])),
    params(("id" = String, Path, description = "VM id")),
    responses((status = 202, description = "Admitted; follow the operation", body = OperationView,
        headers(("Location" = String, description = "The operation's URL"))), WriteErrors))]
async fn delete_vm(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let op = service::delete(&app.prov, &actor, &id).await?;
    Ok(op_accepted(op))
}

/// Start, stop (ACPI, forced after a timeout), reboot or force-stop a VM.
#[utoipa::path(post, path = "/vms/{id}/actions", tag = "vms", security(("bearer" = [])), request_body = ActionRequest,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 202, description = "Admitted; follow the operation", body = OperationView,
        headers(("Location" = String, description = "The operation's URL"))), WriteErrors))]
async fn vm_action(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> Result<Response, AppError> {
    if req.image.is_some() && req.action != service::VmAction::Reinstall {
        return Err(AppError::invalid(
            "image",
            "image goes only with the reinstall action",
        ));
    }
    let op = match (req.action, &req.root_password) {
        (service::VmAction::Reinstall, pw) => match &req.image {
            Some(image) => service::reinstall(&app.prov, &actor, &id, image, pw.as_ref()).await?,
            None => service::act(&app.prov, &actor, &id, req.action).await?,
        },
        (service::VmAction::ResetPassword, Some(pw)) => {
            service::reset_password(&app.prov, &actor, &id, pw).await?
        }
        (service::VmAction::ResetPassword, None) => {
            service::act(&app.prov, &actor, &id, req.action).await?
        }
        (_, Some(_)) => {
            return Err(AppError::invalid(
                "root_password",
                "root_password goes only with the reset_password and reinstall actions",
            ));
        }
        (action, None) => service::act(&app.prov, &actor, &id, action).await?,
    };
    Ok(op_accepted(op))
}

/// How much console output to return.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// Bytes from the end of the log (default 65536, at most 1048576).
    pub bytes: Option<u64>,
}

/// The end of the VM's serial console output.
#[utoipa::path(get, path = "/vms/{id}/console", tag = "vms", security(("bearer" = [])),
    params(("id" = String, Path, description = "VM id"), ConsoleQuery),
    responses((status = 200, description = "Console text", body = String, content_type = "text/plain"), ReadErrors))]
async fn vm_console(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ConsoleQuery>,
) -> Result<Response, AppError> {
    let bytes = q.bytes.unwrap_or(64 * 1024).clamp(1, 1 << 20);
    let text = service::console(&app.prov, &actor, &id, bytes).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// CPU and memory use of the last 15 minutes, sampled every 10 seconds while the VM runs.
#[utoipa::path(get, path = "/vms/{id}/stats", tag = "vms", security(("bearer" = [])),
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, description = "Samples, oldest first", body = crate::provision::stats::VmStats), ReadErrors))]
async fn vm_stats(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<crate::provision::stats::VmStats>, AppError> {
    Ok(Json(
        crate::provision::stats::of_vm(&app.prov, &actor, &id).await?,
    ))
}

/// A request to create a VM.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// The VM's name: a DNS label (lowercase letters, digits, '-'), unique in the tenant.
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Plan id or name.
    pub plan: String,
    /// Image id or name.
    pub image: String,
    /// OpenSSH public keys for the guest.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub ssh_keys: Vec<String>,
    /// cloud-init user-data; a script starting with `#!` runs at first boot.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub user_data: Option<String>,
    /// Root's password for the serial console (10 to 1024 characters, no line breaks). Only
    /// a SHA-512 crypt hash of it reaches the guest (through the NoCloud seed); carve
    /// neither stores nor logs it.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 10, max_length = 1024, format = Password)]
    pub root_password: Option<crate::domain::secret::Secret>,
    /// Guest TCP ports to forward from the host (network mode `user`).
    #[serde(default)]
    #[schema(max_items = 16, value_type = Vec<u16>)]
    pub ports: Vec<i64>,
    /// Load-balanced pool (id or name) to join: the VM takes traffic once its first health
    /// check passes.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub pool: Option<String>,
    /// The guest port the pool sends traffic to; one of `ports` (needed when there are
    /// several).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub pool_port: Option<u16>,
    /// Owning tenant (admins only; a customer's VMs go to its tenant).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Labels the VM's host must have (e.g. `ssd`, `zone=a`; `GET /hosts` shows each host's).
    #[serde(default)]
    #[schema(max_items = 16)]
    pub host_labels: Vec<String>,
}

impl From<CreateVmRequest> for crate::provision::vms::CreateVm {
    fn from(r: CreateVmRequest) -> Self {
        Self {
            name: r.name,
            plan: r.plan,
            image: r.image,
            ssh_keys: r.ssh_keys,
            user_data: r.user_data,
            root_password: r.root_password,
            ports: r.ports,
            pool: r.pool,
            pool_port: r.pool_port,
            tenant_id: r.tenant_id,
            host_labels: r.host_labels,
        }
    }
}

/// A request to change a VM: today, its plan (resize).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVmRequest {
    /// Plan id or name to resize to; the disk grows, never shrinks.
    pub plan: Option<String>,
}

impl From<UpdateVmRequest> for crate::provision::vms::UpdateVm {
    fn from(r: UpdateVmRequest) -> Self {
        Self { plan: r.plan }
    }
}

/// A request to run a power action.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub action: service::VmAction,
    /// For `reinstall`: the image (name or id) whose fresh disk replaces the VM's.
    #[schema(max_length = 64)]
    pub image: Option<String>,
    /// For `reset_password`: root's new password (10 to 1024 characters, no line breaks).
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 10, max_length = 1024, format = Password)]
    pub root_password: Option<crate::domain::secret::Secret>,
}
