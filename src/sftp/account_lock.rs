//! One account's changes to its files, one at a time: a request that reads a size and then
//! charges the quota and changes the file holds this lock from the read to the change, so
//! two sessions (in this process or in another `carve serve`) cannot both act on a stale
//! size. Within a process an async mutex per account orders sessions without blocking a
//! thread; across processes an exclusive `flock` on the home directory does.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::domain::ids::SftpAccountId;

/// The per-account mutexes of this process.
#[derive(Default)]
pub struct AccountLocks {
    locks: Mutex<HashMap<SftpAccountId, Weak<tokio::sync::Mutex<()>>>>,
}

impl AccountLocks {
    /// The mutex of `account`, shared by every session of it in this process.
    pub fn of(&self, account: &SftpAccountId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(account).and_then(Weak::upgrade) {
            return lock;
        }
        // Forget accounts no session uses any more, so the map stays as small as the sessions.
        locks.retain(|_, l| l.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(account.clone(), Arc::downgrade(&lock));
        lock
    }
}

/// One session's handle on its account's lock.
pub struct AccountLock {
    mutex: Arc<tokio::sync::Mutex<()>>,
    /// The home directory, opened for `flock` (an O_PATH descriptor cannot be locked).
    dir: OwnedFd,
}

/// Held while one change is made; released when dropped.
pub struct Held<'a> {
    _mutex: tokio::sync::MutexGuard<'a, ()>,
    dir: &'a OwnedFd,
}

impl AccountLock {
    /// The lock of `account`, whose home is `home`.
    pub fn new(
        locks: &AccountLocks,
        account: &SftpAccountId,
        home: &Path,
    ) -> std::io::Result<Self> {
        let dir = rustix::fs::open(
            home,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            mutex: locks.of(account),
            dir,
        })
    }

    /// Waits for the account's lock (first this process's, then other processes').
    pub async fn hold(&self) -> Held<'_> {
        let guard = self.mutex.lock().await;
        // Only one session per process gets here at a time, so this waits only for another
        // process, which holds it for one request.
        if let Err(e) = rustix::fs::flock(&self.dir, FlockOperation::LockExclusive) {
            tracing::warn!(error = %e, "cannot lock an SFTP home across processes");
        }
        Held {
            _mutex: guard,
            dir: &self.dir,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.dir, FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_of_one_account_take_turns() {
        let home = tempfile::tempdir().unwrap();
        let locks = AccountLocks::default();
        let account = SftpAccountId::generate();
        let a = AccountLock::new(&locks, &account, home.path()).unwrap();
        let b = AccountLock::new(&locks, &account, home.path()).unwrap();
        let held = a.hold().await;
        assert!(b.mutex.try_lock().is_err(), "the second session waits");
        // Another process (another open file description) cannot take the flock meanwhile.
        let other = rustix::fs::open(
            home.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        assert!(rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive).is_err());
        drop(held);
        assert!(rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive).is_ok());
        rustix::fs::flock(&other, FlockOperation::Unlock).unwrap();
        let _again = b.hold().await;
    }
}
