//! The SFTP server: russh for SSH (a persistent Ed25519 host key, password and public-key
//! logins against the `sftp_accounts` table), and carve's own SFTP v3 engine
//! ([`session`]) on a jailed filesystem ([`jail`]) with per-tenant quotas ([`quota`]).

pub mod account_lock;
pub mod accounts;
#[cfg(test)]
mod fuzz;
pub mod jail;
pub mod limits;
pub mod protocol;
pub mod quota;
pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use russh::keys::ssh_key::{LineEnding, PrivateKey, private::Ed25519Keypair};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::net::TcpListener;

use crate::auth::PasswordHasher;
use crate::config::Config;
use crate::db::sftp_accounts::SftpAccountRow;
use crate::db::{self, Db};
use crate::domain::ids::SftpAccountId;

/// Channels (pending or serving SFTP) one connection may have open at once.
const MAX_CHANNELS: usize = 8;

/// What every SFTP connection shares.
pub struct Shared {
    pub db: Db,
    pub hasher: PasswordHasher,
    pub ledger: Arc<quota::Ledger>,
    /// Where homes live: `<data_dir>/sftp/<account id>`.
    pub homes: PathBuf,
    pub config: Config,
    /// Uploads and deletions go to the audit log through this batching writer.
    pub audit: db::audit::Batcher,
    /// Live connections and their limits.
    pub registry: Arc<limits::Registry>,
    /// Per-account locks that order size-changing requests.
    pub account_locks: account_lock::AccountLocks,
    /// Requests running on threads of their own right now (bounded, see `session`).
    pub blocking_requests: std::sync::atomic::AtomicUsize,
    /// File and directory handles open in all sessions of this process.
    pub open_handles: std::sync::atomic::AtomicUsize,
    /// Most handles open in all sessions at once (half the open-file limit).
    pub max_open_handles: usize,
}

/// Most SFTP handles a process keeps open: half its open-file limit (the rest is for
/// connections, the database and libvirt), at least 256.
pub fn handle_budget() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let current = limit.current.unwrap_or(1 << 20).min(1 << 24) as usize;
    (current / 2).max(256)
}

impl Shared {
    /// The home directory of an account.
    pub fn home(&self, account: &SftpAccountId) -> PathBuf {
        home_of(&self.homes, account)
    }
}

/// The home directory of an account under `homes`.
pub fn home_of(homes: &Path, account: &SftpAccountId) -> PathBuf {
    homes.join(account.as_str())
}

/// Loads the host key, making one at first start (so clients' known_hosts stay valid).
pub fn host_key(path: &Path) -> anyhow::Result<PrivateKey> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making the SSH host key {} private", path.display()))?;
        return russh::keys::load_secret_key(path, None)
            .with_context(|| format!("reading the SSH host key {}", path.display()));
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key.to_openssh(LineEnding::LF)?;
    // Created readable by carve alone: never a moment with a wider mode.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing the SSH host key {}", path.display()))?;
    tracing::info!(path = %path.display(), "made a new SSH host key");
    Ok(key)
}

