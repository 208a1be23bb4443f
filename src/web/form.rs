//! What panel handlers extract: the signed-in user (else a redirect to the login page) and
//! posted forms, whose CSRF token must match the session's before any handler runs.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};

use std::collections::HashMap;

use super::errors::{WebError, describe};
use super::session::{MaybeSession, SessionUser, same_secret};
use crate::app::AppState;
use crate::error::AppError;

/// The fields of a posted form, in order; a name may repeat (checkboxes).
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Fields from name and value pairs, in order.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, if not empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name).trim()).filter(|v| !v.is_empty())
    }

    /// The words of `name`, separated by spaces or commas (labels typed in one field).
    pub fn words(&self, name: &str) -> Vec<String> {
        self.get(name)
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Drops every value of `name` (a password must not be sent back in a form).
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }

    /// Whether a checkbox named `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && !v.is_empty())
    }
}

/// The signed-in user of a page; anyone else is sent to the login page.
pub struct Panel(pub SessionUser);

impl FromRequestParts<AppState> for Panel {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match MaybeSession::from_request_parts(parts, app).await {
            Ok(MaybeSession(Some(user))) => Ok(Panel(user)),
            Ok(MaybeSession(None)) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(WebError(e).into_response()),
        }
    }
}

/// A posted form of the signed-in user, its CSRF token checked.
pub struct Posted {
    pub user: SessionUser,
    pub fields: Fields,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Panel(user) = Panel::from_request_parts(&mut parts, app).await?;
        let req = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(req, app).await.map_err(|e| {
            WebError(AppError::BadRequest(format!(
                "the form could not be read: {}",
                e.body_text()
            )))
            .into_response()
        })?;
        let fields = Fields::parse(&bytes);
        if !same_secret(fields.get("csrf"), &user.csrf) {
            return Err(WebError(AppError::Forbidden(
                "the form expired or came from another site, so nothing was changed; go back, reload the page and try again".into(),
            ))
            .into_response());
        }
        Ok(Posted { user, fields })
    }
}

/// Error messages by field name.
#[derive(Debug, Default)]
pub struct FieldErrors {
    pub general: Option<String>,
    by_field: HashMap<String, String>,
}

impl FieldErrors {
    /// The message for `field`, if it is at fault.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.by_field.get(field).map(String::as_str)
    }

    /// `aria-invalid` for `field`.
    pub fn invalid(&self, field: &str) -> &'static str {
        if self.by_field.contains_key(field) {
            "true"
        } else {
            "false"
        }
    }

    /// The id of `field`'s error message for `aria-describedby` ("" when it has none).
    pub fn describedby(&self, field: &str) -> String {
        if self.by_field.contains_key(field) {
            format!("{field}-error")
        } else {
            String::new()
        }
    }

    /// Sorts a service error into field messages (or one general message).
    pub fn from_error(e: &AppError) -> Self {
        let mut out = Self::default();
        match e {
            AppError::Invalid(fields) => {
                for f in fields {
                    out.by_field
                        .entry(f.field.to_string())
                        .or_insert_with(|| f.message.clone());
                }
            }
            other => out.general = Some(describe(other).1),
        }
        out
    }

    /// One message about the whole form.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            general: Some(message.into()),
            ..Self::default()
        }
    }

    /// One field's message.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut out = Self::default();
        out.by_field.insert(field.into(), message.into());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_and_encoding_are_read() {
        let f = Fields::parse(b"a=1&key=x&key=y+z&empty=&n=%20%20");
        assert_eq!(f.get("a"), "1");
        assert_eq!(f.all("key"), vec!["x", "y z"]);
        assert_eq!(f.opt("empty"), None);
        assert_eq!(f.opt("n"), None);
        assert_eq!(f.get("missing"), "");
        assert!(f.checked("a") && !f.checked("empty"));
    }
}
