//! How the API answers a service error: an RFC 9457 problem document with the status that
//! fits, `Retry-After` when throttled, and a generic message (the detail logged) for internal
//! failures.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::AppError;

impl AppError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What happened and what to do about it.
    pub detail: String,
    /// Per-field messages, for invalid requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One field's problem.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The request field.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// Builds a problem response.
pub fn problem_response(status: StatusCode, detail: String, errors: Vec<FieldError>) -> Response {
    let title = status.canonical_reason().unwrap_or("Error").to_string();
    let slug = title.to_ascii_lowercase().replace(' ', "-");
    let body = Problem {
        kind: format!("https://carve.dev/problems/{slug}"),
        title,
        status: status.as_u16(),
        detail,
        errors,
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (detail, errors) = match &self {
            AppError::Invalid(list) => {
                let detail = list
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                let errors = list
                    .iter()
                    .map(|e| FieldError {
                        field: e.field.to_string(),
                        message: e.message.clone(),
                    })
                    .collect();
                (detail, errors)
            }
            AppError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    "carve hit an internal error; it has been logged. Retry, and tell the \
                     operator if it persists."
                        .to_string(),
                    Vec::new(),
                )
            }
            other => (other.to_string(), Vec::new()),
        };
        let mut response = problem_response(status, detail, errors);
        if let AppError::TooManyRequests {
            retry_after_secs, ..
        }
        | AppError::Unavailable {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
