//! The one place a credential becomes a [`Principal`]: an API token (by its SHA-256) or a
//! browser session cookie, read in one query with the user, its tenant's suspension and the
//! version of the data it may see.

use crate::auth::{Principal, Role, token_digest};
use crate::db::{self, Db};
use crate::domain::ids::{TenantId, UserId};
use crate::error::AppError;

/// What a presented credential turned out to be.
#[derive(Debug, Clone)]
pub enum Resolved<T> {
    /// Unknown, revoked or expired.
    Unknown,
    /// Valid, but the user's tenant is suspended.
    Suspended,
    /// A user, with what the credential carries besides (e.g. a session's CSRF token).
    User(Principal, T),
}

/// The principal of a user row.
fn principal(
    user_id: UserId,
    email: String,
    role: Role,
    tenant_id: Option<TenantId>,
    view_version: i64,
) -> Principal {
    Principal {
        user_id,
        email,
        role,
        tenant_id,
        view_version: Some(view_version),
    }
}

/// The owner of an API token secret.
pub async fn from_token(db: &Db, secret: &str) -> Result<Resolved<()>, sqlx::Error> {
    Ok(
        match db::tokens::find_owner(db, &token_digest(secret)).await? {
            None => Resolved::Unknown,
            Some(o) if o.suspended => Resolved::Suspended,
            Some(o) => {
                let stale = o
                    .last_used_at
                    .is_none_or(|at| chrono::Utc::now() - at > chrono::Duration::seconds(60));
                if stale && let Err(e) = db::tokens::touch(db, &o.token_id).await {
                    tracing::warn!(error = %e, "cannot record a token's last use");
                }
                Resolved::User(
                    principal(o.user_id, o.email, o.role, o.tenant_id, o.view_version),
                    (),
                )
            }
        },
    )
}

/// The owner of a browser session cookie, with the session's CSRF token.
pub async fn from_session(db: &Db, cookie: &str) -> Result<Resolved<String>, sqlx::Error> {
    Ok(match db::sessions::find(db, &token_digest(cookie)).await? {
        None => Resolved::Unknown,
        Some(o) if o.suspended => Resolved::Suspended,
        Some(o) => Resolved::User(
            principal(o.user_id, o.email, o.role, o.tenant_id, o.view_version),
            o.csrf_token,
        ),
    })
}

/// The tenant a new resource (`what`, e.g. "VMs") belongs to: the customer's own, or for
/// admins the one named (or the default tenant), which must not be suspended.
pub async fn owning_tenant(
    db: &Db,
    actor: &Principal,
    requested: Option<&str>,
    what: &str,
) -> Result<TenantId, AppError> {
    if !actor.is_admin() {
        if requested.is_some() {
            return Err(AppError::invalid(
                "tenant_id",
                "only admins choose the tenant; leave tenant_id out",
            ));
        }
        return actor
            .tenant_id
            .clone()
            .ok_or_else(|| AppError::Forbidden("your account has no tenant".into()));
    }
    let Some(raw) = requested else {
        return Ok(TenantId::default_tenant());
    };
    let unknown = || AppError::invalid("tenant_id", format!("no tenant has id {raw:?}"));
    let id = TenantId::parse(raw).ok_or_else(unknown)?;
    let tenant = db::tenants::get(db, &id).await?.ok_or_else(unknown)?;
    if tenant.suspended {
        return Err(AppError::Conflict(format!(
            "tenant {id} is suspended; reinstate it before creating {what}"
        )));
    }
    Ok(id)
}
