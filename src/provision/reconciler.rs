//! Makes the database and libvirt agree, at start-up and then periodically:
//! - operations left unfinished by a dead process are taken over and finished (or rolled back);
//! - each VM's state follows what libvirt reports; a VM whose domain vanished becomes `missing`;
//! - domains carve does not manage are reported, never touched;
//! - port reservations and VM directories left by deleted VMs are released.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;

use super::disks::VmVolumes;
use super::fleet::Host;
use super::owner::Owner;
use super::worker::observed;
use super::{Provisioner, VmState, host};
use crate::db;
use crate::domain::host::HostState;
use crate::domain::ids::{HostId, VmId};
use crate::hypervisor::storage::VmFiles;

/// What one pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Operations taken over from dead processes.
    pub resumed: Vec<String>,
    /// VMs whose recorded state changed to match libvirt.
    pub state_changes: Vec<(String, String)>,
    /// VMs whose domain is gone from libvirt.
    pub missing: Vec<String>,
    /// Domains on the host that carve does not manage.
    pub unmanaged: Vec<String>,
    /// VM directories removed because their VM is deleted.
    pub removed_dirs: Vec<String>,
    /// VM directories of VMs this database does not know (left alone).
    pub unknown_dirs: Vec<String>,
    /// Port reservations of deleted VMs released.
    pub released_ports: u64,
    /// VMs of suspended tenants found running and being stopped.
    pub stopped_suspended: Vec<String>,
    /// Hosts found not answering this pass (their settled VMs are now `unknown`).
    pub unreachable: Vec<String>,
    /// Hosts that answer again.
    pub reachable_again: Vec<String>,
}

/// Runs passes forever, every `reconcile_interval` or sooner when woken.
pub async fn run_forever(p: Arc<Provisioner>) {
    loop {
        if let Err(e) = pass(&p).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "reconciler pass failed; retrying next interval"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(p.settings.reconcile_interval) => {}
            _ = p.reconcile_now.notified() => {}
        }
    }
}

/// One reconciliation pass.
pub async fn pass(p: &Arc<Provisioner>) -> anyhow::Result<Report> {
    let mut report = Report::default();
    if let Err(e) = super::images::register_all(&p.db, &p.settings.image_dir).await {
        tracing::warn!(error = %e, "image registration failed");
    }
    let busy = resume_orphaned_operations(p, &mut report).await?;
    for row in db::hosts::list(&p.db).await? {
        let Some(host) = reach(p, row, &mut report).await? else {
            continue;
        };
        refresh_host(p, &host).await;
        // One host's trouble does not keep the others from their pass.
        let name = host.row.name.clone();
        let mut done = observe_vms(p, &host, &busy, &mut report).await;
        if done.is_ok() {
            done = stop_suspended(p, &host.row.id, &busy, &mut report).await;
        }
        if done.is_ok() {
            done = remove_deleted_volumes(p, &host, &busy, &mut report).await;
        }
        if let Err(e) = done {
            tracing::warn!(host = %name, error = format!("{e:#}"), "reconciling the host failed; next pass retries");
        }
    }
    report.released_ports = db::ports::release_orphans(&p.db).await?;
    adopt_or_remove_vm_dirs(p, &busy, &mut report).await?;
    Ok(report)
}

/// The host, if its libvirt answers. One that does not is marked unreachable and its settled
/// VMs `unknown` (nothing is deleted); one that answers again goes back to its state.
async fn reach(
    p: &Provisioner,
    row: db::hosts::HostRow,
    report: &mut Report,
) -> anyhow::Result<Option<Host>> {
    let (id, name, was) = (row.id.clone(), row.name.clone(), row.state);
    let answered = match p.fleet.connect(&row).await {
        Ok(hv) => hv.call(|h| h.node()).await,
        Err(e) => Err(e),
    };
    match answered {
        Ok(_) => {
            p.fleet.answered(&id);
            let host = p.fleet.host(row).await?;
            if was == HostState::Unreachable && db::hosts::mark_reachable(&p.db, &id).await? {
                tracing::info!(host = %name, "the host answers again");
                report.reachable_again.push(name);
            }
            Ok(Some(host))
        }
        Err(e) => {
            let reason = e.to_string();
            let failures = p.fleet.failed_once(&id, &reason);
            if failures < super::fleet::FAILURES_TO_UNREACHABLE {
                tracing::info!(host = %name, error = %reason, "the host did not answer this pass");
                return Ok(None);
            }
            if db::hosts::mark_unreachable(&p.db, &id, &reason).await? {
                tracing::warn!(host = %name, error = %reason, "the host does not answer; its VMs are unknown until it does");
            }
            let marked = db::vms::mark_unknown_on_host(&p.db, &id).await?;
            if marked > 0 || was != HostState::Unreachable {
                report.unreachable.push(name);
            }
            Ok(None)
        }
    }
}

