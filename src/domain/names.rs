//! Names users choose. Each is checked so no XML, shell or path metacharacter, control
//! character or over-long text reaches libvirt, the filesystem or a guest.

use std::fmt;

use super::Invalid;

/// A VM's name: a DNS label (it becomes the guest's hostname).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct VmName(String);

impl VmName {
    /// Longest name accepted (a DNS label).
    pub const MAX_LEN: usize = 63;

    /// Checks a requested VM name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        dns_label(s, "name").map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A scale group member's name: its pool's name made a DNS label, and `-index`.
    pub fn for_member(pool: &str, index: i64) -> Self {
        let suffix = format!("-{index}");
        let mut base: String = pool
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        base.truncate(Self::MAX_LEN - suffix.len());
        let base = base.trim_matches('-');
        let base = if base.is_empty() { "member" } else { base };
        Self(format!("{base}{suffix}"))
    }
}

/// A name for a catalogue entry (plan, image, tenant, token): letters, digits, `.`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ResourceName(String);

impl ResourceName {
    /// Longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Checks a requested name for `field`.
    pub fn parse(s: &str, field: &'static str) -> Result<Self, Invalid> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(Invalid::new(
                field,
                format!(
                    "must be 1 to {} characters long (got {})",
                    Self::MAX_LEN,
                    s.chars().count()
                ),
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
        {
            return Err(Invalid::new(
                field,
                format!("{c:?} is not allowed: use letters, digits, '.', '_' and '-'"),
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(Invalid::new(field, "must start with a letter or digit"));
        }
        Ok(Self(s.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an RFC 1123 label: 1-63 of `a-z 0-9 -`, not starting or ending with `-`.
fn dns_label(s: &str, field: &'static str) -> Result<String, Invalid> {
    if s.is_empty() || s.len() > VmName::MAX_LEN {
        return Err(Invalid::new(
            field,
            format!(
                "must be 1 to {} characters long (got {})",
                VmName::MAX_LEN,
                s.chars().count()
            ),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(Invalid::new(
            field,
            format!(
                "{c:?} is not allowed: use lowercase letters, digits and '-' (it becomes the hostname)"
            ),
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(Invalid::new(
            field,
            "must start and end with a letter or digit",
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_are_dns_labels() {
        for ok in ["web1", "a", "my-server-01", &"x".repeat(63)] {
            assert!(VmName::parse(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(300);
        for bad in [
            "", "<x>", "a&b", "a/b", "..", "a\0b", "Web", "-a", "a-", "a b", "a.b", &long,
        ] {
            let err = VmName::parse(bad).unwrap_err();
            assert_eq!(err.field, "name", "{bad}");
        }
        assert!(VmName::parse(&long).unwrap_err().message.contains("300"));
        assert!(VmName::parse("a<b").unwrap_err().message.contains("'<'"));
    }

    #[test]
    fn member_names_are_dns_labels_from_the_pool_name() {
        let name = |pool: &str, index| VmName::for_member(pool, index).as_str().to_string();
        assert_eq!(name("web", 3), "web-3");
        assert_eq!(name("Web_Shop.1", 12), "web-shop-1-12");
        assert_eq!(name("__", 1), "member-1");
        let long = name(&"a".repeat(64), 100);
        assert!(long.len() <= 63 && long.ends_with("-100"), "{long}");
        for (pool, index) in [("web", 3), ("Web_Shop.1", 12), ("__", 1), ("-x-", 7)] {
            let n = name(pool, index);
            assert!(VmName::parse(&n).is_ok(), "{n} is not a valid VM name");
        }
    }

    #[test]
    fn resource_names_refuse_metacharacters() {
        assert!(ResourceName::parse("small-1.0_x", "name").is_ok());
        for bad in [
            "",
            ".hidden",
            "../up",
            "a/b",
            "<p>",
            "a&b",
            "a\0",
            "é",
            &"p".repeat(65),
        ] {
            assert!(ResourceName::parse(bad, "name").is_err(), "{bad}");
        }
    }
}
