//! The panel in a real browser (headless Chromium driven by selenium): logging in and out,
//! and the customer, admin and isolation journeys of `tests/browser/panel.py`, with axe-core
//! on every main page and screenshots under `target/screenshots/`.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::sftp::account;
use crate::tenancy::{create_vm, tenant_with_customer};

/// Runs a browser script with `args`; fails with its output unless it prints "ok".
pub async fn run_browser(script: &str, args: &[&str]) {
    let python = std::env::var("CARVETEST_PYTHON")
        .unwrap_or_else(|_| "/opt/carve-testenv/bin/python".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/browser").join(script))
        .args(args)
        .env("CARVETEST_SCREENSHOTS", root.join("target/screenshots"))
        .output()
        .await
        .expect("python with selenium (tests/setup-test-tools.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim().ends_with("ok"),
        "browser run {script} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Adds a user with a password through the API.
async fn user(app: &TestApp, email: &str, role: &str, tenant: Option<&str>) {
    let a = app
        .call("POST", "/api/v1/users", Some(json!({"email": email, "password": "a browser password", "role": role, "tenant_id": tenant})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
}

#[tokio::test]
async fn log_in_and_out_in_chromium() {
    let app = spawn_app(Backend::TestDriver).await;
    user(
        &app,
        "dora@example.com",
        "customer",
        Some("tn_0000000000000000"),
    )
    .await;
    run_browser(
        "login.py",
        &[&app.addr, "dora@example.com", "a browser password"],
    )
    .await;
    let audit = app.call("GET", "/api/v1/audit", None).await.text;
    assert!(
        audit.contains("\"login\"") && audit.contains("\"logout\""),
        "{audit}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_runs_a_vm_sftp_and_tokens_from_the_panel() {
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    app.plan("bigger", 1, 160, 2).await;
    let (tenant, _) = tenant_with_customer(&app, "shopco").await;
    user(&app, "browser@shopco.example", "customer", Some(&tenant)).await;
    let sftp_port = app.sftp_port.to_string();
    run_browser(
        "panel.py",
        &[
            "customer",
            &app.addr,
            "browser@shopco.example",
            "a browser password",
            &sftp_port,
            "small",
            "bigger",
        ],
    )
    .await;
    let vms = app.call("GET", "/api/v1/vms", None).await;
    assert_eq!(vms.body.as_array().map(Vec::len), Some(0), "{}", vms.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_logs_in_at_the_console_and_resets_the_root_password_in_the_panel() {
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant, token) = tenant_with_customer(&app, "termco").await;
    user(&app, "browser@termco.example", "customer", Some(&tenant)).await;
    let (first, second) = ("a first console password", "a second console password");
    let a = app
        .call_as(
            &token,
            "POST",
            "/api/v1/vms",
            Some(json!({"name": "term", "plan": "small", "image": "tiny", "root_password": first})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let op = a.body["id"].as_str().unwrap();
    let done = app.wait_operation(op, Duration::from_secs(240)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let vm = a.body["vm"]["id"].as_str().unwrap().to_string();
    run_browser(
        "panel.py",
        &[
            "console",
            &app.addr,
            "browser@termco.example",
            "a browser password",
            &vm,
            first,
            second,
        ],
    )
    .await;
    // Each console opened in the browser is audited under the VM, as is the password reset.
    let audit = app.call("GET", "/api/v1/audit?limit=500", None).await;
    let actions: Vec<&str> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == vm.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let opened = actions.iter().filter(|a| **a == "console opened").count();
    assert!(opened >= 4, "four consoles were opened: {actions:?}");
    assert!(
        actions.iter().any(|a| a.contains("password")),
        "the reset is audited: {actions:?}"
    );
    assert!(!audit.text.contains(first) && !audit.text.contains(second));
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_customer_runs_a_scale_group_from_the_pool_page() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant, _) = tenant_with_customer(&app, "groupco").await;
    user(&app, "browser@groupco.example", "customer", Some(&tenant)).await;
    run_browser(
        "panel.py",
        &[
            "group",
            &app.addr,
            "browser@groupco.example",
            "a browser password",
        ],
    )
    .await;
    let vms = app.call("GET", "/api/v1/vms", None).await;
    assert_eq!(vms.body.as_array().map(Vec::len), Some(0), "{}", vms.text);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_manages_tenants_users_and_plans_from_the_panel() {
    let app = spawn_app(Backend::TestDriver).await;
    user(&app, "root@example.com", "admin", None).await;
    run_browser(
        "panel.py",
        &["admin", &app.addr, "root@example.com", "a browser password"],
    )
    .await;
    let tenants = app.call("GET", "/api/v1/tenants", None).await;
    let initech = tenants
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "initech")
        .expect("the tenant made in the browser")
        .clone();
    assert_eq!(initech["suspended"], true, "{initech}");
    let id = initech["id"].as_str().unwrap();
    let quota = app
        .call("GET", &format!("/api/v1/tenants/{id}/quota"), None)
        .await;
    assert_eq!(quota.body["max_vms"], 2, "{}", quota.text);
    let uploaded = app.call("GET", "/api/v1/images/tiny-upload", None).await;
    assert_eq!(uploaded.body["source"], "uploaded", "{}", uploaded.text);
    assert_eq!(uploaded.body["visible"], true, "{}", uploaded.text);
    // The admin's actions are attributed to the admin and filed under the tenant acted on.
    let audit = app.call("GET", "/api/v1/audit?limit=500", None).await;
    let suspension = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.ends_with("/suspension"))
        })
        .expect("the suspension is audited")
        .clone();
    assert_eq!(suspension["actor"], "root@example.com", "{suspension}");
    assert_eq!(suspension["tenant_id"], id, "{suspension}");
    // Catalogue changes concern no tenant: no tenant's activity shows them.
    let plan = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "panel POST /admin/plans")
        .expect("the plan is audited")
        .clone();
    assert_eq!(plan["tenant_id"], serde_json::Value::Null, "{plan}");
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_pages_are_not_found_and_forged_forms_change_nothing() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (acme, alice) = tenant_with_customer(&app, "acme").await;
    let (globex, _) = tenant_with_customer(&app, "globex").await;
    user(&app, "mallory@globex.example", "customer", Some(&globex)).await;
    let (vm, _) = create_vm(&app, &alice, "shop").await;
    let sftp = account(
        &app,
        json!({"username": "acmefiles", "password": "a long password", "tenant_id": acme}),
    )
    .await;
    let tokens = app.call_as(&alice, "GET", "/api/v1/tokens", None).await;
    let token_id = tokens.body[0]["id"].as_str().unwrap().to_string();
    run_browser(
        "panel.py",
        &[
            "isolation",
            &app.addr,
            "mallory@globex.example",
            "a browser password",
            &vm,
            &sftp,
            &token_id,
        ],
    )
    .await;
    let me = app.call_as(&alice, "GET", "/api/v1/me", None).await;
    assert_eq!(me.status, 200, "alice's token was revoked: {}", me.text);
    let still = app
        .call_as(&alice, "GET", &format!("/api/v1/vms/{vm}"), None)
        .await;
    assert_eq!(still.status, 200, "{}", still.text);
    app.stop().await;
}
