//! The dashboard: the VMs the user may see with their forwards, operations in progress, and
//! the tenant's usage against every quota, each region live.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::errors::WebError;
use super::form::Panel;
use super::layout::{Nav, grouped, human_bytes, ok};
use crate::app::AppState;

use crate::auth::Principal;
use crate::db::Scope;
use crate::db::operations::OperationFilter;
use crate::db::page::PageRequest;
use crate::db::quotas::{Quota, Usage};
use crate::provision::vms::{self, OperationView, VmView};
use crate::web::vms::{PlanNames, plan_names};

/// One quota as a labelled meter.
pub struct Meter {
    pub id: &'static str,
    pub label: &'static str,
    pub used: i64,
    pub max: i64,
    pub text: String,
}

/// Meters for every quota.
pub fn meters(usage: &Usage, quota: &Quota) -> Vec<Meter> {
    let count = |id, label, used: i64, max: i64, unit: &str| Meter {
        id,
        label,
        used,
        max,
        text: format!("{}{unit} of {}{unit}", grouped(used), grouped(max)),
    };
    let bytes = |id, label, used: i64, max: i64, mult: i64| Meter {
        id,
        label,
        used,
        max,
        text: format!(
            "{} of {}",
            human_bytes(used.saturating_mul(mult)),
            human_bytes(max.saturating_mul(mult))
        ),
    };
    vec![
        count("vms", "VMs", usage.vms, quota.max_vms, ""),
        count("vcpus", "vCPUs", usage.vcpus, quota.max_vcpus, ""),
        bytes(
            "memory",
            "Memory",
            usage.memory_mib,
            quota.max_memory_mib,
            1 << 20,
        ),
        bytes("disk", "Disk", usage.disk_gib, quota.max_disk_gib, 1 << 30),
        bytes(
            "sftp-bytes",
            "SFTP storage",
            usage.sftp_bytes,
            quota.max_sftp_bytes,
            1,
        ),
        count(
            "sftp-files",
            "SFTP files",
            usage.sftp_files,
            quota.max_sftp_files,
            "",
        ),
    ]
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    nav: Nav,
    /// The rendered content (cached per scope and view version).
    main: Arc<str>,
}

#[derive(Template)]
#[template(path = "dashboard_main.html")]
struct DashboardMain {
    vms: Vec<VmView>,
    more_vms: bool,
    plans: PlanNames,
    ops: Vec<OperationView>,
    meters: Vec<Meter>,
}

/// The VMs, operations in progress and usage of the signed-in user. The content is served
/// from a cache while the user's view version (read with the session) is unchanged.
pub async fn show(State(app): State<AppState>, Panel(user): Panel) -> Result<Response, WebError> {
    let actor = &user.principal;
    // Admins see every VM, and their own tenant's usage (if they have one).
    let key = match (actor.scope(), &actor.tenant_id) {
        (Scope::All, Some(own)) => format!("*|{own}"),
        (Scope::All, None) => "*".to_string(),
        (Scope::Tenant(t), _) => t.to_string(),
    };
    let cached = actor
        .view_version
        .and_then(|v| app.dashboard_cache.get(&key, v));
    let main = match cached {
        Some(main) => main,
        None => {
            let main: Arc<str> = render_main(&app, actor).await?.into();
            if let Some(v) = actor.view_version {
                app.dashboard_cache.put(key, v, main.clone());
            }
            main
        }
    };
    Ok(ok(&Dashboard {
        nav: Nav::of(&user, "/"),
        main,
    }))
}

/// The dashboard's content for `actor`.
async fn render_main(app: &AppState, actor: &Principal) -> Result<String, WebError> {
    let page = PageRequest::FIRST_MAX;
    let vms = vms::list(&app.prov, actor, &page).await?;
    let ops = in_progress(app, actor).await?;
    let meters = match &actor.tenant_id {
        Some(_) => {
            let u = crate::tenancy::accounts::my_usage(app, actor).await?;
            meters(&u.usage, &u.quota)
        }
        None => Vec::new(),
    };
    let main = DashboardMain {
        more_vms: vms.next.is_some(),
        vms: vms.items,
        plans: plan_names(app).await?,
        ops,
        meters,
    };
    main.render().map_err(|e| {
        WebError(crate::error::AppError::Internal(
            anyhow::Error::new(e).context("rendering the dashboard"),
        ))
    })
}

/// The newest operations still pending or running.
pub async fn in_progress(
    app: &AppState,
    actor: &Principal,
) -> Result<Vec<OperationView>, WebError> {
    let recent = vms::operations(
        &app.prov,
        actor,
        &OperationFilter::default(),
        &PageRequest {
            limit: 50,
            after: None,
        },
    )
    .await?;
    Ok(recent
        .items
        .into_iter()
        .filter(|o| o.state.in_progress())
        .collect())
}
