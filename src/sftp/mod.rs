//! The SFTP server: russh for SSH (a persistent Ed25519 host key, password and public-key
//! logins against the `sftp_accounts` table), and carve's own SFTP v3 engine
//! ([`session`]) on a jailed filesystem ([`jail`]) with per-tenant quotas ([`quota`]).

pub mod account_lock;
pub mod accounts;
mod connection;
#[cfg(test)]
mod fuzz;
pub mod jail;
pub mod limits;
pub mod protocol;
pub mod quota;
pub mod session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use russh::keys::ssh_key::{LineEnding, PrivateKey, private::Ed25519Keypair};
use russh::{MethodKind, MethodSet};
use tokio::net::TcpListener;

use crate::auth::PasswordHasher;
use crate::config::Config;
use crate::db::{self, Db};
use crate::domain::ids::SftpAccountId;

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
        let homes = std::path::absolute(config.sftp_root())?;
        std::fs::create_dir_all(&homes)?;
        let key = host_key(&config.sftp_host_key())?;
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
            let handler = connection::Connection::new(
                self.shared.clone(),
                peer.ip(),
                authed.clone(),
                admission,
            );
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
        outcome: crate::domain::outcome::Outcome::Succeeded,
        status: None,
        client: who.client.map(|c| c.to_string()),
    };
    shared.audit.record(entry).await;
}
