//! The SQLite database: pool, migrations, write transactions, and one repository module per
//! table. Every query on a tenant-owned table takes a [`Scope`], so a cross-tenant read cannot
//! be written by accident.

pub mod audit;
pub mod base_copies;
pub mod events;
pub mod hosts;
pub mod images;
pub mod login_failures;
pub mod operations;
pub mod page;
pub mod plans;
pub mod pools;
pub mod ports;
pub mod quotas;
pub mod scale_group_leases;
pub mod scale_groups;
pub mod sessions;
pub mod sftp_accounts;
pub mod sftp_reservations;
pub mod ssh_keys;
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod vm_samples;
pub mod vms;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::domain::ids::TenantId;

/// The shared database handle.
pub type Db = SqlitePool;
/// A write transaction taken with `BEGIN IMMEDIATE`.
pub type WriteTx = Transaction<'static, Sqlite>;

/// Whose rows a query may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's rows (admins, the reconciler).
    All,
    /// One tenant's rows only.
    Tenant(TenantId),
}

impl Scope {
    /// The tenant to filter on, or `None` for all: bind as `(?N IS NULL OR tenant_id = ?N)`.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant(t) => Some(t.as_str()),
        }
    }
}

/// Opens (creating if needed) the database with WAL and a busy timeout, so several processes
/// can share it.
pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(15));
    restrict_files(options.get_filename()).map_err(sqlx::Error::Io)?;
    SqlitePoolOptions::new()
        .max_connections(16)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
}

/// Makes the database file (created empty if missing) and its `-wal` and `-shm` companions
/// readable by carve's user alone: they hold password hashes. SQLite gives the companions it
/// creates the database file's mode.
fn restrict_files(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() || path == std::path::Path::new(":memory:") {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Applies the embedded migrations.
pub async fn migrate(db: &Db) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(db).await
}

/// Starts a transaction that holds SQLite's write lock from its first statement, so a
/// check-then-insert inside it cannot race another writer (in this or another process).
pub async fn begin_write(db: &Db) -> Result<WriteTx, sqlx::Error> {
    db.begin_with("BEGIN IMMEDIATE").await
}

/// The current time, as stored.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Whether an error is a UNIQUE constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
