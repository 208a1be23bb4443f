//! Hosts: each one's state, labels, forwards and storage, capacity against allocation per
//! resource, its settings; registering a host by libvirt URI, maintenance, and removal.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::app::AppState;
use crate::db::page::PageRequest;
use crate::error::AppError;
use crate::provision::host::{self, HostView, UpdateHost};
use crate::provision::host_registry::{self, RegisterHost};
use crate::request::{AuditNote, with_note};
use crate::web::errors::{WebError, describe};
use crate::web::form::{FieldErrors, Fields, Panel, Posted};
use crate::web::layout::{Nav, grouped, page};
use crate::web::session::SessionUser;

/// One resource of a host: allocated against sellable.
pub struct Capacity {
    pub label: &'static str,
    pub allocated: u64,
    pub sellable: u64,
    pub physical: u64,
    pub unit: &'static str,
}

impl Capacity {
    /// The row as read: `20,480 MiB allocated of 24,576 MiB sellable (32,768 MiB physical)`.
    pub fn summary(&self) -> String {
        let n = |v: u64| grouped(i64::try_from(v).unwrap_or(i64::MAX));
        format!(
            "{}{u} allocated of {}{u} sellable ({}{u} physical)",
            n(self.allocated),
            n(self.sellable),
            n(self.physical),
            u = self.unit
        )
    }
}

/// A host with its capacity rows.
pub struct HostRow {
    pub host: HostView,
    pub capacity: Vec<Capacity>,
}

impl HostRow {
    /// The host's labels as typed in its form.
    pub fn labels_text(&self) -> String {
        self.host.labels.join(" ")
    }
}

#[derive(Template)]
#[template(path = "admin_hosts.html")]
struct HostsPage {
    nav: Nav,
    hosts: Vec<HostRow>,
    message: Option<String>,
    notice: Option<String>,
    /// The registration form as typed, and its errors.
    form: Fields,
    errors: FieldErrors,
}

/// The hosts page; `form` and `errors` belong to the registration form.
async fn hosts_page(
    app: &AppState,
    user: &SessionUser,
    message: Option<String>,
    notice: Option<String>,
    (form, errors): (Fields, FieldErrors),
    status: StatusCode,
) -> Result<Response, WebError> {
    let hosts = host::list(&app.prov, &user.principal, &PageRequest::FIRST_MAX)
        .await?
        .items
        .into_iter()
        .map(|h| HostRow {
            capacity: vec![
                Capacity {
                    label: "vCPUs",
                    allocated: h.allocated.vcpus,
                    sellable: h.sellable.vcpus,
                    physical: h.physical.vcpus,
                    unit: "",
                },
                Capacity {
                    label: "Memory",
                    allocated: h.allocated.memory_mib,
                    sellable: h.sellable.memory_mib,
                    physical: h.physical.memory_mib,
                    unit: " MiB",
                },
                Capacity {
                    label: "Disk",
                    allocated: h.allocated.disk_gib,
                    sellable: h.sellable.disk_gib,
                    physical: h.physical.disk_gib,
                    unit: " GiB",
                },
            ],
            host: h,
        })
        .collect();
    Ok(page(
        status,
        &HostsPage {
            nav: Nav::of(user, "/admin").at("/admin/hosts"),
            hosts,
            message,
            notice,
            form,
            errors,
        },
    ))
}

/// No registration form typed yet.
fn blank() -> (Fields, FieldErrors) {
    (Fields::default(), FieldErrors::default())
}

/// `GET /admin/hosts`.
pub async fn hosts(State(app): State<AppState>, Panel(user): Panel) -> Result<Response, WebError> {
    hosts_page(&app, &user, None, None, blank(), StatusCode::OK).await
}

/// A decimal from a field, or the field's error.
fn ratio(fields: &Fields, name: &'static str) -> Result<Option<f64>, AppError> {
    match fields.get(name).trim() {
        "" => Ok(None),
        v => v
            .parse::<f64>()
            .map(Some)
            .map_err(|_| AppError::invalid(name, "give a number such as 1.5")),
    }
}

