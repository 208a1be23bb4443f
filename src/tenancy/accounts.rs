//! Tenants, their quotas and usage, and users: the service functions behind `/tenants`,
//! `/users` and `/me`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::{Principal, Role};
use crate::db::page::{Page, PageRequest};
use crate::db::quotas::{Quota, Usage};
use crate::db::tenants::TenantRow;
use crate::db::users::UserRow;
use crate::db::{self, Db, Scope};
use crate::domain::Invalid;
use crate::domain::ids::{TenantId, UserId};
use crate::domain::names::ResourceName;
use crate::error::AppError;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// Longest password accepted (argon2 hashes anything, but bodies are bounded anyway).
pub const MAX_PASSWORD: usize = 1024;

/// Checks a new password's length.
pub fn check_password(field: &'static str, password: &str) -> Result<(), Invalid> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(Invalid::new(
            field,
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long (got {n})"),
        ));
    }
    Ok(())
}

/// Checks an email address enough to catch typos.
pub fn check_email(email: &str) -> Result<(), Invalid> {
    let parts: Vec<&str> = email.split('@').collect();
    let ok = email.len() <= 254
        && parts.len() == 2
        && parts.iter().all(|p| !p.is_empty())
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"'`;,()[]\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            "email",
            format!("{email:?} is not an email address"),
        ))
    }
}

mod quota;
mod tenants;
mod users;

pub use quota::*;
pub use tenants::*;
pub use users::*;
