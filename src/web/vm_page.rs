//! A VM's page: live state and operations, power and resize forms, the serial console, the
//! usage chart, its pools, and a console ticket for the browser terminal.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::errors::{WebError, describe};
use super::form::{Panel, Posted};
use super::layout::{Nav, page, when};
use crate::app::AppState;
use crate::db::operations::OperationFilter;
use crate::db::page::PageRequest;
use crate::provision::catalog::{self, ImageView, PlanView};
use crate::provision::stats;
use crate::provision::vms::{self as service, OperationView, VmView};

use super::vm_live::Chart;

#[derive(Template)]
#[template(path = "vm.html")]
struct VmPage {
    nav: Nav,
    vm: VmView,
    plan_name: String,
    plans: Vec<PlanView>,
    ops: Vec<OperationView>,
    console: String,
    console_end: u64,
    chart: Chart,
    /// The pools the VM is in.
    pools: Vec<crate::pools::members::Membership>,
    /// Images it can be reinstalled with.
    images: Vec<ImageView>,
    message: Option<String>,
}

impl VmPage {
    fn created(&self) -> String {
        when(&self.vm.created_at)
    }
    fn running(&self) -> bool {
        self.vm.state.as_str() == "running"
    }
    fn stopped_like(&self) -> bool {
        matches!(
            self.vm.state.as_str(),
            "stopped" | "crashed" | "paused" | "missing"
        )
    }
}

/// The VM's page, with `message` (an error of the last form) at the top.
pub(super) async fn vm_page(
    app: &AppState,
    user: &super::session::SessionUser,
    id: &str,
    message: Option<String>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let actor = &user.principal;
    let vm = service::get(&app.prov, actor, id).await?;
    let ops = service::operations(
        &app.prov,
        actor,
        &OperationFilter {
            target_id: Some(&vm.id),
            ..Default::default()
        },
        &PageRequest {
            limit: 5,
            after: None,
        },
    )
    .await?
    .items;
    let plans = catalog::list_plans(&app.db, &PageRequest::FIRST_MAX)
        .await?
        .items;
    let plan_name = plans
        .iter()
        .find(|p| p.id == vm.plan)
        .map_or(vm.plan.clone(), |p| p.name.clone());
    let console = service::console_since(&app.prov, actor, id, None, 64 * 1024).await?;
    let stats = stats::of_vm(&app.prov, actor, id).await?;
    let pools = crate::pools::members::of_vm(app, actor, &vm.id).await?;
    let images = catalog::usable_images(&app.db, actor).await?;
    let mut response = page(
        status,
        &VmPage {
            nav: Nav::of(user, "").at(format!("/vms/{id}")),
            plan_name,
            plans,
            ops,
            console: console.text,
            console_end: console.end,
            chart: Chart::of(&stats),
            pools,
            images,
            vm,
            message,
        },
    );
    // xterm.js's renderer sets its colours and cell sizes in <style> elements it makes.
    response.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(super::layout::CSP_WITH_TERMINAL),
    );
    Ok(response)
}

/// `POST /vms/{id}/console/ticket`: a one-time console ticket for the VM page's script, as
/// JSON (`url` to open as a WebSocket; errors as a problem's `detail`).
pub async fn console_ticket(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { user, fields }: Posted,
) -> Response {
    let write = fields.get("mode") != "read";
    match app
        .consoles
        .mint(&app.prov, &user.principal, &id, write)
        .await
    {
        Ok(m) => axum::Json(serde_json::json!({
            "url": format!("/api/v1/vms/{}/console/ws?ticket={}", m.vm_id, m.ticket),
            "expires_at": m.expires_at,
        }))
        .into_response(),
        Err(e) => (
            e.status(),
            axum::Json(serde_json::json!({"detail": describe(&e).1})),
        )
            .into_response(),
    }
}

/// `GET /vms/{id}`.
pub async fn show(
    State(app): State<AppState>,
    Panel(user): Panel,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    vm_page(&app, &user, &id, None, StatusCode::OK).await
}
