//! The two engines behind one handle: the pool, transaction and executor enums, and the
//! macros that compile a repository function's body once per engine.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};

/// The shared database handle: SQLite (embedded, one machine) or PostgreSQL (shared by clones).
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A connection of either database: in a write transaction from [`begin_write`] (holding the
/// database's write lock), in a transaction of its own pool's, or on its own from
/// [`Db::acquire`] (each statement committed by itself).
#[derive(Debug)]
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
    SqliteConn(PoolConnection<Sqlite>),
    PostgresConn(PoolConnection<Postgres>),
}

/// A write transaction taken with [`begin_write`].
pub type WriteTx = Tx;

/// The connection under a [`Tx`], for running queries on it.
pub enum RawConn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// What a query runs on: either database's pool, or an open transaction's connection.
pub enum Ex<'a> {
    SqlitePool(&'a SqlitePool),
    PgPool(&'a PgPool),
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl<'a> From<&'a Db> for Ex<'a> {
    fn from(db: &'a Db) -> Self {
        match db {
            Db::Sqlite(p) => Ex::SqlitePool(p),
            Db::Postgres(p) => Ex::PgPool(p),
        }
    }
}

impl<'a> From<&'a mut Tx> for Ex<'a> {
    fn from(tx: &'a mut Tx) -> Self {
        match tx.raw() {
            RawConn::Sqlite(c) => Ex::Sqlite(c),
            RawConn::Postgres(c) => Ex::Postgres(c),
        }
    }
}

impl<'a> From<&'a SqlitePool> for Ex<'a> {
    fn from(p: &'a SqlitePool) -> Self {
        Ex::SqlitePool(p)
    }
}

impl<'a> From<&'a PgPool> for Ex<'a> {
    fn from(p: &'a PgPool) -> Self {
        Ex::PgPool(p)
    }
}

impl<'a> From<&'a mut SqliteConnection> for Ex<'a> {
    fn from(c: &'a mut SqliteConnection) -> Self {
        Ex::Sqlite(c)
    }
}

impl<'a> From<&'a mut PgConnection> for Ex<'a> {
    fn from(c: &'a mut PgConnection) -> Self {
        Ex::Postgres(c)
    }
}

/// Runs `$body` once per database, with `$c` bound to the pool (`&SqlitePool` or `&PgPool`)
/// and the optional `$pg` to whether it is PostgreSQL (for the few queries that differ).
#[macro_export]
macro_rules! on_db {
    ($db:expr, $c:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($c) => $body,
            $crate::db::Db::Postgres($c) => $body,
        }
    };
    ($db:expr, $c:ident, $pg:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($c) => {
                let $pg = false;
                $body
            }
            $crate::db::Db::Postgres($c) => {
                let $pg = true;
                $body
            }
        }
    };
}

/// Runs `$body` once per database, with `$c` bound to the transaction's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`) and the optional `$pg` as in [`on_db!`].
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx.raw() {
            $crate::db::RawConn::Sqlite($c) => $body,
            $crate::db::RawConn::Postgres($c) => $body,
        }
    };
    ($tx:expr, $c:ident, $pg:ident => $body:expr) => {
        match $tx.raw() {
            $crate::db::RawConn::Sqlite($c) => {
                let $pg = false;
                $body
            }
            $crate::db::RawConn::Postgres($c) => {
                let $pg = true;
                $body
            }
        }
    };
}

/// Runs `$body` on the pool or the connection an [`Ex`] holds, as [`on_db!`] does.
#[macro_export]
macro_rules! on_ex {
    ($ex:expr, $c:ident => $body:expr) => {
        $crate::on_ex!($ex, $c, _pg => $body)
    };
    ($ex:expr, $c:ident, $pg:ident => $body:expr) => {{
        let ex: $crate::db::Ex<'_> = $ex.into();
        match ex {
            $crate::db::Ex::SqlitePool($c) => {
                let $pg = false;
                $body
            }
            $crate::db::Ex::PgPool($c) => {
                let $pg = true;
                $body
            }
            $crate::db::Ex::Sqlite($c) => {
                let $pg = false;
                $body
            }
            $crate::db::Ex::Postgres($c) => {
                let $pg = true;
                $body
            }
        }
    }};
}

impl Tx {
    /// The connection to run queries on.
    pub fn raw(&mut self) -> RawConn<'_> {
        match self {
            Tx::Sqlite(t) => RawConn::Sqlite(t),
            Tx::Postgres(t) => RawConn::Postgres(t),
            Tx::SqliteConn(c) => RawConn::Sqlite(c),
            Tx::PostgresConn(c) => RawConn::Postgres(c),
        }
    }

    /// Commits the transaction (nothing to do for a connection on its own).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
            Tx::SqliteConn(_) | Tx::PostgresConn(_) => Ok(()),
        }
    }

    /// Rolls the transaction back (dropping it does too).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.rollback().await,
            Tx::Postgres(t) => t.rollback().await,
            Tx::SqliteConn(_) | Tx::PostgresConn(_) => Ok(()),
        }
    }

    /// Whether this is a PostgreSQL connection.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_) | Tx::PostgresConn(_))
    }
}
