//! HTTP/1.1 heads on their way through the data plane, as bytes: a client's request head
//! parsed and rewritten for a member (origin-form target, hop-by-hop headers gone, the client
//! named in `X-Forwarded-*`), and a member's answer head parsed and rewritten for the client.
//! Bodies are passed through unchanged; the head says how each one is delimited.

use super::body::Framing;

/// Largest request or answer head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in one head.
const MAX_HEADERS: usize = 100;

/// A client request that is refused before any member sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// Who sent a request, and the pool's sticky cookie.
pub struct Client<'a> {
    /// The client's address, as `X-Forwarded-For` names it.
    pub ip: &'a [u8],
    /// The pool's sticky cookie, if it has one.
    pub sticky_cookie: Option<&'a str>,
}

/// What the data plane must know of a request, once its head is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the client's head (its body, or the next request, follows).
    pub head_len: usize,
    pub framing: Framing,
    /// Whether the client keeps its connection after this request.
    pub keep_alive: bool,
    /// Whether the client asks to switch protocols (WebSocket).
    pub upgrade: bool,
    /// Whether sending it twice has the effect of once (RFC 9110 9.2.2).
    pub idempotent: bool,
    /// A `HEAD` request: its answer has no body, whatever the head says.
    pub head_only: bool,
    /// An HTTP/1.0 client: no chunked answer, no interim answers, closed after.
    pub http10: bool,
    /// The member named by the sticky cookie.
    pub sticky: Option<String>,
}

/// Parses the request head at the start of `buf` and writes the member's version of it to
/// `out`. `Ok(None)`: the head is not complete yet.
pub fn request(buf: &[u8], client: &Client, out: &mut Vec<u8>) -> Result<Option<Request>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(
                431,
                "The request's headers are too large (at most 64 KiB and 100 lines).",
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(refuse(505, "Only HTTP/1.0 and HTTP/1.1 are served here."));
        }
        Err(_) => return Err(refuse(400, "The request is not valid HTTP/1.1.")),
    };
    let method = req.method.unwrap_or("GET");
    let target = req.path.unwrap_or("/");
    let http10 = req.version == Some(0);
    if method == "CONNECT" {
        return Err(refuse(
            405,
            "CONNECT is not served here: this address is a reverse proxy.",
        ));
    }
    let (target, authority) = origin_form(target, method)?;

    let mut tokens = ConnectionTokens::default();
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut has_upgrade = false;
    let mut sticky = None;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            tokens.read(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value)
                .ok_or(refuse(400, "The Content-Length header is not a number."))?;
            if length.is_some_and(|l| l != n) {
                return Err(refuse(
                    400,
                    "The request has differing Content-Length headers.",
                ));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = Some(last_coding_is_chunked(h.value));
        } else if name.eq_ignore_ascii_case("upgrade") {
            has_upgrade = true;
        } else if let Some(cookie_name) = client.sticky_cookie
            && name.eq_ignore_ascii_case("cookie")
            && sticky.is_none()
        {
            sticky = cookie(h.value, cookie_name);
        }
    }
    if hosts > 1 {
        return Err(refuse(400, "The request has more than one Host header."));
    }
    let framing = match (chunked, length) {
        (Some(_), Some(_)) => {
            return Err(refuse(
                400,
                "The request has both Content-Length and Transfer-Encoding; send one.",
            ));
        }
        (Some(_), None) if http10 => {
            return Err(refuse(400, "HTTP/1.0 requests cannot be chunked."));
        }
        (Some(false), None) => {
            return Err(refuse(
                501,
                "The request's Transfer-Encoding does not end with chunked.",
            ));
        }
        (Some(true), None) => Framing::Chunked,
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    // An upgrade carries no body: the bytes after its head belong to the new protocol.
    let upgrade = has_upgrade && tokens.upgrade && !http10 && framing == Framing::Empty;

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    // An absolute-form target's authority is the host (RFC 9112 3.2.2).
    let mut host: Option<&[u8]> = authority.map(str::as_bytes);
    if let Some(authority) = authority {
        push_header(out, b"Host", authority.as_bytes());
    }
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(trim(h.value));
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            if authority.is_some() {
                continue;
            }
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
            || (name.eq_ignore_ascii_case("upgrade") && !upgrade)
            || hop_by_hop(name)
            || tokens.names(name)
        {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    // Every X-Forwarded-For line the client sent, in order, then the client.
    out.extend_from_slice(b"X-Forwarded-For: ");
    for prior in forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.ip);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    if let Some(host) = host {
        push_header(out, b"X-Forwarded-Host", host);
    }
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");

    Ok(Some(Request {
        head_len,
        framing,
        keep_alive: !http10 && !tokens.close,
        upgrade,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        head_only: method == "HEAD",
        http10,
        sticky,
    }))
}

/// What the data plane must know of a member's answer, once its head is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Bytes of the member's head.
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// A `1xx` other than 101: the real answer follows.
    pub interim: bool,
    /// The member kept the connection open for another request.
    pub reusable: bool,
    /// The client's connection closes after this answer.
    pub close_client: bool,
}

