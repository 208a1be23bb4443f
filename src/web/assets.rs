//! The panel's stylesheet and scripts, and the terminal (xterm.js), built into the binary (no
//! CDN, no build step).

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::errors::not_found;

const CSS: &str = include_str!("../../static/panel.css");
const JS: &str = include_str!("../../static/panel.js");
const CONSOLE_JS: &str = include_str!("../../static/console.js");
const XTERM_JS: &str = include_str!("../../static/xterm/xterm.js");
const XTERM_CSS: &str = include_str!("../../static/xterm/xterm.css");
const XTERM_FIT_JS: &str = include_str!("../../static/xterm/addon-fit.js");

/// `/static/xterm/{file}`: the terminal (xterm.js, vendored from its npm package).
pub async fn serve_xterm(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "xterm.js" => (XTERM_JS, "text/javascript; charset=utf-8"),
        "xterm.css" => (XTERM_CSS, "text/css; charset=utf-8"),
        "addon-fit.js" => (XTERM_FIT_JS, "text/javascript; charset=utf-8"),
        _ => return not_found().await,
    };
    cached(body, kind)
}

/// A static answer cached for an hour.
fn cached(body: &'static str, kind: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// `/static/{file}`: the stylesheet or the scripts, cached for an hour.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "panel.css" => (CSS, "text/css; charset=utf-8"),
        "panel.js" => (JS, "text/javascript; charset=utf-8"),
        "console.js" => (CONSOLE_JS, "text/javascript; charset=utf-8"),
        _ => return not_found().await,
    };
    cached(body, kind)
}
