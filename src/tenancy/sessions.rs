//! Browser sessions: started at login with a fresh random id (only its SHA-256 is stored,
//! with a CSRF token of its own), ended one at a time or all of a user's at once.

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;

use crate::auth::token_digest;
use crate::db::{self, Db};
use crate::domain::ids::UserId;
use crate::error::AppError;

/// A random URL-safe secret of 32 bytes.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Starts a session of `hours` for a user; returns the cookie value and its expiry.
pub async fn start(
    db: &Db,
    user: &UserId,
    hours: u64,
) -> Result<(String, DateTime<Utc>), AppError> {
    let secret = random_secret();
    let expires = Utc::now() + Duration::hours(hours.min(24 * 365) as i64);
    db::sessions::insert(db, &token_digest(&secret), user, &random_secret(), expires).await?;
    Ok((secret, expires))
}

/// Ends the session whose cookie this is.
pub async fn end(db: &Db, cookie_value: &str) -> Result<(), AppError> {
    db::sessions::delete(db, &token_digest(cookie_value)).await?;
    Ok(())
}

/// Ends every session of a user (signing out everywhere); returns how many there were.
pub async fn end_all(db: &Db, user: &UserId) -> Result<u64, AppError> {
    Ok(db::sessions::delete_for_user(db, user).await?)
}
