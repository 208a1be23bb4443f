//! Chooses between KVM and software emulation: KVM only if a probe guest really boots under
//! it (on some hosts /dev/kvm opens but guests hang).

use std::path::Path;
use std::time::{Duration, Instant};

use super::xml::{Boot, DomainSpec, DomainType, Network, domain_xml};
use super::{Hv, HypervisorError};

/// Longest the probe guest may take to print its line.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// What the probe guest prints on its serial console.
const PROBE_MARK: &str = "carve-probe: ok";

/// Boots the image's kernel and initramfs (`rdinit=/probe`) under KVM and reports whether it
/// printed its mark in time. `work_dir` holds the console log.
pub async fn kvm_boots(
    hv: &Hv,
    kernel: &Path,
    initrd: &Path,
    work_dir: &Path,
) -> Result<bool, HypervisorError> {
    if !Path::new("/dev/kvm").exists() {
        return Ok(false);
    }
    let name = format!("carve-probe-{}", std::process::id());
    let console = work_dir.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&console);
    let xml = domain_xml(&DomainSpec {
        name: &name,
        uuid: &super::xml::domain_uuid(&name),
        title: "carve KVM probe",
        vm_id: "probe",
        tenant_id: "none",
        domain_type: DomainType::Kvm,
        machine: "pc",
        vcpus: 1,
        memory_mib: 128,
        boot: Boot::Kernel {
            kernel,
            initrd: Some(initrd),
            cmdline: "console=ttyS0 rdinit=/probe panic=-1 quiet",
        },
        disk: None,
        seed: None,
        console_log: &console,
        network: Network::None,
        guest_agent: false,
    });
    let started = hv.call(move |h| h.start_transient(&xml)).await;
    if let Err(e) = started {
        tracing::info!(error = %e, "KVM probe guest did not start");
        let _ = std::fs::remove_file(&console);
        return Ok(false);
    }
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut booted = false;
    while Instant::now() < deadline {
        if std::fs::read_to_string(&console).is_ok_and(|log| log.contains(PROBE_MARK)) {
            booted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n = name.clone();
    hv.call(move |h| h.destroy(&n)).await?;
    let _ = std::fs::remove_file(&console);
    Ok(booted)
}
