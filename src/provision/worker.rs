//! Carries out operations. Every step is idempotent, so an operation interrupted by a crash is
//! finished by running it again (the reconciler does). A create that fails is rolled back:
//! nothing of the VM stays in libvirt, on disk or in the port reservations.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use super::vms::ResizeParams;
use super::{OpKind, OpState, Provisioner, VmState};
use crate::db::images::ImageRow;
use crate::db::operations::{OperationRow, Step};
use crate::db::vms::VmRow;
use crate::db::{self, Scope};
use crate::domain::ids::OperationId;
use crate::hypervisor::PowerState;
use crate::hypervisor::storage::{self, Seed, VmFiles};
use crate::hypervisor::xml::{self, Boot, DomainSpec, DomainType, Network, PortForward};

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
            state: "running".into(),
            started_at: db::now(),
            finished_at: None,
        });
        self.save().await;
        let result = work.await;
        if let Some(step) = self.steps.last_mut() {
            step.state = if result.is_ok() { "done" } else { "failed" }.into();
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
        OpKind::Create => create(p, &vm, progress).await,
        OpKind::Start => start(p, &vm, progress).await,
        OpKind::Stop => stop(p, &vm, progress, false).await,
        OpKind::ForceStop => stop(p, &vm, progress, true).await,
        OpKind::Reboot => reboot(p, &vm, progress).await,
        OpKind::Resize => resize(p, &vm, op, progress).await,
        OpKind::Delete => return delete(p, &vm, progress).await,
    };
    if kind != OpKind::Create || result.is_ok() {
        // Whatever happened, the VM's state is what libvirt now reports.
        settle_state(p, &vm).await;
    }
    result
}

