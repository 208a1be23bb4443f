//! Pools through the API: bad input of every kind refused with a 4xx that says what to fix
//! (and nothing half-made), tenants kept apart, and pools over real guests: members join when
//! healthy, requests rotate, and a stopped, detached or deleted VM leaves by draining.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, LB_PORTS, TestApp, spawn_app};
use crate::tenancy::{create_vm, tenant_with_customer};

/// Asserts a problem answer with this status whose text mentions `needle`.
fn assert_problem(a: &crate::helpers::Answer, status: u16, needle: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert!(
        a.text.contains(needle),
        "the problem should mention {needle:?}: {}",
        a.text
    );
}

/// The pool listener port range of an app.
fn lb_range(app: &TestApp) -> (u16, u16) {
    (app.forward_ports.1 - LB_PORTS + 1, app.forward_ports.1)
}

#[tokio::test]
async fn pools_api_checks_input_and_keeps_tenants_apart() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (_tenant_a, alice) = tenant_with_customer(&app, "acme").await;
    let (_tenant_b, bob) = tenant_with_customer(&app, "globex").await;
    let (first, last) = lb_range(&app);
    let post = |token: String, body: Value| {
        let app = &app;
        async move {
            app.call_as(&token, "POST", "/api/v1/pools", Some(body))
                .await
        }
    };

    // A pool with defaults: a free port from the range, an http check of GET /.
    let a = post(alice.clone(), json!({"name": "web", "protocol": "http"})).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let pool = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["listen"], format!("127.0.0.1:{first}"));
    assert_eq!(a.body["algorithm"], "round_robin");
    assert_eq!(a.body["health_check"]["kind"], "http");
    assert_eq!(a.body["health_check"]["path"], "/");
    assert_eq!(a.body["members"], json!([]));

    // Bad input, each refused with what to fix.
    let bad: Vec<(Value, u16, &str)> = vec![
        (
            json!({"name": "x", "protocol": "udp"}),
            422,
            "unknown variant",
        ),
        (
            json!({"name": "x", "protocol": "http", "algorithm": "random"}),
            422,
            "unknown variant",
        ),
        (
            json!({"name": "x", "protocol": "http", "colour": "red"}),
            422,
            "unknown field",
        ),
        (
            json!({"name": "x", "protocol": "http", "health_check": {"interval_s": 0}}),
            422,
            "interval_s",
        ),
        (
            json!({"name": "x", "protocol": "http", "health_check": {"path": "no-slash"}}),
            422,
            "health_check.path",
        ),
        (
            json!({"name": "x", "protocol": "http", "health_check": {"expect_status": 42}}),
            422,
            "expect_status",
        ),
        (
            json!({"name": "x", "protocol": "tcp", "health_check": {"path": "/"}}),
            422,
            "tcp check only connects",
        ),
        (
            json!({"name": "x", "protocol": "tcp", "sticky_cookie": "srv"}),
            422,
            "sticky_cookie",
        ),
        (
            json!({"name": "x", "protocol": "http", "proxy_protocol": true}),
            422,
            "proxy_protocol",
        ),
        (
            json!({"name": "x", "protocol": "http", "drain_timeout_s": 100000}),
            422,
            "drain_timeout_s",
        ),
        (
            json!({"name": "<script>", "protocol": "http"}),
            422,
            "not allowed",
        ),
        (
            json!({"name": "n".repeat(65), "protocol": "http"}),
            422,
            "1 to 64",
        ),
        (
            json!({"name": "x", "protocol": "http", "listen": "127.0.0.1:1"}),
            409,
            "outside the pool port range",
        ),
        (
            json!({"name": "x", "protocol": "http", "listen": format!("127.0.0.1:{first}")}),
            409,
            "taken by another pool",
        ),
        (
            json!({"name": "x", "protocol": "http", "listen": format!("0.0.0.0:{last}")}),
            422,
            "pools listen on 127.0.0.1",
        ),
        (
            json!({"name": "x", "protocol": "http", "listen": "nonsense"}),
            422,
            "is not address:port",
        ),
        (
            json!({"name": "web", "protocol": "tcp"}),
            409,
            "already exists",
        ),
        (
            json!({"name": "x", "protocol": "http", "tenant_id": "tn_0000000000000000"}),
            422,
            "only admins",
        ),
    ];
    for (body, status, needle) in bad {
        let a = post(alice.clone(), body.clone()).await;
        assert_problem(&a, status, needle);
    }
    let a = app
        .raw("POST", "/api/v1/pools", "application/json", "{\"name\": ")
        .await;
    assert_problem(&a, 400, "not valid JSON");
    // A port another program holds.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", last)).unwrap();
    let a = post(
        alice.clone(),
        json!({"name": "x", "protocol": "http", "listen": format!("127.0.0.1:{last}")}),
    )
    .await;
    assert_problem(&a, 409, "in use by another program");
    drop(squatter);
    // Nothing half-made: alice still has exactly one pool.
    let list = app.call_as(&alice, "GET", "/api/v1/pools", None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1, "{}", list.text);

    // Concurrent creates asking for the same port: exactly one wins.
    let port = last - 1;
    let tries = (0..6).map(|i| {
        post(
            alice.clone(),
            json!({"name": format!("race{i}"), "protocol": "tcp", "listen": format!("127.0.0.1:{port}")}),
        )
    });
    let answers = futures_util::future::join_all(tries).await;
    let won = answers.iter().filter(|a| a.status == 201).count();
    assert_eq!(
        won,
        1,
        "{:?}",
        answers.iter().map(|a| &a.text).collect::<Vec<_>>()
    );
    assert!(answers.iter().all(|a| a.status == 201 || a.status == 409));

    // Tenants apart: bob sees no pool of alice's and cannot touch it.
    let (vm_a, _) = create_vm(&app, &alice, "shop").await;
    let (vm_b, _) = create_vm(&app, &bob, "bobs").await;
    assert_eq!(
        app.call_as(&bob, "GET", "/api/v1/pools", None).await.body,
        json!([])
    );
    for (method, path, body) in [
        ("GET", format!("/api/v1/pools/{pool}"), None),
        (
            "PATCH",
            format!("/api/v1/pools/{pool}"),
            Some(json!({"algorithm": "least_connections"})),
        ),
        ("DELETE", format!("/api/v1/pools/{pool}"), None),
        (
            "POST",
            format!("/api/v1/pools/{pool}/members"),
            Some(json!({"vm_id": vm_b, "port": 80})),
        ),
        (
            "DELETE",
            format!("/api/v1/pools/{pool}/members/{vm_a}"),
            None,
        ),
    ] {
        let a = app.call_as(&bob, method, &path, body).await;
        assert_eq!(a.status, 404, "{method} {path}: {}", a.text);
    }
    // Alice cannot attach bob's VM (not found), a VM without the port forwarded, or one
    // whose port nothing answers on.
    let members = format!("/api/v1/pools/{pool}/members");
    let a = app
        .call_as(
            &alice,
            "POST",
            &members,
            Some(json!({"vm_id": vm_b, "port": 80})),
        )
        .await;
    assert_problem(&a, 404, &vm_b);
    let a = app
        .call_as(
            &alice,
            "POST",
            &members,
            Some(json!({"vm_id": vm_a, "port": 22})),
        )
        .await;
    assert_problem(&a, 422, "does not forward guest port 22");
    let a = app
        .call_as(
            &alice,
            "POST",
            &members,
            Some(json!({"vm_id": vm_a, "port": 80})),
        )
        .await;
    assert_problem(&a, 422, "does not answer on guest port 80");
    let a = app
        .call_as(
            &alice,
            "POST",
            &members,
            Some(json!({"vm_id": vm_a, "port": 80, "weight": 0})),
        )
        .await;
    assert_problem(&a, 422, "weight");
    let a = app
        .call_as(
            &alice,
            "POST",
            &members,
            Some(json!({"vm_id": vm_a, "port": 0})),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    let pool_now = app
        .call_as(&alice, "GET", &format!("/api/v1/pools/{pool}"), None)
        .await;
    assert_eq!(pool_now.body["members"], json!([]));

    // POST /vms with a pool: another tenant's pool is not found; pool_port must be forwarded.
    let vm = |name: &str, extra: Value| {
        let mut body = json!({"name": name, "plan": "small", "image": "tiny", "ports": [80, 8080]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let a = app
        .call_as(
            &bob,
            "POST",
            "/api/v1/vms",
            Some(vm("b2", json!({"pool": pool, "pool_port": 80}))),
        )
        .await;
    assert_problem(&a, 404, "pool");
    let a = app
        .call_as(
            &alice,
            "POST",
            "/api/v1/vms",
            Some(vm("a2", json!({"pool": "web", "pool_port": 9}))),
        )
        .await;
    assert_problem(&a, 422, "pool_port");
    let a = app
        .call_as(
            &alice,
            "POST",
            "/api/v1/vms",
            Some(vm("a2", json!({"pool": "web"}))),
        )
        .await;
    assert_problem(&a, 422, "pool_port");
    let a = app
        .call_as(
            &alice,
            "POST",
            "/api/v1/vms",
            Some(vm("a2", json!({"pool_port": 80}))),
        )
        .await;
    assert_problem(&a, 422, "give pool too");
    let names: Vec<String> = app
        .call_as(&alice, "GET", "/api/v1/vms", None)
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["shop"], "no VM half-made by refused creates");
    // By name, with the port: the VM is a member (inactive until it runs, then joining).
    let a = app
        .call_as(
            &alice,
            "POST",
            "/api/v1/vms",
            Some(vm("a2", json!({"pool": "web", "pool_port": 8080}))),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let vm_a2 = a.body["vm"]["id"].as_str().unwrap().to_string();
    let view = app
        .call_as(&alice, "GET", &format!("/api/v1/pools/{pool}"), None)
        .await;
    assert_eq!(
        view.body["members"][0]["vm_id"],
        vm_a2.as_str(),
        "{}",
        view.text
    );
    assert_eq!(view.body["members"][0]["port"], 8080);
    // Attaching it twice is a conflict.
    let a = app
        .call_as(
            &alice,
            "POST",
            &members,
            Some(json!({"vm_id": vm_a2, "port": 8080})),
        )
        .await;
    assert_problem(&a, 409, "already a member");

    // PATCH checks too, and changes in place.
    let path = format!("/api/v1/pools/{pool}");
    let a = app
        .call_as(
            &alice,
            "PATCH",
            &path,
            Some(json!({"health_check": {"interval_s": 0}})),
        )
        .await;
    assert_problem(&a, 422, "interval_s");
    let a = app
        .call_as(
            &alice,
            "PATCH",
            &path,
            Some(json!({"listen": "127.0.0.1:1"})),
        )
        .await;
    assert_problem(&a, 422, "unknown field");
    let a = app.call_as(&alice, "PATCH", &path, Some(json!({"algorithm": "least_connections", "sticky_cookie": "srv", "health_check": {"path": "/health", "interval_s": 1}}))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["algorithm"], "least_connections");
    assert_eq!(a.body["sticky_cookie"], "srv");
    assert_eq!(a.body["health_check"]["path"], "/health");

    // The admin sees every pool; deleting one frees its port for the next.
    let all = app.call("GET", "/api/v1/pools", None).await;
    assert_eq!(all.body.as_array().unwrap().len(), 2, "{}", all.text);
    let a = app.call_as(&alice, "DELETE", &path, None).await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(app.call_as(&alice, "GET", &path, None).await.status, 404);
}

/// Waits until every listed member of the pool is in `state`; returns the pool.
async fn until_members(app: &TestApp, token: &str, pool: &str, want: &[(&str, &str)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = app
            .call_as(token, "GET", &format!("/api/v1/pools/{pool}"), None)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let members = a.body["members"].as_array().cloned().unwrap_or_default();
        let ok = want.iter().all(|(vm, state)| {
            if *state == "gone" {
                !members.iter().any(|m| m["vm_id"] == *vm)
            } else {
                members
                    .iter()
                    .any(|m| m["vm_id"] == *vm && m["state"] == *state)
            }
        });
        if ok {
            return a.body;
        }
        assert!(
            Instant::now() < deadline,
            "members are {members:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// User-data for pool members: `/` answers "hello from <hostname>", `/cgi-bin/slow` answers
/// after 3 s, and port 7 echoes (busybox httpd and nc, started by rc.local at every boot).
const POOL_USER_DATA: &str = "#!/bin/sh
mkdir -p /srv/www/cgi-bin
echo \"hello from $(hostname)\" > /srv/www/index.html
printf '#!/bin/sh\\nsleep 3\\necho \"Content-Type: text/plain\"\\necho\\necho \"slow from $(hostname)\"\\n' > /srv/www/cgi-bin/slow
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
        let m = metrics(&app).await;
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
    let m = metrics(&app).await;
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slow_url = format!("http://{listen}/cgi-bin/slow");
    let slow = tokio::spawn({
        let (c, u) = (client.clone(), slow_url.clone());
        async move { c.get(&u).send().await.unwrap().text().await.unwrap() }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let busy_vm = loop {
        if let Some(v) = busy_member(&app, &pool, &vms).await {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the slow request never showed as active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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
    let slow = tokio::spawn({
        let (c, u) = (client.clone(), slow_url.clone());
        async move { c.get(&u).send().await.unwrap().text().await.unwrap() }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let leaving = loop {
        if let Some(v) = busy_member(&app, &pool, &vms).await {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the slow request never showed as active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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

/// The member with a request open on it now, by the metrics.
async fn busy_member(app: &TestApp, pool: &str, vms: &[String]) -> Option<String> {
    let m = metrics(app).await;
    vms.iter()
        .find(|v| member_metric(&m, "carve_pool_member_active", pool, v) > 0)
        .cloned()
}

/// The app's /metrics text.
async fn metrics(app: &TestApp) -> String {
    app.client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A tiny HTTP server standing in for a guest on a test-driver VM's forwarded port: answers
/// every request with `body`.
async fn stand_in(port: u16, body: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the forward's host port is free for the stand-in");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    })
}

/// `carve lb` on the app's data directory (killed when dropped).
fn lb_child(app: &TestApp) -> crate::helpers::ChildServer {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(app.data_dir.path().join("lb.log"))
        .unwrap();
    let child = crate::helpers::carve_command(
        app.data_dir.path(),
        Backend::TestDriver,
        crate::helpers::free_port(),
        &[],
    )
    .arg("lb")
    .stdout(std::process::Stdio::null())
    .stderr(log)
    .spawn()
    .expect("carve lb starts");
    crate::helpers::ChildServer {
        child,
        base: String::new(),
    }
}

/// GETs `url` until it answers `want` (status and body start).
async fn until_answer(url: &str, status: u16, body: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = match client.get(url).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        if got.0 == status && got.1.starts_with(body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} answered {got:?}, wanted {status} {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn carve_lb_serves_the_pools_of_serve_and_comes_back_after_kill_9() {
    let app =
        crate::helpers::spawn_app_with(Backend::TestDriver, &[("CARVE_LB_EMBEDDED", "false")])
            .await;
    app.plan("small", 1, 128, 1).await;
    let (_tenant, alice) = tenant_with_customer(&app, "shop").await;
    let (vm, _) = create_vm(&app, &alice, "web-1").await;
    let forward = app
        .call_as(&alice, "GET", &format!("/api/v1/vms/{vm}"), None)
        .await
        .body["forwards"][0]["host_port"]
        .as_u64()
        .unwrap() as u16;
    let _guest = stand_in(forward, "hello from web-1").await;
    let a = app
        .call_as(&alice, "POST", "/api/v1/pools", Some(json!({"name": "web", "protocol": "http", "health_check": {"interval_s": 1, "rise": 1}})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let pool = a.body["id"].as_str().unwrap().to_string();
    let url = format!("http://{}/", a.body["listen"].as_str().unwrap());
    // serve runs no balancer here: nothing listens until carve lb starts.
    assert!(
        reqwest::get(&url).await.is_err(),
        "serve should not run the balancer"
    );
    let a = app
        .call_as(
            &alice,
            "POST",
            &format!("/api/v1/pools/{pool}/members"),
            Some(json!({"vm_id": vm, "port": 80})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["members"][0]["state"], "joining");

    let lb = lb_child(&app);
    until_answer(&url, 200, "hello from web-1").await;
    // What carve lb sees is written back: serve's API shows the member healthy.
    until_members(&app, &alice, &pool, &[(vm.as_str(), "healthy")]).await;

    // kill -9: the listener goes with the process; a new carve lb binds it again.
    drop(lb);
    until_answer(&url, 0, "").await;
    let _lb = lb_child(&app);
    until_answer(&url, 200, "hello from web-1").await;

    // A change made through serve reaches carve lb: detaching drains the member out.
    let a = app
        .call_as(
            &alice,
            "DELETE",
            &format!("/api/v1/pools/{pool}/members/{vm}"),
            None,
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    until_members(&app, &alice, &pool, &[(vm.as_str(), "gone")]).await;
    until_answer(&url, 503, "").await;
    // Deleting the pool closes its listener.
    let a = app
        .call_as(&alice, "DELETE", &format!("/api/v1/pools/{pool}"), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    until_answer(&url, 0, "").await;
}

#[tokio::test]
async fn a_tenant_cannot_take_every_pool_port() {
    let app = crate::helpers::spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_LB_MAX_POOLS_PER_TENANT", "2")],
    )
    .await;
    let (acme, alice) = tenant_with_customer(&app, "acme").await;
    let (_b, bob) = tenant_with_customer(&app, "globex").await;
    for name in ["one", "two"] {
        let a = app
            .call_as(
                &alice,
                "POST",
                "/api/v1/pools",
                Some(json!({"name": name, "protocol": "tcp"})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
    let a = app
        .call_as(
            &alice,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "three", "protocol": "tcp"})),
        )
        .await;
    assert_problem(&a, 403, "lb.max_pools_per_tenant");
    let a = app
        .call_as(
            &bob,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "one", "protocol": "tcp"})),
        )
        .await;
    assert_eq!(
        a.status, 201,
        "another tenant still gets a pool: {}",
        a.text
    );
    // A tenant with pools is not deleted under them.
    let a = app
        .call("DELETE", &format!("/api/v1/tenants/{acme}"), None)
        .await;
    assert_problem(&a, 409, "still has 2 load-balanced pools");
}
