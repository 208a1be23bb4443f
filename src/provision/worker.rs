//! Carries out operations. Every step is idempotent, so an operation interrupted by a crash is
//! finished by running it again (the reconciler does). A create that fails is rolled back:
//! nothing of the VM stays in libvirt, on disk or in the port reservations.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use super::fleet::Host;
use super::vms::ResizeParams;
use super::{OpKind, OpState, Provisioner, VmState};
use crate::db::images::ImageRow;
use crate::db::operations::{OperationRow, Step};
use crate::db::vms::VmRow;
use crate::db::{self, Scope};
use crate::domain::ids::OperationId;
use crate::domain::operation::StepState;
use crate::hypervisor::PowerState;
use crate::hypervisor::storage::Seed;
use crate::hypervisor::xml::{self, Boot, DomainSpec, DomainType, Network, PortForward};

mod moves;
mod rebuild;
mod steps;

pub use moves::MoveParams;
use moves::relocate;
use rebuild::{reinstall, reset_password, resize};
pub use steps::purge;
use steps::{create, delete, reboot, start, stop};

/// How often state is polled while waiting for the guest.
const POLL: Duration = Duration::from_millis(100);
/// How often an ACPI shutdown is repeated while waiting (a guest may miss an early one).
const SHUTDOWN_REPEAT: Duration = Duration::from_secs(5);

/// Claims the operation (unless another process has it) and carries it out to the end.
pub async fn run(p: Arc<Provisioner>, id: OperationId, previous_owner: Option<String>) {
    match db::operations::claim(&p.db, &id, &p.owner.id, previous_owner.as_deref()).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(op = %id, error = %e, "cannot claim operation; the reconciler will retry");
            return;
        }
    }
    let op = match db::operations::get(&p.db, &Scope::All, &id).await {
        Ok(Some(op)) => op,
        other => {
            tracing::error!(op = %id, result = ?other.map(|o| o.is_some()), "claimed operation cannot be read");
            return;
        }
    };
    if previous_owner.is_some() {
        tracing::warn!(op = %id, kind = %op.kind, target = %op.target_id, "resuming an operation its process left unfinished");
    }
    let heartbeat = tokio::spawn(keep_lease(p.clone(), id.clone()));
    let mut progress = Progress {
        p: p.clone(),
        id: id.clone(),
        steps: op.steps(),
    };
    let started = Instant::now();
    let result = execute(&p, &op, &mut progress).await;
    heartbeat.abort();
    let outcome = match &result {
        Ok(()) => OpState::Succeeded,
        Err(_) => OpState::Failed,
    };
    let error = result.as_ref().err().map(|e| format!("{e:#}"));
    if let Err(e) = finish(&p, &id, outcome, error.as_deref()).await {
        tracing::error!(op = %id, error = %e, "cannot record the end of an operation");
    }
    match &error {
        None => {
            tracing::info!(op = %id, kind = %op.kind, target = %op.target_id, ms = started.elapsed().as_millis() as u64, "operation succeeded")
        }
        Some(e) => {
            tracing::warn!(op = %id, kind = %op.kind, target = %op.target_id, error = %e, "operation failed")
        }
    }
}

/// Records the end of an operation.
async fn finish(
    p: &Provisioner,
    id: &OperationId,
    outcome: OpState,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut conn = p.db.acquire().await?;
    db::operations::finish(&mut conn, id, outcome, error).await
}

/// Renews the operation's lease until aborted.
async fn keep_lease(p: Arc<Provisioner>, id: OperationId) {
    let every = p.settings.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match db::operations::heartbeat(&p.db, &id, &p.owner.id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(op = %id, "operation lease lost to another process");
                return;
            }
            Err(e) => tracing::warn!(op = %id, error = %e, "operation heartbeat failed"),
        }
    }
}

/// Progress steps, saved as they start and end.
struct Progress {
    p: Arc<Provisioner>,
    id: OperationId,
    steps: Vec<Step>,
}

