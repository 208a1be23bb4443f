//! Changing a VM: power actions, resize, delete, and the serial console.

use super::*;

/// The live power state libvirt reports for a VM (None: no such domain).
pub(crate) async fn power_state(
    p: &Provisioner,
    vm: &VmRow,
) -> Result<Option<PowerState>, AppError> {
    let name = vm.domain_name.clone();
    Ok(p.hv_of(&vm.host_id)
        .await?
        .call(move |h| h.state(&name))
        .await?)
}

/// Records an operation on `vm` and sets its transitional state in one transaction; 409 if
/// another operation on it is unfinished.
pub(crate) async fn begin_operation(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    kind: OpKind,
    state: VmState,
    params: serde_json::Value,
    reserve: Option<(&str, Resources)>,
) -> Result<OperationView, AppError> {
    begin_operation_with_hash(p, vm, kind, state, params, reserve, None).await
}

/// [`begin_operation`], handing the operation a root password hash before it starts.
async fn begin_operation_with_hash(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    kind: OpKind,
    state: VmState,
    params: serde_json::Value,
    reserve: Option<(&str, Resources)>,
    root_password_hash: Option<String>,
) -> Result<OperationView, AppError> {
    let mut tx = db::begin_write(&p.db).await?;
    // A reinstall's image must still be there under the write lock (a removal cannot slip in).
    if let Some(image) = params.get("image_id").and_then(|v| v.as_str())
        && !db::images::is_usable(&mut tx, image).await?
    {
        return Err(AppError::Conflict(
            "the image was removed a moment ago; choose another image".into(),
        ));
    }
    if let Some((plan_id, to)) = reserve {
        let from = vm.resources();
        let growth = Usage {
            vcpus: i64::from(to.vcpus) - i64::from(from.vcpus),
            memory_mib: to.memory_mib as i64 - from.memory_mib as i64,
            disk_gib: to.disk_gib as i64 - from.disk_gib as i64,
            ..Usage::default()
        };
        check_quota(&mut tx, &p.settings.default_quota, &vm.tenant_id, growth).await?;
        reserve_growth(&mut tx, vm, to).await?;
        db::vms::set_resources(&mut tx, &vm.id, plan_id, to).await?;
    }
    let op =
        db::operations::insert(&mut tx, &vm.tenant_id, kind, "vm", vm.id.as_str(), &params).await;
    let op = match op {
        Ok(op) => op,
        Err(e) if db::is_unique_violation(&e) => {
            drop(tx);
            let busy = db::operations::list(&p.db, &Scope::All, Some(vm.id.as_str()), 1).await?;
            let what = busy
                .first()
                .map(|o| format!("operation {} ({})", o.id, o.kind))
                .unwrap_or_else(|| "another operation".into());
            return Err(AppError::Conflict(format!(
                "VM {} is busy with {what}; wait until it finishes (GET /api/v1/operations/{{id}}) and retry",
                vm.id
            )));
        }
        Err(e) => return Err(e.into()),
    };
    db::vms::set_state(&mut tx, &vm.id, state).await?;
    tx.commit().await?;
    tracing::info!(vm = %vm.id, op = %op.id, kind = kind.as_str(), "operation admitted");
    if let Some(hash) = root_password_hash {
        p.root_password_hashes.put(&op.id, hash);
    }
    p.spawn_operation(op.id.clone(), None);
    Ok(OperationView::from(&op))
}

/// Starts, stops, reboots or powers off a VM.
pub async fn act(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
    action: VmAction,
) -> Result<OperationView, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    if matches!(vm.state, VmState::Creating | VmState::Deleting) {
        return Err(AppError::Conflict(format!(
            "VM {} is {}; wait until that finishes",
            vm.id,
            vm.state.as_str()
        )));
    }
    if matches!(action, VmAction::Stop | VmAction::ForceStop) {
        refuse_for_group_member(p, &vm, "stopped").await?;
    }
    let live = power_state(p, &vm).await?;
    let active = live.is_some_and(PowerState::is_active);
    let (kind, state) = match action {
        VmAction::Start if active => {
            return Err(AppError::Conflict(format!(
                "VM {} is already running",
                vm.id
            )));
        }
        VmAction::Start => (OpKind::Start, VmState::Starting),
        VmAction::Stop | VmAction::ForceStop if !active => {
            return Err(AppError::Conflict(format!(
                "VM {} is already stopped",
                vm.id
            )));
        }
        VmAction::Stop => (OpKind::Stop, VmState::Stopping),
        VmAction::ForceStop => (OpKind::ForceStop, VmState::Stopping),
        VmAction::Reboot if live != Some(PowerState::Running) => {
            return Err(AppError::Conflict(format!(
                "VM {} is not running; start it instead",
                vm.id
            )));
        }
        VmAction::Reboot => (OpKind::Reboot, VmState::Rebooting),
        VmAction::ResetPassword => {
            return Err(AppError::invalid(
                "root_password",
                "reset_password needs a root_password (10 to 1024 characters)",
            ));
        }
        VmAction::Reinstall => {
            return Err(AppError::invalid(
                "image",
                "reinstall needs the image to install (GET /api/v1/images lists them)",
            ));
        }
    };
    begin_operation(p, &vm, kind, state, serde_json::json!({}), None).await
}

