//! Heads rewritten for members and clients, and the request shapes refused.

use super::*;

const CLIENT: Client = Client {
    ip: b"127.0.0.1",
    sticky_cookie: Some("lb"),
};

fn req(head: &str) -> (Result<Option<Request>, Refusal>, String) {
    let mut out = Vec::new();
    let r = request(head.as_bytes(), &CLIENT, &mut out);
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn a_request_reaches_the_member_without_hop_by_hop_headers_and_with_the_client_named() {
    let (r, out) = req(
        "GET http://example.test/a?b=1 HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Secret\r\nX-Forwarded-For: 192.0.2.1\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 192.0.2.2\r\nX-Forwarded-Proto: https\r\nCookie: a=b; lb=m7\r\nUpgrade: h2c\r\n\r\nnext",
    );
    let r = r.unwrap().unwrap();
    assert_eq!(r.framing, Framing::Empty);
    assert!(r.keep_alive && r.idempotent && !r.upgrade);
    assert_eq!(r.sticky.as_deref(), Some("m7"));
    assert_eq!(
        out,
        "GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nCookie: a=b; lb=m7\r\nX-Forwarded-For: 192.0.2.1, 192.0.2.2, 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.test\r\n\r\n"
    );
}

#[test]
fn bodies_are_framed_and_smuggling_shapes_refused() {
    let (r, _) = req("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(r.unwrap().unwrap().framing, Framing::Length(5));
    let (r, out) = req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(r.unwrap().unwrap().framing, Framing::Chunked);
    assert!(out.contains("Transfer-Encoding: gzip, chunked\r\n"));
    for (head, status) in [
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        ("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            501,
        ),
        ("CONNECT a:443 HTTP/1.1\r\n\r\n", 405),
        ("GET nothing HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\n\r\n", 505),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET http://u@a/ HTTP/1.1\r\n\r\n", 400),
        ("GET /\x01 HTTP/1.1\r\n\r\n", 400),
    ] {
        assert_eq!(req(head).0.unwrap_err().status, status, "{head:?}");
    }
    // A Connection header cannot take the framing away from the member.
    let (r, out) = req(
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: content-length, transfer-encoding, host\r\nHost: a\r\n\r\n",
    );
    assert_eq!(r.unwrap().unwrap().framing, Framing::Length(3));
    assert!(
        out.contains("Content-Length: 3\r\n") && out.contains("Host: a\r\n"),
        "{out}"
    );
    let (r, _) = req("GET / HTTP/1.1\r\nHost: a\r\n");
    assert_eq!(r.unwrap(), None, "an incomplete head waits for more");
    let huge = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(req(&huge).0.unwrap_err().status, 431);
}

#[test]
fn upgrades_keep_their_headers_and_http10_closes() {
    let (r, out) =
        req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(r.unwrap().unwrap().upgrade);
    assert!(out.contains("Upgrade: websocket\r\n") && out.ends_with("Connection: upgrade\r\n\r\n"));
    let (r, out) = req("GET / HTTP/1.0\r\n\r\n");
    let r = r.unwrap().unwrap();
    assert!(r.http10 && !r.keep_alive);
    assert!(out.starts_with("GET / HTTP/1.0\r\n") && out.contains("Connection: close\r\n"));
}

#[test]
fn answers_are_framed_and_rewritten() {
    let (r, _) = req("GET / HTTP/1.1\r\n\r\n");
    let r = r.unwrap().unwrap();
    let mut out = Vec::new();
    let a = answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nabc",
        &r,
        Some(("lb", "m1")),
        false,
        &mut out,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (a.framing, a.reusable, a.close_client),
        (Framing::Length(3), true, false)
    );
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: lb=m1; Path=/; HttpOnly\r\n\r\n"
    );
    let a = answer(b"HTTP/1.1 200 OK\r\n\r\n", &r, None, false, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.framing, a.reusable, a.close_client),
        (Framing::UntilClose, false, true)
    );
    assert!(out.ends_with(b"Connection: close\r\n\r\n"));
    let a = answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        &r,
        None,
        false,
        &mut out,
    )
    .unwrap()
    .unwrap();
    assert_eq!(a.framing, Framing::Chunked);
    assert!(!String::from_utf8_lossy(&out).contains("Content-Length"));
    let a = answer(b"HTTP/1.1 100 Continue\r\n\r\n", &r, None, true, &mut out)
        .unwrap()
        .unwrap();
    assert!(a.interim && !a.close_client);
    assert!(answer(b"HTTP/1.1 101 Switching\r\n\r\n", &r, None, false, &mut out).is_err());
    assert!(answer(b"NOPE\r\n\r\n", &r, None, false, &mut out).is_err());
}
