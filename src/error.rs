//! One error type for service functions, in terms of what went wrong, not of HTTP: each face
//! maps it (the API to problem documents in `api::problem`). Server-side failures are logged
//! with their detail there and shown to clients as a generic message.

use crate::domain::Invalid;
use crate::domain::capacity::Shortfall;
use crate::hypervisor::HypervisorError;
use crate::hypervisor::storage::StorageError;

/// What went wrong with a request, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Fields of the request break rules (422).
    #[error("the request has invalid fields")]
    Invalid(Vec<Invalid>),
    /// The request cannot be read (400).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or credentials not accepted (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such object, or not one the caller may see (404).
    #[error("{what} {id} was not found")]
    NotFound { what: &'static str, id: String },
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request's body is larger than carve takes (413).
    #[error("{0}")]
    TooLarge(String),
    /// Too many attempts; retry after the given seconds (429).
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u64,
    },
    /// A service carve depends on (the database) does not answer; retry after the given
    /// seconds (503). The detail is logged, never shown.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after_secs: u64,
    },
    /// A server-side failure (500); the detail is logged, never shown.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// One invalid field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AppError::Invalid(vec![Invalid::new(field, message)])
    }

    /// What a user may be told (an internal failure's detail stays in the log).
    pub fn detail(&self) -> String {
        match self {
            AppError::Invalid(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            AppError::Internal(_) => "an internal error; carve's log has the detail".into(),
            other => other.to_string(),
        }
    }

    /// A missing object of kind `what`.
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        AppError::NotFound {
            what,
            id: id.into(),
        }
    }
}

impl From<Invalid> for AppError {
    fn from(e: Invalid) -> Self {
        AppError::Invalid(vec![e])
    }
}

impl From<Shortfall> for AppError {
    fn from(e: Shortfall) -> Self {
        AppError::Conflict(e.to_string())
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if database_unreachable(&e) {
            warn_unreachable(&e);
            return AppError::Unavailable {
                detail: "carve cannot reach its database just now; retry in a few seconds".into(),
                retry_after_secs: 5,
            };
        }
        if matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some("22021")) {
            // PostgreSQL keeps no NUL (\0) in text; SQLite would have stored it.
            return AppError::BadRequest(
                "text in the request contains a NUL character (\\0); remove it and retry".into(),
            );
        }
        AppError::Internal(anyhow::Error::new(e).context("database"))
    }
}

/// Logs that the database does not answer at most once per 10 s (an outage would otherwise
/// log a line per request), with how many more requests met it meanwhile.
fn warn_unreachable(e: &sqlx::Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    const EVERY_SECS: u64 = 10;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_WARNED.load(Ordering::Relaxed);
    let due = now >= last + EVERY_SECS;
    if due
        && LAST_WARNED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let unlogged = UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::warn!(error = %e, unlogged, "the database does not answer");
    } else {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a database error means the database is away (down, restarting, unreachable, or
/// SQLite busy past its timeout) rather than a fault in the request or in carve.
pub fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08), shutting down or not yet accepting (57P),
            // too many connections (53300); SQLite: busy (5) and locked (6).
            code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || code == "5"
                || code == "6"
        }
        _ => false,
    }
}

impl From<HypervisorError> for AppError {
    fn from(e: HypervisorError) -> Self {
        AppError::Internal(anyhow::Error::new(e))
    }
}

impl From<StorageError> for AppError {
    fn from(e: StorageError) -> Self {
        AppError::Internal(anyhow::Error::new(e))
    }
}
