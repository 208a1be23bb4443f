//! Target tracking: the member count that brings the balancer's measure per healthy member to
//! the target, within min..max and the cooldowns (no I/O, so it is tested directly).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A measurement older than this is not acted on (the balancer may be down).
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// A group's tracking settings and state.
#[derive(Debug, Clone)]
pub struct Tracking {
    /// The measure per healthy member to keep near.
    pub target: f64,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub scale_out_cooldown: Duration,
    pub scale_in_cooldown: Duration,
    pub last_scaled_at: Option<DateTime<Utc>>,
}

/// A scaling decision and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub desired: u32,
    pub reason: String,
}

/// The new desired count, if the measure `total` (over all members, taken at `measured_at`)
/// calls for one now.
pub fn next(
    t: &Tracking,
    total: f64,
    what: &str,
    measured_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Scale> {
    if (now - measured_at).to_std().unwrap_or_default() > STALE_AFTER || t.target <= 0.0 {
        return None;
    }
    let wanted = ((total / t.target).ceil().max(0.0) as u32).clamp(t.min, t.max.max(t.min));
    if wanted == t.desired {
        return None;
    }
    let since = t
        .last_scaled_at
        .map(|at| (now - at).to_std().unwrap_or_default());
    let (cooldown, direction) = if wanted > t.desired {
        (t.scale_out_cooldown, "out")
    } else {
        (t.scale_in_cooldown, "in")
    };
    if since.is_some_and(|s| s < cooldown) {
        return None;
    }
    let per_member = total / f64::from(t.desired.max(1));
    Some(Scale {
        desired: wanted,
        reason: format!(
            "scale {direction}: {what} {total:.1} in all is {per_member:.1} per member at {} members, target {}; {wanted} members bring it to {:.1}",
            t.desired,
            t.target,
            total / f64::from(wanted.max(1))
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn tracking(desired: u32) -> Tracking {
        Tracking {
            target: 10.0,
            min: 1,
            max: 4,
            desired,
            scale_out_cooldown: Duration::from_secs(60),
            scale_in_cooldown: Duration::from_secs(300),
            last_scaled_at: None,
        }
    }

    #[test]
    fn load_over_the_target_adds_members_up_to_max() {
        let s = next(&tracking(1), 25.0, "connections", at(0), at(1)).unwrap();
        assert_eq!(s.desired, 3);
        assert!(s.reason.contains("scale out"), "{}", s.reason);
        assert_eq!(
            next(&tracking(1), 500.0, "connections", at(0), at(1))
                .unwrap()
                .desired,
            4
        );
    }

    #[test]
    fn load_under_the_target_removes_members_down_to_min() {
        assert_eq!(
            next(&tracking(3), 0.0, "connections", at(0), at(1))
                .unwrap()
                .desired,
            1
        );
        assert_eq!(
            next(&tracking(3), 15.0, "connections", at(0), at(1))
                .unwrap()
                .desired,
            2
        );
        assert_eq!(next(&tracking(2), 15.0, "connections", at(0), at(1)), None);
    }

    #[test]
    fn cooldowns_hold_decisions_back() {
        let mut t = tracking(1);
        t.last_scaled_at = Some(at(0));
        assert_eq!(next(&t, 25.0, "connections", at(30), at(30)), None);
        assert!(next(&t, 25.0, "connections", at(61), at(61)).is_some());
        t.desired = 3;
        assert_eq!(next(&t, 0.0, "connections", at(200), at(200)), None);
        assert!(next(&t, 0.0, "connections", at(301), at(301)).is_some());
    }

    #[test]
    fn a_stale_measure_is_ignored() {
        assert_eq!(next(&tracking(1), 25.0, "connections", at(0), at(31)), None);
    }
}
