//! The panel's stylesheet and script, built into the binary (no CDN, no build step).

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::errors::not_found;

const CSS: &str = include_str!("../../static/panel.css");
const JS: &str = include_str!("../../static/panel.js");

/// `/static/{file}`: the stylesheet or the script, cached for an hour.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "panel.css" => (CSS, "text/css; charset=utf-8"),
        "panel.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return not_found().await,
    };
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}