/// Parses the answer head at the start of `buf` (to `request`) and writes the client's
/// version of it to `out`, with `set_cookie` (name, member) added and `Connection: close`
/// when `close_client`. `Ok(None)`: not complete yet; `Err`: not a valid answer.
pub fn answer(
    buf: &[u8],
    request: &Request,
    set_cookie: Option<(&str, &str)>,
    close_client: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Answer>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err("its head is too large"),
        Err(_) => return Err("it is not valid HTTP/1.1"),
    };
    let status = res.code.unwrap_or(0);
    let interim = (100..200).contains(&status) && status != 101;
    if status == 101 && !request.upgrade {
        return Err("it switched protocols unasked");
    }
    let mut tokens = ConnectionTokens::default();
    let mut length = None;
    let mut chunked = None;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            tokens.read(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or("its Content-Length is not a number")?;
            if length.is_some_and(|l| l != n) {
                return Err("it has differing Content-Length headers");
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = Some(last_coding_is_chunked(h.value));
        }
    }
    if request.http10 && chunked == Some(true) && !request.head_only {
        return Err("it answered an HTTP/1.0 request chunked");
    }
    let framing = if request.head_only || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    // Both lengths, or an HTTP/1.0 exchange (sent with `Connection: close`): the member's
    // connection is not trusted with another request (RFC 9112 6.3).
    let reusable = res.version == Some(1)
        && !request.http10
        && (chunked.is_none() || length.is_none())
        && !tokens.close
        && framing != Framing::UntilClose
        && status != 101;
    let close_client = !interim
        && status != 101
        && (close_client || framing == Framing::UntilClose || !request.keep_alive);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let name = h.name;
        if (name.eq_ignore_ascii_case("upgrade") && status != 101)
            || (name.eq_ignore_ascii_case("content-length") && chunked.is_some())
            || hop_by_hop(name)
            || tokens.names(name)
        {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    if let Some((name, member)) = set_cookie
        && !interim
        && status != 101
    {
        out.extend_from_slice(b"Set-Cookie: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(b"; Path=/; HttpOnly\r\n");
    }
    if status == 101 {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if close_client {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Answer {
        head_len,
        status,
        framing,
        interim,
        reusable,
        close_client,
    }))
}

/// A whole answer of the data plane's own: a short HTML page.
pub fn page(status: u16, reason: &str, text: &str, head_only: bool, close: bool) -> Vec<u8> {
    let body = format!(
        "<!doctype html><html lang=\"en\"><title>{status} {reason}</title><h1>{reason}</h1><p>{text}</p></html>\n"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if status == 503 {
        out.extend_from_slice(b"Retry-After: 1\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The request target in origin form (`/path?query`; `*` for `OPTIONS *`), and the
/// authority of an absolute-form target.
fn origin_form<'a>(target: &'a str, method: &str) -> Result<(&'a str, Option<&'a str>), Refusal> {
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok((target, None));
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Err(refuse(
            400,
            "The request target must be a path such as /index.html.",
        ));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(refuse(
            400,
            "The request target's host is missing or has user information.",
        ));
    }
    let path = if path.starts_with('/') { path } else { "/" };
    Ok((path, Some(authority)))
}

/// What `Connection` headers said: `close`, `upgrade`, and other headers named as
/// connection-specific.
#[derive(Default)]
struct ConnectionTokens {
    close: bool,
    upgrade: bool,
    named: Vec<String>,
}

impl ConnectionTokens {
    fn read(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',') {
            let token = trim(token);
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !token.is_empty()
                && !token.eq_ignore_ascii_case(b"keep-alive")
                // A message's framing and target are never the connection's to drop: naming
                // them would let a body be framed one way here and another at the member.
                && !token.eq_ignore_ascii_case(b"content-length")
                && !token.eq_ignore_ascii_case(b"transfer-encoding")
                && !token.eq_ignore_ascii_case(b"host")
                && self.named.len() < 16
            {
                self.named
                    .push(String::from_utf8_lossy(token).to_ascii_lowercase());
            }
        }
    }

    /// Whether `name` was named as connection-specific.
    fn names(&self, name: &str) -> bool {
        self.named.iter().any(|n| name.eq_ignore_ascii_case(n))
    }
}

/// Headers that belong to one connection, whatever `Connection` says (`Upgrade` and
/// `Transfer-Encoding` are handled apart: an upgrade keeps the first, and bodies pass
/// through with their coding).
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authenticate",
        "proxy-authorization",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// A `Content-Length` value: digits only (a list of equal values is refused too).
fn content_length(value: &[u8]) -> Option<u64> {
    let v = trim(value);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether the last transfer coding named is `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"))
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie(value: &[u8], name: &str) -> Option<String> {
    value
        .split(|b| *b == b';')
        .filter_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// A status code's three digits.
fn itoa3(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

#[cfg(test)]
mod tests;
