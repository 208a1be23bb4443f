//! The HTTP data plane: HTTP/1.1 from clients (keep-alive, pipelining), each request to a
//! member over a kept-alive connection with `X-Forwarded-For`/`-Proto`/`-Host` added, bodies
//! passed through as they come, WebSocket upgrades tunnelled, a request retried on another
//! member only when no connection to the first could be made (or a kept one closed under a
//! bodyless idempotent request before any answer), an optional sticky cookie, a 503 page
//! when no member is healthy. Heads are parsed and rewritten as bytes (see [`super::h1`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::body::{Cursor, Framing, RelayError, fill, relay};
use super::closing::{apology, linger, reason};
use super::h1::{self, Request};
use super::member::{Member, until_killed, until_set};
use super::pool::Pool;
use super::upstream::{Picked, connect, open};

/// How long a member may take to start answering a request without a body.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The same for a request with a body, whose upload runs inside the wait (a slow client's
/// large upload must not end as a 504).
const UPLOAD_ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a client has to send a request's head; also ends idle keep-alive connections.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long either side may send nothing while a body is on its way.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepts clients on `listener` for `pool` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    intake: Arc<super::accept::Intake>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    super::accept::accept_loop(
        listener,
        pool,
        intake,
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
    let mut closing = pool.closing();
    let spoke = tokio::select! {
        peeked = tokio::time::timeout(CLIENT_IDLE_TIMEOUT, stream.peek(&mut first)) => matches!(peeked, Ok(Ok(1..))),
        _ = until_set(&mut closing) => false,
    };
    if !spoke {
        return;
    }
    // Boxed: the buffers are taken only once the client speaks, not by every silent
    // connection's task.
    Box::pin(speak(stream, peer, pool)).await;
}

/// One client connection's buffers.
struct Conn {
    client: TcpStream,
    /// The client's bytes not used yet (the rest of a head, a body, a pipelined request).
    buf: BytesMut,
    /// The member's bytes not used yet.
    up_buf: BytesMut,
    /// The member's version of the request head.
    req_out: Vec<u8>,
    /// The client's version of the answer head, with the first bytes of its body.
    res_out: Vec<u8>,
}

/// Serves requests on a client connection that has sent something.
async fn speak(stream: TcpStream, peer: SocketAddr, pool: Arc<Pool>) {
    let mut closing = pool.closing();
    let ip = peer.ip().to_string();
    let mut c = Conn {
        client: stream,
        buf: BytesMut::with_capacity(4096),
        up_buf: BytesMut::with_capacity(4096),
        req_out: Vec::with_capacity(1024),
        res_out: Vec::with_capacity(1024),
    };
    loop {
        let settings = pool.settings();
        let client = h1::Client {
            ip: ip.as_bytes(),
            sticky_cookie: settings.sticky_cookie.as_deref(),
        };
        // The whole head must come within the timeout (a trickle of bytes does not extend it);
        // the wait for it is also how long an idle kept-alive connection stays open.
        let head_deadline = Instant::now() + CLIENT_IDLE_TIMEOUT;
        let request = loop {
            match h1::request(&c.buf, &client, &mut c.req_out) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(refused) => {
                    let page = h1::page(
                        refused.status,
                        reason(refused.status),
                        refused.reason,
                        false,
                        true,
                    );
                    if c.client.write_all(&page).await.is_ok() {
                        linger(&mut c.client).await;
                    }
                    return;
                }
            }
            // Between requests, a pool that stops serving ends the connection.
            let more = if c.buf.is_empty() {
                tokio::select! {
                    biased;
                    more = fill(&mut c.client, &mut c.buf, left(head_deadline)) => more,
                    _ = until_set(&mut closing) => return,
                }
            } else {
                fill(&mut c.client, &mut c.buf, left(head_deadline)).await
            };
            if !matches!(more, Ok(true)) {
                return;
            }
        };
        c.buf.advance(request.head_len);
        let keep = forward(&mut c, &request, &pool, settings.sticky_cookie.as_deref()).await;
        if !keep || *closing.borrow() {
            // Pipelined requests nobody will answer: close without resetting the answers sent.
            if !c.buf.is_empty() {
                linger(&mut c.client).await;
            }
            return;
        }
    }
}

