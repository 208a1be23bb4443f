//! Makes the database and libvirt agree, at start-up and then periodically:
//! - operations left unfinished by a dead process are taken over and finished (or rolled back);
//! - each VM's state follows what libvirt reports; a VM whose domain vanished becomes `missing`;
//! - domains carve does not manage are reported, never touched;
//! - port reservations and VM directories left by deleted VMs are released.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;

use super::owner::Owner;
use super::worker::observed;
use super::{Provisioner, VmState, host};
use crate::db;
use crate::domain::ids::VmId;
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
    refresh_host(p).await;
    if let Err(e) = super::images::register_all(&p.db, &p.settings.image_dir).await {
        tracing::warn!(error = %e, "image registration failed");
    }
    let busy = resume_orphaned_operations(p, &mut report).await?;
    observe_vms(p, &busy, &mut report).await?;
    stop_suspended(p, &busy, &mut report).await?;
    report.released_ports = db::ports::release_orphans(&p.db).await?;
    remove_deleted_dirs(p, &busy, &mut report).await?;
    Ok(report)
}

/// Refreshes the host's capacity facts.
async fn refresh_host(p: &Provisioner) {
    match host::physical(&p.hv, &p.settings.vm_root).await {
        Ok((_, phys)) => {
            if let Err(e) = db::hosts::update_physical(&p.db, &p.host_id, phys).await {
                tracing::warn!(error = %e, "cannot record host facts");
            }
        }
        Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot read host facts"),
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

/// Brings each idle VM's recorded state in line with libvirt and lists unmanaged domains.
async fn observe_vms(
    p: &Provisioner,
    busy: &HashSet<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let domains = p.hv.call(|h| h.list()).await?;
    let vms = db::vms::list_on_host(&p.db, &p.host_id).await?;
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
        );
        if busy.contains(vm.id.as_str()) || !settled {
            continue;
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
        let state = observed(p.hv.call(move |h| h.state(&name)).await?);
        if state == vm.state {
            continue;
        }
        // Only if no operation changed the state meanwhile.
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
    let host = db::hosts::get(&p.db, &p.host_id).await?;
    let known: HashSet<String> = host
        .map(|h| h.unmanaged().into_iter().collect())
        .unwrap_or_default();
    for name in unmanaged.iter().filter(|n| !known.contains(*n)) {
        tracing::warn!(domain = %name, "libvirt has a domain carve does not manage; leaving it alone");
    }
    db::hosts::set_unmanaged(&p.db, &p.host_id, &unmanaged).await?;
    report.unmanaged = unmanaged;
    Ok(())
}

/// Stops VMs of suspended tenants that are running (busy when the tenant was suspended, or
/// started behind carve's back).
async fn stop_suspended(
    p: &Arc<Provisioner>,
    busy: &HashSet<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    for vm in db::vms::running_of_suspended_tenants(&p.db, &p.host_id).await? {
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

/// Removes VM directories whose VM this database records as deleted (a crash between removing
/// a VM's files and recording it can leave one). A directory of a VM this database does not
/// know is reported, never removed: it may belong to another carve sharing the directory.
async fn remove_deleted_dirs(
    p: &Provisioner,
    busy: &HashSet<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Ok(mut entries) = tokio::fs::read_dir(&p.settings.vm_root).await else {
        return Ok(());
    };
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(vm_id) = VmId::parse(&name) else {
            continue;
        };
        if busy.contains(vm_id.as_str()) {
            continue;
        }
        match db::vms::get_any(&p.db, &vm_id).await? {
            Some(vm) if vm.deleted_at.is_some() => {
                VmFiles::new(&p.settings.vm_root, &vm_id).remove().await?;
                tracing::info!(vm = %vm_id, "removed the files of a deleted VM");
                report.removed_dirs.push(name);
            }
            Some(_) => {}
            None => {
                tracing::warn!(dir = %entry.path().display(), "a VM directory this database does not know; leaving it alone");
                report.unknown_dirs.push(name);
            }
        }
    }
    Ok(())
}
