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
        AppError::Unavailable { .. } => "carve is briefly unavailable",
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
        }
        | AppError::Unavailable {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_carve_failure_shows_a_reference_the_log_also_has_and_never_its_detail() {
        let log = Captured::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let response = tracing::subscriber::with_default(subscriber, || {
            WebError(AppError::Internal(anyhow::anyhow!(
                "database is locked at /var/lib/carve/carve.db"
            )))
            .into_response()
        });
        assert_eq!(response.status(), 500);
        let html = body(response).await;
        let at = html.find("ref-").expect("a reference on the page");
        let reference = &html[at..at + 16];
        assert!(
            reference[4..].chars().all(|c| c.is_ascii_hexdigit()),
            "{reference}"
        );
        assert!(html.contains("Something went wrong in carve"), "{html}");
        assert!(
            !html.contains("database is locked"),
            "the detail leaked: {html}"
        );
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains(reference) && logged.contains("database is locked"),
            "{logged}"
        );
    }

    #[tokio::test]
    async fn quota_and_capacity_errors_get_their_own_titles() {
        let quota = WebError(AppError::Forbidden(
            "quota exceeded: max_vms is 1, the tenant uses 1 and this needs 1 more".into(),
        ))
        .into_response();
        assert_eq!(quota.status(), 403);
        let html = body(quota).await;
        assert!(
            html.contains("Quota reached") && html.contains("max_vms is 1"),
            "{html}"
        );
        let short = crate::domain::capacity::Shortfall {
            host: "h1".into(),
            resource: "memory",
            needed: 512,
            free: 128,
            total: 1024,
            unit: " MiB",
        };
        let capacity = WebError(short.into()).into_response();
        assert_eq!(capacity.status(), 409);
        let html = body(capacity).await;
        assert!(
            html.contains("Not enough capacity") && html.contains("128 MiB of 1024 MiB"),
            "{html}"
        );
    }
}
