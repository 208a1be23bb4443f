//! HTTP/1.1 through the data plane, byte by byte from a raw client: pipelined requests,
//! chunked uploads and answers, `HEAD`, `Expect: 100-continue`, an answer before the upload
//! ended, a WebSocket-style upgrade, HTTP/1.0, and the requests refused before any member
//! sees them (request smuggling shapes, heads too large, `CONNECT`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use carve::lb::Balancer;
use carve::lb::member::MemberState;
use carve::lb::spec::{Algorithm, Check, HealthSpec, MemberSpec, PoolSpec, Protocol};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// A member speaking real HTTP/1.1 (hyper): `/echo` answers the request body, `/chunked`
/// answers in three chunks, `/ws` switches to an echo protocol, `/reject` answers 413 at
/// once without reading the body, anything else answers the path and the forwarded headers.
async fn member() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|mut req: hyper::Request<Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let full = |s: String| Full::new(Bytes::from(s)).boxed();
                        let r: hyper::Response<Body> = match path.as_str() {
                            "/echo" => {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                hyper::Response::new(Full::new(body).boxed())
                            }
                            "/chunked" => {
                                let frames = ["one ", "two ", "three"].map(|s| {
                                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(s)))
                                });
                                hyper::Response::new(
                                    StreamBody::new(futures_util::stream::iter(frames)).boxed(),
                                )
                            }
                            "/reject" => {
                                let mut r = hyper::Response::new(full("too large".into()));
                                *r.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
                                r
                            }
                            "/ws" => {
                                let on = hyper::upgrade::on(&mut req);
                                tokio::spawn(async move {
                                    let io = on.await.unwrap();
                                    let mut io = hyper_util::rt::TokioIo::new(io);
                                    let mut b = [0u8; 64];
                                    while let Ok(n @ 1..) = io.read(&mut b).await {
                                        if io.write_all(&b[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                });
                                let mut r = hyper::Response::new(full(String::new()));
                                *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                                r.headers_mut().insert("upgrade", "echo".parse().unwrap());
                                r.headers_mut()
                                    .insert("connection", "upgrade".parse().unwrap());
                                r
                            }
                            _ => {
                                let h = |n: &str| {
                                    req.headers()
                                        .get(n)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("-")
                                        .to_string()
                                };
                                hyper::Response::new(full(format!(
                                    "{} xff={} proto={} host={} secret={}",
                                    req.uri(),
                                    h("x-forwarded-for"),
                                    h("x-forwarded-proto"),
                                    h("x-forwarded-host"),
                                    h("x-secret")
                                )))
                            }
                        };
                        Ok::<_, std::convert::Infallible>(r)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// One answer as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one answer from `s` (bytes already read in `buf`; what follows stays there).
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Answer {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        more(s, buf).await;
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    buf.drain(..head_end);
    let status: u16 = head[9..12].parse().unwrap();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_only || status == 101 || status < 200 {
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                more(s, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                more(s, buf).await;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(cl) = lower
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let n: usize = cl.trim().parse().unwrap();
        while buf.len() < n {
            more(s, buf).await;
        }
        body = buf.drain(..n).collect();
    } else {
        s.read_to_end(buf).await.unwrap();
        body = std::mem::take(buf);
    }
    Answer { status, head, body }
}

async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut b = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(
        n > 0,
        "closed early; have {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&b[..n]);
}

/// Whether the proxy closed `s` (nothing more comes).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_passes_bodies_upgrades_and_pipelines_through_and_refuses_bad_requests() {
    let backend = member().await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (lb, _t) = Balancer::with_threads(2);
    let spec = PoolSpec {
        id: "pool".into(),
        protocol: Protocol::Http,
        listen,
        algorithm: Algorithm::RoundRobin,
        health: HealthSpec {
            check: Check::Tcp,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 2,
        },
        drain_timeout: Duration::from_secs(5),
        sticky_cookie: None,
        proxy_v2: false,
        max_connections: 100,
        members: vec![MemberSpec {
            id: "m1".into(),
            addr: backend,
            weight: 1,
        }],
    };
    assert!(lb.apply(std::slice::from_ref(&spec)).await.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lb
        .pool("pool")
        .unwrap()
        .members()
        .iter()
        .all(|m| m.state() == MemberState::Healthy)
    {
        assert!(Instant::now() < deadline, "member never healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut buf = Vec::new();
    // Two pipelined requests in one write, absolute-form target, a header named in
    // Connection, a forged X-Forwarded-Proto: two answers in order.
    s.write_all(b"GET http://site.test/a?x=1 HTTP/1.1\r\nHost: site.test\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Forwarded-Proto: https\r\n\r\nGET /b HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
    let a = read_answer(&mut s, &mut buf, false).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&a.body),
        "/a?x=1 xff=127.0.0.1 proto=http host=site.test secret=-"
    );
    let b = read_answer(&mut s, &mut buf, false).await;
    assert!(String::from_utf8_lossy(&b.body).starts_with("/b "), "{b:?}");

    // A chunked upload reaches the member whole; a chunked answer comes back chunked.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n").await.unwrap();
    let a = read_answer(&mut s, &mut buf, false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello world"[..]));
    // A Connection header naming Content-Length cannot take the body's framing away.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: content-length\r\n\r\nabcd").await.unwrap();
    let a = read_answer(&mut s, &mut buf, false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"abcd"[..]));
    s.write_all(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s, &mut buf, false).await;
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{a:?}"
    );
    assert_eq!(a.body, b"one two three");

    // HEAD: the head says the length, no body follows, the connection goes on.
    s.write_all(b"HEAD /echo HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s, &mut buf, true).await;
    assert_eq!(a.status, 200);
    let c = read_answer(&mut s, &mut buf, false).await;
    assert!(String::from_utf8_lossy(&c.body).starts_with("/c "), "{c:?}");

    // Expect: 100-continue: the interim answer comes, then the body goes up.
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_answer(&mut s, &mut buf, false).await;
    assert_eq!(interim.status, 100);
    s.write_all(b"ping").await.unwrap();
    let a = read_answer(&mut s, &mut buf, false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"ping"[..]));

    // A member that answers before the upload ended: the answer comes, the connection closes
    // (what is left of the body would be read as a request).
    s.write_all(b"POST /reject HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nxxxx")
        .await
        .unwrap();
    let a = read_answer(&mut s, &mut buf, false).await;
    assert_eq!(a.status, 413);
    assert!(
        closed(&mut s).await,
        "the connection closes after an early answer"
    );

    // An upgrade: 101 comes back, then bytes go both ways.
    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s, &mut buf, false).await;
    assert_eq!(a.status, 101, "{a:?}");
    assert!(
        a.head.to_ascii_lowercase().contains("upgrade: echo"),
        "{a:?}"
    );
    s.write_all(b"through the tunnel").await.unwrap();
    while buf.len() < 18 {
        more(&mut s, &mut buf).await;
    }
    assert_eq!(buf, b"through the tunnel");

    // HTTP/1.0: answered, then closed.
    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let a = read_answer(&mut s, &mut buf, false).await;
    assert!(
        String::from_utf8_lossy(&a.body).starts_with("/old "),
        "{a:?}"
    );
    assert!(closed(&mut s).await);

    // Refused before any member sees them, each with a page that says why, then closed.
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    for (request, status, says) in [
        (
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both Content-Length and Transfer-Encoding",
        ),
        (
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            400,
            "differing Content-Length",
        ),
        (
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            501,
            "does not end with chunked",
        ),
        (
            "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            405,
            "reverse proxy",
        ),
        (
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            400,
            "not valid HTTP/1.1",
        ),
        (huge.as_str(), 431, "too large"),
    ] {
        let mut s = TcpStream::connect(listen).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(request.as_bytes()).await.unwrap();
        let a = read_answer(&mut s, &mut buf, false).await;
        assert_eq!(a.status, status, "{request:.60}");
        assert!(String::from_utf8_lossy(&a.body).contains(says), "{a:?}");
        assert!(a.head.contains("Connection: close"), "{a:?}");
        assert!(closed(&mut s).await);
    }
    // A malformed chunked upload ends only that connection.
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await
        .unwrap();
    assert!(closed(&mut s).await);
    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /still HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s, &mut buf, false).await.status, 200);
}

