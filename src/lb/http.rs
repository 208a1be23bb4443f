//! The HTTP data plane: HTTP/1.1 from clients (keep-alive), each request to a member over a
//! kept-alive connection, `X-Forwarded-For`/`-Proto`/`-Host` added, WebSocket upgrades passed
//! through, a request retried once on another member only when no connection to the first
//! could be made (or a kept one closed under a bodyless idempotent request before any answer), an optional sticky cookie, a 503 page when no member is healthy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Empty, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use super::headers::{cookie, prepare, strip_hop_by_hop, wants_upgrade};
use super::member::{Active, Member, Upstream, UpstreamBody, until_killed};
use super::pool::Pool;

/// How long a connection to a member may take before another member is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a member may take to start answering a request without a body.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The same for a request with a body, whose upload runs inside the wait (a slow client's
/// large upload must not end as a 504).
const UPLOAD_ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a client has to send a request's headers; also ends idle keep-alive connections.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What goes back to clients.
pub type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Accepts clients on `listener` for `pool` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    max_connections: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    super::accept_loop(
        listener,
        pool,
        max_connections,
        stop,
        |stream, peer, pool| async move {
            let _ = stream.set_nodelay(true);
            connection(stream, peer, pool).await;
        },
    )
    .await;
}

/// Serves one client connection.
async fn connection(stream: TcpStream, peer: SocketAddr, pool: Arc<Pool>) {
    // A client that connects and says nothing costs no buffers until it does (or is dropped
    // at the idle timeout). A peek waits for a byte: `readable()` alone may report a new
    // socket ready before anything arrived.
    let mut first = [0u8; 1];
    if !matches!(
        tokio::time::timeout(CLIENT_IDLE_TIMEOUT, stream.peek(&mut first)).await,
        Ok(Ok(1..))
    ) {
        return;
    }
    // Boxed: the HTTP machinery's memory is taken only once the client speaks, not by every
    // silent connection's task.
    Box::pin(speak(stream, peer, pool)).await;
}

/// Serves HTTP/1.1 on a client connection that has sent something.
async fn speak(stream: TcpStream, peer: SocketAddr, pool: Arc<Pool>) {
    let closing = pool.closing();
    // The client's address as a header value, made once per connection.
    let client = HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let service = hyper::service::service_fn(move |req| {
        let pool = pool.clone();
        let client = client.clone();
        async move { Ok::<_, Infallible>(forward(req, &client, &pool).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_IDLE_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        _ = until_killed(closing) => {
            // The pool stopped: the request in progress finishes, then the connection closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// Sends one request to a member and its answer back.
async fn forward(
    mut req: Request<Incoming>,
    client: &HeaderValue,
    pool: &Pool,
) -> Response<ProxyBody> {
    let settings = pool.settings();
    let sticky_member = settings
        .sticky_cookie
        .as_deref()
        .and_then(|name| cookie(req.headers(), name))
        .and_then(|id| pool.member_in_rotation(&id));
    let stuck = sticky_member.is_some();
    let Some(first) = sticky_member.or_else(|| pool.pick(None)) else {
        pool.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        return unavailable();
    };
    let (mut upstream, reused, active) = match open(&first).await {
        Some((c, reused)) => (c, reused, first.begin()),
        None => {
            // Nothing was sent: another member may take the request.
            first.stats.failed();
            let Some(second) = pool.pick(Some(&first)) else {
                return bad_gateway();
            };
            match open(&second).await {
                Some((c, reused)) => (c, reused, second.begin()),
                None => {
                    second.stats.failed();
                    return bad_gateway();
                }
            }
        }
    };
    let mut member = active.member().clone();
    let mut active = active;
    let upgrade = wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    prepare(&mut req, client, upgrade);
    // A bodyless idempotent request over a kept connection can be sent again if the member
    // closed that connection just as the request went out (RFC 9110 9.2.2): keep its head.
    let resendable = (reused && !upgrade && idempotent(req.method()) && req.body().is_end_stream())
        .then(|| head_of(&req));
    let answer_timeout = if req.body().is_end_stream() {
        ANSWER_TIMEOUT
    } else {
        UPLOAD_ANSWER_TIMEOUT
    };
    let req = if resendable.is_some() {
        req.map(|_| Either::Right(Empty::new()))
    } else {
        req.map(Either::Left)
    };
    let mut started = Instant::now();
    member.stats.sent();
    let mut answer = match tokio::time::timeout(answer_timeout, upstream.try_send_request(req))
        .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(mut e)) => {
            let again = match (e.take_message(), resendable) {
                // The request never left (a kept connection had just closed).
                (Some(req), _) => req,
                // It left, but the kept connection closed before a byte of answer came.
                (None, Some(head)) if closed_before_answer(e.error()) => head,
                _ => {
                    tracing::debug!(member = %member.id, error = %e.error(), "member failed the request");
                    member.stats.failed();
                    return bad_gateway();
                }
            };
            member.stats.failed();
            // It goes once more, over a new connection, to another member if there is one.
            let other = pool.pick(Some(&member)).unwrap_or_else(|| member.clone());
            let Some(fresh) = connect(&other).await else {
                other.stats.failed();
                return bad_gateway();
            };
            upstream = fresh;
            active = other.begin();
            member = other;
            started = Instant::now();
            member.stats.sent();
            match tokio::time::timeout(ANSWER_TIMEOUT, upstream.send_request(again)).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    tracing::debug!(member = %member.id, error = %e, "member failed the request");
                    member.stats.failed();
                    return bad_gateway();
                }
                Err(_) => {
                    member.stats.failed();
                    return gateway_timeout();
                }
            }
        }
        Err(_) => {
            member.stats.failed();
            return gateway_timeout();
        }
    };
    member
        .stats
        .answered(answer.status().as_u16(), started.elapsed());
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let member_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(tunnel(client_upgrade, member_upgrade, active));
        let (parts, _) = answer.into_parts();
        return Response::from_parts(parts, empty());
    }
    strip_hop_by_hop(answer.headers_mut(), false);
    let (mut parts, body) = answer.into_parts();
    if let Some(name) = settings.sticky_cookie.as_deref()
        && !stuck
        && let Ok(v) = HeaderValue::from_str(&format!("{name}={}; Path=/; HttpOnly", member.id))
    {
        parts.headers.append(header::SET_COOKIE, v);
    }
    let body = Tracked {
        inner: body,
        finished: false,
        upstream: Some(upstream),
        _active: active,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// A connection to `member` ready for a request, and whether it is a kept one.
async fn open(member: &Arc<Member>) -> Option<(Upstream, bool)> {
    match member.take_idle() {
        Some(c) => Some((c, true)),
        None => connect(member).await.map(|c| (c, false)),
    }
}

/// Whether a member's connection ended (closed or reset) before any of its answer came.
fn closed_before_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            );
        }
        source = s.source();
    }
    false
}

