//! Error pages a person understands: what happened and what to do, with a reference that
//! the log also has when carve itself failed.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::error::AppError;

/// A service error shown as a page.
#[derive(Debug)]
pub struct WebError(pub AppError);

impl From<AppError> for WebError {
    fn from(e: AppError) -> Self {
        WebError(e)
    }
}

impl From<sqlx::Error> for WebError {
    fn from(e: sqlx::Error) -> Self {
        WebError(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: String,
    reference: Option<String>,
}

/// The heading and message for an error.
pub fn describe(e: &AppError) -> (&'static str, String) {
    let message = e.to_string();
    let title = match e {
        AppError::NotFound { .. } => "Not found",
        AppError::Forbidden(m) if m.starts_with("quota exceeded") => "Quota reached",
        AppError::Forbidden(_) => "Not allowed",
        AppError::Unauthorized(_) => "Please sign in",
        AppError::Conflict(m) if m.contains("capacity") || m.contains("free on") => {
            "Not enough capacity"
        }
        AppError::Conflict(_) => "That clashes with the current state",
        AppError::TooManyRequests { .. } => "Too many requests",
        AppError::TooLarge(_) => "Too large",
        AppError::Invalid(_) => "Please check what you entered",
        AppError::BadRequest(_) => "The request could not be read",
        AppError::Internal(_) => "Something went wrong in carve",
    };
    let message = match e {
        AppError::NotFound { what, .. } => format!(
            "There is no {what} here that you can see. It may have been deleted, or the link is wrong."
        ),
        AppError::Invalid(fields) => fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => message,
    };
    (title, message)
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let (title, message) = describe(&self.0);
        let reference = match &self.0 {
            AppError::Internal(detail) => {
                let reference = format!("ref-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                tracing::error!(reference = %reference, error = format!("{detail:#}"), "panel request failed");
                Some(reference)
            }
            _ => None,
        };
        let message = if reference.is_some() {
            "carve could not finish this request. Try again in a moment; if it keeps happening, give your provider the reference below.".to_string()
        } else {
            message
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            message,
            reference,
        };
        let html = page.render().unwrap_or_else(|_| {
            "<!doctype html><title>Error</title><p>carve could not show this error.</p>".into()
        });
        let mut response = (status, Html(html)).into_response();
        if let AppError::TooManyRequests {
            retry_after_secs, ..
        } = &self.0
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        response
    }
}

/// The 404 page for paths the panel does not have.
pub async fn not_found() -> Response {
    let mut r = WebError(AppError::NotFound {
        what: "page",
        id: String::new(),
    })
    .into_response();
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}
