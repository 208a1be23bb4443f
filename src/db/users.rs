//! The users table.

use chrono::{DateTime, Utc};

use super::{Db, now};
use crate::domain::ids::{TenantId, UserId};

/// A user row (with the password hash: never serialise it).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub email: String,
    pub role: String,
    pub tenant_id: Option<TenantId>,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// Inserts a user; the email must be unused.
pub async fn insert(
    db: &Db,
    email: &str,
    role: &str,
    tenant_id: Option<&TenantId>,
    password_hash: &str,
) -> Result<UserId, sqlx::Error> {
    let id = UserId::generate();
    sqlx::query(
        "INSERT INTO users (id, email, role, tenant_id, password_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(&id)
    .bind(email)
    .bind(role)
    .bind(tenant_id)
    .bind(password_hash)
    .bind(now())
    .execute(db)
    .await?;
    Ok(id)
}

/// The user with this email (case-insensitive).
pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, role, tenant_id, password_hash, created_at FROM users WHERE email = ?1",
    )
    .bind(email)
    .fetch_optional(db)
    .await
}
