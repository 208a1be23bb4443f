//! The load balancer's data plane against local backends on 127.0.0.1: rotation, health,
//! drains without failures, least connections, sticky cookies, retries, TCP with half-close
//! and PROXY v2. (Pools over real guests come with the pools API.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use carve::lb::Balancer;
use carve::lb::member::MemberState;
use carve::lb::spec::{Algorithm, Check, HealthSpec, MemberSpec, PoolSpec, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A little HTTP backend: `/` answers its name, `/health` 200 or 503, `/slow?ms=N` waits.
struct Backend {
    name: String,
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    /// Stops the backend as a server going down does: no new connections, idle ones closed,
    /// requests in progress answered.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Backend {
    async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let served = Arc::new(AtomicUsize::new(0));
        let (n, h, s) = (name.to_string(), healthy.clone(), served.clone());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut accept_stop = stop_rx.clone();
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                    _ = accept_stop.changed() => return,
                };
                let (n, h, s) = (n.clone(), h.clone(), s.clone());
                let mut conn_stop = stop_rx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (n, h, s) = (n.clone(), h.clone(), s.clone());
                            async move {
                                let path = req.uri().path().to_string();
                                let (status, body) = if path == "/health" {
                                    if h.load(Ordering::SeqCst) {
                                        (200, "ok".to_string())
                                    } else {
                                        (503, "sick".to_string())
                                    }
                                } else {
                                    s.fetch_add(1, Ordering::SeqCst);
                                    if path == "/slow" {
                                        let ms: u64 = req
                                            .uri()
                                            .query()
                                            .and_then(|q| q.strip_prefix("ms="))
                                            .and_then(|v| v.parse().ok())
                                            .unwrap_or(1000);
                                        tokio::time::sleep(Duration::from_millis(ms)).await;
                                    }
                                    let xff = req
                                        .headers()
                                        .get("x-forwarded-for")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string();
                                    (200, format!("{n} {xff}"))
                                };
                                let mut r = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(body),
                                ));
                                *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        },
                    );
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = conn_stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        });
        Self {
            name: name.into(),
            addr,
            healthy,
            served,
            stop,
        }
    }

    fn member(&self) -> MemberSpec {
        MemberSpec {
            id: self.name.clone(),
            addr: self.addr,
            weight: 1,
        }
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn pool(
    protocol: Protocol,
    listen: SocketAddr,
    algorithm: Algorithm,
    members: Vec<MemberSpec>,
) -> PoolSpec {
    PoolSpec {
        id: "pool".into(),
        protocol,
        listen,
        algorithm,
        health: HealthSpec {
            check: match protocol {
                Protocol::Http => Check::Http {
                    path: "/health".into(),
                    expect_status: 200,
                },
                Protocol::Tcp => Check::Tcp,
            },
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        },
        drain_timeout: Duration::from_secs(5),
        sticky_cookie: None,
        proxy_v2: false,
        max_connections: 1000,
        members,
    }
}

/// Waits until the pool's members are in the given states.
async fn until_states(lb: &Balancer, want: &[(&str, MemberState)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = lb.pool("pool").expect("running pool");
        let members = p.members();
        let ok = want
            .iter()
            .all(|(id, st)| members.iter().any(|m| m.id == *id && m.state() == *st));
        if ok {
            return;
        }
        let seen: Vec<_> = members.iter().map(|m| (m.id.clone(), m.state())).collect();
        assert!(
            Instant::now() < deadline,
            "members are {seen:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pools_rotate_follow_health_and_drain_without_failures() {
    let backends = [
        Backend::start("b1").await,
        Backend::start("b2").await,
        Backend::start("b3").await,
    ];
    let listen = free_addr();
    let (lb, _transitions) = Balancer::new();
    let spec = pool(
        Protocol::Http,
        listen,
        Algorithm::RoundRobin,
        backends.iter().map(Backend::member).collect(),
    );
    assert!(lb.apply(std::slice::from_ref(&spec)).await.is_empty());
    until_states(
        &lb,
        &[
            ("b1", MemberState::Healthy),
            ("b2", MemberState::Healthy),
            ("b3", MemberState::Healthy),
        ],
    )
    .await;
    let url = format!("http://{listen}/");
    let client = reqwest::Client::new();
    for _ in 0..30 {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.ends_with(" 127.0.0.1"),
            "X-Forwarded-For names the client: {body}"
        );
    }
    for b in &backends {
        assert_eq!(
            b.served.load(Ordering::SeqCst),
            10,
            "{} served its turn",
            b.name
        );
    }
    // Every X-Forwarded-For line the client sent is kept, in order, before the client.
    let body = client
        .get(&url)
        .header("x-forwarded-for", "192.0.2.1")
        .header("x-forwarded-for", "192.0.2.2")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.ends_with(" 192.0.2.1, 192.0.2.2, 127.0.0.1"),
        "X-Forwarded-For: {body}"
    );

    // A failing check takes b2 out within interval x fall; it comes back after rise passes.
    backends[1].healthy.store(false, Ordering::SeqCst);
    until_states(&lb, &[("b2", MemberState::Unhealthy)]).await;
    let before = backends[1].served.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(get(&client, &url).await.0, 200);
    }
    assert_eq!(
        backends[1].served.load(Ordering::SeqCst),
        before,
        "no request reached b2 while unhealthy"
    );
    backends[1].healthy.store(true, Ordering::SeqCst);
    until_states(&lb, &[("b2", MemberState::Healthy)]).await;

    // b3 goes down (as a stopped server does) under a request loop: not one request fails.
    let stop_at = Instant::now() + Duration::from_millis(300);
    let mut failures = 0;
    let mut stopped = false;
    let loop_end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < loop_end {
        if !stopped && Instant::now() > stop_at {
            let _ = backends[2].stop.send(true);
            stopped = true;
        }
        let (status, _) = get(&client, &url).await;
        if status != 200 {
            failures += 1;
        }
    }
    assert_eq!(failures, 0, "requests failed while a member went away");
    until_states(&lb, &[("b3", MemberState::Unhealthy)]).await;

    // b1 leaves the pool while a slow request is on it: that request finishes, new ones go
    // elsewhere, and b1 is forgotten once drained.
    let slow_client = reqwest::Client::new();
    let slow_url = format!("http://{listen}/slow?ms=1500");
    let mut slow = None;
    for _ in 0..3 {
        let c = slow_client.clone();
        let u = slow_url.clone();
        let h = tokio::spawn(async move { get(&c, &u).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = lb.pool("pool").unwrap();
        if p.members().iter().any(|m| m.id == "b1" && m.active() > 0) {
            slow = Some(h);
            break;
        }
        let _ = h.await;
    }
    let slow = slow.expect("a slow request landed on b1");
    let mut leaving = spec.clone();
    leaving.members.retain(|m| m.id != "b1");
    assert!(lb.apply(std::slice::from_ref(&leaving)).await.is_empty());
    until_states(&lb, &[("b1", MemberState::Draining)]).await;
    let b1_before = backends[0].served.load(Ordering::SeqCst);
    for _ in 0..10 {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200);
        assert!(body.starts_with("b2"), "{body}");
    }
    assert_eq!(backends[0].served.load(Ordering::SeqCst), b1_before);
    let (status, body) = slow.await.unwrap();
    assert_eq!(
        (status, body.split(' ').next().unwrap()),
        (200, "b1"),
        "the open request finished"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while lb
        .pool("pool")
        .unwrap()
        .members()
        .iter()
        .any(|m| m.id == "b1")
    {
        assert!(Instant::now() < deadline, "b1 was never forgotten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No member healthy: a 503 page that says so.
    backends[1].healthy.store(false, Ordering::SeqCst);
    until_states(&lb, &[("b2", MemberState::Unhealthy)]).await;
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().await.unwrap().contains("try again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_busy_members_and_sticky_cookies_stick() {
    let backends = [Backend::start("b1").await, Backend::start("b2").await];
    let listen = free_addr();
    let (lb, _t) = Balancer::new();
    let mut spec = pool(
        Protocol::Http,
        listen,
        Algorithm::LeastConnections,
        backends.iter().map(Backend::member).collect(),
    );
    lb.apply(std::slice::from_ref(&spec)).await;
    until_states(
        &lb,
        &[("b1", MemberState::Healthy), ("b2", MemberState::Healthy)],
    )
    .await;
    let client = reqwest::Client::new();
    // The slow request holds its member for far longer than the ten quick ones take, even on
    // a loaded machine.
    let slow = {
        let c = client.clone();
        let u = format!("http://{listen}/slow?ms=8000");
        tokio::spawn(async move { get(&c, &u).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let busy = loop {
        let busy = lb
            .pool("pool")
            .unwrap()
            .members()
            .iter()
            .find(|m| m.active() > 0)
            .map(|m| m.id.clone());
        if let Some(busy) = busy {
            break busy;
        }
        assert!(Instant::now() < deadline, "no member took the slow request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..10 {
        let (_, body) = get(&client, &format!("http://{listen}/")).await;
        assert!(
            !body.starts_with(&busy),
            "a new request went to the busy member {busy}: {body}"
        );
    }
    assert_eq!(slow.await.unwrap().0, 200);

    // Sticky: the cookie set on the first answer keeps the client on one member.
    spec.algorithm = Algorithm::RoundRobin;
    spec.sticky_cookie = Some("carve_member".into());
    lb.apply(std::slice::from_ref(&spec)).await;
    let sticky = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let first = get(&sticky, &format!("http://{listen}/")).await.1;
    for _ in 0..10 {
        let again = get(&sticky, &format!("http://{listen}/")).await.1;
        assert_eq!(again.split(' ').next(), first.split(' ').next());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_only_when_healthy_and_a_taken_port_is_reported() {
    let b = Backend::start("late").await;
    b.healthy.store(false, Ordering::SeqCst);
    let listen = free_addr();
    let (lb, mut transitions) = Balancer::new();
    let spec = pool(
        Protocol::Http,
        listen,
        Algorithm::RoundRobin,
        vec![b.member()],
    );
    lb.apply(std::slice::from_ref(&spec)).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        b.served.load(Ordering::SeqCst),
        0,
        "no request reached a joining member"
    );
    b.healthy.store(true, Ordering::SeqCst);
    until_states(&lb, &[("late", MemberState::Healthy)]).await;
    assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 200);
    let t = transitions.recv().await.unwrap();
    assert_eq!(
        (t.member.as_str(), t.from, t.to),
        ("late", MemberState::Joining, MemberState::Healthy)
    );

    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut other = spec.clone();
    other.id = "other".into();
    other.listen = taken.local_addr().unwrap();
    let failed = lb.apply(&[spec, other]).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].pool, "other");
    assert!(
        failed[0]
            .reason
            .contains(&taken.local_addr().unwrap().to_string()),
        "{failed:?}"
    );
}

/// A TCP backend that reads until the client half-closes, then answers what it read and
/// "bye", and closes; with `proxy` it first reads a PROXY v2 header and answers its source.
async fn echo_backend(proxy: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut prefix = String::new();
                if proxy {
                    let mut h = [0u8; 28];
                    if s.read_exact(&mut h).await.is_err() || &h[..12] != b"\r\n\r\n\0\r\nQUIT\n" {
                        return;
                    }
                    prefix = format!(
                        "from {}.{}.{}.{}:{} ",
                        h[16],
                        h[17],
                        h[18],
                        h[19],
                        u16::from_be_bytes([h[24], h[25]])
                    );
                }
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_err() {
                    return;
                }
                let _ = s.write_all(prefix.as_bytes()).await;
                let _ = s.write_all(&got).await;
                let _ = s.write_all(b"bye").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pools_carry_both_directions_with_half_close_and_proxy_v2() {
    for proxy in [false, true] {
        let backend = echo_backend(proxy).await;
        let listen = free_addr();
        let (lb, _t) = Balancer::new();
        let mut spec = pool(
            Protocol::Tcp,
            listen,
            Algorithm::RoundRobin,
            vec![MemberSpec {
                id: "echo".into(),
                addr: backend,
                weight: 1,
            }],
        );
        spec.proxy_v2 = proxy;
        lb.apply(std::slice::from_ref(&spec)).await;
        until_states(&lb, &[("echo", MemberState::Healthy)]).await;
        let mut c = TcpStream::connect(listen).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer))
            .await
            .expect("the member's close reaches the client")
            .unwrap();
        let local = c.local_addr().unwrap();
        let want = if proxy {
            format!("from 127.0.0.1:{} hellobye", local.port())
        } else {
            "hellobye".into()
        };
        assert_eq!(answer, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_pools_bound_are_closed_at_once() {
    let b = Backend::start("only").await;
    let listen = free_addr();
    let (lb, _t) = Balancer::new();
    let mut spec = pool(
        Protocol::Http,
        listen,
        Algorithm::RoundRobin,
        vec![b.member()],
    );
    spec.max_connections = 2;
    lb.apply(std::slice::from_ref(&spec)).await;
    until_states(&lb, &[("only", MemberState::Healthy)]).await;
    let _held = [
        TcpStream::connect(listen).await.unwrap(),
        TcpStream::connect(listen).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(listen).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the third connection was served: {:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(_held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::new();
    assert_eq!(
        get(&client, &format!("http://{listen}/")).await.0,
        200,
        "a freed place is used again"
    );
}
