//! `kill -9` of `carve serve` in the middle of 10 concurrent creates (and of a scale group's
//! scale-up), then a restart: every VM ends up running or cleanly gone, with no orphan
//! domain, disk or port reservation, and the group has exactly the members it wants.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, answer, carve_command, data_dir, free_port, serve_child};

/// Settings of the recovery runs: 10 VMs need more vCPUs than 2 cores sell by default.
const SETTINGS: &[(&str, &str)] = &[
    ("CARVE_CAPACITY_CPU_OVERCOMMIT", "8"),
    ("CARVE_RECONCILER_INTERVAL_SECS", "2"),
    ("CARVE_RECONCILER_OPERATION_LEASE_SECS", "6"),
];

pub async fn call(
    client: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> crate::helpers::Answer {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    answer(req.send().await.unwrap()).await
}

/// Polls operation `op` on the carve at `base` until its state is one of `states`; its body
/// then. Fails the test if that takes longer than `within`.
pub async fn wait_op_state(
    client: &reqwest::Client,
    token: &str,
    base: &str,
    op: &str,
    states: &[&str],
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let url = format!("{base}/api/v1/operations/{op}");
        let a = call(client, token, reqwest::Method::GET, url, None).await;
        if states.iter().any(|s| a.body["state"] == *s) {
            return a.body;
        }
        assert!(
            Instant::now() < deadline,
            "operation {op} on {base} did not reach {states:?} within {within:?}: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_concurrent_creates_leaves_nothing_half_made() {
    let data = data_dir();
    let _pool = crate::helpers::PoolCleanup::of(data.path());
    let http_port = free_port();
    // An admin through the CLI, as an operator would.
    let token = bootstrap(data.path(), http_port, SETTINGS);

    let mut server = serve_child(data.path(), Backend::Qemu, http_port, SETTINGS).await;
    let client = reqwest::Client::new();
    let a = call(
        &client,
        &token,
        reqwest::Method::POST,
        format!("{}/api/v1/plans", server.base),
        Some(json!({"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 1})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);

    let mut tasks = Vec::new();
    for i in 0..10 {
        let (client, token, base) = (client.clone(), token.clone(), server.base.clone());
        tasks.push(tokio::spawn(async move {
            call(&client, &token, reqwest::Method::POST, format!("{base}/api/v1/vms"), Some(json!({"name": format!("c{i}"), "plan": "small", "image": "tiny", "ports": [80]}))).await
        }));
    }
    let mut vms = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 202, "{}", a.text);
        vms.push(a.body["vm"]["id"].as_str().unwrap().to_string());
    }
    // Kill in the middle of the work: some creates done, some half-way, some not started.
    tokio::time::sleep(Duration::from_millis(250)).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let db = carve::db::connect(&crate::helpers::database_url(data.path()))
        .await
        .unwrap();
    let unfinished: i64 =
        carve::on_db!(&db, c => sqlx::query_scalar("SELECT COUNT(*) FROM operations WHERE state IN ('pending', 'running')")
            .fetch_one(c)
            .await)
            .unwrap();
    eprintln!("killed with {unfinished} of 10 creates unfinished");
    assert!(unfinished > 0, "the kill came too late to test recovery");

    let mut server = serve_child(data.path(), Backend::Qemu, http_port, SETTINGS).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let ops = call(
            &client,
            &token,
            reqwest::Method::GET,
            format!("{}/api/v1/operations", server.base),
            None,
        )
        .await
        .body;
        let unfinished = ops
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["state"] == "pending" || o["state"] == "running")
            .count();
        if unfinished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "operations still unfinished: {ops}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let domains = String::from_utf8(
        Command::new("virsh")
            .args(["-c", "qemu:///system", "list", "--all", "--name"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut running = Vec::new();
    for vm in &vms {
        let a = call(
            &client,
            &token,
            reqwest::Method::GET,
            format!("{}/api/v1/vms/{vm}", server.base),
            None,
        )
        .await;
        let has_domain = domains.lines().any(|d| d.trim() == format!("carve-{vm}"));
        let has_dir = crate::helpers::vms_with_files(&data.path().join("vms")).contains(vm);
        let ports: i64 = carve::on_db!(&db, c => sqlx::query_scalar("SELECT COUNT(*) FROM port_forwards WHERE vm_id = $1")
            .bind(vm)
            .fetch_one(c)
            .await)
            .unwrap();
        match a.status {
            200 => {
                assert_eq!(a.body["state"], "running", "{}", a.text);
                assert!(
                    has_domain && has_dir && ports == 1,
                    "{vm}: domain {has_domain}, dir {has_dir}, ports {ports}"
                );
                running.push(vm.clone());
            }
            404 => assert!(
                !has_domain && !has_dir && ports == 0,
                "{vm} is gone but left domain {has_domain}, dir {has_dir}, ports {ports}"
            ),
            other => panic!("{vm}: {other} {}", a.text),
        }
    }
    let total_ports: i64 =
        carve::on_db!(&db, c => sqlx::query_scalar("SELECT COUNT(*) FROM port_forwards")
        .fetch_one(c)
        .await)
        .unwrap();
    assert_eq!(
        total_ports as usize,
        running.len(),
        "no orphan port reservations"
    );
    let dirs = crate::helpers::vms_with_files(&data.path().join("vms")).len();
    assert_eq!(dirs, running.len(), "no orphan VM files");
    eprintln!(
        "after kill -9: {} of 10 VMs running, {} cleanly gone",
        running.len(),
        10 - running.len()
    );

    for vm in &running {
        let a = call(
            &client,
            &token,
            reqwest::Method::DELETE,
            format!("{}/api/v1/vms/{vm}", server.base),
            None,
        )
        .await;
        assert_eq!(a.status, 202, "{}", a.text);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while call(
        &client,
        &token,
        reqwest::Method::GET,
        format!("{}/api/v1/vms", server.base),
        None,
    )
    .await
    .body
    .as_array()
    .is_some_and(|v| !v.is_empty())
    {
        assert!(Instant::now() < deadline, "VMs not deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// An admin and a token for a fresh data directory, made through the CLI.
pub fn bootstrap(data: &std::path::Path, http_port: u16, settings: &[(&str, &str)]) -> String {
    use std::io::Write;
    let mut create = carve_command(data, Backend::Qemu, http_port, settings)
        .args([
            "admin",
            "create-user",
            "--email",
            "ops@example.com",
            "--role",
            "admin",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    create
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long password\n")
        .unwrap();
    assert!(create.wait().unwrap().success());
    let out = carve_command(data, Backend::Qemu, http_port, SETTINGS)
        .args([
            "admin",
            "create-token",
            "--email",
            "ops@example.com",
            "--name",
            "ci",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_scale_up_converges_on_exactly_desired_members() {
    let data = data_dir();
    let _pool = crate::helpers::PoolCleanup::of(data.path());
    let http_port = free_port();
    let token = bootstrap(data.path(), http_port, SETTINGS);
    let mut server = serve_child(data.path(), Backend::Qemu, http_port, SETTINGS).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let post = |path: &str, body: Value| {
        call(
            &client,
            &token,
            reqwest::Method::POST,
            format!("{base}{path}"),
            Some(body),
        )
    };
    let a = post(
        "/api/v1/plans",
        json!({"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = post("/api/v1/pools", json!({"name": "web", "protocol": "http"})).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let pool = a.body["id"].as_str().unwrap().to_string();
    let group = format!("{base}/api/v1/pools/{pool}/scale-group");
    let a = call(
        &client,
        &token,
        reqwest::Method::PUT,
        group.clone(),
        Some(
            json!({"template": {"plan": "small", "image": "tiny", "port": 80},
            "min": 0, "max": 4, "desired": 3}),
        ),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    // Kill while the members are being made.
    let db = carve::db::connect(&crate::helpers::database_url(data.path()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let creating: i64 = carve::on_db!(&db, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM operations WHERE kind = 'create' AND state IN ('pending', 'running')",
        )
        .fetch_one(c)
        .await)
        .unwrap();
        if creating > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no member's create started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let members: i64 =
        carve::on_db!(&db, c => sqlx::query_scalar("SELECT COUNT(*) FROM scale_group_members")
        .fetch_one(c)
        .await)
        .unwrap();
    eprintln!("killed with {members} of 3 members recorded");

    // After the restart the group has exactly 3 members, each running, and nothing else.
    let mut server = serve_child(data.path(), Backend::Qemu, http_port, SETTINGS).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let g = call(&client, &token, reqwest::Method::GET, group.clone(), None).await;
        assert_eq!(g.status, 200, "{}", g.text);
        let members = g.body["members"].as_array().cloned().unwrap_or_default();
        let unfinished: i64 = carve::on_db!(&db, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM operations WHERE state IN ('pending', 'running')",
        )
        .fetch_one(c)
        .await)
        .unwrap();
        if members.len() == 3
            && members.iter().all(|m| m["vm_state"] == "running")
            && unfinished == 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "the group is {}", g.text);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more passes change nothing: no duplicate, no orphan.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let g = call(&client, &token, reqwest::Method::GET, group.clone(), None).await;
    let ids: Vec<String> = g.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["vm_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{}", g.text);
    let live: Vec<String> =
        carve::on_db!(&db, c => sqlx::query_scalar("SELECT id FROM vms WHERE deleted_at IS NULL ORDER BY id")
            .fetch_all(c)
            .await)
            .unwrap();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        live, sorted,
        "every live VM is a member, and each member is live"
    );
    let domains = String::from_utf8(
        Command::new("virsh")
            .args(["-c", "qemu:///system", "list", "--all", "--name"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let dirs = crate::helpers::vms_with_files(&data.path().join("vms")).len();
    assert_eq!(dirs, 3, "no orphan VM files");
    for id in &ids {
        assert!(
            domains.lines().any(|d| d.trim() == format!("carve-{id}")),
            "{id} has no domain"
        );
    }

    let a = call(
        &client,
        &token,
        reqwest::Method::DELETE,
        group.clone(),
        None,
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let g = call(&client, &token, reqwest::Method::GET, group.clone(), None).await;
        let left: i64 = carve::on_db!(&db, c => sqlx::query_scalar("SELECT COUNT(*) FROM vms WHERE deleted_at IS NULL")
            .fetch_one(c)
            .await)
            .unwrap();
        if g.status == 404 && left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not go: {}",
            g.text
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
