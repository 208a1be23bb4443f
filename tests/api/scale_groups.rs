//! Scale groups on libvirt's test driver (the group's own logic; real guests are in
//! `scale_groups_guests.rs`): bad input, counts up and down, a shortfall over quota that heals
//! when the quota grows, the refresh's states, another tenant's pool, deleting.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::tenancy::tenant_with_customer;

/// A pool of `token`'s tenant; returns its id.
pub async fn pool(app: &TestApp, token: &str, name: &str) -> String {
    let a = app
        .call_as(
            token,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": name, "protocol": "http",
                "health_check": {"interval_s": 1, "timeout_s": 1, "rise": 1, "fall": 2}})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["id"].as_str().unwrap().to_string()
}

/// A group request with `desired` members of plan small, image tiny, port 80.
fn group(min: u32, max: u32, desired: u32) -> Value {
    json!({"template": {"plan": "small", "image": "tiny", "port": 80},
           "min": min, "max": max, "desired": desired})
}

/// Waits until the group has `n` members not leaving and `check` holds; returns it.
pub async fn until_group(
    app: &TestApp,
    token: &str,
    pool: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let g = app
            .call_as(
                token,
                "GET",
                &format!("/api/v1/pools/{pool}/scale-group"),
                None,
            )
            .await;
        assert_eq!(g.status, 200, "{}", g.text);
        if check(&g.body) {
            return g.body;
        }
        assert!(Instant::now() < deadline, "{what}: the group is {}", g.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Members of the group not chosen to go.
pub fn staying(g: &Value) -> Vec<&Value> {
    g["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["retiring"] == false).collect())
        .unwrap_or_default()
}

/// The tenant's VMs that are not deleted.
async fn live_vms(app: &TestApp, token: &str) -> Vec<Value> {
    let a = app.call_as(token, "GET", "/api/v1/vms", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.body.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn bad_scale_group_requests_say_what_to_fix_and_change_nothing() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (_t, alice) = tenant_with_customer(&app, "acme").await;
    let (_u, bob) = tenant_with_customer(&app, "globex").await;
    let web = pool(&app, &alice, "web").await;
    let path = format!("/api/v1/pools/{web}/scale-group");
    // No group yet.
    let a = app.call_as(&alice, "GET", &path, None).await;
    assert_eq!(a.status, 404, "{}", a.text);
    // Malformed JSON, unknown fields.
    let a = app
        .raw("PUT", &path, "application/json", b"{\"min\": 1,".to_vec())
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    let mut unknown = group(1, 3, 1);
    unknown["spare"] = json!(true);
    let a = app.call_as(&alice, "PUT", &path, Some(unknown)).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert!(a.text.contains("spare"), "{}", a.text);
    // Each bad field named, all at once.
    let bad = json!({"template": {"plan": "small", "image": "tiny", "port": 0,
        "user_data": "x".repeat(70_000), "ssh_keys": ["not a key"], "root_password": "short"},
        "min": 4, "max": 101, "desired": 200, "max_surge": 0});
    let a = app.call_as(&alice, "PUT", &path, Some(bad)).await;
    assert_eq!(a.status, 422, "{}", a.text);
    for field in [
        "template.port",
        "template.user_data",
        "template.ssh_keys",
        "template.root_password",
        "max",
        "desired",
        "max_surge",
    ] {
        assert!(a.text.contains(field), "{field} not named: {}", a.text);
    }
    assert!(
        !a.text.contains("short\""),
        "the password is echoed: {}",
        a.text
    );
    // Unknown plan and image, min above max, desired outside min..max.
    let mut r = group(1, 3, 1);
    r["template"]["plan"] = json!("huge");
    let a = app.call_as(&alice, "PUT", &path, Some(r)).await;
    assert!(
        a.status == 422 && a.text.contains("template.plan"),
        "{}",
        a.text
    );
    let mut r = group(1, 3, 1);
    r["template"]["image"] = json!("windows");
    let a = app.call_as(&alice, "PUT", &path, Some(r)).await;
    assert!(
        a.status == 422 && a.text.contains("template.image"),
        "{}",
        a.text
    );
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(3, 2, 2)))
        .await;
    assert!(
        a.status == 422 && a.text.contains("min <= max"),
        "{}",
        a.text
    );
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(1, 2, 3)))
        .await;
    assert!(a.status == 422 && a.text.contains("min..max"), "{}", a.text);
    // Following load needs at least one member to measure.
    let mut r = group(0, 2, 0);
    r["target"] = json!({"metric": "connections", "value": 5});
    let a = app.call_as(&alice, "PUT", &path, Some(r)).await;
    assert!(a.status == 422 && a.text.contains("min >= 1"), "{}", a.text);
    // Another tenant's pool is not found, for reading and writing.
    for method in ["GET", "PUT", "DELETE"] {
        let body = (method == "PUT").then(|| group(1, 3, 1));
        let a = app.call_as(&bob, method, &path, body).await;
        assert_eq!(a.status, 404, "{method}: {}", a.text);
    }
    let a = app
        .call_as(&bob, "POST", &format!("{path}/refresh"), None)
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    // Nothing was made.
    assert!(live_vms(&app, &alice).await.is_empty());
    let a = app.call_as(&alice, "GET", &path, None).await;
    assert_eq!(a.status, 404, "{}", a.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_follows_desired_reports_a_quota_shortfall_and_deletes_its_vms() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant, alice) = tenant_with_customer(&app, "acme").await;
    let q = json!({"max_vms": 2, "max_vcpus": 8, "max_memory_mib": 4096, "max_disk_gib": 20,
        "max_sftp_bytes": 1000, "max_sftp_files": 10});
    let a = app
        .call(
            "PUT",
            &format!("/api/v1/tenants/{tenant}/quota"),
            Some(q.clone()),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let web = pool(&app, &alice, "web").await;
    let path = format!("/api/v1/pools/{web}/scale-group");
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(1, 4, 1)))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["desired"], 1);
    assert_eq!(a.body["template"]["version"], 1);
    let g = until_group(&app, &alice, &web, "one member", |g| staying(g).len() == 1).await;
    assert_eq!(g["members"][0]["vm_name"], "web-1", "{g}");
    // Up to 3 with a quota of 2 VMs: one is made, the shortfall is said on the group.
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(1, 4, 3)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let g = until_group(&app, &alice, &web, "a shortfall", |g| {
        staying(g).len() == 2 && g["shortfall"].is_string()
    })
    .await;
    let shortfall = g["shortfall"].as_str().unwrap();
    assert!(
        shortfall.contains("1 of the 3 members wanted") && shortfall.contains("quota"),
        "{shortfall}"
    );
    assert_eq!(live_vms(&app, &alice).await.len(), 2, "nothing half-made");
    // The quota grows: the group catches up and the shortfall is gone.
    let mut more = q.clone();
    more["max_vms"] = json!(5);
    let a = app
        .call(
            "PUT",
            &format!("/api/v1/tenants/{tenant}/quota"),
            Some(more),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let g = until_group(&app, &alice, &web, "three members", |g| {
        staying(g).len() == 3 && g["shortfall"].is_null()
    })
    .await;
    let names: Vec<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["vm_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"], "{g}");
    // A member is not stopped or resized on its own: the group owns it.
    let member = g["members"][1]["vm_id"].as_str().unwrap();
    let a = app
        .call_as(
            &alice,
            "POST",
            &format!("/api/v1/vms/{member}/actions"),
            Some(json!({"action": "stop"})),
        )
        .await;
    assert!(
        a.status == 409 && a.text.contains("scale group"),
        "{}",
        a.text
    );
    // Down to 1: the newest go, drained and deleted.
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(1, 4, 1)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let g = until_group(&app, &alice, &web, "back to one", |g| {
        g["members"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    assert_eq!(g["members"][0]["vm_name"], "web-1", "the oldest stays: {g}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while live_vms(&app, &alice).await.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the retired VMs were not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A VM deleted behind the group's back is replaced.
    let first = g["members"][0]["vm_id"].as_str().unwrap().to_string();
    let a = app
        .call_as(&alice, "DELETE", &format!("/api/v1/vms/{first}"), None)
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let g = until_group(&app, &alice, &web, "a replacement", |g| {
        let m = staying(g);
        m.len() == 1 && m[0]["vm_id"] != first.as_str()
    })
    .await;
    assert_eq!(staying(&g)[0]["vm_name"], "web-4", "{g}");
    // Every decision is in the audit log with its reason, under the tenant.
    let audit = app
        .call_as(&alice, "GET", "/api/v1/audit?limit=200", None)
        .await;
    for says in [
        "scale group: created VM web-1",
        "scale group: shortfall",
        "scale group: retired VM web-3: desired was lowered",
    ] {
        assert!(audit.text.contains(says), "{says} not in {}", audit.text);
    }
    // The pool cannot go while it has a group; the group goes with its VMs.
    let a = app
        .call_as(&alice, "DELETE", &format!("/api/v1/pools/{web}"), None)
        .await;
    assert!(
        a.status == 409 && a.text.contains("scale group"),
        "{}",
        a.text
    );
    let a = app.call_as(&alice, "DELETE", &path, None).await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.body["deleting"], true);
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(1, 4, 1)))
        .await;
    assert!(a.status == 409 || a.status == 201, "{}", a.text);
    if a.status == 201 {
        // It was already gone: delete the new one too.
        let a = app.call_as(&alice, "DELETE", &path, None).await;
        assert_eq!(a.status, 202, "{}", a.text);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = app.call_as(&alice, "GET", &path, None).await;
        if a.status == 404 && live_vms(&app, &alice).await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not go: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = app
        .call_as(&alice, "DELETE", &format!("/api/v1/pools/{web}"), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_starts_pauses_resumes_and_cancels_as_an_operation() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant, alice) = tenant_with_customer(&app, "acme").await;
    // One VM at most: a refresh with a member cannot make its replacement, so it stays
    // running while it is paused, resumed and cancelled.
    let q = json!({"max_vms": 1, "max_vcpus": 8, "max_memory_mib": 4096, "max_disk_gib": 20,
        "max_sftp_bytes": 1000, "max_sftp_files": 10});
    let a = app
        .call("PUT", &format!("/api/v1/tenants/{tenant}/quota"), Some(q))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let web = pool(&app, &alice, "web").await;
    let path = format!("/api/v1/pools/{web}/scale-group");
    let refresh = format!("{path}/refresh");
    // Nothing to pause without a group's refresh.
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(0, 2, 0)))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = app
        .call_as(&alice, "POST", &refresh, Some(json!({"action": "pause"})))
        .await;
    assert!(
        a.status == 409 && a.text.contains("not running"),
        "{}",
        a.text
    );
    let a = app
        .call_as(&alice, "POST", &refresh, Some(json!({"action": "explode"})))
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    // A template change starts one.
    let mut changed = group(0, 2, 0);
    changed["template"]["user_data"] = json!("#!/bin/sh\necho v2\n");
    let a = app
        .call_as(&alice, "PUT", &path, Some(changed.clone()))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["template"]["version"], 2);
    assert_eq!(a.body["refresh"]["state"], "running", "{}", a.text);
    let op = a.body["refresh"]["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    // With no member made of an older template, it is done at once.
    let done = app.wait_operation(&op, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["kind"], "refresh");
    // The same template again changes nothing.
    let a = app.call_as(&alice, "PUT", &path, Some(changed)).await;
    assert_eq!(a.body["template"]["version"], 2, "{}", a.text);
    assert_eq!(a.body["refresh"]["state"], "none", "{}", a.text);
    // With members: start, pause, resume, cancel.
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(1, 2, 1)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    until_group(&app, &alice, &web, "one member", |g| staying(g).len() == 1).await;
    let started = app.call_as(&alice, "POST", &refresh, None).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let op = started.body["refresh"]["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    until_group(&app, &alice, &web, "the refresh's shortfall", |g| {
        g["shortfall"].as_str().is_some_and(|s| s.contains("quota"))
    })
    .await;
    // A second start is refused while one is under way.
    let a = app.call_as(&alice, "POST", &refresh, None).await;
    assert!(a.status == 409 && a.text.contains("already"), "{}", a.text);
    let a = app
        .call_as(&alice, "POST", &refresh, Some(json!({"action": "pause"})))
        .await;
    assert_eq!(a.body["refresh"]["state"], "paused", "{}", a.text);
    let a = app
        .call_as(&alice, "POST", &refresh, Some(json!({"action": "resume"})))
        .await;
    assert_eq!(a.body["refresh"]["state"], "running", "{}", a.text);
    let a = app
        .call_as(&alice, "POST", &refresh, Some(json!({"action": "cancel"})))
        .await;
    assert_eq!(a.body["refresh"]["state"], "none", "{}", a.text);
    let op = app
        .call_as(&alice, "GET", &format!("/api/v1/operations/{op}"), None)
        .await;
    assert_eq!(op.body["state"], "failed", "{}", op.text);
    assert!(op.text.contains("cancelled by"), "{}", op.text);
    app.stop().await;
}

