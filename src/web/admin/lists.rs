//! Every VM, operation and audit entry across tenants, with filters and paging.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::app::AppState;
use crate::db::audit::AuditFilter;
use crate::db::operations::OperationFilter;
use crate::db::page::PageRequest;
use crate::db::vms::VmFilter;
use crate::domain::ids::TenantId;
use crate::domain::operation::{OpKind, OpState};
use crate::domain::outcome::Outcome;
use crate::error::AppError;
use crate::provision::host::{self, HostView};
use crate::provision::vms::{self, OperationView, VmView};
use crate::tenancy::accounts::{self, TenantView};
use crate::tenancy::audit::{self, AuditView};
use crate::web::errors::WebError;
use crate::web::form::Panel;
use crate::web::layout::{Nav, page, when};

/// Filters and the page of an admin list; empty fields match everything.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    tenant: Option<String>,
    state: Option<String>,
    host: Option<String>,
    name: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    kind: Option<String>,
    cursor: Option<String>,
}

/// A filter value, if given (at most 200 characters are used).
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(200).collect())
}

/// A filter value that must be one of `names`, parsed; an unknown one is refused naming them.
fn one_of<T>(
    field: &'static str,
    value: Option<String>,
    names: &[&str],
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, AppError> {
    value
        .map(|v| {
            parse(&v).ok_or_else(|| {
                AppError::invalid(
                    field,
                    format!(
                        "there is no {field} \"{v}\": pick one of {}",
                        names.join(", ")
                    ),
                )
            })
        })
        .transpose()
}

impl ListQuery {
    /// The page asked for.
    fn page(&self) -> Result<PageRequest, AppError> {
        PageRequest::parse(Some(100), self.cursor.as_deref())
            .map_err(|(f, why)| AppError::invalid(f, why.to_string()))
    }

    /// The query string of the next page: these filters and `cursor`.
    fn next_link(&self, cursor: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("tenant", &self.tenant),
            ("state", &self.state),
            ("host", &self.host),
            ("name", &self.name),
            ("actor", &self.actor),
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("kind", &self.kind),
        ] {
            if let Some(v) = given(v) {
                q.append_pair(k, &v);
            }
        }
        q.append_pair("cursor", cursor);
        format!("?{}", q.finish())
    }

    /// A filter's value for the form.
    fn value(&self, name: &str) -> String {
        let v = match name {
            "tenant" => &self.tenant,
            "state" => &self.state,
            "host" => &self.host,
            "name" => &self.name,
            "actor" => &self.actor,
            "action" => &self.action,
            "outcome" => &self.outcome,
            _ => &self.kind,
        };
        given(v).unwrap_or_default()
    }
}

#[derive(Template)]
#[template(path = "admin_vms.html")]
struct VmsPage {
    nav: Nav,
    vms: Vec<VmView>,
    tenants: Vec<TenantView>,
    hosts: Vec<HostView>,
    q: ListQuery,
    next: Option<String>,
    states: &'static [&'static str],
}

impl VmsPage {
    fn tenant_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.tenants
            .iter()
            .find(|t| t.id == id)
            .map_or(id, |t| t.name.as_str())
    }
}

/// `GET /admin/vms`: every VM, filtered by tenant, state, host and name.
pub async fn vms(
    State(app): State<AppState>,
    Panel(user): Panel,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    actor.require_admin()?;
    let filter = VmFilter {
        tenant: given(&q.tenant),
        state: given(&q.state),
        host: given(&q.host),
        name: given(&q.name),
    };
    let found = vms::search(&app.prov, actor, &filter, &q.page()?).await?;
    let tenants = accounts::list_tenants(&app.db, actor, &PageRequest::FIRST_MAX)
        .await?
        .items;
    let hosts = host::list(&app.prov, actor, &PageRequest::FIRST_MAX)
        .await?
        .items;
    Ok(page(
        StatusCode::OK,
        &VmsPage {
            hosts,
            nav: Nav::of(&user, "/admin"),
            next: found.next.as_deref().map(|c| q.next_link(c)),
            vms: found.items,
            tenants,
            q,
            states: &[
                "creating",
                "starting",
                "running",
                "stopping",
                "stopped",
                "rebooting",
                "resizing",
                "deleting",
                "paused",
                "crashed",
                "missing",
            ],
        },
    ))
}

#[derive(Template)]
#[template(path = "admin_operations.html")]
struct OperationsPage {
    nav: Nav,
    ops: Vec<OperationView>,
    tenants: Vec<TenantView>,
    states: [OpState; 4],
    kinds: [OpKind; 11],
    q: ListQuery,
    next: Option<String>,
}

impl OperationsPage {
    fn at(&self, op: &OperationView) -> String {
        when(&op.created_at)
    }
}

/// `GET /admin/operations`: every operation, filtered by tenant, state and kind.
pub async fn operations(
    State(app): State<AppState>,
    Panel(user): Panel,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    actor.require_admin()?;
    let state = one_of(
        "state",
        given(&q.state),
        &OpState::ALL.map(OpState::as_str),
        OpState::parse,
    )?;
    let kind = one_of(
        "kind",
        given(&q.kind),
        &OpKind::ALL.map(OpKind::as_str),
        OpKind::parse,
    )?;
    let tenant = given(&q.tenant)
        .map(|t| TenantId::parse(&t).ok_or_else(|| AppError::not_found("tenant", &t)))
        .transpose()?;
    let filter = OperationFilter {
        target_id: None,
        state,
        kind,
        tenant: tenant.as_ref(),
    };
    let found = vms::operations(&app.prov, actor, &filter, &q.page()?).await?;
    let tenants = accounts::list_tenants(&app.db, actor, &PageRequest::FIRST_MAX)
        .await?
        .items;
    Ok(page(
        StatusCode::OK,
        &OperationsPage {
            nav: Nav::of(&user, "/admin"),
            next: found.next.as_deref().map(|c| q.next_link(c)),
            ops: found.items,
            tenants,
            states: OpState::ALL,
            kinds: OpKind::ALL,
            q,
        },
    ))
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    nav: Nav,
    entries: Vec<AuditView>,
    outcomes: [Outcome; 3],
    q: ListQuery,
    next: Option<String>,
}

impl AuditPage {
    fn at(&self, e: &AuditView) -> String {
        when(&e.at)
    }
}

/// `GET /admin/audit`: the whole audit log, filtered by actor, action, tenant and outcome.
pub async fn audit(
    State(app): State<AppState>,
    Panel(user): Panel,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    actor.require_admin()?;
    let filter = AuditFilter {
        actor: given(&q.actor),
        action: given(&q.action),
        tenant: given(&q.tenant),
        outcome: one_of(
            "outcome",
            given(&q.outcome),
            &Outcome::ALL.map(Outcome::as_str),
            Outcome::parse,
        )?,
        ..Default::default()
    };
    let found = audit::search(&app.db, actor, &filter, &q.page()?).await?;
    Ok(page(
        StatusCode::OK,
        &AuditPage {
            nav: Nav::of(&user, "/admin"),
            next: found.next.as_deref().map(|c| q.next_link(c)),
            entries: found.items,
            outcomes: Outcome::ALL,
            q,
        },
    ))
}
