//! Pool pages: the list with each pool's address and health, create, and per pool its
//! members (live), attach and detach, settings and delete.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::errors::{WebError, describe};
use super::form::{FieldErrors, Fields, Panel, Posted};
use super::layout::{Nav, page};
use super::session::SessionUser;
use crate::app::AppState;
use crate::db::page::PageRequest;
use crate::domain::pool::{MemberStatus, PoolAlgorithm, PoolProtocol};
use crate::error::AppError;
use crate::pools::members::{self, AddMember};
use crate::pools::{self as service, CreatePool, HealthCheckInput, PoolView, UpdatePool};
use crate::request::{AuditNote, with_note};

/// A pool with what the list shows beside it.
pub struct PoolRow {
    pub pool: PoolView,
    /// e.g. "2 of 3 healthy".
    pub health: String,
    /// A link for http pools.
    pub url: Option<String>,
}

fn row(pool: PoolView) -> PoolRow {
    let healthy = pool
        .members
        .iter()
        .filter(|m| m.state == MemberStatus::Healthy)
        .count();
    PoolRow {
        health: format!("{healthy} of {} healthy", pool.members.len()),
        url: (pool.protocol == PoolProtocol::Http).then(|| format!("http://{}/", pool.listen)),
        pool,
    }
}

#[derive(Template)]
#[template(path = "pools.html")]
struct ListPage {
    nav: Nav,
    pools: Vec<PoolRow>,
    form: Fields,
    errors: FieldErrors,
}

async fn list_page(
    app: &AppState,
    user: &SessionUser,
    form: Fields,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let pools = service::list(app, &user.principal, &PageRequest::FIRST_MAX)
        .await?
        .items
        .into_iter()
        .map(row)
        .collect();
    Ok(page(
        status,
        &ListPage {
            nav: Nav::of(user, "/pools").at("/pools"),
            pools,
            form,
            errors,
        },
    ))
}

/// `GET /pools`.
pub async fn list(State(app): State<AppState>, Panel(user): Panel) -> Result<Response, WebError> {
    list_page(
        &app,
        &user,
        Fields::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// A number typed in a form, if any.
fn number(fields: &Fields, name: &'static str) -> Result<Option<u32>, AppError> {
    match fields.opt(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            AppError::invalid(name, format!("{v:?} is not a whole number of seconds"))
        }),
    }
}

/// The health check a form asks for (only the fields it fills in).
fn health_of(fields: &Fields) -> Result<HealthCheckInput, AppError> {
    Ok(HealthCheckInput {
        path: fields.opt("path").map(|p| p.trim().to_string()),
        interval_s: number(fields, "interval_s")?,
        ..HealthCheckInput::default()
    })
}

/// `POST /pools`: creates a pool.
pub async fn create(
    State(app): State<AppState>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let protocol = if fields.get("protocol") == "tcp" {
        PoolProtocol::Tcp
    } else {
        PoolProtocol::Http
    };
    let made = async {
        let health = if protocol == PoolProtocol::Http {
            Some(health_of(&fields)?)
        } else {
            None
        };
        let req = CreatePool {
            name: fields.get("name").trim().to_string(),
            protocol,
            listen: None,
            algorithm: None,
            health_check: health,
            drain_timeout_s: number(&fields, "drain_timeout_s")?,
            sticky_cookie: None,
            proxy_protocol: None,
            tenant_id: None,
        };
        service::create(&app, &user.principal, req).await
    }
    .await;
    match made {
        Ok(p) => Ok(with_note(
            Redirect::to(&format!("/pools/{}", p.id)).into_response(),
            note(&p),
        )),
        Err(e @ AppError::Internal(_)) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            list_page(&app, &user, fields, FieldErrors::from_error(&e), status).await
        }
    }
}

fn note(p: &PoolView) -> AuditNote {
    AuditNote {
        target: Some(p.id.clone()),
        tenant_id: Some(p.tenant_id.clone()),
        actor: None,
    }
}

/// A VM port that may join a pool: `vm_id:port` and its label.
pub struct Candidate {
    pub value: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "pool.html")]
struct PoolPage {
    nav: Nav,
    row: PoolRow,
    candidates: Vec<Candidate>,
    message: Option<String>,
    notice: Option<&'static str>,
    group: Option<super::scale_groups::GroupPart>,
    form: super::scale_groups::GroupForm,
}

impl PoolPage {
    fn algorithm_is(&self, a: &str) -> bool {
        self.row.pool.algorithm.as_str() == a
    }
}