/// Sets the lease on driving the group of `pool` in the database.
async fn set_lease(app: &TestApp, pool: &str, holder: &str, until_ms: i64) {
    carve::on_db!(&app.state.db, c => sqlx::query(
        "UPDATE scale_groups SET controller = $2, controller_until_ms = $3 WHERE pool_id = $1",
    )
    .bind(pool)
    .bind(holder)
    .bind(until_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
}

#[tokio::test]
async fn only_the_process_holding_a_groups_lease_drives_it() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let (_t, alice) = tenant_with_customer(&app, "acme").await;
    let pool = pool(&app, &alice, "web").await;
    let path = format!("/api/v1/pools/{pool}/scale-group");
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(0, 5, 1)))
        .await;
    assert!(a.status == 201 || a.status == 200, "{}", a.text);
    until_group(&app, &alice, &pool, "one member", |g| staying(g).len() == 1).await;

    // Another machine's carve holds the lease: this process leaves the group alone.
    let far = chrono::Utc::now().timestamp_millis() + 3_600_000;
    set_lease(&app, &pool, "another-machine/4242/1", far).await;
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(0, 5, 3)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        live_vms(&app, &alice).await.len(),
        1,
        "the lease holder decides, not us"
    );

    // Its lease runs out: this process takes over and converges.
    set_lease(&app, &pool, "another-machine/4242/1", 0).await;
    until_group(&app, &alice, &pool, "three members", |g| {
        staying(g).len() == 3
    })
    .await;

    // A holder on this machine that died is taken over at once, whatever its lease says.
    let host = app
        .state
        .prov
        .owner
        .id
        .split('/')
        .next()
        .unwrap()
        .to_string();
    set_lease(&app, &pool, &format!("{host}/4194303/1"), far).await;
    let a = app
        .call_as(&alice, "PUT", &path, Some(group(0, 5, 2)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    until_group(&app, &alice, &pool, "two members", |g| {
        staying(g).len() == 2
    })
    .await;
    app.stop().await;
}
