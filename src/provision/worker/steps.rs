//! The steps of a VM's life: create (disk, seed, domain, boot), start, stop, reboot and
//! delete, each recording its progress. Changes to a made VM are in `rebuild`.

use super::*;
use crate::domain::image::BootMethod;

/// Creates a VM; on failure removes everything made for it and marks it deleted.
pub(super) async fn create(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    op: &OperationId,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let result = build_and_boot(p, vm, op, progress).await;
    p.root_password_hashes.forget(op);
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
    op: &OperationId,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let image = db::images::find(&p.db, vm.image_id.as_str())
        .await?
        .ok_or_else(|| anyhow!("image {} is gone", vm.image_id))?;
    let host = p.host(&vm.host_id).await?;
    let base = progress
        .step(
            "put the image on the host",
            host.store.base(&image, &p.fleet.digests),
        )
        .await?;
    progress
        .step("create disk", async {
            host.store
                .create_disk(&vm.id, &base, vm.disk_gib as u64)
                .await?;
            Ok(())
        })
        .await?;
    progress
        .step("write cloud-init seed", async {
            let keys = vm.ssh_keys();
            // The root password's hash lives only in memory until it is in the seed.
            let hash = match p.root_password_hashes.get(op) {
                Some(h) => Some(h),
                None => db::scale_groups::root_password_hash_of_vm(&p.db, &vm.id).await?,
            };
            let seed = Seed {
                instance_id: vm.instance_id(),
                hostname: &vm.name,
                ssh_keys: &keys,
                user_data: vm.user_data.as_deref(),
                root_password_hash: hash.as_deref(),
            };
            host.store
                .write_seed(&vm.id, &seed, &p.settings.scratch, false)
                .await?;
            p.root_password_hashes.forget(op);
            Ok(())
        })
        .await?;
    define(p, vm, &image, progress).await?;
    boot(p, vm, progress).await
}

/// Defines (or redefines) the VM's domain from carve's records.
pub(super) async fn define(
    p: &Provisioner,
    vm: &VmRow,
    image: &ImageRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let host = p.host(&vm.host_id).await?;
    let xml = domain_xml(p, &host, vm, image).await?;
    progress
        .step("define domain", async {
            Ok(host.hv.call(move |h| h.define(&xml)).await?)
        })
        .await
}

/// The domain XML for a VM as recorded now, naming its files on its host.
async fn domain_xml(
    p: &Provisioner,
    host: &Host,
    vm: &VmRow,
    image: &ImageRow,
) -> anyhow::Result<String> {
    let domain_type = DomainType::parse(&host.row.domain_type).unwrap_or(DomainType::Qemu);
    let forwards: Vec<PortForward> = db::ports::for_vm(&p.db, &vm.id)
        .await?
        .iter()
        .map(|f| PortForward {
            host_port: f.host_port as u16,
            guest_port: f.guest_port as u16,
        })
        .collect();
    let base = host.store.base(image, &p.fleet.digests).await?;
    let disk = host.store.disk(&vm.id).await?.ok_or_else(|| {
        anyhow!(
            "the VM's disk is missing in the storage pool of host {} (files of VMs made before storage pools move there at the reconciler's next pass; try again in a minute)",
            host.row.name
        )
    })?;
    let seed = host.store.seed_path(&vm.id).await?;
    let console_log = host.store.console_log(&vm.id).await?;
    let boot = match (image.boot, &base.kernel) {
        (BootMethod::Kernel, Some(kernel)) => Boot::Kernel {
            kernel: kernel.as_ref(),
            initrd: base.initrd.as_deref().map(AsRef::as_ref),
            cmdline: image.cmdline.as_deref().unwrap_or("console=ttyS0"),
        },
        _ => Boot::Disk,
    };
    let (address, _) = p.settings.forwards_of(&host.row);
    let network = match p.settings.network.mode {
        crate::config::NetworkMode::User => Network::User {
            address,
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
        disk: Some(disk.path.as_ref()),
        seed: seed.as_deref().map(AsRef::as_ref),
        console_log: console_log.as_ref(),
        network,
        guest_agent: image.guest_agent,
    }))
}

