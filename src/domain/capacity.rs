//! Capacity arithmetic: what a host can sell after overcommit and reserves, and whether a
//! request fits beside what is already allocated.

use super::sizes::Resources;

/// Physical resources of a host as libvirt and the disk store report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Physical {
    /// Host CPUs.
    pub cpus: u32,
    /// Host memory in MiB.
    pub memory_mib: u64,
    /// Disk store space available to guests, in GiB.
    pub disk_gib: u64,
}

/// How much of each physical resource may be sold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overcommit {
    /// vCPUs per host CPU.
    pub cpu: f64,
    /// Guest MiB per host MiB.
    pub memory: f64,
    /// Guest GiB per store GiB.
    pub disk: f64,
    /// Host memory kept back for the host, in MiB.
    pub reserved_memory_mib: u64,
}

/// What the host can sell in all.
pub fn sellable(physical: Physical, ratios: Overcommit) -> Resources {
    let scale = |v: u64, r: f64| ((v as f64) * r).floor().max(0.0) as u64;
    Resources {
        vcpus: scale(u64::from(physical.cpus), ratios.cpu).min(u64::from(u32::MAX)) as u32,
        memory_mib: scale(
            physical
                .memory_mib
                .saturating_sub(ratios.reserved_memory_mib),
            ratios.memory,
        ),
        disk_gib: scale(physical.disk_gib, ratios.disk),
    }
}

/// The resource that is short when a request does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not enough {resource} on host {host}: the request needs {needed}{unit}, {free}{unit} of {total}{unit} is free; pick a smaller plan, or try again when VMs have been removed or the host's capacity raised"
)]
pub struct Shortfall {
    /// Host name.
    pub host: String,
    /// `vcpus`, `memory` or `disk`.
    pub resource: &'static str,
    /// Amount the request needs.
    pub needed: u64,
    /// Amount still free.
    pub free: u64,
    /// Sellable total.
    pub total: u64,
    /// Unit suffix for the message.
    pub unit: &'static str,
}

/// Checks that `request` fits in `total` beside `allocated`, naming the first resource short.
pub fn check_fits(
    host: &str,
    total: Resources,
    allocated: Resources,
    request: Resources,
) -> Result<(), Shortfall> {
    let rows = [
        (
            "vcpus",
            u64::from(total.vcpus),
            u64::from(allocated.vcpus),
            u64::from(request.vcpus),
            "",
        ),
        (
            "memory",
            total.memory_mib,
            allocated.memory_mib,
            request.memory_mib,
            " MiB",
        ),
        (
            "disk",
            total.disk_gib,
            allocated.disk_gib,
            request.disk_gib,
            " GiB",
        ),
    ];
    for (resource, total, allocated, needed, unit) in rows {
        let free = total.saturating_sub(allocated);
        if needed > free {
            return Err(Shortfall {
                host: host.to_string(),
                resource,
                needed,
                free,
                total,
                unit,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(vcpus: u32, memory_mib: u64, disk_gib: u64) -> Resources {
        Resources {
            vcpus,
            memory_mib,
            disk_gib,
        }
    }

    #[test]
    fn sellable_applies_ratios_and_reserve() {
        let p = Physical {
            cpus: 2,
            memory_mib: 24_576,
            disk_gib: 80,
        };
        let r = Overcommit {
            cpu: 4.0,
            memory: 1.5,
            disk: 1.0,
            reserved_memory_mib: 576,
        };
        assert_eq!(sellable(p, r), res(8, 36_000, 80));
        let tiny = Overcommit {
            reserved_memory_mib: 1 << 20,
            ..r
        };
        assert_eq!(sellable(p, tiny).memory_mib, 0);
    }

    #[test]
    fn fits_exactly_and_names_the_short_resource() {
        let total = res(8, 1024, 10);
        assert!(check_fits("h", total, res(6, 512, 5), res(2, 512, 5)).is_ok());
        let e = check_fits("h", total, res(7, 0, 0), res(2, 1, 1)).unwrap_err();
        assert_eq!((e.resource, e.free), ("vcpus", 1));
        let e = check_fits("h", total, res(0, 1000, 0), res(1, 100, 1)).unwrap_err();
        assert_eq!(e.resource, "memory");
        assert_eq!(
            e.to_string(),
            "not enough memory on host h: the request needs 100 MiB, 24 MiB of 1024 MiB is free; pick a smaller plan, or try again when VMs have been removed or the host's capacity raised"
        );
        let e = check_fits("h", total, res(0, 0, 10), res(1, 1, 1)).unwrap_err();
        assert_eq!(e.resource, "disk");
        // Over-allocation (ratios lowered later) never underflows.
        assert!(check_fits("h", total, res(9, 2048, 11), res(1, 1, 1)).is_err());
    }
}