/// How one try at a request ended.
enum Attempt {
    /// Answered; the client connection stays open or not, the member's may be kept;
    /// `unread`: the client may still be sending a body nobody reads.
    Done {
        keep_client: bool,
        keep_member: bool,
        unread: bool,
    },
    /// The member closed or failed before a byte of answer.
    NoAnswer,
    /// The member's answer head was not valid.
    BadAnswer(&'static str),
    /// No answer in time.
    Timeout,
    /// The client went away or sent something invalid: close its connection.
    ClientGone,
    /// The answer head went out but its body was cut: close the client's connection.
    Cut,
    /// The member switched protocols: tunnel both connections.
    Upgraded,
}

/// Sends one request to a member and its answer back; whether the client's connection
/// stays open.
async fn forward(c: &mut Conn, request: &Request, pool: &Pool, sticky: Option<&str>) -> bool {
    let stuck = request
        .sticky
        .as_deref()
        .and_then(|id| pool.member_in_rotation(id));
    let set_cookie = sticky.filter(|_| stuck.is_none());
    let Some(first) = stuck.or_else(|| pool.pick(None)) else {
        pool.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        return refuse(c, request, 503).await;
    };
    // A bodyless idempotent request that got no byte of answer (a kept connection closed just
    // as it went out, or a member that died with it) is sent once more, to another member
    // (RFC 9110 9.2.2; nginx's proxy_next_upstream does the same for idempotent methods).
    let resendable = request.framing == Framing::Empty && request.idempotent && !request.upgrade;
    let Some(mut up) = open(pool, first).await else {
        return refuse(c, request, 502).await;
    };
    let mut resend = resendable;
    loop {
        let member = up.active.member().clone();
        let cookie = set_cookie.map(|name| (name, member.id.as_str()));
        member.stats.sent();
        let attempt = tokio::select! {
            biased;
            a = attempt(c, request, &mut up, cookie) => a,
            // The member's drain timed out: what is left of this exchange ends.
            _ = until_killed(member.killed()) => return false,
        };
        match attempt {
            Attempt::Done {
                keep_client,
                keep_member,
                unread,
            } => {
                if keep_member {
                    member.give_back(up.stream);
                }
                if unread {
                    linger(&mut c.client).await;
                }
                return keep_client;
            }
            Attempt::NoAnswer if resend => {
                member.stats.failed();
                resend = false;
                // Once more, over a new connection, to another member if there is one.
                let other = pool.pick(Some(&member)).unwrap_or(member);
                match connect(&other).await {
                    Some(fresh) => up = fresh,
                    None => {
                        other.stats.failed();
                        return refuse(c, request, 502).await;
                    }
                }
            }
            Attempt::NoAnswer | Attempt::BadAnswer(_) => {
                if let Attempt::BadAnswer(why) = attempt {
                    tracing::debug!(member = %member.id, why, "member answered badly");
                }
                member.stats.failed();
                return refuse(c, request, 502).await;
            }
            Attempt::Timeout => {
                member.stats.failed();
                return refuse(c, request, 504).await;
            }
            Attempt::ClientGone | Attempt::Cut => return false,
            Attempt::Upgraded => {
                tunnel(c, up).await;
                return false;
            }
        }
    }
}

/// One try at a request on `up`: the head (and body) out, the answer back.
async fn attempt(
    c: &mut Conn,
    request: &Request,
    up: &mut Picked,
    cookie: Option<(&str, &str)>,
) -> Attempt {
    let started = Instant::now();
    c.up_buf.clear();
    let member = up.active.member();
    let close_client = !request.keep_alive;
    if request.framing == Framing::Empty {
        if !send_all(&mut up.stream, &c.req_out).await {
            return Attempt::NoAnswer;
        }
        return answer(
            &mut up.stream,
            &mut c.up_buf,
            &mut c.client,
            &mut c.res_out,
            Exchange {
                request,
                cookie,
                close_client,
                wait: ANSWER_TIMEOUT,
                member,
                started,
            },
        )
        .await;
    }
    // The head goes out with the part of the body already read (these requests are never
    // sent twice, so the head's buffer may take it).
    let mut cursor = Cursor::new(request.framing);
    let Ok(n) = cursor.take(&c.buf) else {
        return Attempt::ClientGone;
    };
    c.req_out.extend_from_slice(&c.buf[..n]);
    c.buf.advance(n);
    if !send_all(&mut up.stream, &c.req_out).await {
        return Attempt::NoAnswer;
    }
    // Whether the whole body went up (it may have come with the head).
    let mut complete = cursor.done();
    let mut sending = !complete;
    let (mut client_read, mut client_write) = c.client.split();
    let (mut member_read, mut member_write) = up.stream.split();
    let exchange = Exchange {
        request,
        cookie,
        close_client,
        wait: UPLOAD_ANSWER_TIMEOUT,
        member,
        started,
    };
    // The rest of the body goes up while the answer is awaited: a member may answer early.
    let send = relay(
        &mut client_read,
        &mut c.buf,
        &mut member_write,
        &mut cursor,
        BODY_IDLE_TIMEOUT,
    );
    let receive = answer(
        &mut member_read,
        &mut c.up_buf,
        &mut client_write,
        &mut c.res_out,
        exchange,
    );
    tokio::pin!(send, receive);
    loop {
        tokio::select! {
            biased;
            r = &mut send, if sending => {
                sending = false;
                match r {
                    Ok(()) => complete = true,
                    // The member stopped reading: its answer may still come.
                    Err(RelayError::Sink) => {}
                    Err(_) => return Attempt::ClientGone,
                }
            }
            done = &mut receive => {
                // An answer before the whole body went up: neither connection can be reused,
                // and the rest of the body is the client's to stop sending.
                return match done {
                    Attempt::Done { .. } if !complete => Attempt::Done { keep_client: false, keep_member: false, unread: true },
                    other => other,
                };
            }
        }
    }
}

/// What an answer is for.
struct Exchange<'a> {
    request: &'a Request,
    cookie: Option<(&'a str, &'a str)>,
    close_client: bool,
    /// How long the member may take to answer (its whole head).
    wait: Duration,
    member: &'a Member,
    started: Instant,
}

