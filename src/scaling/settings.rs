//! A scale group's settings as asked for: the template and the numbers, checked all at once so
//! every problem is named in one answer.

use crate::domain::Invalid;
use crate::domain::pool::TargetMetric;
use crate::domain::secret::Secret;
use crate::domain::ssh::{self, SshPublicKey};

/// Most members a group may have.
pub const MAX_SIZE: u32 = 100;
/// Most members a refresh may add beyond `desired` at once.
pub const MAX_SURGE: u32 = 10;
/// Longest user-data a template may carry (as a VM's).
pub const MAX_USER_DATA: usize = crate::provision::vms::MAX_USER_DATA;

/// What every member is made of.
#[derive(Debug, Clone)]
pub struct TemplateInput {
    pub plan: String,
    pub image: String,
    pub user_data: Option<String>,
    pub ssh_keys: Vec<String>,
    /// The guest port the pool sends traffic to (it is forwarded).
    pub port: u32,
    /// Root's password on the console (only its hash is kept); left out on a change, the
    /// previous one stays.
    pub root_password: Option<Secret>,
}

/// Target tracking as asked for.
#[derive(Debug, Clone)]
pub struct TargetInput {
    pub metric: TargetMetric,
    /// The metric per healthy member to keep near.
    pub value: u32,
    pub scale_out_cooldown_s: Option<u32>,
    pub scale_in_cooldown_s: Option<u32>,
}

/// A group as asked for by `PUT`; absent numbers take defaults.
#[derive(Debug, Clone)]
pub struct GroupInput {
    pub template: TemplateInput,
    pub min: u32,
    pub max: u32,
    /// Left out: `min` for a new group, the current count (within min..max) for a change.
    pub desired: Option<u32>,
    pub replace_after_s: Option<u32>,
    pub health_grace_s: Option<u32>,
    pub max_surge: Option<u32>,
    pub min_healthy_percent: Option<u32>,
    pub target: Option<TargetInput>,
}

/// The numbers of a group, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbers {
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub replace_after_s: u32,
    pub health_grace_s: u32,
    pub max_surge: u32,
    pub min_healthy_percent: u32,
    pub target: Option<(TargetMetric, u32, u32, u32)>,
}

/// The template's fields that need no database, checked.
#[derive(Debug, Clone)]
pub struct CheckedTemplate {
    pub ssh_keys: Vec<String>,
    pub user_data: Option<String>,
    pub port: u16,
}

/// Checks everything that needs no database; `current` is the desired count of an existing
/// group.
pub fn check(
    req: &GroupInput,
    current: Option<u32>,
) -> Result<(CheckedTemplate, Numbers), Vec<Invalid>> {
    let mut errors = Vec::new();
    let t = &req.template;
    for (field, value) in [("template.plan", &t.plan), ("template.image", &t.image)] {
        if value.is_empty() || value.len() > 64 {
            errors.push(Invalid::new(
                field,
                format!("must be 1 to 64 characters (got {})", value.chars().count()),
            ));
        }
    }
    if t.ssh_keys.len() > ssh::MAX_KEYS {
        errors.push(Invalid::new(
            "template.ssh_keys",
            format!("at most {} keys", ssh::MAX_KEYS),
        ));
    }
    let ssh_keys: Vec<String> = t
        .ssh_keys
        .iter()
        .filter_map(|k| {
            SshPublicKey::parse(k)
                .map_err(|mut e| {
                    e.field = "template.ssh_keys";
                    errors.push(e)
                })
                .ok()
        })
        .map(|k| k.as_str().to_string())
        .collect();
    if let Some(ud) = &t.user_data {
        if ud.len() > MAX_USER_DATA {
            errors.push(Invalid::new(
                "template.user_data",
                format!(
                    "is {} bytes; at most {MAX_USER_DATA} are accepted",
                    ud.len()
                ),
            ));
        }
        if ud.contains('\0') {
            errors.push(Invalid::new(
                "template.user_data",
                "may not contain NUL characters",
            ));
        }
    }
    if let Some(pw) = &t.root_password {
        for mut e in crate::provision::vms::check_root_password(pw) {
            e.field = "template.root_password";
            errors.push(e);
        }
    }
    let port = match u16::try_from(t.port) {
        Ok(p) if p > 0 => p,
        _ => {
            errors.push(Invalid::new(
                "template.port",
                format!("{} is not a TCP port: use 1 to 65535", t.port),
            ));
            0
        }
    };
    let numbers = check_numbers(req, current, &mut errors);
    if errors.is_empty() {
        Ok((
            CheckedTemplate {
                ssh_keys,
                user_data: t.user_data.clone().filter(|s| !s.is_empty()),
                port,
            },
            numbers,
        ))
    } else {
        Err(errors)
    }
}

