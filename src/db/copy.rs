//! `carve db copy`: moves a stopped installation's database to another engine (SQLite to
//! PostgreSQL, or back), table by table, and checks the counts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;

use super::{Db, Tx};

/// Every table, parents before the tables that refer to them. `view_versions` and `events`
/// come last: the triggers of the tables before them write both, so they are emptied and
/// copied as they were.
pub const TABLES: [&str; 26] = [
    "tenants",
    "users",
    "api_tokens",
    "hosts",
    "plans",
    "images",
    "vms",
    "port_forwards",
    "operations",
    "quotas",
    "sessions",
    "audit_log",
    "login_failures",
    "sftp_accounts",
    "sftp_reservations",
    "user_ssh_keys",
    "vm_samples",
    "vm_guest_info",
    "pools",
    "pool_members",
    "scale_groups",
    "scale_group_members",
    "pool_load",
    "base_copies",
    "view_versions",
    "events",
];

/// Rows inserted per statement.
const CHUNK: usize = 200;

/// How a column's values travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Real,
    Bool,
    Time,
    Bytes,
}

/// One value in transit.
#[derive(Debug, Clone)]
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(Option<bool>),
    Time(Option<DateTime<Utc>>),
    Bytes(Option<Vec<u8>>),
}

/// What a copy moved: rows per table, equal on both sides.
pub type Counts = BTreeMap<&'static str, i64>;

/// Copies every table of `from` into `to`, which must hold no carve tables yet (it gets the
/// current schema first). `from` is brought to the current schema too. Fails, naming the
/// table, if any count differs afterwards; `to` is then left as the failed copy made it.
pub async fn copy(from: &Db, to: &Db) -> anyhow::Result<Counts> {
    if !from.is_postgres() && !to.is_postgres() {
        anyhow::bail!("both databases are SQLite: copy the file (with carve stopped) instead");
    }
    if has_schema(to).await? {
        anyhow::bail!(
            "the target database already holds carve tables; copy only into an empty database \
             (drop and create it again to start over)"
        );
    }
    super::migrate(from).await?;
    super::migrate(to).await?;
    let kinds = column_kinds(if to.is_postgres() { to } else { from }).await?;
    let mut tx = super::begin_write(to).await?;
    // The migrations seed a default tenant and version rows: the source's rows replace them.
    for table in ["view_versions", "events", "tenants"] {
        exec(&mut tx, &format!("DELETE FROM {table}")).await?;
    }
    let mut counts = Counts::new();
    for table in TABLES {
        let columns = kinds
            .get(table)
            .ok_or_else(|| anyhow::anyhow!("the schema has no table {table}"))?;
        if table == "view_versions" || table == "events" {
            exec(&mut tx, &format!("DELETE FROM {table}")).await?;
        }
        let copied = copy_table(from, &mut tx, table, columns).await?;
        counts.insert(table, copied);
    }
    // The id counters go on from where the source's stood (not from its largest kept row):
    // a browser resuming the event feed from an id must never see that id given out again.
    for table in ["audit_log", "events"] {
        let high = high_water(from, table)
            .await?
            .max(max_id(&mut tx, table).await?);
        set_high_water(&mut tx, table, high).await?;
    }
    for table in TABLES {
        let there = count_in(&mut tx, table).await?;
        if there != counts[table] {
            anyhow::bail!(
                "{table}: {} rows read but {there} in the target; nothing was committed",
                counts[table]
            );
        }
    }
    tx.commit().await?;
    for table in TABLES {
        let (here, there) = (count(from, table).await?, count(to, table).await?);
        if here != there {
            anyhow::bail!("{table}: {here} rows in the source but {there} in the target");
        }
    }
    Ok(counts)
}

/// Whether the database already has carve's schema (or an attempt at it).
async fn has_schema(db: &Db) -> Result<bool, sqlx::Error> {
    let sql = if db.is_postgres() {
        "SELECT COUNT(*) FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_name IN ('_sqlx_migrations', 'vms')"
    } else {
        "SELECT COUNT(*) FROM sqlite_master
         WHERE type = 'table' AND name IN ('_sqlx_migrations', 'vms')"
    };
    let n: i64 = crate::on_db!(db, c => sqlx::query_scalar(sql).fetch_one(c).await)?;
    Ok(n > 0)
}

/// Each table's columns and how their values travel, read from a PostgreSQL schema.
async fn column_kinds(pg: &Db) -> anyhow::Result<BTreeMap<String, Vec<(String, Kind)>>> {
    let Db::Postgres(pool) = pg else {
        anyhow::bail!("column types are read from the PostgreSQL side");
    };
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text
         FROM information_schema.columns WHERE table_schema = current_schema()
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<String, Vec<(String, Kind)>> = BTreeMap::new();
    for (table, column, data_type) in rows {
        let kind = match data_type.as_str() {
            "bigint" | "integer" | "smallint" => Kind::Int,
            "double precision" | "real" => Kind::Real,
            "boolean" => Kind::Bool,
            "timestamp with time zone" => Kind::Time,
            "bytea" => Kind::Bytes,
            _ => Kind::Text,
        };
        out.entry(table).or_default().push((column, kind));
    }
    Ok(out)
}

