//! Who is connected to this process's SFTP server, and the limits on it: connections not yet
//! logged in (in all and per client address), connections per address, SFTP sessions per
//! account. A watcher ends, within a second or two, the connections of accounts that may no
//! longer log in (deleted, disabled, tenant suspended), whichever process made the change,
//! since it asks the database.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::config::SftpConfig;
use crate::db::{self, Db};
use crate::domain::ids::SftpAccountId;

/// How often the watcher asks the database which logged-in accounts may stay.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Inner {
    next_id: u64,
    unauthenticated: usize,
    unauthenticated_per_client: HashMap<IpAddr, usize>,
    connections_per_client: HashMap<IpAddr, usize>,
    sessions_per_account: HashMap<SftpAccountId, usize>,
    /// Each connection: how to end it and, once logged in, its account.
    live: HashMap<u64, Live>,
}

/// How to end one connection, and who it is.
#[derive(Default)]
struct Live {
    /// The task that accepts it.
    task: Option<AbortHandle>,
    /// A duplicate of its socket: shutting it down ends the connection in whatever state the
    /// SSH session is (even mid key exchange, where russh takes no disconnect request).
    socket: Option<OwnedFd>,
    account: Option<SftpAccountId>,
}

impl Live {
    /// Ends the connection.
    fn end(&self, reason: &'static str) {
        tracing::debug!(reason, "ending an SFTP connection");
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(socket) = &self.socket {
            let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Both);
        }
    }
}

/// The connections of this process and their limits.
pub struct Registry {
    limits: SftpConfig,
    inner: Mutex<Inner>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many connections are logging in right now.
    Busy,
    /// This address has too many connections (or too many logging in).
    ClientLimit,
}

