//! The audit log: the one way every face records an entry (never failing the request it
//! records), and reading it (admins all of it, customers their tenant's part).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::db::audit::AuditRow;
use crate::db::{self, Db};
use crate::domain::outcome::Outcome;
use crate::error::AppError;

pub use crate::db::audit::NewEntry;

/// Records an entry; a failure to write is logged (with the action), never passed on.
pub async fn record(db: &Db, entry: &NewEntry) {
    if let Err(e) = db::audit::insert(db, entry).await {
        tracing::error!(error = %e, action = %entry.action, "cannot write the audit log");
    }
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Email of who acted (or the email tried, for failed logins).
    pub actor: String,
    pub actor_id: Option<String>,
    pub tenant_id: Option<String>,
    /// e.g. `POST /api/v1/vms` or `login`.
    pub action: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub status: Option<i64>,
    /// Client address.
    pub client: Option<String>,
}

impl From<AuditRow> for AuditView {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            actor_id: r.actor_id,
            tenant_id: r.tenant_id,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            status: r.status,
            client: r.client,
        }
    }
}

/// One page of the entries the caller may see, newest first.
pub async fn list(
    db: &Db,
    actor: &Principal,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<AuditView>, AppError> {
    Ok(db::audit::page(db, &actor.scope(), page)
        .await?
        .map(AuditView::from))
}

/// One page of the entries the caller may see that pass the filter, newest first.
pub async fn search(
    db: &Db,
    actor: &Principal,
    filter: &db::audit::AuditFilter,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<AuditView>, AppError> {
    Ok(db::audit::filtered_page(db, &actor.scope(), filter, page)
        .await?
        .map(AuditView::from))
}
