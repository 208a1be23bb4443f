//! The users table.

use chrono::{DateTime, Utc};

use super::page::{Page, PageRequest};
use super::{Db, now};
use crate::domain::ids::{TenantId, UserId};

/// A user row (with the password hash: never serialise it).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub email: String,
    pub role: crate::domain::role::Role,
    pub tenant_id: Option<TenantId>,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// The columns every query of this table reads.
macro_rules! user_columns {
    () => {
        "id, email, role, tenant_id, password_hash, created_at"
    };
}

/// Inserts a user; the email must be unused.
pub async fn insert(
    db: &Db,
    email: &str,
    role: crate::domain::role::Role,
    tenant_id: Option<&TenantId>,
    password_hash: &str,
) -> Result<UserId, sqlx::Error> {
    crate::on_db!(db, db => {
        let id = UserId::generate();
        sqlx::query(
            "INSERT INTO users (id, email, role, tenant_id, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
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
    })
}

/// The user with this email (case-insensitive).
pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    crate::on_db!(db, db, pg => {
        // Emails match ignoring case: SQLite's column is COLLATE NOCASE; PostgreSQL has a unique
        // index on lower(email).
        let sql = if pg {
            concat!("SELECT ", user_columns!(), " FROM users WHERE lower(email) = lower($1)")
        } else {
            concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1")
        };
        sqlx::query_as(sql)
        .bind(email)
        .fetch_optional(db)
        .await
    })
}

/// The user with this id.
pub async fn get(db: &Db, id: &UserId) -> Result<Option<UserRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(db)
        .await
    })
}

/// One page of users, optionally of one tenant, by email.
pub async fn page(
    db: &Db,
    tenant: Option<&TenantId>,
    page: &PageRequest,
) -> Result<Page<UserRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR email > $2)
              ORDER BY email LIMIT $3"
        ))
        .bind(tenant)
        .bind(page.key(0))
        .bind(page.fetch())
        .fetch_all(db)
        .await?;
        Ok(page.finish(rows, |u: &UserRow| vec![u.email.clone()]))
    })
}

/// Sets a user's role and tenant.
pub async fn set_role(
    db: &Db,
    id: &UserId,
    role: crate::domain::role::Role,
    tenant: Option<&TenantId>,
) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query("UPDATE users SET role = $2, tenant_id = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(role)
            .bind(tenant)
            .bind(now())
            .execute(db)
            .await?;
        Ok(())
    })
}

/// Replaces a user's password hash and ends the user's browser sessions.
pub async fn set_password(db: &Db, id: &UserId, hash: &str) -> Result<(), sqlx::Error> {
    crate::on_db!(db, db => {
        let mut tx = db.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(hash)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    })
}

/// Deletes a user (tokens and sessions go with it).
pub async fn delete(db: &Db, id: &UserId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(db)
            .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Number of admins.
pub async fn count_admins(db: &Db) -> Result<i64, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
            .fetch_one(db)
            .await
    })
}
