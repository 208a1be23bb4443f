//! Pools through the API: bad input of every kind refused with a 4xx that says what to fix
//! (and nothing half-made), tenants kept apart, and pools over real guests: members join when
//! healthy, requests rotate, and a stopped, detached or deleted VM leaves by draining.

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
    let (tenant_b, bob) = tenant_with_customer(&app, "globex").await;
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

    // An admin's pool for another tenant is that tenant's, and so is its audit entry.
    let a = app
        .call(
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "bobs", "protocol": "tcp", "tenant_id": tenant_b})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let bobs = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["tenant_id"], tenant_b.as_str());
    let audit = app.call_as(&bob, "GET", "/api/v1/audit", None).await;
    assert!(
        audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "POST /api/v1/pools"
                && e["target"] == bobs.as_str()
                && e["tenant_id"] == tenant_b.as_str()),
        "bob's tenant sees the admin's pool creation: {}",
        audit.text
    );
    let a = app
        .call("DELETE", &format!("/api/v1/pools/{bobs}"), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);

    // The admin sees every pool; deleting one frees its port for the next.
    let all = app.call("GET", "/api/v1/pools", None).await;
    assert_eq!(all.body.as_array().unwrap().len(), 2, "{}", all.text);
    let a = app.call_as(&alice, "DELETE", &path, None).await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(app.call_as(&alice, "GET", &path, None).await.status, 404);
}

/// Waits until every listed member of the pool is in `state`; returns the pool.
pub async fn until_members(app: &TestApp, token: &str, pool: &str, want: &[(&str, &str)]) -> Value {
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
pub async fn until_answer(url: &str, status: u16, body: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
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
