//! The dashboard: the VMs the user may see with their forwards, operations in progress, and
//! the tenant's usage against every quota, each region live.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::errors::WebError;
use super::form::Panel;
use super::layout::{Nav, human_bytes, ok};
use crate::app::AppState;
use crate::auth::Principal;
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
        text: format!("{used}{unit} of {max}{unit}"),
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
    vms: Vec<VmView>,
    more_vms: bool,
    plans: PlanNames,
    ops: Vec<OperationView>,
    meters: Vec<Meter>,
}

/// The VMs, operations in progress and usage of the signed-in user.
pub async fn show(State(app): State<AppState>, Panel(user): Panel) -> Result<Response, WebError> {
    let actor = &user.principal;
    let page = PageRequest {
        limit: 500,
        after: None,
    };
    let vms = vms::list(&app.prov, actor, &page).await?;
    let ops = in_progress(&app, actor).await?;
    let meters = match &actor.tenant_id {
        Some(_) => {
            let u = crate::tenancy::accounts::my_usage(&app, actor).await?;
            meters(&u.usage, &u.quota)
        }
        None => Vec::new(),
    };
    Ok(ok(&Dashboard {
        nav: Nav::of(&user, "/"),
        more_vms: vms.next.is_some(),
        vms: vms.items,
        plans: plan_names(&app).await?,
        ops,
        meters,
    }))
}

/// The newest operations still pending or running.
pub async fn in_progress(
    app: &AppState,
    actor: &Principal,
) -> Result<Vec<OperationView>, WebError> {
    let recent = vms::operations(
        &app.prov,
        actor,
        None,
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
