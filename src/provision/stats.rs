//! CPU and memory of running VMs: sampled from libvirt every 10 seconds into the database
//! (so every carve process answers the same), kept for 20 minutes, read for the last 15.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::Provisioner;
use super::vms::load;
use crate::auth::Principal;
use crate::db::vm_samples::{SLOT_SECS, SampleRow};
use crate::db::{self};
use crate::domain::vm_state::VmState;
use crate::error::AppError;
use crate::hypervisor::DomainStats;

/// Minutes of samples a stats answer covers.
pub const WINDOW_MINUTES: i64 = 15;

/// One point of a VM's statistics.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsPoint {
    /// Start of the 10-second slot the sample was taken in.
    pub at: DateTime<Utc>,
    /// CPU use since the previous sample, in percent of all the VM's vCPUs (absent for the
    /// first sample after a start).
    pub cpu_percent: Option<f64>,
    /// Memory the guest costs the host, in MiB.
    pub memory_used_mib: f64,
    /// Memory given to the guest, in MiB.
    pub memory_total_mib: f64,
}

/// A VM's statistics over the last 15 minutes, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VmStats {
    pub vm_id: String,
    /// Seconds between samples.
    pub interval_s: i64,
    pub points: Vec<StatsPoint>,
}

/// Samples every running VM on this process's host, forever.
pub async fn run_forever(p: Arc<Provisioner>) {
    loop {
        if let Err(e) = sample_once(&p).await {
            tracing::warn!(error = format!("{e:#}"), "sampling VM statistics failed");
        }
        let now = Utc::now().timestamp();
        let next_slot = (now / SLOT_SECS + 1) * SLOT_SECS;
        tokio::time::sleep(Duration::from_secs((next_slot - now).max(1) as u64)).await;
    }
}

/// One sampling pass over the host's running VMs; old samples are removed.
pub async fn sample_once(p: &Provisioner) -> anyhow::Result<()> {
    let slot = Utc::now().timestamp() / SLOT_SECS * SLOT_SECS;
    let with_agent: std::collections::HashSet<String> = db::images::list(&p.db)
        .await?
        .into_iter()
        .filter(|i| i.guest_agent)
        .map(|i| i.id.to_string())
        .collect();
    for host in db::hosts::list(&p.db).await? {
        if host.state != crate::domain::host::HostState::Active
            && host.state != crate::domain::host::HostState::Maintenance
        {
            continue;
        }
        let id = host.id.clone();
        let hv = match p.fleet.hv(&host).await {
            Ok(hv) => hv,
            Err(e) => {
                tracing::debug!(host = %id, error = %e, "no statistics from an unreachable host");
                continue;
            }
        };
        sample_host(p, &hv, &id, slot, &with_agent).await?;
    }
    db::vm_samples::purge(&p.db, slot - 20 * 60).await?;
    Ok(())
}

/// Samples the running VMs of one host.
async fn sample_host(
    p: &Provisioner,
    hv: &crate::hypervisor::Hv,
    host: &crate::domain::ids::HostId,
    slot: i64,
    with_agent: &std::collections::HashSet<String>,
) -> anyhow::Result<()> {
    for vm in db::vms::list_on_host(&p.db, host).await? {
        if vm.state != VmState::Running {
            continue;
        }
        let name = vm.domain_name.clone();
        let Some(stats) = hv.call(move |h| h.stats(&name)).await? else {
            continue;
        };
        let previous = db::vm_samples::previous(&p.db, &vm.id, slot).await?;
        db::vm_samples::insert(&p.db, &vm.id, &sample(slot, stats, previous.as_ref())).await?;
        if with_agent.contains(vm.image_id.as_str()) {
            // The guest's own view: its hostname and addresses (when its agent answers).
            let name = vm.domain_name.clone();
            if let Ok(Some(info)) = hv.call(move |h| h.guest_info(&name)).await {
                db::vm_samples::put_guest_info(
                    &p.db,
                    &vm.id,
                    info.hostname.as_deref(),
                    &info.addresses,
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// A sample from libvirt's figures and the one before it.
fn sample(slot: i64, now: DomainStats, previous: Option<&SampleRow>) -> SampleRow {
    let cpu_time_ns = i64::try_from(now.cpu_time_ns).unwrap_or(i64::MAX);
    let cpu_percent = previous
        .filter(|p| p.cpu_time_ns <= cpu_time_ns && p.slot < slot && slot - p.slot <= 60)
        .map(|p| {
            let used = (cpu_time_ns - p.cpu_time_ns) as f64;
            let available = (slot - p.slot) as f64 * 1e9 * f64::from(now.vcpus.max(1));
            (used / available * 100.0).clamp(0.0, 100.0)
        });
    SampleRow {
        slot,
        cpu_time_ns,
        cpu_percent,
        memory_used_kib: i64::try_from(now.memory_used_kib).unwrap_or(i64::MAX),
        memory_total_kib: i64::try_from(now.memory_total_kib).unwrap_or(i64::MAX),
    }
}

/// The VM's statistics of the last 15 minutes, if the actor may see the VM.
pub async fn of_vm(p: &Provisioner, actor: &Principal, id: &str) -> Result<VmStats, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    let since = Utc::now().timestamp() - WINDOW_MINUTES * 60;
    let rows = db::vm_samples::since(&p.db, &vm.id, since).await?;
    Ok(VmStats {
        vm_id: vm.id.to_string(),
        interval_s: SLOT_SECS,
        points: rows
            .iter()
            .map(|r| StatsPoint {
                at: Utc.timestamp_opt(r.slot, 0).single().unwrap_or_default(),
                cpu_percent: r.cpu_percent.map(|c| (c * 10.0).round() / 10.0),
                memory_used_mib: (r.memory_used_kib as f64 / 1024.0).round(),
                memory_total_mib: (r.memory_total_kib as f64 / 1024.0).round(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_use_is_the_share_of_all_vcpus_since_the_previous_slot() {
        let stats = |ns| DomainStats {
            cpu_time_ns: ns,
            memory_used_kib: 512 * 1024,
            memory_total_kib: 1024 * 1024,
            vcpus: 2,
        };
        let first = sample(100, stats(1_000_000_000), None);
        assert_eq!(first.cpu_percent, None);
        // 10 s on 2 vCPUs is 20 s of CPU; 5 s used is 25 %.
        let second = sample(110, stats(6_000_000_000), Some(&first));
        assert_eq!(second.cpu_percent, Some(25.0));
        // A restarted domain's counter goes back: no figure rather than a wrong one.
        let restarted = sample(120, stats(1_000), Some(&second));
        assert_eq!(restarted.cpu_percent, None);
    }
}
