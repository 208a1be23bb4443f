//! What a scale group does next, decided from facts alone (no I/O), so every rule is tested
//! without guests: how many VMs to create and which members to retire, and why.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How a member is doing, as the controller classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// In the pool's rotation.
    Healthy,
    /// Being made or booting, or running but not (yet) passing the health check.
    NotHealthy,
    /// Its VM does not run (stopped, crashed, paused, missing) and no operation is on it:
    /// it serves nothing.
    Down,
    /// An operation holds it (a start, a stop, a reboot): left alone until it ends.
    Busy,
    /// Deleted or being deleted.
    Gone,
}

/// One member as the decision sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub template_version: i64,
    pub condition: Condition,
    /// Since when it has run without passing the health check.
    pub unhealthy_since: Option<DateTime<Utc>>,
    pub ever_healthy: bool,
}

/// The group's settings that the decision follows.
#[derive(Debug, Clone)]
pub struct Rules {
    pub desired: u32,
    pub max_surge: u32,
    pub min_healthy_percent: u32,
    /// How long a member that was healthy may fail its check before it is replaced.
    pub replace_after: Duration,
    /// How long a new member may take to pass its first check.
    pub health_grace: Duration,
    pub template_version: i64,
    /// A refresh is running (not paused).
    pub refreshing: bool,
}

/// Why a member goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `desired` was lowered.
    ScaleIn,
    /// Its VM stopped behind carve's back.
    Down,
    /// It failed its health check for too long (and a replacement is in service).
    Unhealthy,
    /// It was made of an older template.
    Refresh,
}

impl Reason {
    /// The reason in words, for the audit log and the panel.
    pub fn says(self) -> &'static str {
        match self {
            Reason::ScaleIn => "desired was lowered (the newest members go first)",
            Reason::Down => "its VM is not running (stopped behind carve's back)",
            Reason::Unhealthy => {
                "it failed the pool's health check for longer than replace_after_s"
            }
            Reason::Refresh => "it was made of an older template (rolling refresh)",
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// New members to create from the current template.
    pub create: u32,
    /// Members to drain and delete.
    pub retire: Vec<(String, Reason)>,
    /// The refresh has nothing left to replace.
    pub refresh_done: bool,
}

/// Whether a member is past the time it may fail its check.
fn doomed(m: &Member, rules: &Rules, now: DateTime<Utc>) -> bool {
    match m.condition {
        Condition::Down => true,
        Condition::NotHealthy => {
            let allowed = if m.ever_healthy {
                rules.replace_after
            } else {
                rules.replace_after.max(rules.health_grace)
            };
            m.unhealthy_since
                .is_some_and(|since| (now - since).to_std().unwrap_or_default() > allowed)
        }
        _ => false,
    }
}

/// Decides the next step of a group.
pub fn decide(members: &[Member], rules: &Rules, now: DateTime<Utc>) -> Decision {
    let mut out = Decision::default();
    let desired = rules.desired as usize;
    let live: Vec<&Member> = members
        .iter()
        .filter(|m| m.condition != Condition::Gone)
        .collect();
    let (doomed_ones, serving): (Vec<&Member>, Vec<&Member>) =
        live.iter().partition(|m| doomed(m, rules, now));
    let healthy = serving
        .iter()
        .filter(|m| m.condition == Condition::Healthy)
        .count();
    // Replacing: a member that serves nothing (down, or never healthy) goes now; one that
    // served and still runs goes once the group has its desired count in service without it.
    let mut kept_doomed = 0;
    for m in &doomed_ones {
        if m.condition == Condition::Down {
            out.retire.push((m.id.clone(), Reason::Down));
        } else if !m.ever_healthy || healthy >= desired {
            out.retire.push((m.id.clone(), Reason::Unhealthy));
        } else {
            kept_doomed += 1;
        }
    }
    // Never more members at once than desired and a surge (replacements that fail their
    // checks too cannot pile up).
    let ceiling = desired + (rules.max_surge as usize).max(1);
    let (current, outdated): (Vec<&Member>, Vec<&Member>) = serving
        .iter()
        .partition(|m| m.template_version >= rules.template_version);
    let room = ceiling.saturating_sub(serving.len() + kept_doomed);
    if rules.refreshing && !outdated.is_empty() {
        refresh_step(&serving, &current, &outdated, healthy, rules, &mut out);
        out.create = out.create.min(room as u32);
        return out;
    }
    out.refresh_done = rules.refreshing && outdated.is_empty();
    if serving.len() < desired {
        out.create = (desired - serving.len()).min(room) as u32;
    } else if serving.len() > desired {
        // The newest go first, those not in service before those that are.
        let mut by_age: Vec<&Member> = serving.clone();
        by_age.sort_by(|a, b| {
            let in_service = |m: &Member| m.condition == Condition::Healthy;
            in_service(a)
                .cmp(&in_service(b))
                .then(b.created_at.cmp(&a.created_at))
                .then(b.id.cmp(&a.id))
        });
        for m in by_age.into_iter().take(serving.len() - desired) {
            out.retire.push((m.id.clone(), Reason::ScaleIn));
        }
    }
    out
}

/// One step of a rolling refresh: new members up to `desired + max_surge`, and outdated ones
/// retired while at least `min_healthy_percent` of `desired` stay in service.
fn refresh_step(
    serving: &[&Member],
    current: &[&Member],
    outdated: &[&Member],
    healthy: usize,
    rules: &Rules,
    out: &mut Decision,
) {
    let desired = rules.desired as usize;
    let ceiling = desired + rules.max_surge as usize;
    let missing_current = desired.saturating_sub(current.len());
    out.create = missing_current.min(ceiling.saturating_sub(serving.len())) as u32;
    // Without surge one member may be missing while its replacement boots (whatever the
    // healthy share says, or the refresh could never begin).
    let floor = if rules.max_surge == 0 {
        desired.saturating_sub(1)
    } else {
        desired
    };
    let min_healthy = (desired * rules.min_healthy_percent as usize)
        .div_ceil(100)
        .min(floor);
    let mut remaining = serving.len();
    let mut in_service = healthy;
    let mut order: Vec<&Member> = outdated.to_vec();
    order.sort_by(|a, b| {
        let in_rotation = |m: &Member| m.condition == Condition::Healthy;
        in_rotation(a)
            .cmp(&in_rotation(b))
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.cmp(&b.id))
    });
    for m in order {
        if remaining <= floor {
            break;
        }
        let counts = m.condition == Condition::Healthy;
        if counts && in_service.saturating_sub(1) < min_healthy {
            break;
        }
        out.retire.push((m.id.clone(), Reason::Refresh));
        remaining -= 1;
        if counts {
            in_service -= 1;
        }
    }
}

#[cfg(test)]
mod tests;
