//! SFTP quota accounting. Every write, extension, truncation and rename is charged here before
//! it lands, under one lock per process, so concurrent sessions together cannot pass a
//! tenant's quota by a byte. Usage is kept in the database (flushed every few seconds and
//! when a session ends), rescanned from disk at start-up and on an admin request; limits are
//! re-read from the database every few seconds, so a changed quota applies at once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::QuotaConfig;
use crate::db::{self, Db};
use crate::domain::ids::{SftpAccountId, TenantId};

/// How long limits read from the database are trusted.
const LIMITS_TTL: Duration = Duration::from_secs(5);

/// A charge that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quota exceeded: the tenant's {limit} is {max} and {used} are used, so {asked} more do not fit; delete files or ask for a larger quota"
)]
pub struct Exceeded {
    /// `max_sftp_bytes` or `max_sftp_files`.
    pub limit: &'static str,
    pub max: i64,
    pub used: i64,
    pub asked: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    bytes: i64,
    files: i64,
    dirty: bool,
}

struct Tenant {
    max_bytes: i64,
    max_files: i64,
    limits_read: Instant,
    accounts: HashMap<SftpAccountId, Usage>,
}

impl Tenant {
    fn used(&self) -> (i64, i64) {
        self.accounts
            .values()
            .fold((0, 0), |(b, f), u| (b + u.bytes, f + u.files))
    }
}

/// Per-tenant usage of the SFTP accounts served by this process.
pub struct Ledger {
    db: Db,
    defaults: QuotaConfig,
    tenants: Mutex<HashMap<TenantId, Tenant>>,
}

impl Ledger {
    /// An empty ledger; tenants are loaded from the database when first used.
    pub fn new(db: Db, defaults: QuotaConfig) -> Self {
        Self {
            db,
            defaults,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Tenant>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the tenant (limits and every account's usage) if absent, or its limits if stale.
    pub async fn ensure(&self, tenant: &TenantId) -> Result<(), sqlx::Error> {
        let fresh = self
            .lock()
            .get(tenant)
            .is_some_and(|t| t.limits_read.elapsed() < LIMITS_TTL);
        if fresh {
            return Ok(());
        }
        let mut conn = self.db.acquire().await?;
        let quota = crate::tenancy::accounts::quota_of(&mut conn, &self.defaults, tenant).await?;
        let rows = db::sftp_accounts::list(&self.db, &db::Scope::Tenant(tenant.clone())).await?;
        let mut tenants = self.lock();
        let entry = tenants.entry(tenant.clone()).or_insert_with(|| Tenant {
            max_bytes: 0,
            max_files: 0,
            limits_read: Instant::now(),
            accounts: HashMap::new(),
        });
        entry.max_bytes = quota.max_sftp_bytes;
        entry.max_files = quota.max_sftp_files;
        entry.limits_read = Instant::now();
        // Accounts appear and disappear through the API: keep live counts of known ones.
        let present: HashSet<&SftpAccountId> = rows.iter().map(|r| &r.id).collect();
        entry.accounts.retain(|id, _| present.contains(id));
        for row in &rows {
            entry.accounts.entry(row.id.clone()).or_insert(Usage {
                bytes: row.used_bytes,
                files: row.used_files,
                dirty: false,
            });
        }
        Ok(())
    }

    /// Charges `bytes` and `files` (negative amounts release) to an account. All or nothing.
    pub fn charge(
        &self,
        tenant: &TenantId,
        account: &SftpAccountId,
        bytes: i64,
        files: i64,
    ) -> Result<(), Exceeded> {
        let mut tenants = self.lock();
        let Some(t) = tenants.get_mut(tenant) else {
            return Err(Exceeded {
                limit: "max_sftp_bytes",
                max: 0,
                used: 0,
                asked: bytes,
            });
        };
        let (used_bytes, used_files) = t.used();
        if bytes > 0 && used_bytes + bytes > t.max_bytes {
            return Err(Exceeded {
                limit: "max_sftp_bytes",
                max: t.max_bytes,
                used: used_bytes,
                asked: bytes,
            });
        }
        if files > 0 && used_files + files > t.max_files {
            return Err(Exceeded {
                limit: "max_sftp_files",
                max: t.max_files,
                used: used_files,
                asked: files,
            });
        }
        let u = t.accounts.entry(account.clone()).or_default();
        u.bytes = (u.bytes + bytes).max(0);
        u.files = (u.files + files).max(0);
        u.dirty = true;
        Ok(())
    }

    /// Charges as many of `bytes` as fit (at least 0) and returns that number.
    pub fn charge_up_to(&self, tenant: &TenantId, account: &SftpAccountId, bytes: i64) -> i64 {
        let mut tenants = self.lock();
        let Some(t) = tenants.get_mut(tenant) else {
            return 0;
        };
        let (used, _) = t.used();
        let fit = bytes.min(t.max_bytes - used).max(0);
        let u = t.accounts.entry(account.clone()).or_default();
        u.bytes += fit;
        u.dirty = true;
        fit
    }

    /// The tenant's (max bytes, used bytes, max files, used files); zeros if not loaded.
    pub fn limits(&self, tenant: &TenantId) -> (i64, i64, i64, i64) {
        let tenants = self.lock();
        let Some(t) = tenants.get(tenant) else {
            return (0, 0, 0, 0);
        };
        let (bytes, files) = t.used();
        (t.max_bytes, bytes, t.max_files, files)
    }

    /// Sets an account's usage from a scan of its home.
    pub fn set(&self, tenant: &TenantId, account: &SftpAccountId, bytes: i64, files: i64) {
        if let Some(t) = self.lock().get_mut(tenant) {
            t.accounts.insert(
                account.clone(),
                Usage {
                    bytes,
                    files,
                    dirty: false,
                },
            );
        }
    }

    /// Forgets an account (deleted).
    pub fn forget(&self, tenant: &TenantId, account: &SftpAccountId) {
        if let Some(t) = self.lock().get_mut(tenant) {
            t.accounts.remove(account);
        }
    }

    /// Writes changed usage to the database.
    pub async fn flush(&self) {
        let dirty: Vec<(SftpAccountId, i64, i64)> = {
            let mut tenants = self.lock();
            tenants
                .values_mut()
                .flat_map(|t| t.accounts.iter_mut())
                .filter(|(_, u)| u.dirty)
                .map(|(id, u)| {
                    u.dirty = false;
                    (id.clone(), u.bytes, u.files)
                })
                .collect()
        };
        for (id, bytes, files) in dirty {
            if let Err(e) = db::sftp_accounts::set_usage(&self.db, &id, bytes, files, false).await {
                tracing::warn!(account = %id, error = %e, "cannot record SFTP usage");
            }
        }
    }
}

/// Bytes (each inode once) and names (files, directories, links) under a home.
pub fn scan(home: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let (mut bytes, mut files) = (0i64, 0i64);
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            files += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                bytes += meta.len() as i64;
            }
        }
    }
    (bytes, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_count_each_inode_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/a"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(dir.path().join("d/a"), dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink("d/a", dir.path().join("c")).unwrap();
        assert_eq!(scan(dir.path()), (1000, 4));
    }
}
