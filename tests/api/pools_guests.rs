//! Pools over three real guests (tiny image, QEMU): members join only when healthy, requests
//! rotate, least_connections avoids a busy guest, a tcp pool echoes with half-close, and a
//! detached, stopped or deleted guest leaves by draining while requests go on without failure.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::pools::{until_answer, until_members};
use crate::tenancy::tenant_with_customer;

/// User-data for pool members: `/` answers "hello from <hostname>", `/cgi-bin/slow` answers
/// after 6 s, and port 7 echoes (busybox httpd and nc, started by rc.local at every boot).
const POOL_USER_DATA: &str = "#!/bin/sh
mkdir -p /srv/www/cgi-bin
echo \"hello from $(hostname)\" > /srv/www/index.html
printf '#!/bin/sh\\nsleep 6\\necho \"Content-Type: text/plain\"\\necho\\necho \"slow from $(hostname)\"\\n' > /srv/www/cgi-bin/slow
chmod +x /srv/www/cgi-bin/slow
printf '#!/bin/sh\\nhttpd -p 80 -h /srv/www\\nnc -ll -p 7 -e cat &\\n' > /etc/rc.local
chmod +x /etc/rc.local
";

/// One metric's value for a member of a pool (0 when absent).
fn member_metric(metrics: &str, name: &str, pool: &str, vm: &str) -> u64 {
    let prefix = format!("{name}{{pool=\"{pool}\",member=\"{vm}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// GETs `url` in a loop until `stop` is set; returns every answer that was not a 200.
fn request_loop(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (mut n, mut bad) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            n += 1;
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => bad.push(r.status().to_string()),
                Err(e) => bad.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (n, bad)
    })
}