/// Refreshes a host's capacity facts.
async fn refresh_host(p: &Provisioner, host: &Host) {
    match host::physical(&host.hv, &host.row.storage_pool).await {
        Ok((_, phys)) => {
            if let Err(e) = db::hosts::update_physical(&p.db, &host.row.id, phys).await {
                tracing::warn!(error = %e, "cannot record host facts");
            }
        }
        Err(e) => {
            tracing::warn!(host = %host.row.name, error = format!("{e:#}"), "cannot read host facts")
        }
    }
}

/// Takes over unfinished operations whose process is dead or whose lease expired; returns the
/// targets of every unfinished operation (their VMs are left alone this pass).
async fn resume_orphaned_operations(
    p: &Arc<Provisioner>,
    report: &mut Report,
) -> anyhow::Result<HashSet<String>> {
    let lease = chrono::Duration::from_std(p.settings.lease)?;
    let now = Utc::now();
    let mut busy = HashSet::new();
    for op in db::operations::list_unfinished(&p.db).await? {
        busy.insert(op.target_id.clone());
        if op.kind == super::OpKind::Refresh {
            // Driven by its scale group's controller, which picks it up on its own.
            continue;
        }
        let orphaned = match &op.owner {
            // Never claimed: its creator died between commit and claim (or is about to claim;
            // the claim is a compare-and-swap, so only one of us runs it).
            None => now - op.created_at > chrono::Duration::seconds(2),
            Some(owner) if *owner == p.owner.id => false,
            Some(owner) => Owner::is_dead(owner) || op.heartbeat_at.is_none_or(|h| now - h > lease),
        };
        if orphaned {
            report.resumed.push(op.id.to_string());
            p.spawn_operation(op.id.clone(), op.owner.clone());
        }
    }
    Ok(busy)
}

/// Brings each idle VM's recorded state in line with its host's libvirt and lists unmanaged
/// domains.
async fn observe_vms(
    p: &Provisioner,
    host: &Host,
    busy: &HashSet<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let domains = host.hv.call(|h| h.list()).await?;
    let vms = db::vms::list_on_host(&p.db, &host.row.id).await?;
    let ours: HashSet<&str> = vms.iter().map(|v| v.domain_name.as_str()).collect();
    for vm in &vms {
        // Transitional states belong to an operation (resumed above if its process died).
        let settled = matches!(
            vm.state,
            VmState::Running
                | VmState::Stopped
                | VmState::Paused
                | VmState::Crashed
                | VmState::Missing
                | VmState::Unknown
                // No operation drives it (it would be busy): a move that ended without a word.
                | VmState::Moving
        );
        if busy.contains(vm.id.as_str()) || !settled {
            continue;
        }
        if vm.moving_to.is_some() {
            // A move that no operation drives any more holds no room on its target (checked
            // again in the write lock: a move admitted since this pass began keeps it).
            if !db::vms::drop_stale_move(&p.db, &vm.id).await? {
                continue;
            }
        }
        let listed = domains
            .iter()
            .find(|d| d.name == vm.domain_name)
            .map(|d| d.state);
        if observed(listed) == vm.state {
            continue;
        }
        // The listing may be stale by now: ask again for this one domain.
        let name = vm.domain_name.clone();
        let state = observed(host.hv.call(move |h| h.state(&name)).await?);
        if state == vm.state {
            continue;
        }
        // Only if no operation changed the state or took the VM meanwhile.
        if db::vms::set_state_if(&p.db, &vm.id, vm.state, state).await? {
            if state == VmState::Missing {
                tracing::warn!(vm = %vm.id, domain = %vm.domain_name, "the VM's domain is gone from libvirt; start it to redefine it");
                report.missing.push(vm.id.to_string());
            }
            report
                .state_changes
                .push((vm.id.to_string(), state.as_str().to_string()));
        }
    }
    let mut unmanaged: Vec<String> = domains
        .iter()
        .map(|d| d.name.clone())
        .filter(|n| !ours.contains(n.as_str()) && !n.starts_with("carve-probe-"))
        .collect();
    unmanaged.sort();
    let known: HashSet<String> = host.row.unmanaged().into_iter().collect();
    for name in unmanaged.iter().filter(|n| !known.contains(*n)) {
        tracing::warn!(host = %host.row.name, domain = %name, "libvirt has a domain carve does not manage; leaving it alone");
    }
    db::hosts::set_unmanaged(&p.db, &host.row.id, &unmanaged).await?;
    report.unmanaged.extend(unmanaged);
    Ok(())
}