/// Ciphers offered, strongest-and-fastest first; AES-GCM is hardware-accelerated on x86.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// The SSH server settings: tuned windows and packets for throughput, Nagle off, constant-time
/// rejections, idle connections closed.
fn ssh_config(key: PrivateKey, sftp: &crate::config::SftpConfig) -> russh::server::Config {
    russh::server::Config {
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Default::default()
        },
        server_id: russh::SshId::Standard("SSH-2.0-carve".into()),
        methods: MethodSet::from(&[MethodKind::Password, MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 65535,
        channel_buffer_size: 256,
        max_auth_attempts: 6,
        inactivity_timeout: Some(Duration::from_secs(sftp.idle_timeout_secs.max(1))),
        // No server keepalives: russh counts their replies as activity, which would keep idle
        // connections open forever; the inactivity timeout also ends dead ones.
        keepalive_interval: None,
        nodelay: true,
        ..Default::default()
    }
}

/// The bound SFTP listener, ready to serve.
pub struct SftpServer {
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
}

impl SftpServer {
    /// Binds the listener, loads the host key and rescans every account's usage from disk.
    pub async fn build(
        config: &Config,
        db: Db,
        hasher: PasswordHasher,
        ledger: Arc<quota::Ledger>,
    ) -> anyhow::Result<Self> {
        let homes = std::path::absolute(config.data_dir.join("sftp"))?;
        std::fs::create_dir_all(&homes)?;
        let key = host_key(&config.data_dir.join("ssh_host_ed25519_key"))?;
        let audit = db::audit::Batcher::start(db.clone());
        let shared = Arc::new(Shared {
            db,
            hasher,
            ledger,
            homes,
            config: config.clone(),
            audit,
            registry: limits::Registry::new(config.sftp.clone()),
            account_locks: Default::default(),
            blocking_requests: Default::default(),
            open_handles: Default::default(),
            max_open_handles: handle_budget(),
        });
        accounts::rescan(&shared.db, &shared.homes, &shared.ledger, None).await?;
        let listener = TcpListener::bind(config.sftp.listen)
            .await
            .with_context(|| format!("binding sftp.listen = {}", config.sftp.listen))?;
        Ok(Self {
            listener,
            config: Arc::new(ssh_config(key, &config.sftp)),
            shared,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections forever; usage is flushed to the database every few seconds, and
    /// connections whose account may no longer log in are ended.
    pub async fn run(self) {
        let ledger = self.shared.ledger.clone();
        // Both end with this server (when its task is aborted, these guards drop).
        let _flusher = AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                ledger.flush().await;
            }
        }));
        let _watcher = AbortOnDrop(tokio::spawn(
            self.shared.registry.clone().watch(self.shared.db.clone()),
        ));
        let grace = Duration::from_secs(self.shared.config.sftp.login_grace_secs.max(1));
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "SFTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Refused connections are closed at once, never queued: a flood of silent
            // connections from one client delays no one else's login.
            let admission = match self.shared.registry.admit(peer.ip()) {
                Ok(a) => a,
                Err(why) => {
                    tracing::info!(client = %peer.ip(), ?why, "SFTP connection refused");
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let connection_id = admission.id();
            match rustix::io::dup(&stream) {
                Ok(socket) => self.shared.registry.set_socket(connection_id, socket),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot keep a handle on an SFTP connection; refusing it");
                    continue;
                }
            }
            let authed = Arc::new(AtomicBool::new(false));
            let handler = Connection {
                shared: self.shared.clone(),
                peer: peer.ip(),
                account: None,
                channels: HashMap::new(),
                sessions: Arc::new(AtomicUsize::new(0)),
                authed: authed.clone(),
                admission,
            };
            let config = self.config.clone();
            let task = tokio::spawn(async move {
                let session = match russh::server::run_stream(config, stream, handler).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "SSH handshake failed");
                        return;
                    }
                };
                if let Err(e) = session.await {
                    tracing::debug!(error = %e, "SSH session ended with an error");
                }
            });
            // The login grace runs from accept: a client silent before the SSH version line
            // is dropped as surely as one that never sends a password.
            let registry = self.shared.registry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if !authed.load(Ordering::SeqCst) {
                    registry.end(connection_id, "login took too long");
                }
            });
            // The handler (and its admission) lives in the task: record the task to end it.
            self.shared
                .registry
                .set_task(connection_id, task.abort_handle());
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One SSH connection.
struct Connection {
    shared: Arc<Shared>,
    peer: IpAddr,
    account: Option<SftpAccountRow>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// SFTP sessions running on this connection.
    sessions: Arc<AtomicUsize>,
    authed: Arc<AtomicBool>,
    /// This connection's place in the registry (limits, and ending it from the watcher).
    admission: limits::Admission,
}

/// A russh handler error.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(transparent)]
    Russh(#[from] russh::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl Connection {
    /// Looks up an enabled account whose tenant is not suspended.
    async fn usable_account(&self, user: &str) -> Result<Option<SftpAccountRow>, sqlx::Error> {
        if !accounts::valid_username(user) {
            return Ok(None);
        }
        let Some(account) = db::sftp_accounts::find_by_username(&self.shared.db, user).await?
        else {
            return Ok(None);
        };
        let suspended = db::tenants::get(&self.shared.db, &account.tenant_id)
            .await?
            .is_none_or(|t| t.suspended);
        Ok((account.enabled && !suspended).then_some(account))
    }

    /// Records the outcome of a login (audit entry) and, on success, starts the session.
    async fn finish_login(
        &mut self,
        user: &str,
        account: Option<SftpAccountRow>,
        method: &str,
    ) -> Result<Auth, SshError> {
        let outcome = if account.is_some() {
            "succeeded"
        } else {
            "denied"
        };
        let entry = db::audit::NewEntry {
            actor_id: account.as_ref().map(|a| a.id.to_string()),
            actor: format!("sftp:{}", user.chars().take(64).collect::<String>()),
            tenant_id: account.as_ref().map(|a| a.tenant_id.to_string()),
            action: format!("sftp login ({method})"),
            target: account.as_ref().map(|a| a.id.to_string()),
            outcome: outcome.into(),
            status: None,
            client: Some(self.peer.to_string()),
        };
        db::audit::insert(&self.shared.db, &entry).await?;
        let Some(account) = account else {
            return Ok(Auth::reject());
        };
        if let Err(e) = std::fs::create_dir_all(self.shared.home(&account.id)) {
            tracing::error!(error = %e, "cannot create an SFTP home");
            return Ok(Auth::reject());
        }
        self.admission.logged_in(&account.id);
        self.account = Some(account);
        self.authed.store(true, Ordering::SeqCst);
        Ok(Auth::Accept)
    }

    /// Whether failed password logins from this address have hit their limit (key logins
    /// are not held back by password failures against the same username).
    async fn client_throttled(&self) -> Result<bool, sqlx::Error> {
        let cfg = &self.shared.config.auth;
        let window = chrono::Duration::seconds(cfg.window_secs as i64);
        let client = db::login_failures::retry_after(
            &self.shared.db,
            &format!("client:{}", self.peer),
            cfg.max_failures_per_client,
            window,
        )
        .await?;
        Ok(client.is_some())
    }
}

