//! Moving a VM to another host (an evacuation): stop it, put its image on the target, copy its
//! disk (pointed at the base there), seed and console log through libvirt streams, switch it
//! to the target with its forwards made again there, define and start it there, and only
//! then remove it from the source. A failure before the switch undoes the move; a resumed
//! move after a crash goes on from where the VM is recorded.

use super::steps::{boot, define, remove_from, stop};
use super::*;
use crate::domain::ids::HostId;
use crate::provision::disk_copy::copy_volume;
use crate::provision::disks::VmVolumes;

/// What a move was asked to do, as recorded in its operation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MoveParams {
    pub from: String,
    pub to: String,
    pub was_running: bool,
}

/// [`MoveParams`] with their host ids checked.
struct Move {
    from: HostId,
    to: HostId,
    was_running: bool,
}

impl Move {
    fn of(op: &OperationRow) -> anyhow::Result<Self> {
        let params: MoveParams =
            serde_json::from_str(&op.params).context("move parameters are unreadable")?;
        let host = |id: &str| HostId::parse(id).ok_or_else(|| anyhow!("{id:?} is not a host id"));
        Ok(Self {
            from: host(&params.from)?,
            to: host(&params.to)?,
            was_running: params.was_running,
        })
    }
}

/// Moves a VM from `from` to `to` (recorded in the operation's parameters).
pub(super) async fn relocate(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    op: &OperationRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let params = Move::of(op)?;
    anyhow::ensure!(
        params.from != params.to,
        "a move to the host the VM is on would overwrite its own disk; nothing was done"
    );
    let image = db::images::find(&p.db, vm.image_id.as_str())
        .await?
        .ok_or_else(|| anyhow!("image {} is gone", vm.image_id))?;
    if vm.host_id == params.from
        && let Err(e) = copy_over(p, vm, &params, &image, progress).await
    {
        let undone = progress.step("undo the move", undo(p, vm, &params)).await;
        return Err(match undone {
            Ok(()) => e.context("the move was undone; the VM stays on its host"),
            Err(u) => e.context(format!("the move failed and undoing it failed too ({u:#})")),
        });
    }
    let vm = db::vms::get_any(&p.db, &vm.id)
        .await?
        .ok_or_else(|| anyhow!("VM {} vanished", vm.id))?;
    define(p, &vm, &image, progress).await?;
    if params.was_running {
        boot(p, &vm, progress).await?;
    }
    let source = p.host(&params.from).await?;
    progress
        .step("remove from the old host", remove_from(&source, &vm))
        .await
}

/// Stops the VM, copies its files to the target and switches it there.
async fn copy_over(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    params: &Move,
    image: &ImageRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    stop(p, vm, progress, false).await?;
    let source = p.host(&params.from).await?;
    let target = p.host(&params.to).await?;
    let base = progress
        .step(
            "put the image on the new host",
            target.store.base(image, &p.fleet.digests),
        )
        .await?;
    let names = VmVolumes::of(&vm.id);
    // The disk stays on the base it was made from (the image may have been rebuilt since).
    let backing = progress
        .step(
            "put the disk's base on the new host",
            base_of_disk(p, &source, &target, &vm.id, &base.disk),
        )
        .await?;
    let copied = progress
        .step(
            "copy the disk to the new host",
            copy_volume(&source.store, &target.store, &names.disk, Some(backing)),
        )
        .await?;
    tracing::info!(vm = %vm.id, bytes = copied, from = %source.row.name, to = %target.row.name, "disk copied");
    progress
        .step("copy the seed and console log", async {
            copy_volume(&source.store, &target.store, &names.seed, None).await?;
            copy_volume(&source.store, &target.store, &names.console, None).await?;
            Ok(())
        })
        .await?;
    progress
        .step("switch to the new host", switch(p, vm, &target))
        .await
}

/// The path on the target of the base the VM's disk on the source is backed by: the same
/// base volume, copied from the source's pool if the target lacks it (a base made of a
/// file carve's image directory held before it became a volume is uploaded from there).
/// `current` is the image's base on the target now, for a disk whose head names none (the
/// test driver keeps no bytes).
async fn base_of_disk(
    p: &Provisioner,
    source: &Host,
    target: &Host,
    vm: &crate::domain::ids::VmId,
    current: &str,
) -> anyhow::Result<String> {
    let (pool, name) = (source.store.pool.clone(), VmVolumes::of(vm).disk);
    let head = source
        .hv
        .call(move |h| {
            let mut head = Vec::new();
            h.download(
                &pool,
                &name,
                0,
                crate::hypervisor::qcow2_backing::HEAD_LEN as u64,
                &mut head,
            )?;
            Ok(head)
        })
        .await?;
    let Some(backing) = crate::hypervisor::qcow2_backing::backing_of(&head) else {
        return Ok(current.to_string());
    };
    let file = std::path::Path::new(&backing)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file.starts_with("base-") {
        return target.store.copy_base_from(&source.store, &file).await;
    }
    // An older disk backed straight by a file of the image directory on this machine.
    target
        .store
        .upload_base_file(std::path::Path::new(&backing), &p.fleet.digests)
        .await
}

/// Records the VM on the target with its forwards made again from the target's ports, in one
/// transaction.
async fn switch(p: &Provisioner, vm: &VmRow, target: &Host) -> anyhow::Result<()> {
    let guest_ports: Vec<u16> = db::ports::for_vm(&p.db, &vm.id)
        .await?
        .iter()
        .map(|f| f.guest_port as u16)
        .collect();
    let (address, range) = p.settings.forwards_of(&target.row);
    let probe = p.settings.port_probe(&target.row, address);
    let mut tx = db::begin_write(&p.db).await?;
    db::ports::release(&mut tx, &vm.id).await?;
    db::ports::allocate(&mut tx, &target.row.id, &vm.id, &guest_ports, range, probe).await?;
    db::vms::switch_host(&mut tx, &vm.id, &target.row.id).await?;
    tx.commit().await?;
    Ok(())
}

/// Gives back the target's room, removes what was copied there, and starts the VM again on
/// its host if it ran.
async fn undo(p: &Arc<Provisioner>, vm: &VmRow, params: &Move) -> anyhow::Result<()> {
    let mut conn = p.db.acquire().await?;
    db::vms::set_moving_to(&mut conn, &vm.id, None).await?;
    drop(conn);
    if let Ok(target) = p.host(&params.to).await {
        target.store.remove(&vm.id).await?;
    }
    if params.was_running {
        let name = vm.domain_name.clone();
        p.hv_of(&params.from)
            .await?
            .call(move |h| h.start(&name))
            .await?;
    }
    Ok(())
}
