//! Credentials: argon2id password hashes (computed on the blocking pool, a few at a time) and
//! API tokens, of which only a SHA-256 digest is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

pub use crate::domain::role::Role;

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

    /// The one admin check every service uses: 403 unless this principal is an admin.
    pub fn require_admin(&self) -> Result<(), crate::error::AppError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(crate::error::AppError::Forbidden(
                "only admins may do this; ask an admin of this installation".into(),
            ))
        }
    }
}

/// Hashes and verifies passwords with argon2id, at most `limit` at a time, off the async
/// threads, so a flood of logins cannot starve request handling; past `max_waiting` queued
/// checks a login is turned away at once instead of delaying every honest one.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    dummy_hash: Arc<String>,
    /// Checks running or waiting now.
    queued: Arc<AtomicUsize>,
    /// Most checks running or waiting at once.
    max_queued: usize,
    /// argon2 verifications run so far (known and unknown users alike).
    verifications: Arc<AtomicU64>,
}

/// Too many password checks are waiting.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server is busy checking other logins; try again in a moment")]
pub struct HashQueueFull;

/// A place in the check queue, given back when dropped.
struct QueueSlot(Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hashing could not complete.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl PasswordHasher {
    /// A hasher allowing `limit` concurrent hashes and `max_waiting` more queued checks.
    pub fn new(limit: usize, max_waiting: usize) -> Self {
        let dummy = hash_now("carve dummy password for unknown users").unwrap_or_default();
        Self {
            permits: Arc::new(Semaphore::new(limit.max(1))),
            dummy_hash: Arc::new(dummy),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued: limit.max(1) + max_waiting,
            verifications: Arc::new(AtomicU64::new(0)),
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
    /// so the answer takes as long as for a wrong password. Refused at once when the queue
    /// is full.
    pub async fn verify(
        &self,
        hash: Option<String>,
        password: String,
    ) -> Result<bool, HashQueueFull> {
        let slot = self.enter()?;
        Ok(self.verify_in(slot, hash, password).await)
    }

    /// argon2 verifications this hasher has run: one per checked password, known user or not.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Takes a place in the check queue, or says it is full.
    fn enter(&self) -> Result<QueueSlot, HashQueueFull> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(HashQueueFull);
        }
        Ok(QueueSlot(self.queued.clone()))
    }

    /// Reserves a place in the queue now for a check made later (after the attempt is counted).
    pub fn reserve(&self) -> Result<QueuedCheck<'_>, HashQueueFull> {
        Ok(QueuedCheck {
            hasher: self,
            slot: self.enter()?,
        })
    }

    async fn verify_in(&self, _slot: QueueSlot, hash: Option<String>, password: String) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let verifications = self.verifications.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    verifications.fetch_add(1, Ordering::Relaxed);
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

/// A password check whose place in the queue is already held.
pub struct QueuedCheck<'a> {
    hasher: &'a PasswordHasher,
    slot: QueueSlot,
}

impl QueuedCheck<'_> {
    /// Whether `password` matches `hash` (a dummy hash when `None`, as in [`PasswordHasher::verify`]).
    pub async fn verify(self, hash: Option<String>, password: String) -> bool {
        self.hasher.verify_in(self.slot, hash, password).await
    }
}

/// argon2id with the crate's recommended parameters and a random salt.
fn hash_now(password: &str) -> Result<String, HashError> {
    let hash: Result<PasswordHash, _> = Argon2::default().hash_password(password.as_bytes());
    hash.map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// The real client of a request from `peer`: `peer` itself unless it is a trusted proxy; then
/// the nearest address in `X-Forwarded-For` (read from the right) that is not a trusted
/// proxy, so a client cannot choose its address by sending the header itself.
pub fn client_address(
    peer: std::net::IpAddr,
    forwarded_for: &[&str],
    trusted: &[std::net::IpAddr],
) -> std::net::IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        let Ok(addr) = hop.parse::<std::net::IpAddr>() else {
            break;
        };
        client = addr;
        if !trusted.contains(&addr) {
            break;
        }
    }
    client
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
        let hasher = PasswordHasher::new(2, 4);
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            hasher
                .verify(Some(hash.clone()), "correct horse".into())
                .await
                .unwrap()
        );
        assert!(!hasher.verify(Some(hash), "wrong".into()).await.unwrap());
        assert!(
            !hasher
                .verify(None, "carve dummy password for unknown users".into())
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_full_check_queue_turns_logins_away_at_once() {
        let hasher = PasswordHasher::new(1, 2);
        let held: Vec<_> = (0..3).map(|_| hasher.reserve().unwrap()).collect();
        assert!(hasher.reserve().is_err());
        assert!(hasher.verify(None, "x".into()).await.is_err());
        drop(held);
        assert!(hasher.reserve().is_ok());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let proxy = [ip("127.0.0.2")];
        // Straight from a client: its header is ignored.
        assert_eq!(
            client_address(ip("127.0.0.9"), &["1.2.3.4"], &proxy),
            ip("127.0.0.9")
        );
        // Through the proxy: the address the proxy appended, not one the client made up.
        assert_eq!(
            client_address(ip("127.0.0.2"), &["6.6.6.6, 127.0.0.7"], &proxy),
            ip("127.0.0.7")
        );
        assert_eq!(
            client_address(ip("127.0.0.2"), &[], &proxy),
            ip("127.0.0.2")
        );
        assert_eq!(
            client_address(ip("127.0.0.2"), &["garbage"], &proxy),
            ip("127.0.0.2")
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
