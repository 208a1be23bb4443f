//! Evacuating a host in maintenance (admins): every VM on it gets a move operation to another
//! active host with room, chosen and reserved in the same write transaction as the operation
//! (so concurrent moves and creates cannot oversell a target). A VM that has nowhere to go,
//! or is busy, is listed with the reason and stays.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::vms::{HostWants, OperationView, place};
use super::worker::MoveParams;
use super::{OpKind, Provisioner, VmState};
use crate::auth::Principal;
use crate::db::{self, vms::VmRow};
use crate::domain::host::HostState;
use crate::domain::ids::HostId;
use crate::error::AppError;

/// What an evacuation started.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Evacuation {
    /// One move operation per VM that goes.
    pub moves: Vec<OperationView>,
    /// VMs that stay, and why.
    pub refused: Vec<Refusal>,
}

/// A VM an evacuation could not move.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Refusal {
    pub vm_id: String,
    pub name: String,
    pub reason: String,
}

/// Starts moving every VM off a host in maintenance.
pub async fn evacuate(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
) -> Result<Evacuation, AppError> {
    actor.require_admin()?;
    let host_id = HostId::parse(id).ok_or_else(|| AppError::not_found("host", id))?;
    let host = db::hosts::get(&p.db, &host_id)
        .await?
        .ok_or_else(|| AppError::not_found("host", id))?;
    if host.state != HostState::Maintenance {
        return Err(AppError::Conflict(format!(
            "host {} is {}: put it in maintenance first (PATCH /api/v1/hosts/{id} with {{\"state\": \"maintenance\"}}), so no new VM lands on it while it empties",
            host.name, host.state
        )));
    }
    let mut out = Evacuation {
        moves: Vec::new(),
        refused: Vec::new(),
    };
    for vm in db::vms::list_on_host(&p.db, &host_id).await? {
        if vm.moving_to.is_some() {
            continue;
        }
        match start_move(p, &vm).await {
            Ok(op) => out.moves.push(op),
            Err(e) => out.refused.push(Refusal {
                vm_id: vm.id.to_string(),
                name: vm.name.clone(),
                reason: e.to_string(),
            }),
        }
    }
    tracing::info!(host = %host.name, moves = out.moves.len(), refused = out.refused.len(), "evacuation started");
    Ok(out)
}

/// Picks and reserves a target for one VM and records its move operation.
async fn start_move(p: &Arc<Provisioner>, vm: &VmRow) -> Result<OperationView, AppError> {
    let was_running = match vm.state {
        VmState::Running => true,
        VmState::Stopped | VmState::Crashed | VmState::Paused => false,
        other => {
            return Err(AppError::Conflict(format!(
                "it is {}; move it once it is running or stopped",
                other.as_str()
            )));
        }
    };
    let mut tx = db::begin_write(&p.db).await?;
    // Under the write lock: the host is still in maintenance (an admin may have made it
    // active meanwhile), so it cannot be picked as its own target.
    if db::hosts::state_of(&mut tx, &vm.host_id).await? != Some(HostState::Maintenance) {
        return Err(AppError::Conflict(
            "its host left maintenance meanwhile; evacuate again once it is in maintenance".into(),
        ));
    }
    let target = place(
        &mut tx,
        vm.resources(),
        HostWants {
            exclude: Some(&vm.host_id),
            ..HostWants::default()
        },
        p.settings.placement,
    )
    .await?;
    let params = serde_json::to_value(MoveParams {
        from: vm.host_id.to_string(),
        to: target.id.to_string(),
        was_running,
    })
    .map_err(anyhow::Error::from)?;
    let op = db::operations::insert(
        &mut tx,
        &vm.tenant_id,
        OpKind::Move,
        "vm",
        vm.id.as_str(),
        &params,
    )
    .await
    .map_err(|e| {
        if db::is_unique_violation(&e) {
            AppError::Conflict(
                "it is busy with another operation; evacuate again when it ends".into(),
            )
        } else {
            e.into()
        }
    })?;
    db::vms::set_moving_to(&mut tx, &vm.id, Some(&target.id)).await?;
    db::vms::set_state(&mut tx, &vm.id, VmState::Moving).await?;
    tx.commit().await?;
    tracing::info!(vm = %vm.id, op = %op.id, to = %target.name, "move admitted");
    p.spawn_operation(op.id.clone(), None);
    Ok(OperationView::from(&op))
}
