//! The tenants table.

use chrono::{DateTime, Utc};

use super::Db;
use crate::domain::ids::TenantId;

/// A tenant row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: TenantId,
    pub name: String,
    pub suspended: bool,
    pub created_at: DateTime<Utc>,
}

/// The tenant with this id.
pub async fn get(db: &Db, id: &TenantId) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, suspended, created_at FROM tenants WHERE id = ?1")
        .bind(id)
        .fetch_optional(db)
        .await
}
