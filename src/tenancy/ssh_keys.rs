//! SSH public keys a user saves once and ticks when creating a VM.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::db::ssh_keys::{InsertError, SshKeyRow};
use crate::db::{self, Db};
use crate::domain::ids::SshKeyId;
use crate::domain::names::ResourceName;
use crate::domain::ssh::SshPublicKey;
use crate::error::AppError;

/// Most keys one user may save.
pub const MAX_KEYS_PER_USER: i64 = 50;

/// A saved key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshKeyView {
    pub id: String,
    pub name: String,
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

impl From<&SshKeyRow> for SshKeyView {
    fn from(k: &SshKeyRow) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            public_key: k.public_key.clone(),
            fingerprint: k.fingerprint.clone(),
            created_at: k.created_at,
        }
    }
}

/// The caller's saved keys, by name.
pub async fn list(db: &Db, actor: &Principal) -> Result<Vec<SshKeyView>, AppError> {
    Ok(db::ssh_keys::list(db, &actor.user_id)
        .await?
        .iter()
        .map(SshKeyView::from)
        .collect())
}

/// Saves a key for the caller; the name defaults to the key's comment.
pub async fn add(
    db: &Db,
    actor: &Principal,
    name: Option<&str>,
    public_key: &str,
) -> Result<SshKeyView, AppError> {
    let key = SshPublicKey::parse(public_key).map_err(|e| e.for_field("public_key"))?;
    let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => key
            .comment()
            .map(|c| {
                c.chars()
                    .map(|ch| {
                        if ch.is_ascii_alphanumeric() || "._-".contains(ch) {
                            ch
                        } else {
                            '-'
                        }
                    })
                    .take(ResourceName::MAX_LEN)
                    .collect::<String>()
            })
            .filter(|c| c.starts_with(|ch: char| ch.is_ascii_alphanumeric()))
            .unwrap_or_else(|| "key".into()),
    };
    let name = ResourceName::parse(&name, "name")?;
    let fingerprint = key.fingerprint();
    match db::ssh_keys::insert(
        db,
        &actor.user_id,
        name.as_str(),
        key.as_str(),
        &fingerprint,
        MAX_KEYS_PER_USER,
    )
    .await
    {
        Ok(row) => Ok(SshKeyView::from(&row)),
        Err(InsertError::Duplicate) => Err(AppError::Conflict(format!(
            "you already saved a key named {:?} or the key {fingerprint}; pick another name or key",
            name.as_str()
        ))),
        Err(InsertError::TooMany) => Err(AppError::Conflict(format!(
            "you have {MAX_KEYS_PER_USER} saved keys, the most allowed; delete one first"
        ))),
        Err(InsertError::Db(e)) => Err(e.into()),
    }
}

/// Deletes one of the caller's keys.
pub async fn delete(db: &Db, actor: &Principal, id: &str) -> Result<(), AppError> {
    let key = SshKeyId::parse(id).ok_or_else(|| AppError::not_found("ssh key", id))?;
    if db::ssh_keys::delete(db, &actor.user_id, &key).await? {
        Ok(())
    } else {
        Err(AppError::not_found("ssh key", id))
    }
}
