//! Headers on their way through the HTTP data plane: hop-by-hop ones removed, the client
//! named in `X-Forwarded-*`, upgrades recognised, cookies read.

use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Whether the client asks to switch protocols (WebSocket).
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request as the member gets it: origin-form target, hop-by-hop headers gone, the
/// client named in `X-Forwarded-*`.
pub fn prepare(req: &mut Request<Incoming>, client: &HeaderValue, upgrade: bool) {
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        if let Ok(uri) = target.parse() {
            *req.uri_mut() = uri;
        }
    }
    let h = req.headers_mut();
    strip_hop_by_hop(h, upgrade);
    // Every X-Forwarded-For line the client sent, in order, then the client.
    let forwarded_for = if h.contains_key(X_FORWARDED_FOR) {
        let mut v = Vec::new();
        for prior in h.get_all(X_FORWARDED_FOR) {
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(client.as_bytes());
        HeaderValue::from_bytes(&v).unwrap_or_else(|_| client.clone())
    } else {
        client.clone()
    };
    h.insert(X_FORWARDED_FOR, forwarded_for);
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    match h.get(header::HOST).cloned() {
        Some(host) => h.insert(X_FORWARDED_HOST, host),
        None => h.remove(X_FORWARDED_HOST),
    };
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Headers that belong to one connection, whatever `Connection` says.
const HOP_BY_HOP: [HeaderName; 7] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes headers that belong to one connection (keeping `Upgrade` for a switch).
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<String> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !(t.is_empty() || (upgrade && t == "upgrade")))
            .collect();
        for name in named {
            h.remove(name.as_str());
        }
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    if !upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    } else {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The value of a cookie.
pub fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}
