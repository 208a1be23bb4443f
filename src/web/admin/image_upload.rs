//! `POST /admin/images`: an admin uploads a qcow2 image from the browser, as a
//! `multipart/form-data` form that works without JavaScript. The text fields come first (the
//! CSRF token before anything else, checked before the file is read); the file is streamed
//! into the same service as `POST /api/v1/images`, never held in memory.

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::catalog::images_page;
use crate::app::AppState;
use crate::error::AppError;
use crate::provision::custom_images::{self, NewImage};
use crate::request::{AuditNote, with_note};
use crate::web::errors::WebError;
use crate::web::form::{FieldErrors, Fields, Panel};
use crate::web::session::same_secret;

/// Longest text field taken, in bytes.
const MAX_FIELD: usize = 4096;
/// Text fields taken before the file.
const MAX_FIELDS: usize = 32;

/// `POST /admin/images`: registers the uploaded file, or shows the form again with the refusal.
pub async fn upload(
    State(app): State<AppState>,
    headers: HeaderMap,
    Panel(user): Panel,
    mut form: Multipart,
) -> Result<Response, WebError> {
    user.principal.require_admin()?;
    // Before a byte of the body is parsed: the form must come from this server's own page (a
    // page of another site on this host cannot make an admin's browser send a huge body).
    same_origin(&headers)?;
    let most = app.config.images.max_upload_mib.saturating_mul(1 << 20);
    let mut pairs: Vec<(String, String)> = Vec::new();
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        AppError::BadRequest(format!("the form could not be read: {}", e.body_text()))
    };
    let result = loop {
        let Some(mut field) = form.next_field().await.map_err(unreadable)? else {
            break Err(AppError::invalid("file", "choose a qcow2 file to upload"));
        };
        let name = field.name().unwrap_or("").to_string();
        if pairs.is_empty() && name != "csrf" {
            return Err(expired());
        }
        if name != "file" {
            if pairs.len() >= MAX_FIELDS {
                return Err(WebError(AppError::BadRequest(
                    "the form has too many fields".into(),
                )));
            }
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
                if value.len() + chunk.len() > MAX_FIELD {
                    return Err(WebError(AppError::BadRequest(format!(
                        "the form's field {name} is longer than {MAX_FIELD} bytes"
                    ))));
                }
                value.extend_from_slice(&chunk);
            }
            if name == "csrf" && !same_secret(&String::from_utf8_lossy(&value), &user.csrf) {
                return Err(expired());
            }
            pairs.push((name, String::from_utf8_lossy(&value).into_owned()));
            continue;
        }
        let typed = Fields::from_pairs(pairs.clone());
        if field.file_name().is_none_or(str::is_empty) {
            break Err(AppError::invalid("file", "choose a qcow2 file to upload"));
        }
        let uploaded = custom_images::upload(
            &app.prov,
            &user.principal,
            new_image(&typed),
            None,
            &mut field,
        )
        .await;
        if uploaded.is_err() {
            // The browser shows an answer only once it has sent the whole body: read the rest.
            drain(&mut field, most).await;
        }
        break uploaded;
    };
    let typed = Fields::from_pairs(pairs);
    match result {
        Ok(image) => Ok(with_note(
            Redirect::to("/admin/images").into_response(),
            AuditNote {
                target: Some(image.id),
                tenant_id: None,
                actor: None,
            },
        )),
        Err(e @ (AppError::Internal(_) | AppError::Forbidden(_))) => Err(WebError(e)),
        Err(e) => {
            let status: StatusCode = e.status();
            let errors = FieldErrors::from_error(&e);
            images_page(&app, &user, &headers, typed, errors, status).await
        }
    }
}

/// Reads and drops the rest of a refused file (at most `most` bytes, giving up on a stall),
/// so the browser shows the answer rather than a reset connection.
async fn drain(field: &mut axum::extract::multipart::Field<'_>, most: u64) {
    let mut read: u64 = 0;
    while read <= most {
        match tokio::time::timeout(std::time::Duration::from_secs(30), field.chunk()).await {
            Ok(Ok(Some(chunk))) => read += chunk.len() as u64,
            _ => return,
        }
    }
}

/// Refuses a form whose `Origin` is not this server (as the browser reached it).
fn same_origin(headers: &HeaderMap) -> Result<(), WebError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        // Not from a browser page (browsers send Origin with every form post).
        (None, _) => Ok(()),
        (Some(o), Some(h)) if o == format!("http://{h}") || o == format!("https://{h}") => Ok(()),
        _ => Err(expired()),
    }
}

/// What the form says about the image.
fn new_image(f: &Fields) -> NewImage {
    let min_memory = f.get("min_memory_mib").trim();
    NewImage {
        name: f.get("name").trim().to_string(),
        os: f.get("os").trim().to_string(),
        version: f.get("version").trim().to_string(),
        description: f.get("description").trim().to_string(),
        default_user: f.get("default_user").trim().to_string(),
        boot: f.get("boot").to_string(),
        kernel_from: match f.get("boot") {
            "kernel" => Some(f.get("kernel_from").to_string()),
            _ => None,
        },
        // A number that does not parse is out of range, and said so.
        min_memory_mib: (!min_memory.is_empty()).then(|| min_memory.parse().unwrap_or(0)),
        guest_agent: f.get("guest_agent") == "on",
        visible: f.get("visible") == "on",
    }
}

/// The answer to a form without this session's CSRF token first.
fn expired() -> WebError {
    WebError(AppError::Forbidden(
        "the form expired or came from another site, so nothing was uploaded; reload the page and try again".into(),
    ))
}