/// Streams one table from `from` into the transaction; returns the rows copied.
async fn copy_table(
    from: &Db,
    to: &mut Tx,
    table: &str,
    columns: &[(String, Kind)],
) -> anyhow::Result<i64> {
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let select = format!("SELECT {} FROM {table}", names.join(", "));
    let mut copied = 0i64;
    let mut chunk: Vec<Vec<Value>> = Vec::with_capacity(CHUNK);
    crate::on_db!(from, c => {
        let mut rows = sqlx::query(&select).fetch(c);
        while let Some(row) = rows.try_next().await? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, (name, kind)) in columns.iter().enumerate() {
                values.push(
                    read(&row, i, *kind)
                        .map_err(|e| anyhow::anyhow!("{table}.{name}: cannot read a value: {e}"))?,
                );
            }
            chunk.push(values);
            if chunk.len() == CHUNK {
                copied += insert(to, table, &names, &chunk).await?;
                chunk.clear();
            }
        }
    });
    if !chunk.is_empty() {
        copied += insert(to, table, &names, &chunk).await?;
    }
    Ok(copied)
}

/// Reads column `i` of a row of either database as `kind`.
fn read<R>(row: &R, i: usize, kind: Kind) -> Result<Value, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(match kind {
        Kind::Text => Value::Text(row.try_get(i)?),
        Kind::Int => Value::Int(row.try_get(i)?),
        Kind::Real => Value::Real(row.try_get(i)?),
        Kind::Bool => Value::Bool(row.try_get(i)?),
        Kind::Time => Value::Time(row.try_get(i)?),
        Kind::Bytes => Value::Bytes(row.try_get(i)?),
    })
}

/// Inserts rows into the table in one statement; returns how many went in.
async fn insert(
    to: &mut Tx,
    table: &str,
    names: &[&str],
    rows: &[Vec<Value>],
) -> anyhow::Result<i64> {
    let width = names.len();
    let tuples: Vec<String> = (0..rows.len())
        .map(|r| {
            let marks: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        names.join(", "),
        tuples.join(", ")
    );
    let done = crate::on_tx!(to, c => {
        let mut q = sqlx::query(&sql);
        for value in rows.iter().flatten() {
            q = match value.clone() {
                Value::Text(v) => q.bind(v),
                Value::Int(v) => q.bind(v),
                Value::Real(v) => q.bind(v),
                Value::Bool(v) => q.bind(v),
                Value::Time(v) => q.bind(v),
                Value::Bytes(v) => q.bind(v),
            };
        }
        q.execute(c).await.map(|r| r.rows_affected())
    })
    .map_err(|e| anyhow::anyhow!("{table}: cannot insert rows: {e}"))?;
    Ok(done as i64)
}

/// The last id a table's counter gave out: SQLite's `sqlite_sequence`, or the PostgreSQL
/// identity sequence.
async fn high_water(db: &Db, table: &str) -> Result<i64, sqlx::Error> {
    match db {
        Db::Sqlite(p) => {
            sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM sqlite_sequence WHERE name = $1",
            )
            .bind(table)
            .fetch_one(p)
            .await
        }
        Db::Postgres(p) => {
            let sql = format!(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END \
                 FROM {table}_id_seq"
            );
            sqlx::query_scalar(&sql).fetch_one(p).await
        }
    }
}

/// The largest id in a table, inside the transaction.
async fn max_id(tx: &mut Tx, table: &str) -> Result<i64, sqlx::Error> {
    let sql = format!("SELECT COALESCE(MAX(id), 0) FROM {table}");
    crate::on_tx!(tx, c => sqlx::query_scalar(&sql).fetch_one(c).await)
}

/// Makes the table's counter give ids after `high` next.
async fn set_high_water(tx: &mut Tx, table: &str, high: i64) -> Result<(), sqlx::Error> {
    crate::on_tx!(tx, c, pg => {
        if pg {
            sqlx::query(&format!("SELECT setval('{table}_id_seq', $1, false)"))
                .bind(high + 1)
                .execute(c)
                .await?;
        } else {
            sqlx::query("DELETE FROM sqlite_sequence WHERE name = $1")
                .bind(table)
                .execute(&mut *c)
                .await?;
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                .bind(table)
                .bind(high)
                .execute(c)
                .await?;
        }
        Ok(())
    })
}

/// Runs one statement in the transaction.
async fn exec(tx: &mut Tx, sql: &str) -> Result<(), sqlx::Error> {
    crate::on_tx!(tx, c => sqlx::query(sql).execute(c).await.map(|_| ()))
}

/// Rows in a table, inside the transaction.
async fn count_in(tx: &mut Tx, table: &str) -> Result<i64, sqlx::Error> {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    crate::on_tx!(tx, c => sqlx::query_scalar(&sql).fetch_one(c).await)
}

/// Rows in a table.
pub async fn count(db: &Db, table: &str) -> Result<i64, sqlx::Error> {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    crate::on_db!(db, c => sqlx::query_scalar(&sql).fetch_one(c).await)
}