/// Checks the counts, timings and tracking.
fn check_numbers(req: &GroupInput, current: Option<u32>, errors: &mut Vec<Invalid>) -> Numbers {
    let mut within = |field: &'static str, v: Option<u32>, lo: u32, hi: u32, default: u32| {
        let v = v.unwrap_or(default);
        if !(lo..=hi).contains(&v) {
            errors.push(Invalid::new(
                field,
                format!("must be {lo} to {hi} (got {v})"),
            ));
        }
        v
    };
    let max = within("max", Some(req.max), 0, MAX_SIZE, 0);
    let min = within("min", Some(req.min), 0, MAX_SIZE, 0);
    let replace_after_s = within("replace_after_s", req.replace_after_s, 5, 86_400, 60);
    let health_grace_s = within("health_grace_s", req.health_grace_s, 0, 3600, 300);
    let max_surge = within("max_surge", req.max_surge, 0, MAX_SURGE, 1);
    let min_healthy_percent = within("min_healthy_percent", req.min_healthy_percent, 0, 100, 100);
    let target = req.target.as_ref().map(|t| {
        let value = within("target.value", Some(t.value), 1, 1_000_000, 1);
        let out = within(
            "target.scale_out_cooldown_s",
            t.scale_out_cooldown_s,
            0,
            86_400,
            60,
        );
        let inn = within(
            "target.scale_in_cooldown_s",
            t.scale_in_cooldown_s,
            0,
            86_400,
            300,
        );
        (t.metric, value, out, inn)
    });
    if min > max {
        errors.push(Invalid::new(
            "min",
            format!("is {min}, more than max ({max}); make min <= max"),
        ));
    }
    let desired = match req.desired {
        Some(d) => {
            if d < min || d > max {
                errors.push(Invalid::new(
                    "desired",
                    format!("is {d}; it must be within min..max ({min}..{max})"),
                ));
            }
            d
        }
        None => current.unwrap_or(min).clamp(min, max.max(min)),
    };
    if target.is_some() && min == 0 {
        errors.push(Invalid::new(
            "min",
            "a group that follows load needs min >= 1 (with no member there is no load to measure)",
        ));
    }
    if max_surge == 0 && min_healthy_percent == 100 {
        errors.push(Invalid::new(
            "max_surge",
            "with max_surge 0 and min_healthy_percent 100 a refresh could never replace a member; allow a surge (max_surge >= 1) or lower min_healthy_percent",
        ));
    }
    Numbers {
        min,
        max,
        desired,
        replace_after_s,
        health_grace_s,
        max_surge,
        min_healthy_percent,
        target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> GroupInput {
        GroupInput {
            template: TemplateInput {
                plan: "small".into(),
                image: "tiny".into(),
                user_data: None,
                ssh_keys: vec![],
                port: 80,
                root_password: None,
            },
            min: 1,
            max: 3,
            desired: None,
            replace_after_s: None,
            health_grace_s: None,
            max_surge: None,
            min_healthy_percent: None,
            target: None,
        }
    }

    #[test]
    fn defaults_fill_in_and_desired_starts_at_min() {
        let (t, n) = check(&input(), None).unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(
            (n.min, n.max, n.desired, n.max_surge, n.min_healthy_percent),
            (1, 3, 1, 1, 100)
        );
        // A change keeps the current count, within the new bounds.
        assert_eq!(check(&input(), Some(3)).unwrap().1.desired, 3);
        assert_eq!(check(&input(), Some(7)).unwrap().1.desired, 3);
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let mut r = input();
        r.min = 5;
        r.max = 200;
        r.desired = Some(201);
        r.template.port = 70_000;
        r.max_surge = Some(0);
        let errors = check(&r, None).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        for f in ["max", "desired", "template.port", "max_surge"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn min_above_max_is_refused() {
        let mut r = input();
        r.min = 3;
        r.max = 2;
        let errors = check(&r, None).unwrap_err();
        assert!(errors.iter().any(|e| e.field == "min"), "{errors:?}");
    }
}
