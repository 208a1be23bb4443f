//! A hypervisor host's state and the labels placement matches against.

use super::Invalid;

/// Whether a host takes new VMs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
    sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum HostState {
    /// Takes new VMs.
    Active,
    /// Set by an admin: no new VMs; its VMs can be moved away (evacuate).
    Maintenance,
    /// Set by the reconciler: libvirt there does not answer; its VMs are `unknown` until it
    /// does again.
    Unreachable,
}

impl HostState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Active => "active",
            HostState::Maintenance => "maintenance",
            HostState::Unreachable => "unreachable",
        }
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most labels on one host or asked for by one request.
pub const MAX_LABELS: usize = 16;

/// Checks a list of labels (`ssd`, `zone=a`): 1 to 63 characters of lower-case letters,
/// digits, '.', '_', '-' and '=', starting with a letter or digit; at most [`MAX_LABELS`];
/// duplicates are dropped. `field` names the request field in errors.
pub fn labels(field: &'static str, given: &[String]) -> Result<Vec<String>, Invalid> {
    if given.len() > MAX_LABELS {
        return Err(Invalid::new(
            field,
            format!(
                "{} labels are too many: use at most {MAX_LABELS}",
                given.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(given.len());
    for label in given {
        let ok = (1..=63).contains(&label.len())
            && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && label.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '=')
            });
        if !ok {
            let shown: String = label.chars().take(70).collect();
            return Err(Invalid::new(
                field,
                format!(
                    "{shown:?} is not a label: use 1 to 63 lower-case letters, digits, '.', '_', '-' or '=', starting with a letter or digit (e.g. ssd or zone=a)"
                ),
            ));
        }
        if !out.contains(label) {
            out.push(label.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked_and_deduplicated() {
        let ok = labels("labels", &["ssd".into(), "zone=a".into(), "ssd".into()]).unwrap();
        assert_eq!(ok, vec!["ssd", "zone=a"]);
        for bad in ["", "SSD", "-x", "a b", "<script>", &"x".repeat(64)] {
            let e = labels("labels", &[bad.to_string()]).unwrap_err();
            assert_eq!(e.field, "labels");
            assert!(e.message.contains("is not a label"), "{}", e.message);
        }
        let many: Vec<String> = (0..17).map(|i| format!("l{i}")).collect();
        assert!(
            labels("host_labels", &many)
                .unwrap_err()
                .message
                .contains("at most 16")
        );
    }
}