/// Starts the domain and waits until libvirt reports it running.
pub(super) async fn boot(
    p: &Provisioner,
    vm: &VmRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let name = vm.domain_name.clone();
    let hv = p.hv_of(&vm.host_id).await?;
    progress
        .step("start domain", async {
            Ok(hv.call(move |h| h.start(&name)).await?)
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
    let hv = p.hv_of(&vm.host_id).await?;
    loop {
        let name = vm.domain_name.clone();
        let state = hv.call(move |h| h.state(&name)).await?;
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
pub(super) async fn start(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let image = db::images::find(&p.db, vm.image_id.as_str())
        .await?
        .ok_or_else(|| anyhow!("image {} is gone", vm.image_id))?;
    define(p, vm, &image, progress).await?;
    boot(p, vm, progress).await
}

/// Stops a VM: ACPI shutdown (repeated) until `stop_timeout`, then power-off; or power-off at
/// once when `force`.
pub(super) async fn stop(
    p: &Provisioner,
    vm: &VmRow,
    progress: &mut Progress,
    force: bool,
) -> anyhow::Result<()> {
    let name = vm.domain_name.clone();
    let hv = p.hv_of(&vm.host_id).await?;
    let state = hv.call(move |h| h.state(&name)).await?;
    if !state.is_some_and(PowerState::is_active) {
        return Ok(());
    }
    if !force {
        drain_from_pools(p, vm, progress).await?;
        let agent = db::images::find(&p.db, vm.image_id.as_str())
            .await?
            .is_some_and(|i| i.guest_agent);
        let how = if agent {
            "shut down (guest agent)"
        } else {
            "shut down (ACPI)"
        };
        let graceful = progress.step(how, shutdown_and_wait(p, vm, agent)).await;
        if graceful.is_ok() {
            return Ok(());
        }
        tracing::info!(vm = %vm.id, "guest did not shut down in time; powering it off");
    }
    let name = vm.domain_name.clone();
    progress
        .step("power off", async {
            Ok(hv.call(move |h| h.destroy(&name)).await?)
        })
        .await
}

/// Before a VM of a pool goes down: lets the balancer take it out of its pools and drain its
/// open work (the VM left `running`, so no pool sends it anything new). The step is recorded
/// for every pool member, even when the balancer was quicker and the drain is already over.
/// Waits at most the longest drain timeout and a margin, so a stopped balancer cannot hold the
/// operation up.
async fn drain_from_pools(
    p: &Provisioner,
    vm: &VmRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if db::pools::memberships_of(&p.db, &vm.id).await?.is_empty() {
        return Ok(());
    }
    progress
        .step("drain from pools", async {
            let (_, drain_s) = db::pools::in_balancer(&p.db, &vm.id).await?;
            let deadline = Instant::now() + Duration::from_secs(drain_s.clamp(0, 3600) as u64 + 3);
            while Instant::now() < deadline {
                if db::pools::in_balancer(&p.db, &vm.id).await?.0 == 0 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tracing::warn!(vm = %vm.id, "the balancer did not report the drain in time; going on");
            Ok(())
        })
        .await
}

/// Asks the guest to shut down (through its agent when it has one) until it is off or
/// `stop_timeout` passes.
async fn shutdown_and_wait(p: &Provisioner, vm: &VmRow, agent: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + p.settings.stop_timeout;
    let hv = p.hv_of(&vm.host_id).await?;
    loop {
        let name = vm.domain_name.clone();
        match hv.call(move |h| h.shutdown(&name, agent)).await {
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
    Ok(p.hv_of(&vm.host_id)
        .await?
        .call(move |h| h.state(&name))
        .await?
        .is_some_and(PowerState::is_active))
}

/// Reboots a VM through ACPI (reset if the guest cannot be asked), then waits until running.
pub(super) async fn reboot(
    p: &Provisioner,
    vm: &VmRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    drain_from_pools(p, vm, progress).await?;
    let name = vm.domain_name.clone();
    let hv = p.hv_of(&vm.host_id).await?;
    progress
        .step("reboot", async {
            let n = name.clone();
            if let Err(e) = hv.call(move |h| h.reboot(&n)).await {
                tracing::info!(vm = %vm.id, error = %e, "ACPI reboot refused; resetting");
                hv.call(move |h| h.reset(&name)).await?;
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

/// Deletes a VM and ends its operation in the same transaction that marks it deleted.
pub(super) async fn delete(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    drain_from_pools(p, vm, progress).await?;
    progress
        .step("remove domain and files", remove_everything(p, vm))
        .await?;
    progress
        .step("release ports and resources", release(p, vm))
        .await
}

/// Powers off and undefines the domain on the VM's host, then removes its volumes.
async fn remove_everything(p: &Provisioner, vm: &VmRow) -> anyhow::Result<()> {
    remove_from(&p.host(&vm.host_id).await?, vm).await
}

/// Powers off and undefines the VM's domain on `host`, then removes its volumes there.
pub(super) async fn remove_from(host: &Host, vm: &VmRow) -> anyhow::Result<()> {
    let name = vm.domain_name.clone();
    host.hv
        .call(move |h| {
            h.destroy(&name)?;
            h.undefine(&name)
        })
        .await?;
    host.store.remove(&vm.id).await
}

/// Frees the VM's ports and marks it deleted, in one transaction.
async fn release(p: &Provisioner, vm: &VmRow) -> anyhow::Result<()> {
    let mut tx = db::begin_write(&p.db).await?;
    db::ports::release(&mut tx, &vm.id).await?;
    db::pools::remove_vm(&mut tx, &vm.id).await?;
    db::vms::mark_deleted(&mut tx, &vm.id).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes every trace of a VM (rollback of a failed create).
pub async fn purge(p: &Provisioner, vm: &VmRow) -> anyhow::Result<()> {
    remove_everything(p, vm).await?;
    release(p, vm).await
}
