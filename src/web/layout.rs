//! What every panel page shares: the header's navigation, rendering with `no-store`, and the
//! security headers (CSP without inline script or style, no framing, no referrer leaks).

use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::errors::WebError;
use super::session::SessionUser;
use crate::error::AppError;

/// The header of a signed-in page.
#[derive(Debug, Clone)]
pub struct Nav {
    pub email: String,
    pub admin: bool,
    /// The form token every state-changing form carries.
    pub csrf: String,
    /// Which menu entry is current (its path).
    pub section: &'static str,
    /// The event the page is current to (its live stream resumes after it).
    pub event_id: i64,
    /// The page's own address, when it was rendered as the answer to a form: the browser
    /// shows it (so a reload does not post again) and live updates read it.
    pub canonical: Option<String>,
}

impl Nav {
    /// The header for `user` on the page under `section`.
    pub fn of(user: &SessionUser, section: &'static str) -> Self {
        Self {
            email: user.principal.email.clone(),
            admin: user.principal.is_admin(),
            csrf: user.csrf.clone(),
            section,
            event_id: user.seen_event,
            canonical: None,
        }
    }

    /// The same header for the page whose address is `url`.
    pub fn at(mut self, url: impl Into<String>) -> Self {
        self.canonical = Some(url.into());
        self
    }

    /// `aria-current="page"` for the current menu entry.
    pub fn current(&self, path: &str) -> &'static str {
        if self.section == path {
            "page"
        } else {
            "false"
        }
    }
}

/// Renders a page with `status`; a template failure is a 500 page.
pub fn page(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => WebError(AppError::Internal(
            anyhow::Error::new(e).context("rendering a page"),
        ))
        .into_response(),
    }
}

/// A 200 page.
pub fn ok(t: &impl Template) -> Response {
    page(StatusCode::OK, t)
}

/// The Content-Security-Policy of every panel answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The same for the VM page, whose terminal (xterm.js) styles itself with `<style>` elements
/// it makes; scripts stay our own.
pub const CSP_WITH_TERMINAL: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Middleware: security headers on every panel answer.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Bytes as a person reads them (KiB, MiB, GiB, TiB).
pub fn human_bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n.max(0) as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{} B", n.max(0))
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A count with its thousands grouped: `100,000`.
pub fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A time as `2026-11-29 12:04 UTC`.
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_a_person_says_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn counts_group_their_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(100_000), "100,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-4200), "-4,200");
        assert_eq!(grouped(i64::MIN), "-9,223,372,036,854,775,808");
    }
}
