//! One SSH connection: password and public-key logins against the `sftp_accounts` table
//! (throttled, audited), at most a few channels, and an SFTP session per subsystem request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};

use super::{Shared, accounts, jail, limits, session};
use crate::db;
use crate::db::sftp_accounts::SftpAccountRow;
use crate::domain::outcome::Outcome;

/// Channels (pending or serving SFTP) one connection may have open at once.
const MAX_CHANNELS: usize = 8;

/// One SSH connection.
pub(super) struct Connection {
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
    /// A connection from `peer`, not logged in yet; `authed` turns true at login.
    pub(super) fn new(
        shared: Arc<Shared>,
        peer: IpAddr,
        authed: Arc<AtomicBool>,
        admission: limits::Admission,
    ) -> Self {
        Self {
            shared,
            peer,
            account: None,
            channels: HashMap::new(),
            sessions: Arc::new(AtomicUsize::new(0)),
            authed,
            admission,
        }
    }

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
            Outcome::Succeeded
        } else {
            Outcome::Denied
        };
        let entry = db::audit::NewEntry {
            actor_id: account.as_ref().map(|a| a.id.to_string()),
            actor: format!("sftp:{}", user.chars().take(64).collect::<String>()),
            tenant_id: account.as_ref().map(|a| a.tenant_id.to_string()),
            action: format!("sftp login ({method})"),
            target: account.as_ref().map(|a| a.id.to_string()),
            outcome,
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
