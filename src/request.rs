//! What both HTTP faces (the API and the panel) read from a request alike: the client's
//! address (from `X-Forwarded-For` only behind a trusted proxy) and the outcome word the
//! audit log records for a status.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::app::AppState;

/// `succeeded`, `denied` (401, 403, 429) or `failed`.
pub fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        s if s < 400 => "succeeded",
        401 | 403 | 429 => "denied",
        _ => "failed",
    }
}

/// The client's address, when the server knows it: the peer's, or what `X-Forwarded-For`
/// says when the peer is one of `http.trusted_proxies`.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_of(
            parts,
            &app.config.http.trusted_proxies,
        )))
    }
}

/// The client address of a request (see [`ClientAddr`]).
pub fn client_of(parts: &Parts, trusted: &[std::net::IpAddr]) -> Option<std::net::IpAddr> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?
        .0
        .ip();
    let forwarded: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Some(crate::auth::client_address(peer, &forwarded, trusted))
}