/// Stops VMs of suspended tenants that are running (busy when the tenant was suspended, or
/// started behind carve's back).
async fn stop_suspended(
    p: &Arc<Provisioner>,
    host: &HostId,
    busy: &HashSet<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    for vm in db::vms::running_of_suspended_tenants(&p.db, host).await? {
        if busy.contains(vm.id.as_str()) {
            continue;
        }
        match super::vms::begin_operation(
            p,
            &vm,
            super::OpKind::Stop,
            VmState::Stopping,
            serde_json::json!({}),
            None,
        )
        .await
        {
            Ok(op) => {
                tracing::info!(vm = %vm.id, op = %op.id, "stopping a VM of a suspended tenant");
                report.stopped_suspended.push(vm.id.to_string());
            }
            Err(e) => {
                tracing::warn!(vm = %vm.id, error = %e, "cannot stop a VM of a suspended tenant")
            }
        }
    }
    Ok(())
}

/// Removes the volumes of VMs this database records as deleted (a crash between removing a
/// VM's files and recording it can leave some). Volumes of VMs this database does not know are
/// left alone: they may belong to another carve sharing the pool.
async fn remove_deleted_volumes(
    p: &Provisioner,
    host: &Host,
    busy: &HashSet<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pool = host.row.storage_pool.clone();
    let names = host.hv.call(move |h| h.volumes(&pool)).await?;
    let mut owners: Vec<VmId> = names.iter().filter_map(|n| VmVolumes::owner(n)).collect();
    owners.sort();
    owners.dedup();
    for vm_id in owners {
        if busy.contains(vm_id.as_str()) {
            continue;
        }
        if let Some(vm) = db::vms::get_any(&p.db, &vm_id).await?
            && vm.deleted_at.is_some()
        {
            host.store.remove(&vm_id).await?;
            tracing::info!(vm = %vm_id, host = %host.row.name, "removed the volumes of a deleted VM");
            report.removed_dirs.push(vm_id.to_string());
        }
    }
    Ok(())
}

/// VM directories in the local pool's directory (where VMs made before volumes kept their
/// files): a live VM's files become volumes of the pool (renamed in place, so a running guest
/// keeps them open), a deleted VM's directory is removed, one this database does not know is
/// reported and left alone (it may belong to another carve sharing the directory).
async fn adopt_or_remove_vm_dirs(
    p: &Provisioner,
    busy: &HashSet<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Ok(mut entries) = tokio::fs::read_dir(&p.settings.vm_root).await else {
        return Ok(());
    };
    let mut adopted = false;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(vm_id) = VmId::parse(&name) else {
            continue;
        };
        if busy.contains(vm_id.as_str()) || !entry.file_type().await?.is_dir() {
            continue;
        }
        match db::vms::get_any(&p.db, &vm_id).await? {
            Some(vm) if vm.deleted_at.is_some() => {
                VmFiles::new(&p.settings.vm_root, &vm_id).remove().await?;
                tracing::info!(vm = %vm_id, "removed the files of a deleted VM");
                report.removed_dirs.push(name);
            }
            Some(_) => {
                let files = VmFiles::new(&p.settings.vm_root, &vm_id);
                let volumes = VmVolumes::of(&vm_id);
                for (from, to) in [
                    (&files.disk, &volumes.disk),
                    (&files.seed, &volumes.seed),
                    (&files.console, &volumes.console),
                ] {
                    let into = p.settings.vm_root.join(to);
                    // Never over a volume made since (a reinstall's fresh disk, say).
                    if tokio::fs::try_exists(from).await.unwrap_or(false)
                        && !tokio::fs::try_exists(&into).await.unwrap_or(true)
                    {
                        tokio::fs::rename(from, &into).await?;
                    }
                }
                files.remove().await?;
                tracing::info!(vm = %vm_id, "moved a VM's files into the storage pool");
                adopted = true;
            }
            None => {
                tracing::warn!(dir = %entry.path().display(), "a VM directory this database does not know; leaving it alone");
                report.unknown_dirs.push(name);
            }
        }
    }
    if adopted {
        let host = p.host(&p.local_host).await?;
        let pool = host.row.storage_pool.clone();
        host.hv.call(move |h| h.pool_facts(&pool)).await?;
    }
    Ok(())
}