/// A member that dies under every request: it accepts, reads the head, and closes without a
/// byte of answer (as a guest powered off mid-request).
async fn dying_member() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                let _ = stream.read(&mut b).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_member_dies_under_is_retried_elsewhere_only_when_idempotent() {
    let good = member().await;
    let dying = dying_member().await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (lb, _t) = Balancer::with_threads(2);
    let spec = PoolSpec {
        id: "pool".into(),
        protocol: Protocol::Http,
        listen,
        algorithm: Algorithm::RoundRobin,
        health: HealthSpec {
            check: Check::Tcp,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 2,
        },
        drain_timeout: Duration::from_secs(5),
        sticky_cookie: None,
        proxy_v2: false,
        max_connections: 100,
        members: vec![
            MemberSpec {
                id: "good".into(),
                addr: good,
                weight: 1,
            },
            MemberSpec {
                id: "dying".into(),
                addr: dying,
                weight: 1,
            },
        ],
    };
    assert!(lb.apply(std::slice::from_ref(&spec)).await.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lb
        .pool("pool")
        .unwrap()
        .members()
        .iter()
        .all(|m| m.state() == MemberState::Healthy)
    {
        assert!(Instant::now() < deadline, "members never healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every GET is answered: one the dying member took is sent again to the other.
    for i in 0..6 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(format!("GET /g{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let a = read_answer(&mut s, &mut buf, false).await;
        assert_eq!(a.status, 200, "GET {i}: {a:?}");
    }
    // A POST that reached the dying member is not sent twice: the client is told.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\npost{i}")
                .as_bytes(),
        )
        .await
        .unwrap();
        statuses.push(read_answer(&mut s, &mut buf, false).await.status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&502),
        "{statuses:?}"
    );
}
