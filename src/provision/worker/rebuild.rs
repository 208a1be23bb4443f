//! The steps of changes to a made VM: a new root password, a reinstall and a resize, each
//! recording its progress and safe to repeat after a crash.

use super::steps::{boot, define, stop};
use super::*;

/// Puts a new root password hash into the VM's seed (in place: a running QEMU keeps the
/// file open) and reboots a running VM so the guest applies it.
pub(super) async fn reset_password(
    p: &Provisioner,
    vm: &VmRow,
    op: &OperationRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let reboot_after = serde_json::from_str::<serde_json::Value>(&op.params)
        .ok()
        .and_then(|v| v["reboot"].as_bool())
        .unwrap_or(false);
    let host = p.host(&vm.host_id).await?;
    let hash = p.root_password_hashes.get(&op.id);
    let written = progress
        .step("write cloud-init seed", async {
            let hash = hash.clone().ok_or_else(|| {
                anyhow!("the new root password was lost (carve restarted before it reached the VM); ask for the reset again")
            })?;
            let keys = vm.ssh_keys();
            let seed = Seed {
                instance_id: vm.instance_id(),
                hostname: &vm.name,
                ssh_keys: &keys,
                user_data: vm.user_data.as_deref(),
                root_password_hash: Some(&hash),
            };
            host.store
                .write_seed(&vm.id, &seed, &p.settings.scratch, true)
                .await
                .context("writing the new seed over the VM's seed")?;
            Ok(())
        })
        .await;
    p.root_password_hashes.forget(&op.id);
    written?;
    if !reboot_after {
        return Ok(());
    }
    // A running guest with an agent takes the password at once; others reboot for it.
    let agent = db::images::find(&p.db, vm.image_id.as_str())
        .await?
        .is_some_and(|i| i.guest_agent);
    if let (true, Some(hash)) = (agent, hash) {
        let name = vm.domain_name.clone();
        let set = progress
            .step("set password (guest agent)", async move {
                Ok(host
                    .hv
                    .call(move |h| h.set_password_hash(&name, "root", &hash))
                    .await?)
            })
            .await;
        match set {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::info!(vm = %vm.id, error = %e, "the guest agent did not set the password; rebooting for it")
            }
        }
    }
    reboot(p, vm, progress).await
}

/// Reinstalls a VM: drain and shut down, a fresh overlay of the new image in place of the
/// disk, a seed with a new instance id (cloud-init's first boot runs again), the new image
/// recorded, the domain redefined (its kernel or agent channel may differ), and started again
/// if it ran. Every step is safe to repeat: a resumed reinstall makes the disk fresh again.
pub(super) async fn reinstall(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    op: &OperationRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let result = reinstall_steps(p, vm, op, progress).await;
    p.root_password_hashes.forget(&op.id);
    result
}

async fn reinstall_steps(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    op: &OperationRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let params: super::super::vms::ReinstallParams =
        serde_json::from_str(&op.params).context("reinstall parameters are unreadable")?;
    let image = db::images::find(&p.db, &params.image_id)
        .await?
        .ok_or_else(|| anyhow!("image {} is gone", params.image_id))?;
    stop(p, vm, progress, false).await?;
    let host = p.host(&vm.host_id).await?;
    let base = progress
        .step(
            "put the image on the host",
            host.store.base(&image, &p.fleet.digests),
        )
        .await?;
    progress
        .step("replace disk", async {
            host.store
                .create_disk(&vm.id, &base, vm.disk_gib as u64)
                .await?;
            Ok(())
        })
        .await?;
    let instance = format!("{}.{}", vm.id, op.id);
    progress
        .step("write cloud-init seed", async {
            let keys = vm.ssh_keys();
            let hash = p.root_password_hashes.get(&op.id);
            let seed = Seed {
                instance_id: &instance,
                hostname: &vm.name,
                ssh_keys: &keys,
                user_data: vm.user_data.as_deref(),
                root_password_hash: hash.as_deref(),
            };
            host.store
                .write_seed(&vm.id, &seed, &p.settings.scratch, false)
                .await?;
            Ok(())
        })
        .await?;
    progress
        .step("record the image", async {
            Ok(db::vms::set_image(&p.db, &vm.id, &image.id, &instance).await?)
        })
        .await?;
    let vm = db::vms::get_any(&p.db, &vm.id)
        .await?
        .ok_or_else(|| anyhow!("VM {} is gone", vm.id))?;
    define(p, &vm, &image, progress).await?;
    if params.was_running {
        boot(p, &vm, progress).await?;
    }
    Ok(())
}

/// Resizes a VM to the size recorded at admission: stop if running, grow the disk, redefine,
/// start again. On failure the VM's recorded size goes back to what it really has.
pub(super) async fn resize(
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
        let disk_gib = match p.host(&vm.host_id).await {
            Ok(host) => host
                .store
                .disk(&vm.id)
                .await
                .ok()
                .flatten()
                .map_or(params.from.disk_gib, |d| d.capacity_bytes >> 30),
            Err(_) => params.from.disk_gib,
        };
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
    let host = p.host(&vm.host_id).await?;
    progress
        .step("grow disk", async {
            host.store.grow_disk(&vm.id, params.to.disk_gib).await
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
