//! The user_ssh_keys table: public keys a user saves to offer when creating VMs.

use chrono::{DateTime, Utc};

use super::{Db, now};
use crate::domain::ids::{SshKeyId, UserId};

/// A saved key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SshKeyRow {
    pub id: SshKeyId,
    pub user_id: UserId,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

/// Why a key could not be saved.
#[derive(Debug)]
pub enum InsertError {
    /// The user already has a key of this name or this fingerprint.
    Duplicate,
    /// The user has `limit` keys already.
    TooMany,
    Db(sqlx::Error),
}

/// Saves a key unless the user has `limit` keys or this one already.
pub async fn insert(
    db: &Db,
    user: &UserId,
    name: &str,
    public_key: &str,
    fingerprint: &str,
    limit: i64,
) -> Result<SshKeyRow, InsertError> {
    crate::on_db!(db, db => {
        let row = SshKeyRow {
            id: SshKeyId::generate(),
            user_id: user.clone(),
            name: name.into(),
            public_key: public_key.into(),
            fingerprint: fingerprint.into(),
            created_at: now(),
        };
        // Counted in the write lock, so concurrent adds cannot pass the limit together.
        let mut tx = super::WritePool::begin_write(db).await.map_err(InsertError::Db)?;
        let done = sqlx::query(
            "INSERT INTO user_ssh_keys (id, user_id, name, public_key, fingerprint, created_at)
         SELECT $1, $2, $3, $4, $5, $6
         WHERE (SELECT COUNT(*) FROM user_ssh_keys WHERE user_id = $2) < $7",
        )
        .bind(&row.id)
        .bind(user)
        .bind(name)
        .bind(public_key)
        .bind(fingerprint)
        .bind(row.created_at)
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => InsertError::Duplicate,
            _ => InsertError::Db(e),
        })?;
        if done.rows_affected() == 0 {
            return Err(InsertError::TooMany);
        }
        tx.commit().await.map_err(InsertError::Db)?;
        Ok(row)
    })
}

/// The user's keys, by name.
pub async fn list(db: &Db, user: &UserId) -> Result<Vec<SshKeyRow>, sqlx::Error> {
    crate::on_db!(db, db => {
        sqlx::query_as(
            "SELECT id, user_id, name, public_key, fingerprint, created_at FROM user_ssh_keys
             WHERE user_id = $1 ORDER BY name",
        )
        .bind(user)
        .fetch_all(db)
        .await
    })
}

/// Deletes one of the user's keys; false when the user has no such key.
pub async fn delete(db: &Db, user: &UserId, id: &SshKeyId) -> Result<bool, sqlx::Error> {
    crate::on_db!(db, db => {
        let done = sqlx::query("DELETE FROM user_ssh_keys WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user)
            .execute(db)
            .await?;
        Ok(done.rows_affected() > 0)
    })
}