/// Sets root's password to `password` (only a hash reaches the guest, through its seed); a
/// running VM reboots to take it, a stopped one takes it at its next start.
pub async fn reset_password(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
    password: &crate::domain::secret::Secret,
) -> Result<OperationView, AppError> {
    let errors = super::create::check_root_password(password);
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let vm = load(p, &actor.scope(), id).await?;
    if matches!(vm.state, VmState::Creating | VmState::Deleting) {
        return Err(AppError::Conflict(format!(
            "VM {} is {}; wait until that finishes",
            vm.id,
            vm.state.as_str()
        )));
    }
    let running = power_state(p, &vm).await? == Some(PowerState::Running);
    let hash = crate::provision::crypt::hash_off_thread(password).await?;
    let state = if running {
        VmState::Rebooting
    } else {
        vm.state
    };
    // The hash goes to this operation alone (a second request's 409 cannot touch it).
    begin_operation_with_hash(
        p,
        &vm,
        OpKind::ResetPassword,
        state,
        serde_json::json!({ "reboot": running }),
        None,
        Some(hash),
    )
    .await
}

/// Replaces a VM's disk with a fresh one of `image` (its files are gone; id, plan, forwards
/// and pool memberships stay). A running VM is drained and shut down first and started again
/// after. With a `root_password`, root gets it on the fresh system.
pub async fn reinstall(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
    image: &str,
    root_password: Option<&crate::domain::secret::Secret>,
) -> Result<OperationView, AppError> {
    if let Some(pw) = root_password {
        let errors = super::create::check_root_password(pw);
        if !errors.is_empty() {
            return Err(AppError::Invalid(errors));
        }
    }
    let vm = load(p, &actor.scope(), id).await?;
    if matches!(vm.state, VmState::Creating | VmState::Deleting) {
        return Err(AppError::Conflict(format!(
            "VM {} is {}; wait until that finishes",
            vm.id,
            vm.state.as_str()
        )));
    }
    refuse_for_group_member(p, &vm, "reinstalled").await?;
    let image = super::create::offered_image(&p.db, image, actor.is_admin()).await?;
    let image_gib = (image.virtual_size_bytes as u64).div_ceil(1 << 30);
    if (vm.disk_gib as u64) < image_gib {
        return Err(AppError::invalid(
            "image",
            format!(
                "VM {} has a {} GiB disk but image {} needs {image_gib} GiB; resize it to a bigger plan first",
                vm.name, vm.disk_gib, image.name
            ),
        ));
    }
    if vm.memory_mib < image.min_memory_mib {
        return Err(AppError::invalid(
            "image",
            format!(
                "VM {} has {} MiB of memory but image {} needs {} MiB; resize it to a bigger plan first",
                vm.name, vm.memory_mib, image.name, image.min_memory_mib
            ),
        ));
    }
    let was_running = power_state(p, &vm)
        .await?
        .is_some_and(PowerState::is_active);
    let hash = match root_password {
        Some(pw) => Some(crate::provision::crypt::hash_off_thread(pw).await?),
        None => None,
    };
    let params = ReinstallParams {
        image_id: image.id.to_string(),
        was_running,
    };
    let params = serde_json::to_value(&params).map_err(anyhow::Error::from)?;
    begin_operation_with_hash(
        p,
        &vm,
        OpKind::Reinstall,
        VmState::Reinstalling,
        params,
        None,
        hash,
    )
    .await
}

/// What a reinstall installs, kept in its operation so a resumed one does the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReinstallParams {
    pub image_id: String,
    /// Whether the VM ran when the reinstall was asked for (it is started again).
    pub was_running: bool,
}

/// The sizes a resize moves between, kept in the operation so a failure can undo it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResizeParams {
    pub from_plan: String,
    pub from: Resources,
    pub to_plan: String,
    pub to: Resources,
    /// Whether the VM was running when the resize was asked for (it is started again).
    pub was_running: bool,
}

/// A scale group's member is not stopped or resized on its own: the group would replace a
/// stopped one, and a resized one would no longer match its template.
async fn refuse_for_group_member(p: &Provisioner, vm: &VmRow, what: &str) -> Result<(), AppError> {
    if let Some(pool) = db::scale_groups::group_of_vm(&p.db, &vm.id).await? {
        return Err(AppError::Conflict(format!(
            "VM {} belongs to the scale group of pool {pool} and cannot be {what} on its own: change the group's desired count or template (PUT /api/v1/pools/{pool}/scale-group), or delete the VM to have it replaced",
            vm.name
        )));
    }
    Ok(())
}

