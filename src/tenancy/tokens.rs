//! API tokens: created by a logged-in user or with email and password, listed without
//! secrets, revoked at once.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::{Principal, new_token};
use crate::db::tokens::TokenRow;
use crate::db::{self};
use crate::domain::ids::TokenId;
use crate::domain::names::ResourceName;
use crate::error::AppError;

/// Longest a token may live, in days.
pub const MAX_TOKEN_DAYS: i64 = 3650;

/// A request for a token: by a caller with a token, or with email and password.
#[derive(Debug, Clone)]
pub struct CreateToken {
    /// A name to recognise the token by (default `api`).
    pub name: Option<String>,
    /// When the token stops working (default: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// With `password`, when no bearer token is sent.
    pub email: Option<String>,
    pub password: Option<String>,
}

/// A token without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the token was last used (to the minute); absent if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<&TokenRow> for TokenView {
    fn from(t: &TokenRow) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            user_id: t.user_id.to_string(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// A new token: shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// The secret; keep it, it is never shown again.
    pub token: String,
}

/// Creates a token for the caller, or for the user whose email and password are given.
/// Returns the token and the email of its owner (for the audit log).
pub async fn create(
    app: &App,
    actor: Option<&Principal>,
    req: CreateToken,
    client: Option<IpAddr>,
) -> Result<(CreatedToken, String), AppError> {
    let name = ResourceName::parse(req.name.as_deref().unwrap_or("api"), "name")?;
    if let Some(at) = req.expires_at {
        let now = Utc::now();
        if at <= now || at > now + chrono::Duration::days(MAX_TOKEN_DAYS) {
            return Err(AppError::invalid(
                "expires_at",
                format!("must be in the future and within {MAX_TOKEN_DAYS} days"),
            ));
        }
    }
    let (user_id, email) = match (actor, req.email, req.password) {
        (Some(p), None, None) => (p.user_id.clone(), p.email.clone()),
        (None, Some(email), Some(password)) => {
            let user = super::login::authenticate(app, &email, password, client).await?;
            (user.id, user.email)
        }
        (Some(_), _, _) => {
            return Err(AppError::invalid(
                "email",
                "send either a bearer token or email and password, not both",
            ));
        }
        (None, _, _) => {
            return Err(AppError::Unauthorized(
                "send a bearer token, or email and password in the body".into(),
            ));
        }
    };
    let (secret, digest) = new_token();
    let row = db::tokens::insert(&app.db, &user_id, name.as_str(), &digest, req.expires_at).await?;
    Ok((
        CreatedToken {
            view: TokenView::from(&row),
            token: secret,
        },
        email,
    ))
}

/// The caller's tokens (admins: everyone's).
pub async fn list(
    app: &App,
    actor: &Principal,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<TokenView>, AppError> {
    let user = (!actor.is_admin()).then_some(&actor.user_id);
    Ok(db::tokens::page(&app.db, user, page)
        .await?
        .map(|t| TokenView::from(&t)))
}

/// The caller's own tokens, whoever the caller is.
pub async fn list_own(
    app: &App,
    actor: &Principal,
    page: &db::page::PageRequest,
) -> Result<db::page::Page<TokenView>, AppError> {
    Ok(db::tokens::page(&app.db, Some(&actor.user_id), page)
        .await?
        .map(|t| TokenView::from(&t)))
}

/// Revokes one of the caller's own tokens (admins too: others' are revoked through the API).
pub async fn revoke_own(app: &App, actor: &Principal, id: &str) -> Result<(), AppError> {
    let token = TokenId::parse(id).ok_or_else(|| AppError::not_found("token", id))?;
    if db::tokens::delete(&app.db, &token, Some(&actor.user_id)).await? {
        Ok(())
    } else {
        Err(AppError::not_found("token", id))
    }
}

/// Revokes one of the caller's tokens (admins: anyone's); it stops working at once.
pub async fn revoke(app: &App, actor: &Principal, id: &str) -> Result<(), AppError> {
    let token = TokenId::parse(id).ok_or_else(|| AppError::not_found("token", id))?;
    let user = (!actor.is_admin()).then_some(&actor.user_id);
    if db::tokens::delete(&app.db, &token, user).await? {
        Ok(())
    } else {
        Err(AppError::not_found("token", id))
    }
}
