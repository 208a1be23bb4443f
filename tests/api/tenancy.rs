//! Multi-tenancy: isolation between tenants, quotas, tokens, login throttling, suspension, the
//! audit log and password changes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, answer, spawn_app, spawn_app_with};

/// A tenant with one customer; returns (tenant id, customer token).
pub async fn tenant_with_customer(app: &TestApp, name: &str) -> (String, String) {
    let a = app
        .call("POST", "/api/v1/tenants", Some(json!({"name": name})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let tenant = a.body["id"].as_str().unwrap().to_string();
    let email = format!("owner@{name}.example");
    let a = app
        .call("POST", "/api/v1/users", Some(json!({"email": email, "password": "customer password", "role": "customer", "tenant_id": tenant})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert!(a.body.get("password").is_none() && !a.text.contains("customer password"));
    let token = password_token(app, &email, "customer password").await;
    (tenant, token)
}

/// `POST /tokens` with email and password.
async fn password_token(app: &TestApp, email: &str, password: &str) -> String {
    let r = app
        .client
        .post(format!("{}/api/v1/tokens", app.addr))
        .json(&json!({"email": email, "password": password, "name": "cli"}))
        .send()
        .await
        .unwrap();
    let a = answer(r).await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["token"].as_str().unwrap().to_string()
}

pub async fn create_vm(app: &TestApp, token: &str, name: &str) -> (String, String) {
    let a = app
        .call_as(
            token,
            "POST",
            "/api/v1/vms",
            Some(json!({"name": name, "plan": "small", "image": "tiny", "ports": [80]})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let op = a.body["id"].as_str().unwrap().to_string();
    let done = app.wait_operation(&op, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    (a.body["vm"]["id"].as_str().unwrap().to_string(), op)
}

#[tokio::test]
async fn tenants_cannot_see_or_touch_each_other() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant_a, alice) = tenant_with_customer(&app, "acme").await;
    let (_tenant_b, bob) = tenant_with_customer(&app, "globex").await;
    let (vm, op) = create_vm(&app, &alice, "shop").await;
    let alice_tokens = app
        .call_as(&alice, "GET", "/api/v1/tokens", None)
        .await
        .body;
    let alice_token_id = alice_tokens[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.call_as(&alice, "GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .body["tenant_id"],
        tenant_a.as_str()
    );

    // Every endpoint that takes an id: tenant B gets 404 and changes nothing.
    let matrix: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/api/v1/vms/{vm}"), None),
        (
            "PATCH",
            format!("/api/v1/vms/{vm}"),
            Some(json!({"plan": "small"})),
        ),
        ("DELETE", format!("/api/v1/vms/{vm}"), None),
        (
            "POST",
            format!("/api/v1/vms/{vm}/actions"),
            Some(json!({"action": "stop"})),
        ),
        (
            "POST",
            format!("/api/v1/vms/{vm}/actions"),
            Some(json!({"action": "force_stop"})),
        ),
        ("GET", format!("/api/v1/vms/{vm}/console"), None),
        ("GET", format!("/api/v1/operations/{op}"), None),
        ("DELETE", format!("/api/v1/tokens/{alice_token_id}"), None),
    ];
    for (method, path, body) in &matrix {
        let a = app.call_as(&bob, method, path, body.clone()).await;
        assert_eq!(a.status, 404, "{method} {path}: {}", a.text);
        assert!(!a.text.contains("acme"), "no existence leak: {}", a.text);
    }
    // Lists never show another tenant's rows.
    for path in ["/api/v1/vms", "/api/v1/operations", "/api/v1/tokens"] {
        let list = app.call_as(&bob, "GET", path, None).await.body;
        assert!(
            !list.to_string().contains(&vm) && !list.to_string().contains(&alice_token_id),
            "{path}: {list}"
        );
    }
    assert!(
        app.call_as(
            &bob,
            "GET",
            &format!("/api/v1/operations?target={vm}"),
            None
        )
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty()
    );
    // Bob's audit trail holds only his own requests (with the ids he typed), none of Alice's.
    let audit = app.call_as(&bob, "GET", "/api/v1/audit", None).await.body;
    assert!(!audit.as_array().unwrap().is_empty());
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "owner@globex.example"),
        "{audit}"
    );
    // Admin-only endpoints refuse customers outright.
    for (method, path) in [
        ("GET", "/api/v1/tenants"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/hosts"),
        ("GET", &format!("/api/v1/tenants/{tenant_a}/usage")),
    ] {
        assert_eq!(
            app.call_as(&bob, method, path, None).await.status,
            403,
            "{path}"
        );
    }
    let a = app
        .call_as(
            &bob,
            "POST",
            "/api/v1/plans",
            Some(json!({"name": "free", "vcpus": 64, "memory_mib": 65536, "disk_gib": 100})),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a = app
        .call_as(
            &bob,
            "POST",
            "/api/v1/vms",
            Some(json!({"name": "x", "plan": "small", "image": "tiny", "tenant_id": tenant_a})),
        )
        .await;
    assert_eq!(
        a.status, 422,
        "a customer cannot pick another tenant: {}",
        a.text
    );

    // Nothing changed for tenant A.
    let mine = app
        .call_as(&alice, "GET", &format!("/api/v1/vms/{vm}"), None)
        .await;
    assert_eq!(
        (mine.status, mine.body["state"].as_str()),
        (200, Some("running"))
    );
    assert_eq!(
        app.call_as(&alice, "GET", "/api/v1/tokens", None)
            .await
            .status,
        200
    );
    let ops = app
        .call_as(
            &alice,
            "GET",
            &format!("/api/v1/operations?target={vm}"),
            None,
        )
        .await
        .body;
    assert_eq!(
        ops.as_array().unwrap().len(),
        1,
        "no operation was started on A's VM: {ops}"
    );
    // Alice sees her own audit trail; admins see everyone's.
    let audit = app.call_as(&alice, "GET", "/api/v1/audit", None).await.body;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "POST /api/v1/vms" && e["target"] == vm.as_str()),
        "{audit}"
    );
    assert!(
        app.call("GET", "/api/v1/audit", None)
            .await
            .body
            .to_string()
            .contains("owner@globex.example")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_key_adds_stop_at_the_limit_of_fifty() {
    let app = Arc::new(spawn_app(Backend::TestDriver).await);
    let (_tenant, token) = tenant_with_customer(&app, "keyring").await;
    let dir = crate::helpers::data_dir();
    let keys: Vec<String> = (0..56)
        .map(|i| {
            let path = dir.path().join(format!("k{i}"));
            let made = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&path)
                .status()
                .unwrap();
            assert!(made.success(), "ssh-keygen");
            std::fs::read_to_string(path.with_extension("pub")).unwrap()
        })
        .collect();
    // 56 adds at once: exactly 50 are saved, whichever engine serializes them.
    let tasks: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move {
                app.call_as(
                    &token,
                    "POST",
                    "/api/v1/me/ssh-keys",
                    Some(json!({"name": format!("key-{i}"), "public_key": key})),
                )
                .await
            })
        })
        .collect();
    let (mut saved, mut refused) = (0, 0);
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            201 => saved += 1,
            409 => {
                assert!(a.text.contains("50 saved keys"), "{}", a.text);
                refused += 1;
            }
            _ => panic!("unexpected answer: {} {}", a.status, a.text),
        }
    }
    assert_eq!((saved, refused), (50, 6));
    let list = app
        .call_as(&token, "GET", "/api/v1/me/ssh-keys", None)
        .await;
    assert_eq!(
        list.body.as_array().map(Vec::len),
        Some(50),
        "{}",
        list.text
    );
    Arc::try_unwrap(app).ok().expect("sole owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_against_a_quota_of_three() {
    let app = Arc::new(spawn_app(Backend::Qemu).await);
    app.plan("small", 1, 128, 1).await;
    let (tenant, token) = tenant_with_customer(&app, "quota").await;
    let q = json!({"max_vms": 3, "max_vcpus": 16, "max_memory_mib": 4096, "max_disk_gib": 100, "max_sftp_bytes": 1, "max_sftp_files": 1});
    assert_eq!(
        app.call(
            "PUT",
            &format!("/api/v1/tenants/{tenant}/quota"),
            Some(q.clone())
        )
        .await
        .body,
        q
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (app, token) = (app.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            app.call_as(
                &token,
                "POST",
                "/api/v1/vms",
                Some(json!({"name": format!("q{i}"), "plan": "small", "image": "tiny"})),
            )
            .await
        }));
    }
    let mut ops = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            202 => ops.push(a.body),
            403 => assert!(
                a.body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("max_vms is 3, the tenant uses 3 and this needs 1 more"),
                "{}",
                a.text
            ),
            other => panic!("{other}: {}", a.text),
        }
    }
    assert_eq!(ops.len(), 3);
    let usage = app
        .call_as(&token, "GET", "/api/v1/me/usage", None)
        .await
        .body;
    assert_eq!(
        (
            usage["usage"]["vms"].as_i64(),
            usage["quota"]["max_vms"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(
        app.call("GET", &format!("/api/v1/tenants/{tenant}/usage"), None)
            .await
            .body["usage"]["memory_mib"],
        384
    );
    for op in &ops {
        assert_eq!(
            app.wait_operation(op["id"].as_str().unwrap(), Duration::from_secs(240))
                .await["state"],
            "succeeded"
        );
    }
    // A resize that would pass the memory quota is refused too.
    app.plan("fat", 1, 4000, 1).await;
    let vm = ops[0]["vm"]["id"].as_str().unwrap();
    let a = app
        .call_as(
            &token,
            "PATCH",
            &format!("/api/v1/vms/{vm}"),
            Some(json!({"plan": "fat"})),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("max_memory_mib"), "{}", a.text);
    for op in &ops {
        let vm = op["vm"]["id"].as_str().unwrap();
        let a = app
            .call_as(&token, "DELETE", &format!("/api/v1/vms/{vm}"), None)
            .await;
        assert_eq!(a.status, 202, "{}", a.text);
        app.wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(120))
            .await;
    }
    Arc::try_unwrap(app).ok().expect("sole owner").stop().await;
}

#[tokio::test]
async fn tokens_are_revoked_at_once_and_expire() {
    let app = spawn_app(Backend::TestDriver).await;
    let (_tenant, token) = tenant_with_customer(&app, "tokens").await;
    let a = app
        .call_as(
            &token,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "deploy", "expires_at": "2999-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(a.status, 422, "too far: {}", a.text);
    let soon = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let a = app
        .call_as(
            &token,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "deploy", "expires_at": soon})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let deploy = a.body["token"].as_str().unwrap().to_string();
    let deploy_id = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.call_as(&deploy, "GET", "/api/v1/me", None).await.body["user"]["email"],
        "owner@tokens.example"
    );
    let listed = app.call_as(&token, "GET", "/api/v1/tokens", None).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 2);
    assert!(!listed.text.contains(&deploy), "secrets are never listed");
    // Only a digest is stored.
    let stored: Vec<Vec<u8>> =
        carve::on_db!(&app.state.db, c => sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(c)
        .await)
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && !deploy.as_bytes().windows(32).any(|w| w == h.as_slice()))
    );

    assert_eq!(
        app.call_as(
            &token,
            "DELETE",
            &format!("/api/v1/tokens/{deploy_id}"),
            None
        )
        .await
        .status,
        204
    );
    let a = app.call_as(&deploy, "GET", "/api/v1/me", None).await;
    assert_eq!(a.status, 401, "revoked on the next request: {}", a.text);

    // An expired token is refused.
    let (secret, digest) = carve::auth::new_token();
    let user = carve::db::users::find_by_email(&app.state.db, "owner@tokens.example")
        .await
        .unwrap()
        .unwrap();
    carve::db::tokens::insert(
        &app.state.db,
        &user.id,
        "old",
        &digest,
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await
    .unwrap();
    let a = app.call_as(&secret, "GET", "/api/v1/me", None).await;
    assert_eq!(a.status, 401);
    assert!(a.text.contains("expired"), "{}", a.text);
    app.stop().await;
}