impl russh::server::Handler for Connection {
    type Error = SshError;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        // Counted before the check, so a burst of guesses cannot pass the limit; an invalid
        // (e.g. over-long) username is counted under one key, never stored as given.
        let key = if accounts::valid_username(user) {
            format!("sftp:{user}")
        } else {
            "sftp:(invalid username)".into()
        };
        let shared = self.shared.clone();
        let attempt = match crate::tenancy::login::Attempt::start_with(
            &shared.db,
            &shared.config.auth,
            &shared.hasher,
            key,
            Some(self.peer),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(client = %self.peer, reason = %e, "SFTP password login refused");
                return Ok(Auth::reject());
            }
        };
        let account = self.usable_account(user).await?;
        let hash = account.as_ref().and_then(|a| a.password_hash.clone());
        // An unknown user (or one without a password) costs as much as a wrong password.
        let ok = match attempt.verify(hash, password.to_string()).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(error = %e, "SFTP login check failed");
                false
            }
        };
        self.finish_login(user, account.filter(|_| ok), "password")
            .await
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let known = self
            .usable_account(user)
            .await?
            .is_some_and(|a| accounts::key_allowed(&a, offer.public_key));
        Ok(if known { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.client_throttled().await? {
            return Ok(Auth::reject());
        }
        let account = self
            .usable_account(user)
            .await?
            .filter(|a| accounts::key_allowed(a, key.public_key));
        self.finish_login(user, account, "publickey").await
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let open = self.channels.len() + self.sessions.load(Ordering::SeqCst);
        if self.account.is_none() || open >= MAX_CHANNELS {
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(account), true) = (self.account.clone(), name == "sftp") else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let Some(ch) = self.channels.remove(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        if !self.admission.start_session() {
            tracing::info!(user = %account.username, "SFTP session refused: the account has its most sessions open");
            session.channel_failure(channel)?;
            return Ok(());
        }
        let guard = self.admission.session_guard();
        let home = self.shared.home(&account.id);
        let jail = match jail::Jail::open(&home) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, home = %home.display(), "cannot open an SFTP home");
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        session.channel_success(channel)?;
        let shared = self.shared.clone();
        let who = session::Account {
            id: account.id.clone(),
            tenant: account.tenant_id.clone(),
            username: account.username.clone(),
            client: Some(self.peer),
        };
        let handle = session.handle();
        let sessions = self.sessions.clone();
        sessions.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _guard = guard;
            session::serve(ch.into_stream(), shared, who, jail).await;
            sessions.fetch_sub(1, Ordering::SeqCst);
            // Like OpenSSH's sftp-server exiting: scp and others check the exit status.
            let _ = handle.exit_status_request(channel, 0).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }
}

/// Records an upload or deletion in the audit log, without holding up the session (entries
/// are written in batches).
pub async fn audit(
    shared: &Shared,
    who: &session::Account,
    action: &str,
    path: &str,
    bytes: Option<u64>,
) {
    let target = match bytes {
        Some(b) => format!("{path} ({b} bytes)"),
        None => path.to_string(),
    };
    let entry = db::audit::NewEntry {
        actor_id: Some(who.id.to_string()),
        actor: format!("sftp:{}", who.username),
        tenant_id: Some(who.tenant.to_string()),
        action: action.into(),
        target: Some(target.chars().take(512).collect()),
        outcome: "succeeded".into(),
        status: None,
        client: who.client.map(|c| c.to_string()),
    };
    shared.audit.record(entry).await;
}