/// `POST /admin/hosts`: registers a host after carve's checks.
pub async fn register(
    State(app): State<AppState>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let req = RegisterHost {
        libvirt_uri: fields.get("libvirt_uri").trim().to_string(),
        name: fields.opt("name").map(str::to_string),
        domain_type: fields.opt("domain_type").map(str::to_string),
        storage_path: fields.opt("storage_path").map(str::to_string),
        labels: fields.words("labels"),
        forward_address: fields.opt("forward_address").map(str::to_string),
        forward_ports: fields.opt("forward_ports").map(str::to_string),
        ..RegisterHost::default()
    };
    match host_registry::register(&app.prov, &user.principal, req).await {
        Ok(h) => {
            let r = hosts_page(
                &app,
                &user,
                None,
                Some("The host was checked and registered.".into()),
                blank(),
                StatusCode::CREATED,
            )
            .await?;
            Ok(with_note(r, note(&h.id)))
        }
        Err(e @ (AppError::Internal(_) | AppError::Forbidden(_))) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            let errors = FieldErrors::from_error(&e);
            hosts_page(&app, &user, None, None, (fields, errors), status).await
        }
    }
}

/// The audit note of a change to a host.
fn note(id: &str) -> AuditNote {
    AuditNote {
        target: Some(id.to_string()),
        tenant_id: None,
        actor: None,
    }
}

/// `POST /admin/hosts/{id}`: the host's labels, ratios and reserved memory, or (from its
/// own button) its state.
pub async fn update_host(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let req = (|| {
        if let Some(state) = fields.opt("state").map(str::to_string) {
            return Ok::<_, AppError>(UpdateHost {
                state: Some(state),
                ..UpdateHost::default()
            });
        }
        Ok(UpdateHost {
            labels: Some(fields.words("labels")),
            cpu_overcommit: ratio(&fields, "cpu_overcommit")?,
            memory_overcommit: ratio(&fields, "memory_overcommit")?,
            disk_overcommit: ratio(&fields, "disk_overcommit")?,
            reserved_memory_mib: match fields.get("reserved_memory_mib").trim() {
                "" => None,
                m => Some(m.parse::<i64>().map_err(|_| {
                    AppError::invalid("reserved_memory_mib", "give a whole number of MiB")
                })?),
            },
            ..UpdateHost::default()
        })
    })();
    let result = match req {
        Ok(req) => host::update(&app.prov, &user.principal, &id, req).await,
        Err(e) => Err(e),
    };
    after_change(
        &app,
        &user,
        result.map(|h| h.id),
        "The host's settings were saved.",
    )
    .await
}

/// `POST /admin/hosts/{id}/delete`: removes a host that holds no VM.
pub async fn remove(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted,
) -> Result<Response, WebError> {
    let result = host_registry::remove(&app.prov, &user.principal, &id).await;
    after_change(&app, &user, result.map(|()| id), "The host was removed.").await
}

/// `POST /admin/hosts/{id}/evacuate`: moves every VM off a host in maintenance.
pub async fn evacuate(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted,
) -> Result<Response, WebError> {
    match crate::provision::evacuate::evacuate(&app.prov, &user.principal, &id).await {
        Ok(started) => {
            let mut words = format!(
                "{} VM(s) are moving to other hosts; Operations shows their progress.",
                started.moves.len()
            );
            for r in &started.refused {
                words.push_str(&format!(" {} stays: {}.", r.name, r.reason));
            }
            after_change(&app, &user, Ok(id), &words).await
        }
        Err(e) => after_change(&app, &user, Err(e), "").await,
    }
}

/// The hosts page after a change: its notice, or what to fix.
async fn after_change(
    app: &AppState,
    user: &SessionUser,
    result: Result<String, AppError>,
    done: &str,
) -> Result<Response, WebError> {
    match result {
        Ok(id) => {
            let r = hosts_page(app, user, None, Some(done.into()), blank(), StatusCode::OK).await?;
            Ok(with_note(r, note(&id)))
        }
        Err(e @ (AppError::NotFound { .. } | AppError::Internal(_) | AppError::Forbidden(_))) => {
            Err(WebError(e))
        }
        Err(e) => {
            let status = e.status();
            hosts_page(app, user, Some(describe(&e).1), None, blank(), status).await
        }
    }
}
