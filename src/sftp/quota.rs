//! SFTP quota accounting, decided by the database so any number of carve processes hold a
//! tenant's quota to the byte. Each process holds, per tenant, a reservation granted in one
//! write transaction against `max - used - every process's reservation`; every write,
//! extension, truncation, rename and mkdir is charged against it before it lands (in memory,
//! under one lock), and only when it runs out is the database asked for more (a chunk that
//! shrinks as the tenant nears its limit, so the last bytes go to whoever needs them).
//! Every few seconds (and when a session ends) the charges move into the accounts' usage and
//! the reservation is given back; a dead process's reservation expires with its lease.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use crate::config::QuotaConfig;
use crate::db::sftp_reservations::{self, Booked};
use crate::db::{self, Db};
use crate::domain::ids::{SftpAccountId, TenantId};

/// Most bytes asked for beyond the need in one grant.
const MAX_CHUNK_BYTES: i64 = 64 << 20;
/// Most files asked for beyond the need in one grant.
const MAX_CHUNK_FILES: i64 = 256;
/// How long a reservation outlives its last renewal (flushes come every few seconds).
const LEASE_SECS: i64 = 60;

/// A charge that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    /// The tenant's limit would be passed.
    #[error(
        "quota exceeded: the tenant's {limit} is {max} and {used} are used, so {asked} more do not fit; delete files or ask for a larger quota"
    )]
    Limit {
        /// `max_sftp_bytes` or `max_sftp_files`.
        limit: &'static str,
        max: i64,
        used: i64,
        asked: i64,
    },
    /// The database could not be asked.
    #[error("the quota cannot be checked right now; try again in a moment")]
    Unavailable,
}

/// What this process holds for one tenant.
#[derive(Debug, Default)]
struct Local {
    /// Granted by the database and not yet given back.
    reserved_bytes: i64,
    reserved_files: i64,
    /// Charged since the last flush (net: releases count negative).
    spent_bytes: i64,
    spent_files: i64,
    /// The same charges per account, to move into the accounts' usage at the flush.
    pending: HashMap<SftpAccountId, (i64, i64)>,
    /// The database last said there is no more room: charges past the reservation are
    /// refused with this answer, without asking again, until something is released here or
    /// the next flush.
    full: Option<Exceeded>,
}

impl Local {
    /// Bytes and files missing from the reservation for this charge (0 when it fits).
    fn shortfall(&self, bytes: i64, files: i64) -> (i64, i64) {
        let b = if bytes > 0 {
            self.spent_bytes
                .saturating_add(bytes)
                .saturating_sub(self.reserved_bytes)
                .max(0)
        } else {
            0
        };
        let f = if files > 0 {
            self.spent_files
                .saturating_add(files)
                .saturating_sub(self.reserved_files)
                .max(0)
        } else {
            0
        };
        (b, f)
    }

    fn apply(&mut self, account: &SftpAccountId, bytes: i64, files: i64) {
        self.spent_bytes = self.spent_bytes.saturating_add(bytes);
        self.spent_files = self.spent_files.saturating_add(files);
        let p = self.pending.entry(account.clone()).or_default();
        p.0 = p.0.saturating_add(bytes);
        p.1 = p.1.saturating_add(files);
        if bytes < 0 || files < 0 {
            self.full = None;
        }
    }

    fn idle(&self) -> bool {
        self.reserved_bytes == 0 && self.reserved_files == 0 && self.pending.is_empty()
    }
}

/// What one flush moves, per tenant.
struct Moved {
    tenant: TenantId,
    reserved: (i64, i64),
    pending: HashMap<SftpAccountId, (i64, i64)>,
}