/// Decrements `map[key]`, removing it at zero.
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Registry {
    /// An empty registry with the configured limits.
    pub fn new(limits: SftpConfig) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from `client`, or says why not (it is then closed at once,
    /// never queued: a flood cannot delay anyone else's login).
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admission, Refused> {
        let mut inner = self.lock();
        let l = &self.limits;
        let per_client = inner
            .unauthenticated_per_client
            .get(&client)
            .copied()
            .unwrap_or(0);
        let connections = inner
            .connections_per_client
            .get(&client)
            .copied()
            .unwrap_or(0);
        if per_client >= l.max_unauthenticated_per_client
            || connections >= l.max_connections_per_client
        {
            return Err(Refused::ClientLimit);
        }
        if inner.unauthenticated >= l.max_unauthenticated {
            return Err(Refused::Busy);
        }
        inner.unauthenticated += 1;
        *inner.unauthenticated_per_client.entry(client).or_default() += 1;
        *inner.connections_per_client.entry(client).or_default() += 1;
        inner.next_id += 1;
        let id = inner.next_id;
        inner.live.insert(id, Live::default());
        Ok(Admission {
            registry: self.clone(),
            id,
            client,
            account: None,
        })
    }

    /// Records the task serving connection `id`, so the watcher can end it (nothing if the
    /// connection has already gone).
    pub fn set_task(&self, id: u64, task: AbortHandle) {
        if let Some(entry) = self.lock().live.get_mut(&id) {
            entry.task = Some(task);
        }
    }

    /// Records a duplicate of connection `id`'s socket, so it can be shut down.
    pub fn set_socket(&self, id: u64, socket: OwnedFd) {
        if let Some(entry) = self.lock().live.get_mut(&id) {
            entry.socket = Some(socket);
        }
    }

    /// Ends connection `id` if it is still open.
    pub fn end(&self, id: u64, reason: &'static str) {
        if let Some(entry) = self.lock().live.get(&id) {
            entry.end(reason);
        }
    }

    /// Connections not yet logged in (for tests and metrics).
    pub fn unauthenticated(&self) -> usize {
        self.lock().unauthenticated
    }

    /// Ends the connections of accounts not in `keep` among those logged in; returns how many.
    fn end_all_but(&self, keep: &[SftpAccountId]) -> usize {
        let inner = self.lock();
        let mut ended = 0;
        for live in inner.live.values() {
            if let Some(account) = &live.account
                && !keep.contains(account)
            {
                live.end("your account was disabled or deleted, or its tenant suspended");
                ended += 1;
            }
        }
        ended
    }

    /// The accounts logged in now, each once.
    fn accounts(&self) -> Vec<SftpAccountId> {
        let mut ids: Vec<SftpAccountId> = self
            .lock()
            .live
            .values()
            .filter_map(|l| l.account.clone())
            .collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        ids
    }

    /// Every [`WATCH_INTERVAL`], ends the connections of accounts that may no longer log in.
    pub async fn watch(self: Arc<Self>, db: Db) {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let accounts = self.accounts();
            if accounts.is_empty() {
                continue;
            }
            match db::sftp_accounts::usable_among(&db, &accounts).await {
                Ok(keep) => {
                    let ended = self.end_all_but(&keep);
                    if ended > 0 {
                        tracing::info!(
                            connections = ended,
                            "SFTP connections ended: their account was deleted or disabled, or its tenant suspended"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot check SFTP accounts of live sessions"),
            }
        }
    }
}

/// One admitted connection's place in the registry, given back when dropped.
pub struct Admission {
    registry: Arc<Registry>,
    id: u64,
    client: IpAddr,
    account: Option<SftpAccountId>,
}

impl Admission {
    /// This connection's number in the registry.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connection logged in as `account`: it no longer counts as logging in.
    pub fn logged_in(&mut self, account: &SftpAccountId) {
        if self.account.is_some() {
            return;
        }
        let mut inner = self.registry.lock();
        inner.unauthenticated -= 1;
        decrement(&mut inner.unauthenticated_per_client, &self.client);
        if let Some(entry) = inner.live.get_mut(&self.id) {
            entry.account = Some(account.clone());
        }
        self.account = Some(account.clone());
    }

    /// Takes one SFTP session of the account's limit; false when it is used up.
    pub fn start_session(&self) -> bool {
        let Some(account) = &self.account else {
            return false;
        };
        let mut inner = self.registry.lock();
        let n = inner
            .sessions_per_account
            .entry(account.clone())
            .or_default();
        if *n >= self.registry.limits.max_sessions_per_account {
            return false;
        }
        *n += 1;
        true
    }

    /// A guard that gives one session back when the session ends.
    pub fn session_guard(&self) -> Option<SessionGuard> {
        Some(SessionGuard {
            registry: self.registry.clone(),
            account: self.account.clone()?,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if self.account.is_none() {
            inner.unauthenticated -= 1;
            decrement(&mut inner.unauthenticated_per_client, &self.client);
        }
        decrement(&mut inner.connections_per_client, &self.client);
        inner.live.remove(&self.id);
    }
}

/// One running SFTP session of an account; its place is given back when dropped.
pub struct SessionGuard {
    registry: Arc<Registry>,
    account: SftpAccountId,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        decrement(
            &mut self.registry.lock().sessions_per_account,
            &self.account,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SftpConfig {
        SftpConfig {
            max_unauthenticated: 3,
            max_unauthenticated_per_client: 2,
            max_sessions_per_account: 1,
            max_connections_per_client: 3,
            ..SftpConfig::default()
        }
    }

    #[test]
    fn one_client_cannot_take_every_login_slot() {
        let r = Registry::new(limits());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let c: IpAddr = "127.0.0.4".parse().unwrap();
        let a1 = r.admit(a).unwrap();
        let _a2 = r.admit(a).unwrap();
        assert_eq!(r.admit(a).err(), Some(Refused::ClientLimit));
        let _b1 = r.admit(b).unwrap();
        assert_eq!(r.admit(c).err(), Some(Refused::Busy));
        drop(a1);
        let _c1 = r.admit(c).unwrap();
        assert_eq!(r.unauthenticated(), 3);
    }

    #[test]
    fn logged_in_connections_free_their_login_slot_and_sessions_are_bounded() {
        let r = Registry::new(limits());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let account = SftpAccountId::generate();
        let mut one = r.admit(a).unwrap();
        one.logged_in(&account);
        assert_eq!(r.unauthenticated(), 0);
        assert!(one.start_session());
        let guard = one.session_guard().unwrap();
        let mut two = r.admit(a).unwrap();
        two.logged_in(&account);
        assert!(
            !two.start_session(),
            "one session per account in these limits"
        );
        drop(guard);
        assert!(two.start_session());
        drop(one);
        drop(two);
        assert!(r.lock().live.is_empty());
        assert!(r.lock().connections_per_client.is_empty());
    }
}
