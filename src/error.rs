//! One error type for service functions, mapped to HTTP statuses. Server-side failures are
//! logged with their detail and shown to clients as a generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::Invalid;
use crate::domain::capacity::Shortfall;
use crate::hypervisor::HypervisorError;
use crate::hypervisor::storage::StorageError;

/// What went wrong with a request, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Fields of the request break rules (422).
    #[error("the request has invalid fields")]
    Invalid(Vec<Invalid>),
    /// The request cannot be read (400).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or credentials not accepted (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such object, or not one the caller may see (404).
    #[error("{what} {id} was not found")]
    NotFound { what: &'static str, id: String },
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts; retry after the given seconds (429).
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u64,
    },
    /// A server-side failure (500); the detail is logged, never shown.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// One invalid field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AppError::Invalid(vec![Invalid::new(field, message)])
    }

    /// A missing object of kind `what`.
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        AppError::NotFound {
            what,
            id: id.into(),
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Invalid> for AppError {
    fn from(e: Invalid) -> Self {
        AppError::Invalid(vec![e])
    }
}

impl From<Shortfall> for AppError {
    fn from(e: Shortfall) -> Self {
        AppError::Conflict(e.to_string())
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<HypervisorError> for AppError {
    fn from(e: HypervisorError) -> Self {
        AppError::Internal(anyhow::Error::new(e))
    }
}

impl From<StorageError> for AppError {
    fn from(e: StorageError) -> Self {
        AppError::Internal(anyhow::Error::new(e))
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
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