/// This process's share of every tenant's SFTP quota.
pub struct Ledger {
    db: Db,
    defaults: QuotaConfig,
    /// Names this process's reservations in the database.
    owner: String,
    tenants: Mutex<HashMap<TenantId, Local>>,
    /// Per tenant, reservations and flushes talk to the database one at a time, so neither
    /// sees the other half done; tenants never wait for each other.
    turns: Mutex<HashMap<TenantId, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl Ledger {
    /// An empty ledger; reservations are asked for when first needed.
    pub fn new(db: Db, defaults: QuotaConfig) -> Self {
        Self {
            db,
            defaults,
            owner: format!("sftp-{}", uuid::Uuid::new_v4()),
            tenants: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's turn to talk to the database.
    fn turn(&self, tenant: &TenantId) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        if turns.len() > 10_000 {
            turns.retain(|_, t| std::sync::Arc::strong_count(t) > 1);
        }
        turns.entry(tenant.clone()).or_default().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Local>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Charges if the reservation covers it (releases always apply); false if it does not.
    fn charge_local(
        &self,
        tenant: &TenantId,
        account: &SftpAccountId,
        bytes: i64,
        files: i64,
    ) -> bool {
        let mut tenants = self.lock();
        let local = tenants.entry(tenant.clone()).or_default();
        if local.shortfall(bytes, files) != (0, 0) {
            return false;
        }
        local.apply(account, bytes, files);
        true
    }

    /// Charges `bytes` and `files` (negative amounts release) to an account. All or nothing.
    pub async fn charge(
        &self,
        tenant: &TenantId,
        account: &SftpAccountId,
        bytes: i64,
        files: i64,
    ) -> Result<(), Exceeded> {
        if self.charge_local(tenant, account, bytes, files) {
            return Ok(());
        }
        if let Some(full) = self.lock().get(tenant).and_then(|l| l.full.clone()) {
            return Err(full);
        }
        let refusal = self.reserve(tenant, bytes, files).await;
        if self.charge_local(tenant, account, bytes, files) {
            return Ok(());
        }
        Err(refusal.err().unwrap_or(Exceeded::Unavailable))
    }

    /// Charges as many of `bytes` as fit (at least 0) and returns that number.
    pub async fn charge_up_to(
        &self,
        tenant: &TenantId,
        account: &SftpAccountId,
        bytes: i64,
    ) -> i64 {
        if bytes <= 0 {
            return 0;
        }
        if self.charge_local(tenant, account, bytes, 0) {
            return bytes;
        }
        let full = self.lock().get(tenant).is_some_and(|l| l.full.is_some());
        if !full {
            let _ = self.reserve(tenant, bytes, 0).await;
        }
        let mut tenants = self.lock();
        let local = tenants.entry(tenant.clone()).or_default();
        let fit = bytes.min(local.reserved_bytes - local.spent_bytes).max(0);
        local.apply(account, fit, 0);
        fit
    }

    /// Asks the database for enough reservation for this charge (and a chunk more when
    /// there is room); says which limit it would pass when there is not enough.
    async fn reserve(&self, tenant: &TenantId, bytes: i64, files: i64) -> Result<(), Exceeded> {
        let turn = self.turn(tenant);
        let _turn = turn.lock().await;
        // Another session may have reserved enough while this one waited.
        let ((need_bytes, need_files), headroom) = {
            let mut tenants = self.lock();
            let local = tenants.entry(tenant.clone()).or_default();
            (
                local.shortfall(bytes, files),
                (
                    local.reserved_bytes - local.spent_bytes,
                    local.reserved_files - local.spent_files,
                ),
            )
        };
        if (need_bytes, need_files) == (0, 0) {
            return Ok(());
        }
        let (quota, booked, granted) = match self.grant(tenant, need_bytes, need_files).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "cannot reserve SFTP quota");
                return Err(Exceeded::Unavailable);
            }
        };
        {
            let mut tenants = self.lock();
            let local = tenants.entry(tenant.clone()).or_default();
            local.reserved_bytes += granted.0;
            local.reserved_files += granted.1;
        }
        // Used, as the caller should see it: everything stored or reserved elsewhere, less
        // what this process holds unspent.
        let refused = if granted.0 < need_bytes {
            Some(Exceeded::Limit {
                limit: "max_sftp_bytes",
                max: quota.0,
                used: booked.used_bytes + booked.reserved_bytes - headroom.0,
                asked: bytes,
            })
        } else if granted.1 < need_files {
            Some(Exceeded::Limit {
                limit: "max_sftp_files",
                max: quota.1,
                used: booked.used_files + booked.reserved_files - headroom.1,
                asked: files,
            })
        } else {
            None
        };
        match refused {
            Some(e) => {
                if let Some(local) = self.lock().get_mut(tenant) {
                    local.full = Some(e.clone());
                }
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// One write transaction: what is free of the tenant's quota, and a grant from it.
    async fn grant(
        &self,
        tenant: &TenantId,
        need_bytes: i64,
        need_files: i64,
    ) -> Result<((i64, i64), Booked, (i64, i64)), sqlx::Error> {
        let mut tx = db::begin_write(&self.db).await?;
        let quota = crate::quota::quota_of(&mut tx, &self.defaults, tenant).await?;
        let booked = sftp_reservations::booked(&mut tx, tenant).await?;
        let free_bytes = quota.max_sftp_bytes - booked.used_bytes - booked.reserved_bytes;
        let free_files = quota.max_sftp_files - booked.used_files - booked.reserved_files;
        let grant = |need: i64, free: i64, max_chunk: i64| {
            if need <= 0 {
                return 0;
            }
            // A chunk beyond the need, a quarter of what would be left at most.
            let chunk = ((free - need) / 4).clamp(0, max_chunk);
            (need + chunk).min(free).max(0)
        };
        let granted = (
            grant(need_bytes, free_bytes, MAX_CHUNK_BYTES),
            grant(need_files, free_files, MAX_CHUNK_FILES),
        );
        if granted != (0, 0) {
            sftp_reservations::add(
                &mut tx,
                &self.owner,
                tenant,
                granted.0,
                granted.1,
                chrono::Duration::seconds(LEASE_SECS),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((
            (quota.max_sftp_bytes, quota.max_sftp_files),
            booked,
            granted,
        ))
    }

    /// The tenant's (max bytes, used bytes, max files, used files): stored usage plus this
    /// process's unflushed charges.
    pub async fn limits(&self, tenant: &TenantId) -> (i64, i64, i64, i64) {
        let read = async {
            let mut conn = self.db.acquire().await?;
            let quota = crate::quota::quota_of(&mut conn, &self.defaults, tenant).await?;
            let used = db::sftp_accounts::tenant_usage(&mut conn, tenant).await?;
            Ok::<_, sqlx::Error>((quota, used))
        };
        let Ok((quota, (bytes, files))) = read.await else {
            return (0, 0, 0, 0);
        };
        let (spent_bytes, spent_files) = self
            .lock()
            .get(tenant)
            .map(|l| (l.spent_bytes, l.spent_files))
            .unwrap_or_default();
        (
            quota.max_sftp_bytes,
            bytes + spent_bytes,
            quota.max_sftp_files,
            files + spent_files,
        )
    }

    /// Drops an account's unflushed charges (it was deleted or rescanned).
    pub fn forget(&self, tenant: &TenantId, account: &SftpAccountId) {
        if let Some(local) = self.lock().get_mut(tenant)
            && let Some((bytes, files)) = local.pending.remove(account)
        {
            local.spent_bytes -= bytes;
            local.spent_files -= files;
        }
    }

    /// Moves the charges made since the last flush into the accounts' usage and gives every
    /// reservation back, one transaction per tenant.
    pub async fn flush(&self) {
        let busy: Vec<TenantId> = self
            .lock()
            .iter()
            .filter(|(_, l)| !l.idle() || l.full.is_some())
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in busy {
            self.flush_tenant(&tenant).await;
        }
    }

    /// [`Ledger::flush`] for one tenant.
    pub async fn flush_tenant(&self, tenant: &TenantId) {
        let turn = self.turn(tenant);
        let _turn = turn.lock().await;
        let moved = {
            let mut tenants = self.lock();
            let Some(local) = tenants.remove(tenant) else {
                return;
            };
            Moved {
                tenant: tenant.clone(),
                reserved: (local.reserved_bytes, local.reserved_files),
                pending: local.pending,
            }
        };
        if moved.reserved == (0, 0) && moved.pending.is_empty() {
            return;
        }
        if let Err(e) = self.write_flush(&moved).await {
            tracing::warn!(error = %e, "cannot record SFTP usage; keeping it for the next flush");
            let m = moved;
            let mut tenants = self.lock();
            let local = tenants.entry(m.tenant).or_default();
            local.reserved_bytes += m.reserved.0;
            local.reserved_files += m.reserved.1;
            for (account, (bytes, files)) in m.pending {
                local.apply(&account, bytes, files);
            }
        }
    }

    /// One tenant's flush, in one transaction.
    async fn write_flush(&self, m: &Moved) -> Result<(), sqlx::Error> {
        let mut tx = db::begin_write(&self.db).await?;
        for (account, (bytes, files)) in &m.pending {
            db::sftp_accounts::add_usage(&mut tx, account, *bytes, *files).await?;
        }
        if m.reserved != (0, 0) {
            sftp_reservations::add(
                &mut tx,
                &self.owner,
                &m.tenant,
                -m.reserved.0,
                -m.reserved.1,
                chrono::Duration::seconds(LEASE_SECS),
            )
            .await?;
        }
        sftp_reservations::drop_empty(&mut tx, &self.owner).await?;
        tx.commit().await
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
