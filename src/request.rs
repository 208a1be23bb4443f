//! What both HTTP faces (the API and the panel) read from a request alike: the client's
//! address (from `X-Forwarded-For` only behind a trusted proxy) and the outcome word the
//! audit log records for a status.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::domain::outcome::Outcome;

/// The audit outcome of a status: succeeded, denied (401, 403, 429) or failed.
pub fn outcome(status: StatusCode) -> Outcome {
    Outcome::of_status(status.as_u16())
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

/// The id a reconnecting event-stream client last saw (`Last-Event-ID`, or `?last_event_id=`
/// for clients that cannot set headers).
pub fn last_event_id(parts: &axum::http::HeaderMap, query: Option<&str>) -> Option<i64> {
    parts
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            query?
                .split('&')
                .find_map(|p| p.strip_prefix("last_event_id=").map(str::to_string))
        })
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|v| *v >= 0)
}

/// A feed subscription as a `text/event-stream` answer: each event has its id (to resume),
/// its kind as the event name and its JSON; a comment every 15 s keeps proxies from closing
/// the idle stream.
pub fn event_stream(
    stream: impl futures_util::Stream<Item = std::sync::Arc<crate::feed::Event>> + Send + 'static,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt as _;
    let events = stream.map(|e| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .id(e.id.to_string())
                .event(e.kind.as_str())
                .json_data(&*e)
                .unwrap_or_else(|_| Event::default().comment("unencodable event")),
        )
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

/// What a handler tells the audit log beyond what the request shows.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// The object acted on (e.g. the id of a VM just created).
    pub target: Option<String>,
    /// The tenant the object belongs to.
    pub tenant_id: Option<String>,
    /// Who acted, when no credential says (a password login).
    pub actor: Option<String>,
}

/// Adds an audit note to a response.
pub fn with_note(
    mut response: axum::response::Response,
    note: AuditNote,
) -> axum::response::Response {
    response.extensions_mut().insert(note);
    response
}

/// The value of the first `{…}` parameter of a route in a concrete path (the audit target).
pub fn id_in_path(route: &str, path: &str) -> Option<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(pattern, _)| pattern.starts_with('{'))
        .map(|(_, value)| value.chars().take(100).collect())
}
