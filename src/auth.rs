//! Credentials: argon2id password hashes (computed on the blocking pool, a few at a time) and
//! API tokens, of which only a SHA-256 digest is stored.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::db::Scope;
use crate::domain::ids::{TenantId, UserId};

/// Prefix of every API token, so leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "carve_";

/// A user's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Customer,
}

impl Role {
    /// Parses `admin` or `customer`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "customer" => Some(Role::Customer),
            _ => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Customer => "customer",
        }
    }
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub tenant_id: Option<TenantId>,
    /// Version of the data this principal may see, read with its credentials: a rendered VM
    /// list made at this version is still current.
    pub view_version: Option<i64>,
}

impl Principal {
    /// The rows this principal may see: admins all, customers their tenant's.
    pub fn scope(&self) -> Scope {
        match (self.role, &self.tenant_id) {
            (Role::Admin, _) => Scope::All,
            (Role::Customer, Some(t)) => Scope::Tenant(t.clone()),
            // A customer always has a tenant (the schema insists); never widen by mistake.
            (Role::Customer, None) => Scope::Tenant(TenantId::default_tenant()),
        }
    }

    /// Whether this principal is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Hashes and verifies passwords with argon2id, at most `limit` at a time, off the async
/// threads, so a flood of logins cannot starve request handling.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    dummy_hash: Arc<String>,
}

/// Hashing could not complete.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl PasswordHasher {
    /// A hasher allowing `limit` concurrent hashes.
    pub fn new(limit: usize) -> Self {
        let dummy = hash_now("carve dummy password for unknown users").unwrap_or_default();
        Self {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            dummy_hash: Arc::new(dummy),
        }
    }

    /// The argon2id PHC string of `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(|e| HashError(e.to_string()))?
    }

    /// Whether `password` matches `hash`. With no hash (unknown user) a dummy hash is checked
    /// so the answer takes as long as for a wrong password.
    pub async fn verify(&self, hash: Option<String>, password: String) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && known
    }
}

/// argon2id with the crate's recommended parameters and a random salt.
fn hash_now(password: &str) -> Result<String, HashError> {
    let hash: Result<PasswordHash, _> = Argon2::default().hash_password(password.as_bytes());
    hash.map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// A new API token: the secret (shown once) and the digest to store.
pub fn new_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = token_digest(&secret);
    (secret, digest)
}

/// The SHA-256 digest under which a token is stored.
pub fn token_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_with_argon2id_and_verify() {
        let hasher = PasswordHasher::new(2);
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            hasher
                .verify(Some(hash.clone()), "correct horse".into())
                .await
        );
        assert!(!hasher.verify(Some(hash), "wrong".into()).await);
        assert!(
            !hasher
                .verify(None, "carve dummy password for unknown users".into())
                .await
        );
    }

    #[test]
    fn tokens_are_random_and_stored_as_digests() {
        let (a, da) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_eq!(token_digest(&a), da);
    }
}
