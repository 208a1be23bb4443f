//! The operations table: long actions with their state, progress steps, error and the lease
//! that says which process is carrying them out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::page::{Page, PageRequest, time_key};
use super::{Db, Scope, now};
use crate::domain::ids::{OperationId, TenantId};
use crate::domain::operation::{OpKind, OpState, StepState};

/// An operation row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OperationRow {
    pub id: OperationId,
    pub tenant_id: TenantId,
    pub kind: OpKind,
    pub target_type: String,
    pub target_id: String,
    pub state: OpState,
    pub params: String,
    pub steps: String,
    pub error: Option<String>,
    pub owner: Option<String>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl OperationRow {
    /// The recorded progress steps.
    pub fn steps(&self) -> Vec<Step> {
        serde_json::from_str(&self.steps).unwrap_or_default()
    }
}

/// One step of an operation's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// What the step does, e.g. `define domain`.
    pub name: String,
    pub state: StepState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The columns every query of this table reads.
macro_rules! operation_columns {
    () => {
        "id, tenant_id, kind, target_type, target_id, state, params, steps, error, owner, \
         heartbeat_at, created_at, started_at, finished_at"
    };
}

/// Records a pending operation. Fails with a unique violation when the target already has an
/// unfinished one.
pub async fn insert(
    conn: &mut super::Tx,
    tenant: &TenantId,
    kind: OpKind,
    target_type: &str,
    target_id: &str,
    params: &serde_json::Value,
) -> Result<OperationRow, sqlx::Error> {
    crate::on_tx!(conn, conn => {
        let id = OperationId::generate();
        sqlx::query(
            "INSERT INTO operations (id, tenant_id, kind, target_type, target_id, state, params, created_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(kind)
        .bind(target_type)
        .bind(target_id)
        .bind(params.to_string())
        .bind(now())
        .execute(&mut *conn)
        .await?;
        sqlx::query_as(concat!(
            "SELECT ",
            operation_columns!(),
            " FROM operations WHERE id = $1"
        ))
        .bind(&id)
        .fetch_one(conn)
        .await
    })
}

/// The operation with this id, if the scope may see it.
pub async fn get(
    db: &Db,
    scope: &Scope,
    id: &OperationId,
) -> Result<Option<OperationRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            operation_columns!(),
            " FROM operations WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)"
        ))
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(db)
        .await
    })
}

/// Which operations a page holds: all the scope may see, or only those on one target, of one
/// state, of one kind or of one tenant.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter<'a> {
    pub target_id: Option<&'a str>,
    pub state: Option<OpState>,
    pub kind: Option<OpKind>,
    pub tenant: Option<&'a TenantId>,
}

/// One page of the operations the scope may see that pass the filter, newest first.
pub async fn page(
    db: &Db,
    scope: &Scope,
    filter: &OperationFilter<'_>,
    page: &PageRequest,
) -> Result<Page<OperationRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            operation_columns!(),
            " FROM operations WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR target_id = $2)
          AND ($3 IS NULL OR (created_at, id) < ($3, $4))
          AND ($6 IS NULL OR state = $6) AND ($7 IS NULL OR kind = $7)
          AND ($8 IS NULL OR tenant_id = $8)
          ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(scope.tenant())
        .bind(filter.target_id)
        .bind(page.time(0))
        .bind(page.key(1))
        .bind(page.fetch())
        .bind(filter.state)
        .bind(filter.kind)
        .bind(filter.tenant)
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |o: &OperationRow| {
            vec![time_key(&o.created_at), o.id.to_string()]
        }))
    })
}

/// The newest operations the scope may see, optionally only those on one target.
pub async fn list(
    db: &Db,
    scope: &Scope,
    target_id: Option<&str>,
    limit: i64,
) -> Result<Vec<OperationRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            operation_columns!(),
            " FROM operations WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR target_id = $2)
              ORDER BY created_at DESC, id LIMIT $3"
        ))
        .bind(scope.tenant())
        .bind(target_id)
        .bind(limit)
        .fetch_all(db)
        .await
    })
}

/// Every pending or running operation (the reconciler).
pub async fn list_unfinished(db: &Db) -> Result<Vec<OperationRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            operation_columns!(),
            " FROM operations WHERE state IN ('pending', 'running') ORDER BY created_at"
        ))
        .fetch_all(db)
        .await
    })
}

/// Takes the operation for `owner` if it is unfinished and still held by `previous_owner`
/// (compare-and-swap: of two processes trying, one wins).
pub async fn claim(
    db: &Db,
    id: &OperationId,
    owner: &str,
    previous_owner: Option<&str>,
) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let at = now();
        let done = sqlx::query(
            "UPDATE operations SET state = 'running', owner = $2, heartbeat_at = $4,
            started_at = COALESCE(started_at, $4)
         WHERE id = $1 AND state IN ('pending', 'running') AND owner IS NOT DISTINCT FROM $3",
        )
        .bind(id)
        .bind(owner)
        .bind(previous_owner)
        .bind(at)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Marks an operation running that no worker claims (a scale group's refresh, driven by its
/// controller from the database).
pub async fn mark_running(conn: &mut super::Tx, id: &OperationId) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(
            "UPDATE operations SET state = 'running', started_at = COALESCE(started_at, $2)
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Appends a finished step to an operation's steps (in the same write as its cause).
pub async fn push_step(
    conn: &mut super::Tx,
    id: &OperationId,
    name: &str,
) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn, pg => {
        let at = now();
        let step = Step {
            name: name.to_string(),
            state: StepState::Done,
            started_at: at,
            finished_at: Some(at),
        };
        let step = serde_json::to_value(&step).map_err(|e| sqlx::Error::Encode(e.into()))?;
        sqlx::query(&super::dialect(pg, "UPDATE operations SET steps = json_insert(steps, '$[#]', json($2)) WHERE id = $1"))
            .bind(id)
            .bind(step.to_string())
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Renews the lease; false if another process has taken the operation over.
pub async fn heartbeat(db: &Db, id: &OperationId, owner: &str) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query(
            "UPDATE operations SET heartbeat_at = $3 WHERE id = $1 AND owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(now())
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Stores the progress steps.
pub async fn set_steps(db: &Db, id: &OperationId, steps: &[Step]) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE operations SET steps = $2 WHERE id = $1")
            .bind(id)
            .bind(serde_json::to_string(steps).unwrap_or_else(|_| "[]".into()))
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Ends the operation as `succeeded` or `failed`.
pub async fn finish(
    conn: &mut super::Tx,
    id: &OperationId,
    state: OpState,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    crate::on_tx!(conn, conn => {
        sqlx::query(
            "UPDATE operations SET state = $2, error = $3, finished_at = $4, heartbeat_at = NULL
             WHERE id = $1 AND state IN ('pending', 'running')",
        )
        .bind(id)
        .bind(state)
        .bind(error)
        .bind(now())
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Operations counted by kind and state (metrics).
pub async fn count_by_kind_and_state(db: &Db) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as("SELECT kind, state, COUNT(*) FROM operations GROUP BY kind, state")
            .fetch_all(db)
            .await
    })
}