/// Resizes a VM to another plan: vCPUs and memory change, the disk grows (never shrinks).
/// A running VM is shut down, resized and started again.
pub async fn update(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
    req: UpdateVm,
) -> Result<OperationView, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    refuse_for_group_member(p, &vm, "resized").await?;
    let Some(plan_ref) = req.plan else {
        return Err(AppError::invalid(
            "plan",
            "nothing to change: send the plan to resize to",
        ));
    };
    let plan = db::plans::find(&p.db, &plan_ref).await?.ok_or_else(|| {
        AppError::invalid(
            "plan",
            format!("no plan is named {plan_ref:?}; GET /api/v1/plans lists them"),
        )
    })?;
    let from = vm.resources();
    let to = plan.resources();
    if to == from {
        return Err(AppError::invalid(
            "plan",
            format!("VM {} already has plan {}'s size", vm.id, plan.name),
        ));
    }
    if to.disk_gib < from.disk_gib {
        return Err(AppError::invalid(
            "plan",
            format!(
                "plan {} has a {} GiB disk, smaller than this VM's {} GiB; disks never shrink, so choose a plan with disk_gib >= {}",
                plan.name, to.disk_gib, from.disk_gib, from.disk_gib
            ),
        ));
    }
    if matches!(vm.state, VmState::Creating | VmState::Deleting) {
        return Err(AppError::Conflict(format!(
            "VM {} is {}; wait until that finishes",
            vm.id,
            vm.state.as_str()
        )));
    }
    let was_running = power_state(p, &vm)
        .await?
        .is_some_and(PowerState::is_active);
    let params = ResizeParams {
        from_plan: vm.plan_id.clone(),
        from,
        to_plan: plan.id.to_string(),
        to,
        was_running,
    };
    let params = serde_json::to_value(&params).map_err(anyhow::Error::from)?;
    begin_operation(
        p,
        &vm,
        OpKind::Resize,
        VmState::Resizing,
        params,
        Some((plan.id.as_str(), to)),
    )
    .await
}

/// Checks, under the write lock, that the VM's host can hold it at size `to` beside the other
/// VMs there.
pub(crate) async fn reserve_growth(
    tx: &mut WriteTx,
    vm: &VmRow,
    to: Resources,
) -> Result<(), AppError> {
    let host = db::hosts::list(&mut *tx)
        .await?
        .into_iter()
        .find(|h| h.id == vm.host_id);
    let Some(host) = host else {
        return Err(AppError::Conflict(format!(
            "the host of VM {} is not registered",
            vm.id
        )));
    };
    let used = db::hosts::allocated(tx, &host.id).await?;
    let from = vm.resources();
    let others = Resources {
        vcpus: used.vcpus.saturating_sub(from.vcpus),
        memory_mib: used.memory_mib.saturating_sub(from.memory_mib),
        disk_gib: used.disk_gib.saturating_sub(from.disk_gib),
    };
    capacity::check_fits(
        &host.name,
        capacity::sellable(host.physical(), host.overcommit()),
        others,
        to,
    )?;
    Ok(())
}

/// Deletes a VM: its domain, disk, seed and port reservations.
pub async fn delete(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
) -> Result<OperationView, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    begin_operation(
        p,
        &vm,
        OpKind::Delete,
        VmState::Deleting,
        serde_json::json!({}),
        None,
    )
    .await
}

/// The end of a VM's serial console output, at most `max_bytes`.
pub async fn console(
    p: &Provisioner,
    actor: &Principal,
    id: &str,
    max_bytes: u64,
) -> Result<String, AppError> {
    Ok(console_since(p, actor, id, None, max_bytes).await?.text)
}

/// Console output read from one offset to the end of the log.
#[derive(Debug, Clone, Default)]
pub struct ConsoleChunk {
    pub text: String,
    /// The log's length after this read: the offset to read on from.
    pub end: u64,
}

/// A VM's console output after byte `offset` (or its last `max_bytes` when `offset` is
/// `None` or the log was truncated since), at most `max_bytes`.
pub async fn console_since(
    p: &Provisioner,
    actor: &Principal,
    id: &str,
    offset: Option<u64>,
    max_bytes: u64,
) -> Result<ConsoleChunk, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    let host = p.host(&vm.host_id).await?;
    let (start, _len, mut bytes) = host
        .store
        .read_console(&vm.id, offset, max_bytes)
        .await
        .map_err(|e| AppError::Internal(e.context("reading the console log")))?;
    // A read that ends inside a multi-byte character keeps those bytes for the next read.
    if let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        bytes.truncate(e.valid_up_to());
    }
    Ok(ConsoleChunk {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        end: start + bytes.len() as u64,
    })
}