/// Reads the member's answer head (passing interim ones on), writes the client's version
/// with the first bytes of the body, then relays the rest of the body.
async fn answer<R, W>(
    member: &mut R,
    buf: &mut BytesMut,
    client: &mut W,
    out: &mut Vec<u8>,
    x: Exchange<'_>,
) -> Attempt
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut heard = false;
    let deadline = x.started + x.wait;
    loop {
        let head = loop {
            if !buf.is_empty() {
                match h1::answer(buf, x.request, x.cookie, x.close_client, out) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(why) => return Attempt::BadAnswer(why),
                }
            }
            match fill(member, buf, left(deadline)).await {
                Ok(true) => heard = true,
                Err(RelayError::Idle) => return Attempt::Timeout,
                Ok(false) | Err(_) if heard => return Attempt::BadAnswer("it closed mid-head"),
                Ok(false) | Err(_) => return Attempt::NoAnswer,
            }
        };
        buf.advance(head.head_len);
        if head.interim {
            if !x.request.http10 && !send_all(client, out).await {
                return Attempt::ClientGone;
            }
            continue;
        }
        x.member.stats.answered(head.status, x.started.elapsed());
        if head.status == 101 {
            out.extend_from_slice(buf);
            buf.clear();
            return if send_all(client, out).await {
                Attempt::Upgraded
            } else {
                Attempt::ClientGone
            };
        }
        let mut cursor = Cursor::new(head.framing);
        let Ok(n) = cursor.take(buf) else {
            return Attempt::BadAnswer("its chunked body is malformed");
        };
        out.extend_from_slice(&buf[..n]);
        buf.advance(n);
        if !send_all(client, out).await {
            return Attempt::ClientGone;
        }
        if !cursor.done() {
            match relay(member, buf, client, &mut cursor, BODY_IDLE_TIMEOUT).await {
                Ok(()) => {}
                Err(RelayError::Sink) => return Attempt::ClientGone,
                Err(_) => return Attempt::Cut,
            }
        }
        return Attempt::Done {
            keep_client: !head.close_client,
            // Bytes after the answer would belong to no request: such a member is not reused.
            keep_member: head.reusable && buf.is_empty(),
            unread: false,
        };
    }
}

/// Writes all of `bytes` unless the peer takes none for the body idle timeout (a client
/// that stops reading must not hold its member for ever); whether it all went.
async fn send_all<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(BODY_IDLE_TIMEOUT, to.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Time left until `deadline`.
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Copies a switched connection (e.g. a WebSocket) both ways until either side closes or
/// the member's drain times out.
async fn tunnel(c: &mut Conn, mut up: Picked) {
    if !c.buf.is_empty() {
        if up.stream.write_all(&c.buf).await.is_err() {
            return;
        }
        c.buf.clear();
    }
    let killed = up.active.member().killed();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut c.client, &mut up.stream) => {}
        _ = until_killed(killed) => {}
    }
}

/// Answers with a page of our own; whether the client's connection stays open.
async fn refuse(c: &mut Conn, request: &Request, status: u16) -> bool {
    // A body not read would be taken for the next request: such a connection closes.
    let keep = request.keep_alive && request.framing == Framing::Empty;
    let page = h1::page(
        status,
        reason(status),
        apology(status),
        request.head_only,
        !keep,
    );
    if c.client.write_all(&page).await.is_err() {
        return false;
    }
    if !keep {
        linger(&mut c.client).await;
    }
    keep
}
