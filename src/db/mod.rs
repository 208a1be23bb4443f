//! The database: SQLite (embedded, the default) or PostgreSQL (shared by clones), with its
//! pool, migrations, write transactions, and one repository module per table. Every query on
//! a tenant-owned table takes a [`Scope`], so a cross-tenant read cannot be written by accident.
//!
//! Both engines run the same query text (`$N` parameters, standard SQL, booleans as
//! TRUE/FALSE, sums cast to BIGINT); [`dialect`] rewrites the four SQLite functions PostgreSQL
//! names differently. Each repository function is written once and compiled per engine by
//! [`on_db!`], [`on_tx!`] or [`on_ex!`], so rows decode with each engine's own types
//! (TIMESTAMPTZ, BOOLEAN, BYTEA on PostgreSQL) and nothing goes through sqlx's `Any` driver,
//! which cannot carry timestamps. What differs lives here and in the migrations: the write
//! lock (`BEGIN IMMEDIATE`, or an advisory lock every writer takes first), the schema
//! (`migrations/sqlite`, `migrations/postgres`), and change notification (`NOTIFY`).

pub mod audit;
pub mod base_copies;
pub mod copy;
mod engine;
pub mod events;
pub mod hosts;
pub mod images;
pub mod login_failures;
pub mod operations;
pub mod page;
pub mod plans;
pub mod pool_load;
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

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::domain::ids::TenantId;

pub use engine::{Db, Ex, RawConn, Tx, WriteTx};

/// Whose rows a query may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's rows (admins, the reconciler).
    All,
    /// One tenant's rows only.
    Tenant(TenantId),
}

impl Scope {
    /// The tenant to filter on, or `None` for all: bind as `($N IS NULL OR tenant_id = $N)`.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant(t) => Some(t.as_str()),
        }
    }
}

/// Whether a database URL names PostgreSQL (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URL with its password (in the user part or a `password=` parameter) replaced by `***`,
/// for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Opens the database a URL names: PostgreSQL for `postgres://`, otherwise SQLite (created if
/// missing, with WAL and a busy timeout, so several processes on one machine can share it).
pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
    if is_postgres_url(url) {
        return connect_postgres(url).await;
    }
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(15));
    restrict_files(options.get_filename()).map_err(sqlx::Error::Io)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(16)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await?;
    Ok(Db::Sqlite(pool))
}

/// Opens a PostgreSQL pool. A connection that broke (a database restart) is found before use
/// and replaced, so carve answers 503 while the database is away and recovers by itself.
async fn connect_postgres(url: &str) -> Result<Db, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name("carve");
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(true)
        .connect_with(options)
        .await?;
    Ok(Db::Postgres(pool))
}

impl Db {
    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// The database's name for logs and `/healthz`.
    pub fn engine(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgresql",
        }
    }

    /// A connection of the pool on its own: each statement on it commits by itself.
    pub async fn acquire(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(p) => Tx::SqliteConn(p.acquire().await?),
            Db::Postgres(p) => Tx::PostgresConn(p.acquire().await?),
        })
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }

    /// Answers whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        crate::on_db!(self, c => sqlx::query("SELECT 1").execute(c).await.map(|_| ()))
    }
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

/// Applies the embedded migrations of the database's kind.
pub async fn migrate(db: &Db) -> Result<(), sqlx::migrate::MigrateError> {
    match db {
        Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
        Db::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
    }
}

/// The PostgreSQL advisory lock every write transaction takes: carve's equivalent of SQLite's
/// single writer, across all clones.
const WRITE_LOCK: i64 = 0x6361_7276_6500; // "carve\0"

/// Starts a transaction that holds the database's write lock from its start, so a
/// check-then-insert inside it cannot race another writer (in this or another process): SQLite's
/// `BEGIN IMMEDIATE`, or on PostgreSQL a transaction-scoped advisory lock that every write
/// transaction of every clone takes.
pub async fn begin_write(db: &Db) -> Result<WriteTx, sqlx::Error> {
    Ok(match db {
        Db::Sqlite(p) => Tx::Sqlite(WritePool::begin_write(p).await?),
        Db::Postgres(p) => Tx::Postgres(WritePool::begin_write(p).await?),
    })
}

/// [`begin_write`] on a pool already known to be SQLite or PostgreSQL (inside [`on_db!`]).
pub trait WritePool {
    type Database: sqlx::Database;
    /// Starts a transaction holding the database's write lock, as [`begin_write`] does.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<Transaction<'static, Self::Database>, sqlx::Error>>
    + Send;
}

impl WritePool for SqlitePool {
    type Database = Sqlite;
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl WritePool for PgPool {
    type Database = Postgres;
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// The current time, as stored: to the microsecond, which both databases keep exactly.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Whether an error is a UNIQUE constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The few SQLite functions a query uses, in PostgreSQL's words when `pg`: substring search,
/// the elements of a JSON array parameter, a field of a JSON column, and appending to one.
pub fn dialect(pg: bool, sql: &str) -> std::borrow::Cow<'_, str> {
    const TO_POSTGRES: [(&str, &str); 4] = [
        ("instr(", "strpos("),
        (
            "json_each($1)",
            "jsonb_array_elements_text(CAST($1 AS jsonb))",
        ),
        (
            "json_extract(o.params, '$.image_id')",
            "(CAST(o.params AS jsonb) ->> 'image_id')",
        ),
        (
            "json_insert(steps, '$[#]', json($2))",
            "CAST(CAST(steps AS jsonb) || jsonb_build_array(CAST($2 AS jsonb)) AS TEXT)",
        ),
    ];
    if !pg {
        return sql.into();
    }
    let mut out = sql.to_owned();
    for (sqlite, postgres) in TO_POSTGRES {
        out = out.replace(sqlite, postgres);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redacted("postgres://carve:s3cret@db.example:5432/carve"),
            "postgres://carve:***@db.example:5432/carve"
        );
        assert_eq!(
            redacted("postgres://carve@db/carve"),
            "postgres://carve@db/carve"
        );
        assert_eq!(
            redacted("sqlite:///var/lib/carve/carve.db"),
            "sqlite:///var/lib/carve/carve.db"
        );
        assert!(is_postgres_url("postgresql://x/y") && !is_postgres_url("sqlite://x"));
    }

    #[test]
    fn the_dialect_rewrites_only_for_postgres() {
        let sql = "SELECT value FROM json_each($1) WHERE instr(name, $2) > 0";
        assert_eq!(dialect(false, sql), sql);
        assert_eq!(
            dialect(true, sql),
            "SELECT value FROM jsonb_array_elements_text(CAST($1 AS jsonb)) WHERE strpos(name, $2) > 0"
        );
    }
}
