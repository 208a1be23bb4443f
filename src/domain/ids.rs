//! Resource ids: a short prefix naming the kind, an underscore, 16 lowercase hex digits.

use std::fmt;

use rand::RngCore;

/// Generates the id type for one kind of resource.
macro_rules! id_type {
    ($name:ident, $prefix:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new random id.
            pub fn generate() -> Self {
                Self(random_id($prefix))
            }

            /// Accepts a string only if it has this kind's shape; anything else is not an id.
            pub fn parse(s: &str) -> Option<Self> {
                has_id_shape(s, $prefix).then(|| Self(s.to_string()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(TenantId, "tn", "A tenant's id.");
id_type!(UserId, "us", "A user's id.");
id_type!(TokenId, "tk", "An API token's id (not the secret).");
id_type!(HostId, "hs", "A hypervisor host's id.");
id_type!(PlanId, "pl", "A plan's id.");
id_type!(ImageId, "im", "An image's id.");
id_type!(VmId, "vm", "A virtual machine's id.");
id_type!(OperationId, "op", "An operation's id.");
id_type!(SftpAccountId, "sa", "An SFTP account's id.");
id_type!(SshKeyId, "sk", "A saved SSH key's id.");
id_type!(PoolId, "lb", "A load-balanced pool's id.");

impl TenantId {
    /// The tenant that owns admins' VMs when no tenant is named.
    pub fn default_tenant() -> Self {
        Self("tn_0000000000000000".into())
    }
}

/// `prefix_` followed by 16 random lowercase hex digits.
fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Whether `s` is `prefix_` followed by exactly 16 lowercase hex digits.
fn has_id_shape(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| {
            hex.len() == 16
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_foreign_shapes_do_not() {
        let id = VmId::generate();
        assert_eq!(VmId::parse(id.as_str()), Some(id.clone()));
        assert!(id.as_str().starts_with("vm_"));
        for bad in [
            "",
            "vm_",
            "vm_123",
            "pl_0123456789abcdef",
            "vm_0123456789ABCDEF",
            "vm_../../etc",
        ] {
            assert_eq!(VmId::parse(bad), None, "{bad}");
        }
    }
}
