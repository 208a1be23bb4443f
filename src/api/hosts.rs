//! `/hosts` (admins): register hosts by libvirt URI, their capacity, state, labels, forwards
//! and ratios, and remove empty ones.

use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, Auth, ReadErrors, WriteErrors};
use crate::app::AppState;
use crate::error::AppError;
use crate::provision::host::{self as service, HostView};
use crate::provision::host_registry;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_hosts, register_host))
        .routes(routes!(get_host, update_host, remove_host))
        .routes(routes!(evacuate_host))
}

/// List hosts with capacity and allocation (admins).
#[utoipa::path(get, path = "/hosts", tag = "hosts", security(("bearer" = [])), params(super::Paging),
    responses((status = 200, description = "Hosts, oldest first (a page; `Link: rel=\"next\"` when more follow)", body = Vec<HostView>), ReadErrors))]
async fn list_hosts(
    State(app): State<AppState>,
    Auth(actor): Auth,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    super::ApiQuery(q): super::ApiQuery<super::Paging>,
) -> Result<axum::response::Response, AppError> {
    let page = service::list(&app.prov, &actor, &q.request()?).await?;
    Ok(super::paged(&uri, page))
}

/// Read one host (admins).
#[utoipa::path(get, path = "/hosts/{id}", tag = "hosts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "The host", body = HostView), ReadErrors))]
async fn get_host(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<HostView>, AppError> {
    Ok(Json(service::get(&app.prov, &actor, &id).await?))
}

/// Change a host (admins): name, state (`maintenance` takes no new VMs), labels, forwards,
/// overcommit ratios or memory reserve.
#[utoipa::path(patch, path = "/hosts/{id}", tag = "hosts", security(("bearer" = [])), request_body = UpdateHostRequest,
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "The host", body = HostView), WriteErrors))]
async fn update_host(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateHostRequest>,
) -> Result<Json<HostView>, AppError> {
    Ok(Json(
        service::update(&app.prov, &actor, &id, req.into()).await?,
    ))
}

/// Register a host by its libvirt URI (admins). carve connects, reads its capabilities and
/// size, checks the domain type and passt, and finds or makes its storage pool first.
#[utoipa::path(post, path = "/hosts", tag = "hosts", security(("bearer" = [])), request_body = RegisterHostRequest,
    responses((status = 201, description = "The host, checked and registered", body = HostView), WriteErrors))]
async fn register_host(
    State(app): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<RegisterHostRequest>,
) -> Result<(axum::http::StatusCode, Json<HostView>), AppError> {
    let host = host_registry::register(&app.prov, &actor, req.into()).await?;
    Ok((axum::http::StatusCode::CREATED, Json(host)))
}

/// Remove a host that holds no VM (admins).
#[utoipa::path(delete, path = "/hosts/{id}", tag = "hosts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Host id")),
    responses((status = 204, description = "Removed"), WriteErrors))]
async fn remove_host(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, AppError> {
    host_registry::remove(&app.prov, &actor, &id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Move every VM off a host in maintenance to other hosts (admins): one `move` operation per
/// VM (stop, copy its disk through libvirt streams, start on the new host, then remove the
/// old copy); VMs with nowhere to go are listed with the reason.
#[utoipa::path(post, path = "/hosts/{id}/evacuate", tag = "hosts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Host id")),
    responses((status = 202, description = "The moves started, and the VMs that stay", body = crate::provision::evacuate::Evacuation), WriteErrors))]
async fn evacuate_host(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<
    (
        axum::http::StatusCode,
        Json<crate::provision::evacuate::Evacuation>,
    ),
    AppError,
> {
    let started = crate::provision::evacuate::evacuate(&app.prov, &actor, &id).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(started)))
}

/// A host to register.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterHostRequest {
    /// `qemu:///system`, `qemu+ssh://user@host/system`, `qemu+tls://host/system`, or a
    /// `/session` URI.
    #[schema(max_length = 1024)]
    pub libvirt_uri: String,
    /// Letters, digits, '.', '_' and '-' (default: the host name libvirt reports).
    #[schema(max_length = 64)]
    pub name: Option<String>,
    /// `kvm` or `qemu` (default: `kvm` when the host offers it, else `qemu`).
    pub domain_type: Option<String>,
    /// The directory of carve's storage pool on the host (default `/var/lib/carve/pool`;
    /// needed for a `/session` URI).
    #[schema(max_length = 1024)]
    pub storage_path: Option<String>,
    /// Labels a create can ask for (`host_labels`), e.g. `ssd`, `zone=a`.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub labels: Vec<String>,
    /// Where the host's forwards listen (default: `network.forward_address`).
    pub forward_address: Option<String>,
    /// Host ports for forwards, `first-last` (default: `network.forward_ports`).
    pub forward_ports: Option<String>,
    pub cpu_overcommit: Option<f64>,
    pub memory_overcommit: Option<f64>,
    pub disk_overcommit: Option<f64>,
    pub reserved_memory_mib: Option<i64>,
}

impl From<RegisterHostRequest> for host_registry::RegisterHost {
    fn from(r: RegisterHostRequest) -> Self {
        Self {
            libvirt_uri: r.libvirt_uri,
            name: r.name,
            domain_type: r.domain_type,
            storage_path: r.storage_path,
            labels: r.labels,
            forward_address: r.forward_address,
            forward_ports: r.forward_ports,
            cpu_overcommit: r.cpu_overcommit,
            memory_overcommit: r.memory_overcommit,
            disk_overcommit: r.disk_overcommit,
            reserved_memory_mib: r.reserved_memory_mib,
        }
    }
}

/// A change to a host (admins); absent fields stay as they are.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHostRequest {
    #[schema(max_length = 64)]
    pub name: Option<String>,
    /// `active` or `maintenance` (takes no new VMs).
    pub state: Option<String>,
    #[schema(max_items = 16)]
    pub labels: Option<Vec<String>>,
    /// An IP address; empty goes back to `network.forward_address`. Only while the host
    /// holds no VM.
    pub forward_address: Option<String>,
    /// `first-last`; empty goes back to `network.forward_ports`. Only while the host holds
    /// no VM.
    pub forward_ports: Option<String>,
    /// vCPUs sold per host CPU (above 0, at most 100).
    pub cpu_overcommit: Option<f64>,
    /// Guest memory per host memory (above 0, at most 100).
    pub memory_overcommit: Option<f64>,
    /// Guest disk per store space (above 0, at most 100).
    pub disk_overcommit: Option<f64>,
    /// Host memory kept back for the host, in MiB.
    pub reserved_memory_mib: Option<i64>,
}

impl From<UpdateHostRequest> for crate::provision::host::UpdateHost {
    fn from(r: UpdateHostRequest) -> Self {
        Self {
            name: r.name,
            state: r.state,
            labels: r.labels,
            forward_address: r.forward_address,
            forward_ports: r.forward_ports,
            cpu_overcommit: r.cpu_overcommit,
            memory_overcommit: r.memory_overcommit,
            disk_overcommit: r.disk_overcommit,
            reserved_memory_mib: r.reserved_memory_mib,
        }
    }
}
