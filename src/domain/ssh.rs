//! SSH public keys as users paste them: one line, `type base64 [comment]`.

use base64::Engine as _;

use super::Invalid;

/// Most keys one VM may be given.
pub const MAX_KEYS: usize = 32;
/// Key types carve passes to guests.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A checked single-line OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SshPublicKey(String);

impl SshPublicKey {
    /// Checks one key in `authorized_keys` form.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let field = "ssh_keys";
        let line = s.trim();
        if line.len() > 16 * 1024 || line.chars().any(|c| c.is_control()) {
            return Err(Invalid::new(
                field,
                "each key must be one line of at most 16 KiB",
            ));
        }
        let mut parts = line.split(' ').filter(|p| !p.is_empty());
        let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
            return Err(Invalid::new(
                field,
                "a key looks like \"ssh-ed25519 AAAA... comment\"",
            ));
        };
        if !KEY_TYPES.contains(&kind) {
            return Err(Invalid::new(
                field,
                format!(
                    "key type {kind:?} is not supported: use one of {}",
                    KEY_TYPES.join(", ")
                ),
            ));
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| Invalid::new(field, "the key's second word is not valid base64"))?;
        if !blob_names_type(&blob, kind) {
            return Err(Invalid::new(
                field,
                format!("the key data does not hold a {kind} key"),
            ));
        }
        let comment: String = parts.collect::<Vec<_>>().join(" ");
        if comment.chars().any(|c| "\"'\\`$".contains(c)) {
            return Err(Invalid::new(
                field,
                "a key comment may not contain quotes, '\\', '`' or '$'",
            ));
        }
        let key = if comment.is_empty() {
            format!("{kind} {body}")
        } else {
            format!("{kind} {body} {comment}")
        };
        Ok(Self(key))
    }

    /// The key as one `authorized_keys` line.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The fingerprint OpenSSH prints: `SHA256:` and the unpadded base64 of the key's digest.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let body = self.0.split(' ').nth(1).unwrap_or_default();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_default();
        let digest = sha2::Sha256::digest(&blob);
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        )
    }

    /// The key's comment (often `user@machine`), if any.
    pub fn comment(&self) -> Option<&str> {
        self.0.splitn(3, ' ').nth(2)
    }
}

/// Whether the wire-format blob starts with the length-prefixed key type name.
fn blob_names_type(blob: &[u8], kind: &str) -> bool {
    let Some(len) = blob
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return false;
    };
    blob.get(4..4 + len) == Some(kind.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsLoyjJx4Nw7l7ZhBmSbfM7pY1LpMxRcYpV2oXq6qPz me@laptop";

    #[test]
    fn accepts_real_keys_and_refuses_junk() {
        assert_eq!(SshPublicKey::parse(ED25519).unwrap().as_str(), ED25519);
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAAB3NzaC1kc3M=",
            "ssh-ed25519 !!!notbase64",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIDsLoyjJx4Nw7l7ZhBmSbfM7pY1LpMxRcYpV2oXq6qPz",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsLoyjJx4Nw7l7ZhBmSbfM7pY1LpMxRcYpV2oXq6qPz a\nb",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsLoyjJx4Nw7l7ZhBmSbfM7pY1LpMxRcYpV2oXq6qPz \"x",
        ] {
            assert!(SshPublicKey::parse(bad).is_err(), "{bad}");
        }
    }
}