impl Progress {
    /// Runs one named step, recording it; a failure names the step.
    async fn step<T>(
        &mut self,
        name: &str,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.steps.push(Step {
            name: name.into(),
            state: StepState::Running,
            started_at: db::now(),
            finished_at: None,
        });
        self.save().await;
        let result = work.await;
        if let Some(step) = self.steps.last_mut() {
            step.state = if result.is_ok() {
                StepState::Done
            } else {
                StepState::Failed
            };
            step.finished_at = Some(db::now());
        }
        self.save().await;
        result.with_context(|| format!("step \"{name}\" failed"))
    }

    async fn save(&self) {
        if let Err(e) = db::operations::set_steps(&self.p.db, &self.id, &self.steps).await {
            tracing::warn!(op = %self.id, error = %e, "cannot save operation progress");
        }
    }
}

/// Dispatches on the operation's kind.
async fn execute(
    p: &Arc<Provisioner>,
    op: &OperationRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let kind = op.kind;
    let vm_id = crate::domain::ids::VmId::parse(&op.target_id)
        .ok_or_else(|| anyhow!("operation target {:?} is not a VM", op.target_id))?;
    let vm = db::vms::get_any(&p.db, &vm_id)
        .await?
        .ok_or_else(|| anyhow!("VM {vm_id} does not exist"))?;
    if vm.deleted_at.is_some() {
        // A delete resumed after its process died past the last step has nothing left to do.
        if kind == OpKind::Delete {
            return Ok(());
        }
        anyhow::bail!("VM {vm_id} was deleted before this operation could run");
    }
    let result = match kind {
        OpKind::Create => create(p, &vm, &op.id, progress).await,
        OpKind::Start => start(p, &vm, progress).await,
        OpKind::Stop => stop(p, &vm, progress, false).await,
        OpKind::ForceStop => stop(p, &vm, progress, true).await,
        OpKind::Reboot => reboot(p, &vm, progress).await,
        OpKind::Resize => resize(p, &vm, op, progress).await,
        OpKind::Delete => return delete(p, &vm, progress).await,
        OpKind::ResetPassword => reset_password(p, &vm, op, progress).await,
        OpKind::Reinstall => reinstall(p, &vm, op, progress).await,
        OpKind::Move => relocate(p, &vm, op, progress).await,
        OpKind::Refresh => anyhow::bail!("a refresh is driven by its scale group, not a worker"),
    };
    if kind != OpKind::Create || result.is_ok() {
        // Whatever happened, the VM's state is what libvirt now reports.
        settle_state(p, &vm).await;
    }
    result
}

/// Sets the VM's state from libvirt's report.
async fn settle_state(p: &Provisioner, vm: &VmRow) {
    // As recorded now: a move changes the VM's host.
    let vm = match db::vms::get_any(&p.db, &vm.id).await {
        Ok(Some(now)) => now,
        _ => vm.clone(),
    };
    let vm = &vm;
    let name = vm.domain_name.clone();
    let hv = match p.hv_of(&vm.host_id).await {
        Ok(hv) => hv,
        Err(e) => {
            tracing::warn!(vm = %vm.id, error = %format!("{e:#}"), "cannot reach the VM's host; its state is unknown");
            let _ = db::vms::set_state(&p.db, &vm.id, VmState::Unknown).await;
            return;
        }
    };
    let state = match hv.call(move |h| h.state(&name)).await {
        Ok(s) => observed(s),
        Err(e) => {
            tracing::warn!(vm = %vm.id, error = %e, "cannot read the VM's state");
            return;
        }
    };
    if let Err(e) = db::vms::set_state(&p.db, &vm.id, state).await {
        tracing::warn!(vm = %vm.id, error = %e, "cannot record the VM's state");
    }
}

/// carve's state for a libvirt power state (None: the domain does not exist).
pub fn observed(state: Option<PowerState>) -> VmState {
    match state {
        Some(PowerState::Running | PowerState::ShuttingDown | PowerState::Unknown) => {
            VmState::Running
        }
        Some(PowerState::Paused | PowerState::Suspended) => VmState::Paused,
        Some(PowerState::Shutoff) => VmState::Stopped,
        Some(PowerState::Crashed) => VmState::Crashed,
        None => VmState::Missing,
    }
}