/// Whether a method may be sent twice with the same effect (RFC 9110 9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A copy of a bodyless request, to send again.
fn head_of<B>(req: &Request<B>) -> Request<UpstreamBody> {
    let mut copy = Request::new(Either::Right(Empty::new()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// A new connection to `member`.
async fn connect(member: &Arc<Member>) -> Option<Upstream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(member.addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    let killed = member.killed();
    tokio::spawn(async move {
        tokio::select! {
            _ = conn.with_upgrades() => {}
            _ = until_killed(killed) => {}
        }
    });
    sender.ready().await.ok()?;
    Some(sender)
}

/// Copies an upgraded connection (e.g. a WebSocket) both ways until either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    member: hyper::upgrade::OnUpgrade,
    active: Active,
) {
    let (Ok(client), Ok(member)) = (client.await, member.await) else {
        return;
    };
    let killed = active.member().killed();
    let (mut c, mut m) = (TokioIo::new(client), TokioIo::new(member));
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut c, &mut m) => {}
        _ = until_killed(killed) => {}
    }
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short page of our own.
fn page(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let body = format!(
        "<!doctype html><html lang=\"en\"><title>{status}</title><h1>{}</h1><p>{text}</p></html>\n",
        status.canonical_reason().unwrap_or("Error")
    );
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn unavailable() -> Response<ProxyBody> {
    let mut r = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "No server of this site is available right now. Please try again in a moment.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn bad_gateway() -> Response<ProxyBody> {
    page(
        StatusCode::BAD_GATEWAY,
        "The server handling this request did not answer properly. Please try again.",
    )
}

fn gateway_timeout() -> Response<ProxyBody> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        "The server handling this request took too long to answer. Please try again.",
    )
}

/// A member's answer on its way to the client: counted as open work until it ends, its
/// connection kept for reuse once read in full, cut when the member's drain times out.
/// When the member's drain times out, its connection is closed and the answer ends with an
/// error, so the client sees it cut rather than complete.
struct Tracked {
    inner: Incoming,
    finished: bool,
    upstream: Option<Upstream>,
    _active: Active,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() {
            this.finished = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if (self.finished || self.inner.is_end_stream())
            && let Some(c) = self.upstream.take()
        {
            self._active.member().give_back(c);
        }
    }
}