/// A pool's page, with a message (what to fix) or a notice (what happened).
pub(super) async fn pool_page(
    app: &AppState,
    user: &SessionUser,
    id: &str,
    message: Option<String>,
    notice: Option<&'static str>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let pool = service::get(app, &user.principal, id).await?;
    let vms = crate::provision::vms::list(&app.prov, &user.principal, &PageRequest::FIRST_MAX)
        .await?
        .items;
    let candidates = vms
        .iter()
        .filter(|v| v.tenant_id == pool.tenant_id && !pool.members.iter().any(|m| m.vm_id == v.id))
        .flat_map(|v| {
            v.forwards.iter().map(move |f| Candidate {
                value: format!("{}:{}", v.id, f.guest_port),
                label: format!("{} port {}", v.name, f.guest_port),
            })
        })
        .collect();
    let group = super::scale_groups::part(app, user, id).await?;
    let form = super::scale_groups::form(app, &user.principal, group.as_ref()).await?;
    Ok(page(
        status,
        &PoolPage {
            nav: Nav::of(user, "/pools").at(format!("/pools/{id}")),
            row: row(pool),
            candidates,
            message,
            notice,
            group,
            form,
        },
    ))
}

/// `GET /pools/{id}`.
pub async fn show(
    State(app): State<AppState>,
    Panel(user): Panel,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    pool_page(&app, &user, &id, None, None, StatusCode::OK).await
}

/// Shows the pool again after a change, with its outcome (or what to fix).
async fn after(
    app: &AppState,
    user: &SessionUser,
    id: &str,
    result: Result<PoolView, AppError>,
    done: &'static str,
) -> Result<Response, WebError> {
    match result {
        Ok(p) => {
            let r = pool_page(app, user, id, None, Some(done), StatusCode::OK).await?;
            Ok(with_note(r, note(&p)))
        }
        Err(e @ (AppError::NotFound { .. } | AppError::Internal(_))) => Err(WebError(e)),
        Err(e) => {
            let status = e.status();
            pool_page(app, user, id, Some(describe(&e).1), None, status).await
        }
    }
}

/// `POST /pools/{id}/members`: attaches a VM port.
pub async fn attach(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let choice = fields.get("member");
    let result = match choice.rsplit_once(':') {
        Some((vm_id, port)) => match port.parse::<u16>() {
            Ok(port) => {
                let req = AddMember {
                    vm_id: vm_id.to_string(),
                    port,
                    weight: None,
                };
                members::attach(&app, &user.principal, &id, req).await
            }
            Err(_) => Err(AppError::invalid("member", "choose a VM and port")),
        },
        None => Err(AppError::invalid("member", "choose a VM and port")),
    };
    after(
        &app,
        &user,
        &id,
        result,
        "The VM was attached; it takes traffic once its health check passes.",
    )
    .await
}

/// `POST /pools/{id}/members/{vm_id}/detach`: drains a member out.
pub async fn detach(
    State(app): State<AppState>,
    Path((id, vm_id)): Path<(String, String)>,
    Posted { user, .. }: Posted,
) -> Result<Response, WebError> {
    let result = members::detach(&app, &user.principal, &id, &vm_id).await;
    after(
        &app,
        &user,
        &id,
        result,
        "The VM gets no new work; it leaves once its open requests finish.",
    )
    .await
}

/// `POST /pools/{id}/settings`: changes the algorithm, health check and drain timeout.
pub async fn settings(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let result = async {
        let current = service::get(&app, &user.principal, &id).await?;
        let algorithm = match fields.get("algorithm") {
            "least_connections" => PoolAlgorithm::LeastConnections,
            _ => PoolAlgorithm::RoundRobin,
        };
        // The form shows path and interval; the rest of the check stays as it is.
        let now = &current.health_check;
        let asked = health_of(&fields)?;
        let check = HealthCheckInput {
            kind: Some(now.kind),
            path: if now.kind == crate::domain::pool::CheckKind::Http {
                asked.path.or_else(|| now.path.clone())
            } else {
                None
            },
            expect_status: now.expect_status,
            interval_s: asked.interval_s.or(Some(now.interval_s)),
            timeout_s: Some(now.timeout_s),
            rise: Some(now.rise),
            fall: Some(now.fall),
        };
        let req = UpdatePool {
            algorithm: Some(algorithm),
            health_check: Some(check),
            drain_timeout_s: number(&fields, "drain_timeout_s")?,
            ..UpdatePool::default()
        };
        service::update(&app, &user.principal, &id, req).await
    }
    .await;
    after(
        &app,
        &user,
        &id,
        result,
        "The settings apply now; open connections go on.",
    )
    .await
}

/// `POST /pools/{id}/delete`: deletes the pool after its name is typed.
pub async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Result<Response, WebError> {
    let pool = service::get(&app, &user.principal, &id).await?;
    if fields.get("confirm").trim() != pool.name {
        let message = format!(
            "Nothing was deleted: type the pool's name, {}, to confirm.",
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
    service::delete(&app, &user.principal, &id).await?;
    Ok(with_note(
        Redirect::to("/pools").into_response(),
        note(&pool),
    ))
}
