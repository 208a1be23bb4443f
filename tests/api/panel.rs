//! The panel over plain HTTP: security headers, CSRF, and the live event streams (scoped to
//! what the user may see, resumed without loss, fed by any process on the database).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, free_port, serve_child, spawn_app};
use crate::tenancy::{create_vm, tenant_with_customer};

/// One server-sent event: id, name, JSON data.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: i64,
    pub kind: String,
    pub tenant_id: String,
    pub subject: String,
    pub data: Value,
}

/// An open event stream.
pub struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    /// Opens `path` with a bearer token, resuming after `last` when given.
    pub async fn open(base: &str, token: &str, path: &str, last: Option<i64>) -> Self {
        let mut req = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let response = req.send().await.expect("event stream");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Sse> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    id: 0,
                    kind: String::new(),
                    tenant_id: String::new(),
                    subject: String::new(),
                    data: Value::Null,
                };
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = v.parse().unwrap();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.kind = v.into();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        let whole: Value = serde_json::from_str(v).unwrap();
                        event.tenant_id = whole["tenant_id"].as_str().unwrap().into();
                        event.subject = whole["subject"].as_str().unwrap().into();
                        event.data = whole["data"].clone();
                    }
                }
                if event.id > 0 {
                    return Some(event);
                }
                continue;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Events until one passes `done` (which is included), waiting at most `timeout` in all.
    pub async fn until(&mut self, timeout: Duration, done: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no matching event in time; saw {seen:?}"));
            let e = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("the stream ended or went quiet; saw {seen:?}"));
            let last = done(&e);
            seen.push(e);
            if last {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn event_streams_show_only_the_tenants_changes_and_resume_without_loss() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (acme, alice) = tenant_with_customer(&app, "acme").await;
    let (_, bob) = tenant_with_customer(&app, "globex").await;
    let mut stream = Stream::open(&app.addr, &alice, "/api/v1/events", None).await;
    let (bobs_vm, _) = create_vm(&app, &bob, "bobs").await;
    let (vm, _) = create_vm(&app, &alice, "shop").await;
    let seen = stream
        .until(Duration::from_secs(20), |e| {
            e.kind == "vm" && e.subject_is(&vm) && e.data["state"] == "running"
        })
        .await;
    assert!(
        seen.iter().all(|e| e.tenant_id == acme),
        "another tenant's change leaked: {seen:?}"
    );
    assert!(!format!("{seen:?}").contains(&bobs_vm), "{seen:?}");
    assert!(seen.iter().any(
        |e| e.kind == "operation" && e.data["steps"].as_array().is_some_and(|s| !s.is_empty())
    ));
    assert!(
        seen.iter()
            .any(|e| e.kind == "usage" && e.data["usage"]["vms"] == 1)
    );
    let ids: Vec<i64> = seen.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let last = *ids.last().unwrap();
    drop(stream);

    // While disconnected: a stop and another VM. Resuming replays exactly what was missed.
    let stop = app
        .call_as(
            &alice,
            "POST",
            &format!("/api/v1/vms/{vm}/actions"),
            Some(json!({"action": "force_stop"})),
        )
        .await;
    assert_eq!(stop.status, 202, "{}", stop.text);
    app.wait_operation(stop.body["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    let mut resumed = Stream::open(&app.addr, &alice, "/api/v1/events", Some(last)).await;
    let missed = resumed
        .until(Duration::from_secs(20), |e| {
            e.kind == "vm" && e.subject_is(&vm) && e.data["state"] == "stopped"
        })
        .await;
    assert!(missed.iter().all(|e| e.id > last), "{missed:?}");
    let first_missed: i64 =
        carve::on_db!(&app.state.db, c => sqlx::query_scalar("SELECT MIN(id) FROM events WHERE id > $1 AND tenant_id = $2")
            .bind(last)
            .bind(&acme)
            .fetch_one(c)
            .await)
            .unwrap();
    assert_eq!(
        missed[0].id, first_missed,
        "the first missed event is replayed first"
    );
    let (later, _) = create_vm(&app, &alice, "later").await;
    resumed
        .until(Duration::from_secs(20), |e| {
            e.kind == "vm" && e.subject_is(&later)
        })
        .await;
    // Tokens without a user are refused; the OpenAPI document names the stream.
    let anon = reqwest::get(format!("{}/api/v1/events", app.addr))
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    app.stop().await;
}

impl Sse {
    fn subject_is(&self, id: &str) -> bool {
        self.subject == id
    }
}

#[tokio::test]
async fn a_change_made_by_another_process_reaches_the_stream() {
    let app = spawn_app(Backend::TestDriver).await;
    let port = free_port();
    let child = serve_child(app.data_dir.path(), Backend::TestDriver, port, &[]).await;
    let mut stream = Stream::open(&child.base, &app.admin_token, "/api/v1/events", None).await;
    let tenant = app
        .call(
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "elsewhere"})),
        )
        .await;
    let tenant = tenant.body["id"].as_str().unwrap().to_string();
    let a = app
        .call("POST", "/api/v1/sftp-accounts", Some(json!({"username": "crossproc", "password": "a long password", "tenant_id": tenant})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let seen = stream
        .until(Duration::from_secs(10), |e| {
            e.kind == "usage" && e.data["tenant_id"] == tenant.as_str()
        })
        .await;
    assert!(seen.last().unwrap().data["quota"]["max_vms"].is_number());
    drop(child);
    app.stop().await;
}

/// A cookie-keeping client logged in to the panel.
pub async fn panel_client(app: &TestApp, email: &str, password: &str) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(format!("{}/login", app.addr))
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    let csrf = field(&html, "csrf");
    let r = client
        .post(format!("{}/login", app.addr))
        .form(&[("email", email), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    client
}

/// The value of the first hidden input named `name`.
pub fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test]
async fn panel_pages_carry_security_headers_and_forms_need_their_csrf_token() {
    let app = spawn_app(Backend::TestDriver).await;
    let a = app
        .call("POST", "/api/v1/users", Some(json!({"email": "page@example.com", "password": "a panel password", "role": "customer", "tenant_id": "tn_0000000000000000"})))
        .await;
    assert_eq!(a.status, 201);
    let client = panel_client(&app, "page@example.com", "a panel password").await;
    let home = client.get(format!("{}/", app.addr)).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let csp = home.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(home.headers()["referrer-policy"], "same-origin");
    assert_eq!(home.headers()["cache-control"], "no-store");
    let html = home.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "inline script or style"
    );
    let csrf = field(&html, "csrf");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsLoyjJx4Nw7l7ZhBmSbfM7pY1LpMxRcYpV2oXq6qPz me@laptop";
    for forged in [None, Some("not the token")] {
        let mut form = vec![("name", "forged"), ("public_key", key)];
        if let Some(f) = forged {
            form.push(("csrf", f));
        }
        let r = client
            .post(format!("{}/keys", app.addr))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let keys = client
        .get(format!("{}/keys", app.addr))
        .send()
        .await
        .unwrap();
    assert!(!keys.text().await.unwrap().contains("forged"));
    let r = client
        .post(format!("{}/keys", app.addr))
        .form(&[("name", "laptop"), ("public_key", key), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let again = client
        .post(format!("{}/keys", app.addr))
        .form(&[("name", "laptop"), ("public_key", key), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert!(again.text().await.unwrap().contains("already saved"));
    // An unknown page, an unknown VM and a malformed id are understandable 404 pages.
    for path in [
        "/no-such-page",
        "/vms/vm_0000000000000000",
        "/vms/%3Cscript%3E",
    ] {
        let r = client
            .get(format!("{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("Not found") && !body.contains("<script>"),
            "{body}"
        );
    }
    // Signed-out visitors are sent to the login page.
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = anon
        .get(format!("{}/vms/new", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    app.stop().await;
}

#[tokio::test]
async fn vm_statistics_are_sampled_and_scoped() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (_, alice) = tenant_with_customer(&app, "acme").await;
    let (_, bob) = tenant_with_customer(&app, "globex").await;
    let (vm, _) = create_vm(&app, &alice, "shop").await;
    carve::provision::stats::sample_once(&app.state.prov)
        .await
        .unwrap();
    let stats = app
        .call_as(&alice, "GET", &format!("/api/v1/vms/{vm}/stats"), None)
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    assert_eq!(stats.body["interval_s"], 10);
    let point = &stats.body["points"][0];
    assert!(
        point["memory_total_mib"].as_f64().unwrap() > 0.0,
        "{}",
        stats.text
    );
    let other = app
        .call_as(&bob, "GET", &format!("/api/v1/vms/{vm}/stats"), None)
        .await;
    assert_eq!(other.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn live_streams_are_bounded_per_user_and_a_resume_past_kept_events_is_told_to_reload() {
    let app = crate::helpers::spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_HTTP_MAX_EVENT_STREAMS_PER_USER", "2")],
    )
    .await;
    let (_, alice) = tenant_with_customer(&app, "acme").await;
    let first = Stream::open(&app.addr, &alice, "/api/v1/events", None).await;
    let second = Stream::open(&app.addr, &alice, "/api/v1/events", None).await;
    let third = reqwest::Client::new()
        .get(format!("{}/api/v1/events", app.addr))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    // Another user is not held back by alice's streams; a closed stream frees its place.
    let mut admin = Stream::open(&app.addr, &app.admin_token, "/api/v1/events", None).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _again = Stream::open(&app.addr, &alice, "/api/v1/events", None).await;
    drop(second);

    // Events older than what is kept are gone: a client resuming from before them is told.
    for name in ["one", "two", "three"] {
        let a = app
            .call("POST", "/api/v1/tenants", Some(json!({"name": name})))
            .await;
        let tenant = a.body["id"].as_str().unwrap().to_string();
        let a = app
            .call("POST", "/api/v1/sftp-accounts", Some(json!({"username": format!("u{name}"), "password": "a long password", "tenant_id": tenant})))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
    let seen = admin
        .until(Duration::from_secs(10), |e| {
            e.kind == "usage" && e.data["usage"].is_object() && !e.tenant_id.is_empty()
        })
        .await;
    let newest: i64 =
        carve::on_db!(&app.state.db, c => sqlx::query_scalar("SELECT MAX(id) FROM events")
        .fetch_one(c)
        .await)
        .unwrap();
    carve::on_db!(&app.state.db, c => sqlx::query("DELETE FROM events WHERE id < $1")
        .bind(newest)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
    .unwrap();
    let mut resumed = Stream::open(
        &app.addr,
        &app.admin_token,
        "/api/v1/events",
        Some(seen[0].id - 1),
    )
    .await;
    let reset = resumed
        .next(Duration::from_secs(5))
        .await
        .expect("a reset event");
    assert_eq!(reset.kind, "reset", "{reset:?}");
    let after = resumed
        .next(Duration::from_secs(5))
        .await
        .expect("the kept event");
    assert_eq!(after.id, newest);
    // Ids from the future or out of range are harmless (schemathesis sent i64::MAX once).
    drop((admin, resumed));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in ["9223372036854775807", "-1", "99999999999999999999", "x"] {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/events", app.addr))
            .bearer_auth(&app.admin_token)
            .header("Last-Event-ID", id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
    }
    let health = reqwest::get(format!("{}/healthz", app.addr)).await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn suspending_a_tenant_signs_its_users_out_for_good() {
    let app = spawn_app(Backend::TestDriver).await;
    let (tenant, _) = tenant_with_customer(&app, "late").await;
    let a = app
        .call("POST", "/api/v1/users", Some(json!({"email": "web@late.example", "password": "a panel password", "role": "customer", "tenant_id": tenant})))
        .await;
    assert_eq!(a.status, 201);
    let client = panel_client(&app, "web@late.example", "a panel password").await;
    let home = client.get(format!("{}/", app.addr)).send().await.unwrap();
    assert_eq!(home.status(), 200);
    for suspended in [true, false] {
        let r = app
            .call(
                "PATCH",
                &format!("/api/v1/tenants/{tenant}"),
                Some(json!({"suspended": suspended})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let home = client.get(format!("{}/", app.addr)).send().await.unwrap();
    assert_eq!(
        home.status(),
        303,
        "the old session came back after resuming"
    );
    assert_eq!(home.headers()["location"], "/login");
    app.stop().await;
}

#[tokio::test]
async fn panel_errors_name_the_limit_and_every_login_starts_a_new_session() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant, token) = tenant_with_customer(&app, "limits").await;
    let quota = |max_vms: i64| {
        json!({"max_vms": max_vms, "max_vcpus": 4, "max_memory_mib": 1024, "max_disk_gib": 10,
            "max_sftp_bytes": 1000, "max_sftp_files": 10})
    };
    let a = app
        .call(
            "PUT",
            &format!("/api/v1/tenants/{tenant}/quota"),
            Some(quota(1)),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    create_vm(&app, &token, "first").await;
    let client = panel_client(&app, "owner@limits.example", "customer password").await;
    let create = async |name: &str| {
        let form = client
            .get(format!("{}/vms/new", app.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = field(&form, "csrf");
        let r = client
            .post(format!("{}/vms", app.addr))
            .form(&[
                ("name", name),
                ("plan", "small"),
                ("image", "tiny"),
                ("csrf", &csrf),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    // Over quota: the form comes back with what was typed and says which limit, how much is
    // used and what to do.
    let (status, body) = create("second").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("quota exceeded: max_vms is 1, the tenant uses 1 and this needs 1 more")
            && body.contains("ask an admin to raise the quota")
            && body.contains("value=\"second\""),
        "{body}"
    );
    // Out of capacity: the host sells no vCPU at all.
    let a = app
        .call(
            "PUT",
            &format!("/api/v1/tenants/{tenant}/quota"),
            Some(quota(5)),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let hosts = app.call("GET", "/api/v1/hosts", None).await;
    let host = hosts.body[0]["id"].as_str().unwrap().to_string();
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/hosts/{host}"),
            Some(json!({"cpu_overcommit": 0.01})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let (status, body) = create("third").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("not enough vcpus on host") && body.contains("pick a smaller plan"),
        "{body}"
    );
    let vms = app.call_as(&token, "GET", "/api/v1/vms", None).await;
    assert_eq!(vms.body.as_array().unwrap().len(), 1, "{}", vms.text);

    // Each login gets a fresh session id; one planted before the login is never kept.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = async |planted: &str| {
        let page = bare
            .get(format!("{}/login", app.addr))
            .send()
            .await
            .unwrap();
        let login_cookie = page
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .find(|c| c.starts_with("carve_login_csrf="))
            .expect("a login CSRF cookie");
        let csrf = field(&page.text().await.unwrap(), "csrf");
        let r = bare
            .post(format!("{}/login", app.addr))
            .header("cookie", format!("{login_cookie}; carve_session={planted}"))
            .form(&[
                ("email", "owner@limits.example"),
                ("password", "customer password"),
                ("csrf", &csrf),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().unwrap().strip_prefix("carve_session="))
            .map(|v| v.split(';').next().unwrap().to_string())
            .next()
            .expect("a session cookie")
    };
    let planted = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let first = login(planted).await;
    let second = login(&first).await;
    assert!(first != planted && second != first && second != planted);
    app.stop().await;
}

#[tokio::test]
async fn admin_lists_filter_every_page_not_just_the_first() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant, token) = tenant_with_customer(&app, "filters").await;
    let mut vms = Vec::new();
    for name in ["a", "b", "c"] {
        vms.push(create_vm(&app, &token, name).await.0);
    }
    let a = app
        .call_as(
            &token,
            "POST",
            &format!("/api/v1/vms/{}/actions", vms[0]),
            Some(json!({"action": "stop"})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    app.wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    // The API filters by kind and state in the database: a page holds only matches, however
    // many others are newer.
    let stops = app
        .call("GET", "/api/v1/operations?kind=stop&state=succeeded", None)
        .await;
    assert_eq!(stops.status, 200, "{}", stops.text);
    let stops = stops.body.as_array().unwrap();
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0]["target"], vms[0].as_str());
    let creates = app
        .call("GET", "/api/v1/operations?kind=create&limit=1", None)
        .await;
    assert_eq!(creates.body.as_array().unwrap().len(), 1);
    assert_eq!(creates.body[0]["kind"], "create");
    let bad = app
        .call("GET", "/api/v1/operations?kind=explode", None)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);

    let a = app
        .call("POST", "/api/v1/users", Some(json!({"email": "root@filters.example", "password": "an admin password", "role": "admin"})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let admin = panel_client(&app, "root@filters.example", "an admin password").await;
    let get = async |path: &str| {
        let r = admin
            .get(format!("{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (status, page) = get(&format!("/admin/operations?kind=stop&tenant={tenant}")).await;
    assert_eq!(status, 200);
    assert_eq!(page.matches("<td>stop</td>").count(), 1, "{page}");
    assert!(!page.contains("<td>create</td>"), "{page}");
    let (status, page) = get("/admin/operations?state=failed").await;
    assert_eq!(status, 200);
    assert!(page.contains("No operation matches."), "{page}");
    let (status, page) = get("/admin/operations?kind=explode").await;
    assert_eq!(status, 422);
    assert!(
        page.contains("there is no kind") && page.contains("reinstall"),
        "{page}"
    );
    let hosts = app.call("GET", "/api/v1/hosts", None).await;
    let host = hosts.body[0]["id"].as_str().unwrap().to_string();
    let (_, page) = get(&format!("/admin/vms?host={host}&tenant={tenant}")).await;
    for vm in &vms {
        assert!(page.contains(vm.as_str()), "{page}");
    }
    let (_, page) = get(&format!(
        "/admin/vms?host=hs_0000000000000000&tenant={tenant}"
    ))
    .await;
    assert!(page.contains("No VM matches."), "{page}");
    let (status, page) = get("/admin/audit?outcome=maybe").await;
    assert_eq!(status, 422);
    assert!(
        page.contains("pick one of succeeded, denied, failed"),
        "{page}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_create_form_offers_host_labels_and_places_by_them() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (_tenant, _token) = tenant_with_customer(&app, "labels").await;
    let hosts = app.call("GET", "/api/v1/hosts", None).await;
    let host = hosts.body[0]["id"].as_str().unwrap().to_string();
    let client = panel_client(&app, "owner@labels.example", "customer password").await;
    let form = async || {
        client
            .get(format!("{}/vms/new", app.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // No host has labels: no field to fill.
    assert!(!form().await.contains("name=\"host_labels\""));
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/hosts/{host}"),
            Some(json!({"labels": ["ssd", "zone=a"]})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let page = form().await;
    assert!(
        page.contains("name=\"host_labels\"") && page.contains("<code>zone=a</code>"),
        "{page}"
    );
    let csrf = field(&page, "csrf");
    let create = async |name: &str, labels: &str| {
        let r = client
            .post(format!("{}/vms", app.addr))
            .form(&[
                ("name", name),
                ("plan", "small"),
                ("image", "tiny"),
                ("host_labels", labels),
                ("csrf", &csrf),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (status, body) = create("nowhere", "nvme").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("id=\"host_labels-error\"")
            && body.contains("no active host has every label"),
        "{body}"
    );
    assert!(
        body.contains("value=\"nvme\""),
        "the form keeps what was typed: {body}"
    );
    let (status, body) = create("fast", "ssd zone=a").await;
    assert_eq!(status, 303, "{body}");
    app.stop().await;
}
