//! Sizes with the ranges carve accepts. A plan's figures are checked here once.

use super::Invalid;

/// Most vCPUs a plan may have.
pub const MAX_VCPUS: u32 = 256;
/// Least guest memory, in MiB.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Most guest memory, in MiB (4 TiB).
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
/// Most guest disk, in GiB (64 TiB).
pub const MAX_DISK_GIB: u64 = 64 * 1024;

/// The resources one VM takes: what a plan sells and what capacity and quotas count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

impl Resources {
    /// Checks requested plan figures against carve's limits.
    pub fn parse(vcpus: i64, memory_mib: i64, disk_gib: i64) -> Result<Self, Invalid> {
        let vcpus = in_range(vcpus, 1, i64::from(MAX_VCPUS), "vcpus", "")?;
        let memory_mib = in_range(
            memory_mib,
            MIN_MEMORY_MIB as i64,
            MAX_MEMORY_MIB as i64,
            "memory_mib",
            " MiB",
        )?;
        let disk_gib = in_range(disk_gib, 1, MAX_DISK_GIB as i64, "disk_gib", " GiB")?;
        Ok(Self {
            vcpus: vcpus as u32,
            memory_mib: memory_mib as u64,
            disk_gib: disk_gib as u64,
        })
    }

    /// The sum of two allocations.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            vcpus: self.vcpus.saturating_add(other.vcpus),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
            disk_gib: self.disk_gib.saturating_add(other.disk_gib),
        }
    }
}

/// Checks `min <= v <= max`, naming the field and unit when it is not.
fn in_range(v: i64, min: i64, max: i64, field: &'static str, unit: &str) -> Result<i64, Invalid> {
    if v < min || v > max {
        return Err(Invalid::new(
            field,
            format!("{v}{unit} is out of range: use {min} to {max}{unit}"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sizes_have_ranges() {
        assert!(Resources::parse(1, 128, 1).is_ok());
        let e = Resources::parse(0, 128, 1).unwrap_err();
        assert_eq!(e.field, "vcpus");
        let e = Resources::parse(1, 1 << 40, 1).unwrap_err();
        assert_eq!(e.field, "memory_mib");
        assert!(e.message.contains("64 to"), "{}", e.message);
        assert_eq!(Resources::parse(1, 128, 0).unwrap_err().field, "disk_gib");
        assert_eq!(Resources::parse(1, 128, -5).unwrap_err().field, "disk_gib");
        assert_eq!(Resources::parse(1, 32, 1).unwrap_err().field, "memory_mib");
    }
}
