//! Who runs an operation: `host/pid/start-time/pid-namespace`, so a restarted carve can tell
//! at once that the process holding a lease is dead (pid gone, or reused by another process).
//! Only a process that sees the same pids (same host name and pid namespace) judges.

/// This process's identity in operation leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `host/pid/start-time/pid-namespace`.
    pub id: String,
}

impl Owner {
    /// The current process.
    pub fn current() -> Self {
        let pid = std::process::id();
        let start = process_start(pid).unwrap_or(0);
        Self {
            id: format!("{}/{pid}/{start}/{}", hostname(), pid_namespace()),
        }
    }

    /// Whether the process named by `id` is known to be dead. Only processes on this host can
    /// be checked; for others the lease's expiry decides.
    pub fn is_dead(id: &str) -> bool {
        let mut parts = id.split('/');
        let (Some(host), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        // Another machine, or a container with the same host name but its own pids: the
        // lease's expiry decides.
        if host != hostname() || parts.next().is_some_and(|ns| ns != pid_namespace()) {
            return false;
        }
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            return false;
        };
        process_start(pid) != Some(start)
    }
}

/// This process's pid namespace (the inode in `/proc/self/ns/pid`).
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|l| {
            l.to_string_lossy()
                .trim_start_matches("pid:[")
                .trim_end_matches(']')
                .to_string()
        })
        .unwrap_or_else(|_| "0".into())
}

/// The host's name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::current();
        assert!(!Owner::is_dead(&me.id));
        let pid = std::process::id();
        let host = me.id.split('/').next().unwrap();
        let ns = pid_namespace();
        assert!(Owner::is_dead(&format!("{host}/{pid}/1/{ns}")));
        assert!(Owner::is_dead(&format!("{host}/4194304/1/{ns}")));
        assert!(
            Owner::is_dead(&format!("{host}/4194304/1")),
            "an id from before namespaces"
        );
        assert!(!Owner::is_dead(&format!("other-host/{pid}/1/{ns}")));
        assert!(
            !Owner::is_dead(&format!("{host}/4194304/1/1")),
            "another pid namespace is not judged"
        );
        assert!(!Owner::is_dead("garbage"));
    }
}