/// Sets the VM's state from libvirt's report.
async fn settle_state(p: &Provisioner, vm: &VmRow) {
    let name = vm.domain_name.clone();
    let state = match p.hv.call(move |h| h.state(&name)).await {
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

/// Creates a VM; on failure removes everything made for it and marks it deleted.
async fn create(p: &Arc<Provisioner>, vm: &VmRow, progress: &mut Progress) -> anyhow::Result<()> {
    let result = build_and_boot(p, vm, progress).await;
    if let Err(e) = result {
        let rollback = progress.step("roll back", purge(p, vm)).await;
        return Err(match rollback {
            Ok(()) => e.context("the VM could not be created; everything made for it was removed"),
            Err(r) => e.context(format!("the VM could not be created, and rolling back failed too ({r:#}); the reconciler will retry")),
        });
    }
    Ok(())
}

/// The steps of a create, each safe to repeat.
async fn build_and_boot(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let image = db::images::find(&p.db, vm.image_id.as_str())
        .await?
        .ok_or_else(|| anyhow!("image {} is gone", vm.image_id))?;
    let files = VmFiles::new(&p.settings.vm_root, &vm.id);
    progress
        .step("create disk", async {
            files.create_dir().await?;
            storage::create_overlay(image.disk_path.as_ref(), &files.disk, vm.disk_gib as u64)
                .await?;
            Ok(())
        })
        .await?;
    progress
        .step("write cloud-init seed", async {
            let keys = vm.ssh_keys();
            let seed = Seed {
                instance_id: vm.id.as_str(),
                hostname: &vm.name,
                ssh_keys: &keys,
                user_data: vm.user_data.as_deref(),
            };
            storage::write_seed(&files.seed, &seed).await?;
            Ok(())
        })
        .await?;
    define(p, vm, &image, progress).await?;
    boot(p, vm, progress).await
}

/// Defines (or redefines) the VM's domain from carve's records.
async fn define(
    p: &Provisioner,
    vm: &VmRow,
    image: &ImageRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let xml = domain_xml(p, vm, image).await?;
    progress
        .step("define domain", async {
            Ok(p.hv.call(move |h| h.define(&xml)).await?)
        })
        .await
}

/// The domain XML for a VM as recorded now.
async fn domain_xml(p: &Provisioner, vm: &VmRow, image: &ImageRow) -> anyhow::Result<String> {
    let host = db::hosts::get(&p.db, &vm.host_id)
        .await?
        .ok_or_else(|| anyhow!("host {} is not registered", vm.host_id))?;
    let domain_type = DomainType::parse(&host.domain_type).unwrap_or(DomainType::Qemu);
    let forwards: Vec<PortForward> = db::ports::for_vm(&p.db, &vm.id)
        .await?
        .iter()
        .map(|f| PortForward {
            host_port: f.host_port as u16,
            guest_port: f.guest_port as u16,
        })
        .collect();
    let files = VmFiles::new(&p.settings.vm_root, &vm.id);
    let boot = match (image.boot.as_str(), &image.kernel_path) {
        ("kernel", Some(kernel)) => Boot::Kernel {
            kernel: kernel.as_ref(),
            initrd: image.initrd_path.as_deref().map(AsRef::as_ref),
            cmdline: image.cmdline.as_deref().unwrap_or("console=ttyS0"),
        },
        _ => Boot::Disk,
    };
    let network = match p.settings.network.mode {
        crate::config::NetworkMode::User => Network::User {
            address: p.settings.network.forward_address,
            forwards: &forwards,
        },
        crate::config::NetworkMode::Bridge => Network::Bridge {
            bridge: &p.settings.network.bridge,
        },
    };
    Ok(xml::domain_xml(&DomainSpec {
        name: &vm.domain_name,
        uuid: &xml::domain_uuid(&vm.domain_name),
        title: &vm.name,
        vm_id: vm.id.as_str(),
        tenant_id: vm.tenant_id.as_str(),
        domain_type,
        machine: &p.settings.machine,
        vcpus: vm.vcpus as u32,
        memory_mib: vm.memory_mib as u64,
        boot,
        disk: Some(&files.disk),
        seed: Some(&files.seed),
        console_log: &files.console,
        network,
    }))
}

/// Starts the domain and waits until libvirt reports it running.
async fn boot(p: &Provisioner, vm: &VmRow, progress: &mut Progress) -> anyhow::Result<()> {
    let name = vm.domain_name.clone();
    progress
        .step("start domain", async {
            Ok(p.hv.call(move |h| h.start(&name)).await?)
        })
        .await?;
    progress
        .step(
            "wait until running",
            wait_for(p, vm, p.settings.start_timeout, |s| {
                s == Some(PowerState::Running)
            }),
        )
        .await
}

/// Polls the domain until `done` holds for its state, or fails after `timeout`.
async fn wait_for(
    p: &Provisioner,
    vm: &VmRow,
    timeout: Duration,
    done: impl Fn(Option<PowerState>) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let name = vm.domain_name.clone();
        let state = p.hv.call(move |h| h.state(&name)).await?;
        if done(state) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "gave up after {} s; libvirt reports {state:?}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Starts a VM, redefining its domain from carve's records first (so a domain lost from
/// libvirt comes back).
async fn start(p: &Arc<Provisioner>, vm: &VmRow, progress: &mut Progress) -> anyhow::Result<()> {
    let image = db::images::find(&p.db, vm.image_id.as_str())
        .await?
        .ok_or_else(|| anyhow!("image {} is gone", vm.image_id))?;
    define(p, vm, &image, progress).await?;
    boot(p, vm, progress).await
}

/// Stops a VM: ACPI shutdown (repeated) until `stop_timeout`, then power-off; or power-off at
/// once when `force`.
async fn stop(
    p: &Provisioner,
    vm: &VmRow,
    progress: &mut Progress,
    force: bool,
) -> anyhow::Result<()> {
    let name = vm.domain_name.clone();
    let state = p.hv.call(move |h| h.state(&name)).await?;
    if !state.is_some_and(PowerState::is_active) {
        return Ok(());
    }
    if !force {
        let graceful = progress
            .step("shut down (ACPI)", shutdown_and_wait(p, vm))
            .await;
        if graceful.is_ok() {
            return Ok(());
        }
        tracing::info!(vm = %vm.id, "guest did not shut down in time; powering it off");
    }
    let name = vm.domain_name.clone();
    progress
        .step("power off", async {
            Ok(p.hv.call(move |h| h.destroy(&name)).await?)
        })
        .await
}

/// Sends ACPI shutdowns until the guest is off or `stop_timeout` passes.
async fn shutdown_and_wait(p: &Provisioner, vm: &VmRow) -> anyhow::Result<()> {
    let deadline = Instant::now() + p.settings.stop_timeout;
    loop {
        let name = vm.domain_name.clone();
        match p.hv.call(move |h| h.shutdown(&name)).await {
            Ok(()) => {}
            // It went off between our check and the call.
            Err(_) if !is_active(p, vm).await? => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let round = (Instant::now() + SHUTDOWN_REPEAT).min(deadline);
        while Instant::now() < round {
            if !is_active(p, vm).await? {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the guest did not power off within {} s",
                p.settings.stop_timeout.as_secs()
            );
        }
    }
}

/// Whether the VM's domain is running (or paused).
async fn is_active(p: &Provisioner, vm: &VmRow) -> anyhow::Result<bool> {
    let name = vm.domain_name.clone();
    Ok(p.hv
        .call(move |h| h.state(&name))
        .await?
        .is_some_and(PowerState::is_active))
}

/// Reboots a VM through ACPI (reset if the guest cannot be asked), then waits until running.
async fn reboot(p: &Provisioner, vm: &VmRow, progress: &mut Progress) -> anyhow::Result<()> {
    let name = vm.domain_name.clone();
    progress
        .step("reboot", async {
            let n = name.clone();
            if let Err(e) = p.hv.call(move |h| h.reboot(&n)).await {
                tracing::info!(vm = %vm.id, error = %e, "ACPI reboot refused; resetting");
                p.hv.call(move |h| h.reset(&name)).await?;
            }
            Ok(())
        })
        .await?;
    progress
        .step(
            "wait until running",
            wait_for(p, vm, p.settings.start_timeout, |s| {
                s == Some(PowerState::Running)
            }),
        )
        .await
}

/// Resizes a VM to the size recorded at admission: stop if running, grow the disk, redefine,
/// start again. On failure the VM's recorded size goes back to what it really has.
async fn resize(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    op: &OperationRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let params: ResizeParams =
        serde_json::from_str(&op.params).context("resize parameters are unreadable")?;
    let was_running = params.was_running;
    let result = resize_steps(p, vm, &params, was_running, progress).await;
    if let Err(e) = result {
        let files = VmFiles::new(&p.settings.vm_root, &vm.id);
        let disk_gib = storage::virtual_size(&files.disk)
            .await
            .map(|b| b >> 30)
            .unwrap_or(params.from.disk_gib);
        let back = crate::domain::sizes::Resources {
            disk_gib: disk_gib.max(params.from.disk_gib),
            ..params.from
        };
        let mut conn = p.db.acquire().await?;
        db::vms::set_resources(&mut conn, &vm.id, &params.from_plan, back).await?;
        drop(conn);
        if let Some(current) = db::vms::get_any(&p.db, &vm.id).await? {
            let restored: anyhow::Result<()> = async {
                let image = db::images::find(&p.db, vm.image_id.as_str())
                    .await?
                    .ok_or_else(|| anyhow!("image gone"))?;
                define(p, &current, &image, progress).await?;
                if was_running {
                    boot(p, &current, progress).await?;
                }
                Ok(())
            }
            .await;
            if let Err(r) = restored {
                tracing::warn!(vm = %vm.id, error = %format!("{r:#}"), "could not restore the VM after a failed resize");
            }
        }
        return Err(e.context("the resize was undone"));
    }
    Ok(())
}

/// The steps of a resize, each safe to repeat.
async fn resize_steps(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    params: &ResizeParams,
    was_running: bool,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    stop(p, vm, progress, false).await?;
    let files = VmFiles::new(&p.settings.vm_root, &vm.id);
    progress
        .step("grow disk", async {
            Ok(storage::grow(&files.disk, params.to.disk_gib).await?)
        })
        .await?;
    let image = db::images::find(&p.db, vm.image_id.as_str())
        .await?
        .ok_or_else(|| anyhow!("image {} is gone", vm.image_id))?;
    let current = db::vms::get_any(&p.db, &vm.id)
        .await?
        .ok_or_else(|| anyhow!("VM {} vanished", vm.id))?;
    define(p, &current, &image, progress).await?;
    if was_running {
        boot(p, &current, progress).await?;
    }
    Ok(())
}

/// Deletes a VM and ends its operation in the same transaction that marks it deleted.
async fn delete(p: &Arc<Provisioner>, vm: &VmRow, progress: &mut Progress) -> anyhow::Result<()> {
    progress
        .step("remove domain and files", remove_everything(p, vm))
        .await?;
    progress
        .step("release ports and resources", release(p, vm))
        .await
}

/// Powers off and undefines the domain, then removes the VM's directory.
async fn remove_everything(p: &Provisioner, vm: &VmRow) -> anyhow::Result<()> {
    let name = vm.domain_name.clone();
    p.hv.call(move |h| {
        h.destroy(&name)?;
        h.undefine(&name)
    })
    .await?;
    VmFiles::new(&p.settings.vm_root, &vm.id).remove().await?;
    Ok(())
}

/// Frees the VM's ports and marks it deleted, in one transaction.
async fn release(p: &Provisioner, vm: &VmRow) -> anyhow::Result<()> {
    let mut tx = db::begin_write(&p.db).await?;
    db::ports::release(&mut tx, &vm.id).await?;
    db::vms::mark_deleted(&mut tx, &vm.id).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes every trace of a VM (rollback of a failed create).
pub async fn purge(p: &Provisioner, vm: &VmRow) -> anyhow::Result<()> {
    remove_everything(p, vm).await?;
    release(p, vm).await
}