/// The argon2 checks the app has run, from its /metrics.
async fn password_checks(app: &TestApp) -> u64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix("carve_password_checks_total "))
        .unwrap_or_else(|| panic!("no carve_password_checks_total in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_and_client() {
    let app = spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_AUTH_MAX_FAILURES_PER_CLIENT", "8")],
    )
    .await;
    let (_tenant, _token) = tenant_with_customer(&app, "throttle").await;
    let login = |email: &'static str, password: &'static str| {
        let app = &app;
        async move {
            answer(
                app.client
                    .post(format!("{}/api/v1/tokens", app.addr))
                    .json(&json!({"email": email, "password": password}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // An unknown email costs what a wrong password does: each runs one argon2 check (the
    // unknown one against a dummy hash with the same parameters), so timing tells nothing.
    let before = password_checks(&app).await;
    let a = login("nobody@throttle.example", "wrong password").await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["detail"], "the email or password is wrong");
    assert_eq!(password_checks(&app).await, before + 1, "unknown email");
    let a = login("owner@throttle.example", "wrong password").await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["detail"], "the email or password is wrong");
    assert_eq!(password_checks(&app).await, before + 2, "wrong password");
    for _ in 0..4 {
        assert_eq!(
            login("owner@throttle.example", "wrong password")
                .await
                .status,
            401
        );
    }
    // The account is locked now, even for the right password.
    let a = login("owner@throttle.example", "customer password").await;
    assert_eq!(a.status, 429, "{}", a.text);
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900);
    // The client address is limited too: 8 failures across accounts.
    for _ in 0..2 {
        assert_eq!(login("other@throttle.example", "x").await.status, 401);
    }
    assert_eq!(login("third@throttle.example", "x").await.status, 429);
    // Failed logins are audited without the password.
    let audit = app.call("GET", "/api/v1/audit?limit=50", None).await;
    assert!(
        audit.text.contains("owner@throttle.example") && audit.text.contains("\"denied\""),
        "{}",
        audit.text
    );
    assert!(!audit.text.contains("wrong password") && !audit.text.contains("customer password"));
    app.stop().await;
}

#[tokio::test]
async fn suspending_a_tenant_stops_its_vms_and_refuses_its_logins() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant, token) = tenant_with_customer(&app, "late-payer").await;
    let (vm, _) = create_vm(&app, &token, "web").await;
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/tenants/{tenant}"),
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(
        (a.status, a.body["suspended"].as_bool()),
        (200, Some(true)),
        "{}",
        a.text
    );
    // The reconciler, woken by the suspension, stops the VM at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stop = loop {
        let latest = app
            .call("GET", &format!("/api/v1/operations?target={vm}"), None)
            .await
            .body[0]
            .clone();
        if latest["kind"] == "stop" {
            break latest;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stop operation: {latest}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    app.wait_operation(stop["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(
        app.call("GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .body["state"],
        "stopped"
    );
    let a = app.call_as(&token, "GET", "/api/v1/vms", None).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("suspended"));
    let r = app
        .client
        .post(format!("{}/api/v1/tokens", app.addr))
        .json(&json!({"email": "owner@late-payer.example", "password": "customer password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let a = app
        .call(
            "POST",
            "/api/v1/vms",
            Some(json!({"name": "more", "plan": "small", "image": "tiny", "tenant_id": tenant})),
        )
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    // Reinstated, it works again.
    app.call(
        "PATCH",
        &format!("/api/v1/tenants/{tenant}"),
        Some(json!({"suspended": false})),
    )
    .await;
    assert_eq!(
        app.call_as(&token, "GET", "/api/v1/vms", None).await.status,
        200
    );
    // A tenant with VMs cannot be deleted.
    assert_eq!(
        app.call("DELETE", &format!("/api/v1/tenants/{tenant}"), None)
            .await
            .status,
        409
    );
    app.stop().await;
}

#[tokio::test]
async fn users_change_passwords_and_admins_reset_them() {
    let app = spawn_app(Backend::TestDriver).await;
    let (_tenant, token) = tenant_with_customer(&app, "pw").await;
    let a = app
        .call_as(
            &token,
            "PUT",
            "/api/v1/me/password",
            Some(json!({"current_password": "nope", "new_password": "a brand new password"})),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    let a = app
        .call_as(
            &token,
            "PUT",
            "/api/v1/me/password",
            Some(json!({"current_password": "customer password", "new_password": "short"})),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    let a = app.call_as(&token, "PUT", "/api/v1/me/password", Some(json!({"current_password": "customer password", "new_password": "a brand new password"}))).await;
    assert_eq!(a.status, 204, "{}", a.text);
    let r = app
        .client
        .post(format!("{}/api/v1/tokens", app.addr))
        .json(&json!({"email": "owner@pw.example", "password": "customer password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    password_token(&app, "owner@pw.example", "a brand new password").await;
    let user = app.call_as(&token, "GET", "/api/v1/me", None).await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/users/{user}"),
            Some(json!({"password": "reset by the admin"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    password_token(&app, "owner@pw.example", "reset by the admin").await;
    // Bad user input.
    for body in [
        json!({"email": "not-an-email", "password": "long enough pw", "role": "admin"}),
        json!({"email": "x@y.example", "password": "short", "role": "admin"}),
        json!({"email": "x@y.example", "password": "long enough pw", "role": "customer"}),
        json!({"email": "x@y.example", "password": "long enough pw", "role": "root"}),
        json!({"email": "x@y.example", "password": "long enough pw", "role": "admin", "extra": 1}),
    ] {
        let a = app.call("POST", "/api/v1/users", Some(body.clone())).await;
        assert_eq!(a.status, 422, "{body}: {}", a.text);
    }
    // Passwords appear nowhere in the audit log or the database in clear.
    let audit = app.call("GET", "/api/v1/audit?limit=200", None).await.text;
    assert!(!audit.contains("brand new password") && !audit.contains("reset by the admin"));
    let hashes: Vec<String> =
        carve::on_db!(&app.state.db, c => sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_all(c)
        .await)
        .unwrap();
    assert!(hashes.iter().all(|h| h.starts_with("$argon2id$")));
    app.stop().await;
}

#[tokio::test]
async fn the_vm_list_is_never_stale_whichever_process_writes() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (_tenant, token) = tenant_with_customer(&app, "fresh").await;
    let (vm, _) = create_vm(&app, &token, "one").await;
    let first = app.call_as(&token, "GET", "/api/v1/vms", None).await.body;
    assert_eq!(first[0]["state"], "running");
    assert_eq!(
        app.call_as(&token, "GET", "/api/v1/vms", None).await.body,
        first,
        "a repeat answers the same"
    );
    // Another process (here: plain SQL on the shared database) changes the VM.
    carve::on_db!(&app.state.db, c => sqlx::query("UPDATE vms SET state = 'paused' WHERE id = $1")
        .bind(&vm)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
    .unwrap();
    assert_eq!(
        app.call_as(&token, "GET", "/api/v1/vms", None).await.body[0]["state"],
        "paused"
    );
    carve::on_db!(&app.state.db, c => sqlx::query("DELETE FROM port_forwards WHERE vm_id = $1")
        .bind(&vm)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
    .unwrap();
    assert_eq!(
        app.call_as(&token, "GET", "/api/v1/vms", None).await.body[0]["forwards"],
        json!([])
    );
    // The admin's view of every tenant follows too.
    assert_eq!(
        app.call("GET", "/api/v1/vms", None).await.body[0]["state"],
        "paused"
    );
    carve::on_db!(&app.state.db, c => sqlx::query("UPDATE vms SET state = 'stopped' WHERE id = $1")
        .bind(&vm)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
    .unwrap();
    assert_eq!(
        app.call("GET", "/api/v1/vms", None).await.body[0]["state"],
        "stopped"
    );
    let (second, _) = create_vm(&app, &token, "two").await;
    let list = app.call_as(&token, "GET", "/api/v1/vms", None).await.body;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["id"], second.as_str());
    app.stop().await;
}