#[tokio::test]
async fn pools_over_real_guests_join_when_healthy_and_drain_on_stop_detach_and_delete() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    let (_tenant, alice) = tenant_with_customer(&app, "shop").await;
    let a = app
        .call_as(
            &alice,
            "POST",
            "/api/v1/pools",
            Some(
                json!({"name": "web", "protocol": "http", "drain_timeout_s": 10,
                         "health_check": {"interval_s": 1, "timeout_s": 1, "rise": 1, "fall": 2}}),
            ),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let pool = a.body["id"].as_str().unwrap().to_string();
    let listen = a.body["listen"].as_str().unwrap().to_string();
    let url = format!("http://{listen}/");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    until_answer(&url, 503, "<!doctype html>").await;

    // Three guests created straight into the pool, booting at once. Until one is healthy the
    // pool answers 503; no request reaches a guest before its check passed (it would fail).
    let mut vms = Vec::new();
    let mut ops = Vec::new();
    for name in ["web-1", "web-2", "web-3"] {
        let a = app
            .call_as(
                &alice,
                "POST",
                "/api/v1/vms",
                Some(
                    json!({"name": name, "plan": "small", "image": "tiny", "ports": [80, 7],
                             "user_data": POOL_USER_DATA, "pool": "web", "pool_port": 80}),
                ),
            )
            .await;
        assert_eq!(a.status, 202, "{}", a.text);
        vms.push(a.body["vm"]["id"].as_str().unwrap().to_string());
        ops.push(a.body["id"].as_str().unwrap().to_string());
    }
    let names: std::collections::HashMap<String, String> = vms
        .iter()
        .zip(["web-1", "web-2", "web-3"])
        .map(|(v, n)| (v.clone(), n.to_string()))
        .collect();
    let booting = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut statuses = std::collections::BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(240);
            while Instant::now() < deadline {
                let status = match client.get(&url).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *statuses.entry(status).or_insert(0) += 1;
                if status == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            statuses
        }
    });
    for op in &ops {
        let done = app.wait_operation(op, Duration::from_secs(240)).await;
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    let statuses = booting.await.unwrap();
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503) && statuses.contains_key(&200),
        "while guests booted the pool answered only 503 (none healthy) then 200: {statuses:?}"
    );
    let want: Vec<(&str, &str)> = vms.iter().map(|v| (v.as_str(), "healthy")).collect();
    until_members(&app, &alice, &pool, &want).await;

    // Requests rotate over the three guests, and the metrics count each member's share.
    let before: Vec<u64> = {
        let m = app.metrics().await;
        vms.iter()
            .map(|v| member_metric(&m, "carve_pool_member_sent_total", &pool, v))
            .collect()
    };
    let mut seen = HashSet::new();
    for _ in 0..12 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        seen.insert(r.text().await.unwrap().trim().to_string());
    }
    let expected: HashSet<String> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|n| format!("hello from {n}"))
        .collect();
    assert_eq!(seen, expected);
    let m = app.metrics().await;
    for (v, b) in vms.iter().zip(&before) {
        assert_eq!(
            member_metric(&m, "carve_pool_member_sent_total", &pool, v) - b,
            4,
            "each member took its turn: {m}"
        );
        assert!(m.contains(&format!(
            "carve_pool_member_up{{pool=\"{pool}\",member=\"{v}\",state=\"healthy\"}} 1"
        )));
    }
    assert!(m.contains(&format!(
        "carve_pool_member_responses_total{{pool=\"{pool}\",member=\"{}\",class=\"2xx\"}}",
        vms[0]
    )));

    // least_connections: while one member is busy with a slow request, new ones go elsewhere.
    let a = app
        .call_as(
            &alice,
            "PATCH",
            &format!("/api/v1/pools/{pool}"),
            Some(json!({"algorithm": "least_connections"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    // The balancer has taken the change before the slow request goes out.
    let balancer = app.state.balancer.clone().expect("serve runs the balancer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while balancer.pool(&pool).map(|p| p.settings().algorithm)
        != Some(carve::lb::spec::Algorithm::LeastConnections)
    {
        assert!(Instant::now() < deadline, "the balancer kept round robin");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slow_url = format!("http://{listen}/cgi-bin/slow");
    let (slow, busy_vm) = slow_request(&app, &client, &slow_url, &pool, &vms).await;
    for _ in 0..6 {
        let body = client.get(&url).send().await.unwrap().text().await.unwrap();
        assert_ne!(
            body.trim(),
            format!("hello from {}", names[&busy_vm]),
            "a busy member got new work"
        );
    }
    assert_eq!(
        slow.await.unwrap().trim(),
        format!("slow from {}", names[&busy_vm])
    );

    // A tcp pool over the same guests' echo port carries bytes both ways and closes both
    // sides when the client half-closes.
    let a = app
        .call_as(
            &alice,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "echo", "protocol": "tcp",
            "health_check": {"interval_s": 1, "rise": 1}})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let echo_pool = a.body["id"].as_str().unwrap().to_string();
    let echo_addr = a.body["listen"].as_str().unwrap().to_string();
    for vm in &vms {
        let a = app
            .call_as(
                &alice,
                "POST",
                &format!("/api/v1/pools/{echo_pool}/members"),
                Some(json!({"vm_id": vm, "port": 7})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
    until_members(&app, &alice, &echo_pool, &want).await;
    for round in 0..3 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&echo_addr).await.unwrap();
        let line = format!("echo round {round}\n");
        s.write_all(line.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut back))
            .await
            .expect("the member closed its side after the client's half-close")
            .unwrap();
        assert_eq!(back, line);
    }
    let a = app
        .call_as(
            &alice,
            "DELETE",
            &format!("/api/v1/pools/{echo_pool}"),
            None,
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);

    // Detaching the member busy with a slow request, under a request loop: the slow request
    // finishes on it, the loop sees no failure, and the member is gone once drained.
    let (slow, leaving) = slow_request(&app, &client, &slow_url, &pool, &vms).await;
    let stop = Arc::new(AtomicBool::new(false));
    let looping = request_loop(url.clone(), stop.clone());
    let a = app
        .call_as(
            &alice,
            "DELETE",
            &format!("/api/v1/pools/{pool}/members/{leaving}"),
            None,
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(
        slow.await.unwrap().trim(),
        format!("slow from {}", names[&leaving]),
        "the open request finished"
    );
    until_members(&app, &alice, &pool, &[(leaving.as_str(), "gone")]).await;
    stop.store(true, Ordering::SeqCst);
    let (n, bad) = looping.await.unwrap();
    assert!(
        n > 10 && bad.is_empty(),
        "{n} requests while detaching; failed: {bad:?}"
    );
    let rest: Vec<String> = vms.iter().filter(|v| **v != leaving).cloned().collect();

    // Stopping one of the others under a request loop: it drains first; no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let looping = request_loop(url.clone(), stop.clone());
    let done = app
        .run_op(
            "POST",
            &format!("/api/v1/vms/{}/actions", rest[0]),
            Some(json!({"action": "stop"})),
        )
        .await;
    assert!(
        done["steps"].to_string().contains("drain from pools"),
        "the stop drained first: {done}"
    );
    until_members(&app, &alice, &pool, &[(rest[0].as_str(), "inactive")]).await;
    stop.store(true, Ordering::SeqCst);
    let (n, bad) = looping.await.unwrap();
    assert!(
        n > 10 && bad.is_empty(),
        "{n} requests while stopping; failed: {bad:?}"
    );
    for _ in 0..6 {
        let body = client.get(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(body.trim(), format!("hello from {}", names[&rest[1]]));
    }

    // Started again, it rejoins once healthy; deleting the last drains and removes it.
    app.run_op(
        "POST",
        &format!("/api/v1/vms/{}/actions", rest[0]),
        Some(json!({"action": "start"})),
    )
    .await;
    until_members(&app, &alice, &pool, &[(rest[0].as_str(), "healthy")]).await;
    app.run_op("DELETE", &format!("/api/v1/vms/{}", rest[1]), None)
        .await;
    until_members(&app, &alice, &pool, &[(rest[1].as_str(), "gone")]).await;
    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(body.trim(), format!("hello from {}", names[&rest[0]]));

    // Every transition is in the audit log.
    let audit = app.call("GET", "/api/v1/audit?limit=500", None).await;
    for needle in [
        "pool member inactive -> joining",
        "pool member joining -> healthy",
        "pool member healthy -> draining",
        "pool member draining -> inactive",
        "pool member removed",
    ] {
        assert!(audit.text.contains(needle), "audit lacks {needle:?}");
    }
    for vm in [&rest[0], &leaving] {
        app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
            .await;
    }
}

/// Starts a slow request through the pool; returns it and the member it landed on.
async fn slow_request(
    app: &TestApp,
    client: &reqwest::Client,
    slow_url: &str,
    pool: &str,
    vms: &[String],
) -> (tokio::task::JoinHandle<String>, String) {
    let slow = tokio::spawn({
        let (c, u) = (client.clone(), slow_url.to_string());
        async move { c.get(&u).send().await.unwrap().text().await.unwrap() }
    });
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        if let Some(v) = busy_member(app, pool, vms).await {
            return (slow, v);
        }
        assert!(
            Instant::now() < deadline,
            "the slow request never showed as active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The member with a request open on it now, by the metrics.
async fn busy_member(app: &TestApp, pool: &str, vms: &[String]) -> Option<String> {
    let m = app.metrics().await;
    vms.iter()
        .find(|v| member_metric(&m, "carve_pool_member_active", pool, v) > 0)
        .cloned()
}
