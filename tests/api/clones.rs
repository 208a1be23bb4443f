//! carve as clones on one PostgreSQL database, and the database moving under carve: two
//! `carve serve` processes with their own data directories (standing in for two machines)
//! share sessions, tokens, SFTP quotas and operations; a PostgreSQL restart gives 503s and
//! heals without restarting carve; `carve db copy` moves an installation from SQLite.
//! These run when the suite runs on PostgreSQL (`CARVETEST_POSTGRES`), as CI's second pass does.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PoolCleanup, answer, carve_command, data_dir, database_url, free_port, on_postgres,
    serve_child, spawn_app_with,
};
use crate::recovery::{bootstrap, call, wait_op_state};
use crate::sftp::{Login, base64, data, paramiko};

const SETTINGS: &[(&str, &str)] = &[
    ("CARVE_RECONCILER_INTERVAL_SECS", "2"),
    ("CARVE_RECONCILER_OPERATION_LEASE_SECS", "6"),
];

/// Borrowed settings, as the helpers take them.
fn as_refs(s: &[(String, String)]) -> Vec<(&str, &str)> {
    s.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Whether to run: these tests need PostgreSQL.
fn postgres_or_skip(test: &str) -> bool {
    if !on_postgres() {
        eprintln!("{test}: runs on PostgreSQL only (set CARVETEST_POSTGRES); skipped");
    }
    on_postgres()
}

/// The value of a `Set-Cookie` named `name`.
fn cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}

/// Logs in through the panel of the carve at `base`; returns the session cookie.
async fn panel_login(client: &reqwest::Client, base: &str, email: &str, password: &str) -> String {
    let r = client.get(format!("{base}/login")).send().await.unwrap();
    let csrf = cookie(&r, "carve_login_csrf").expect("a login csrf cookie");
    let r = client
        .post(format!("{base}/login"))
        .header("cookie", format!("carve_login_csrf={csrf}"))
        .form(&[("email", email), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login on {base}");
    format!("carve_session={}", cookie(&r, "carve_session").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clones_share_sessions_tokens_sftp_quota_and_operations() {
    if !postgres_or_skip("two_clones") {
        return;
    }
    let (one_dir, two_dir, shared) = (data_dir(), data_dir(), data_dir());
    let _pool = PoolCleanup::of(one_dir.path());
    let url = database_url(one_dir.path());
    let (root, key) = (shared.path().join("sftp"), shared.path().join("host_key"));
    let (sftp_one, sftp_two) = (free_port(), free_port());
    let settings = |sftp: u16| -> Vec<(String, String)> {
        let mut s: Vec<(String, String)> = SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.push(("CARVE_DATABASE_URL".into(), url.clone()));
        s.push(("CARVE_SFTP_ROOT".into(), root.display().to_string()));
        s.push(("CARVE_SFTP_HOST_KEY".into(), key.display().to_string()));
        s.push(("CARVE_SFTP_LISTEN".into(), format!("127.0.0.1:{sftp}")));
        s
    };
    let (s1, s2) = (settings(sftp_one), settings(sftp_two));
    let (e1, e2) = (as_refs(&s1), as_refs(&s2));
    let token = bootstrap(one_dir.path(), 0, &e1);
    let mut one = serve_child(one_dir.path(), Backend::Qemu, free_port(), &e1).await;
    let two = serve_child(two_dir.path(), Backend::Qemu, free_port(), &e2).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = |base: &str, path: &str| format!("{base}/api/v1{path}");

    // A tenant and its customer, made through one, are known to two.
    let a = call(
        &client,
        &token,
        Method::POST,
        api(&one.base, "/tenants"),
        Some(json!({"name": "clones"})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let tenant = a.body["id"].as_str().unwrap().to_string();
    let quota = 1 << 20;
    let a = call(&client, &token, Method::PUT, api(&two.base, &format!("/tenants/{tenant}/quota")), Some(json!({"max_vms": 2, "max_vcpus": 2, "max_memory_mib": 512, "max_disk_gib": 4, "max_sftp_bytes": quota, "max_sftp_files": 10}))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = call(&client, &token, Method::POST, api(&two.base, "/users"), Some(json!({"email": "owner@clones.example", "password": "clone password", "role": "customer", "tenant_id": tenant}))).await;
    assert_eq!(a.status, 201, "{}", a.text);

    // A panel session made on one is valid on two.
    let session = panel_login(&client, &one.base, "owner@clones.example", "clone password").await;
    let r = client
        .get(format!("{}/", two.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the session made on one works on two");
    assert!(r.text().await.unwrap().contains("owner@clones.example"));

    // A token made on two works on one; revoked on one, both refuse it at once.
    let r = client
        .post(api(&two.base, "/tokens"))
        .json(
            &json!({"email": "owner@clones.example", "password": "clone password", "name": "cli"}),
        )
        .send()
        .await
        .unwrap();
    let a = answer(r).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let (customer, token_id) = (
        a.body["token"].as_str().unwrap().to_string(),
        a.body["id"].as_str().unwrap().to_string(),
    );
    for base in [&one.base, &two.base] {
        let a = call(&client, &customer, Method::GET, api(base, "/vms"), None).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let a = call(
        &client,
        &customer,
        Method::DELETE,
        api(&one.base, &format!("/tokens/{token_id}")),
        None,
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.text);
    for base in [&two.base, &one.base] {
        let a = call(&client, &customer, Method::GET, api(base, "/vms"), None).await;
        assert_eq!(
            a.status, 401,
            "a revoked token is refused by {base} at once"
        );
    }

    // The SFTP quota holds to the byte across both: four 400 KiB uploads at once, two
    // through each clone, into homes on the filesystem both share.
    let a = call(
        &client,
        &token,
        Method::POST,
        api(&one.base, "/sftp-accounts"),
        Some(json!({"username": "clone", "password": "sftp password", "tenant_id": tenant})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let account = a.body["id"].as_str().unwrap().to_string();
    let login = Login::Password("sftp password".into());
    let mut uploads = Vec::new();
    for (i, port) in [sftp_one, sftp_two, sftp_one, sftp_two]
        .into_iter()
        .enumerate()
    {
        let login = login.clone();
        uploads.push(tokio::spawn(async move {
            paramiko(port, "clone", &login, json!([{"op": "write", "path": format!("part{i}"), "data": base64(&data(400 << 10, i as u64))}])).await
        }));
    }
    let mut refused = 0;
    for u in uploads {
        let v = u.await.unwrap();
        if v["results"][0]["ok"] == false {
            assert!(
                v["results"][0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("quota exceeded"),
                "{v}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 1, "some upload must have met the quota");
    let stored: u64 = std::fs::read_dir(root.join(&account))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(
        stored, quota as u64,
        "across both clones, exactly the quota was stored"
    );

    // An operation started on one is finished by two after a kill -9 of one.
    let a = call(
        &client,
        &token,
        Method::POST,
        api(&one.base, "/plans"),
        Some(json!({"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 1})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = call(
        &client,
        &token,
        Method::POST,
        api(&one.base, "/vms"),
        Some(json!({"name": "handed-over", "plan": "small", "image": "tiny", "tenant_id": tenant})),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let (vm, op) = (
        a.body["vm"]["id"].as_str().unwrap().to_string(),
        a.body["id"].as_str().unwrap().to_string(),
    );
    // Killed mid-operation: once it runs, and before it ends.
    let at_kill = wait_op_state(
        &client,
        &token,
        &two.base,
        &op,
        &["running"],
        Duration::from_secs(30),
    )
    .await;
    one.child.kill().unwrap(); // SIGKILL
    one.child.wait().unwrap();
    let killed = Instant::now();
    let finished = wait_op_state(
        &client,
        &token,
        &two.base,
        &op,
        &["succeeded", "failed"],
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(finished["state"], "succeeded", "{finished}");
    eprintln!(
        "two finished the operation {:.1} s after one was killed, from step {}",
        killed.elapsed().as_secs_f64(),
        at_kill["steps"].as_array().map_or(0, Vec::len)
    );
    let a = call(
        &client,
        &token,
        Method::GET,
        api(&two.base, &format!("/vms/{vm}")),
        None,
    )
    .await;
    assert_eq!(a.body["state"], "running", "{}", a.text);

    // Two deletes it; nothing is left behind.
    let a = call(
        &client,
        &token,
        Method::DELETE,
        api(&two.base, &format!("/vms/{vm}")),
        None,
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let op = a.body["id"].as_str().unwrap().to_string();
    let deleted = wait_op_state(
        &client,
        &token,
        &two.base,
        &op,
        &["succeeded", "failed"],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(deleted["state"], "succeeded", "{deleted}");
    drop(two);
}

/// A throwaway PostgreSQL cluster of one test, stopped when dropped.
struct PrivateCluster {
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivateCluster {
    fn script() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg-cluster.sh")
    }

    /// Starts (or restarts) the cluster; returns its server URL.
    fn start(&self) -> String {
        let out = std::process::Command::new(Self::script())
            .arg("start")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "the private cluster starts");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn stop(&self) {
        let ok = std::process::Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "the private cluster stops");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_gives_503s_and_heals_without_restarting_carve() {
    if !postgres_or_skip("postgres_restart") {
        return;
    }
    let home = data_dir();
    let cluster = PrivateCluster {
        dir: home.path().join("pg"),
        port: free_port(),
    };
    let server = cluster.start();
    let made = std::process::Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args(["-qAtc", "CREATE DATABASE carve"])
        .status()
        .unwrap();
    assert!(made.success());
    let url = format!("{server}/carve");
    let app = spawn_app_with(Backend::TestDriver, &[("CARVE_DATABASE_URL", &url)]).await;
    assert_eq!(app.call("GET", "/api/v1/vms", None).await.status, 200);

    cluster.stop();
    for path in ["/api/v1/vms", "/api/v1/tenants"] {
        let a = app.call("GET", path, None).await;
        assert_eq!(
            a.status, 503,
            "{path} while the database is down: {}",
            a.text
        );
        assert!(a.text.contains("cannot reach its database"), "{}", a.text);
        assert!(
            !a.text.contains("carve:"),
            "no connection detail leaks: {}",
            a.text
        );
    }
    let r = app
        .client
        .get(format!("{}/api/v1/vms", app.addr))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "5");
    let health = app
        .client
        .get(format!("{}/healthz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);

    cluster.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = app.call("GET", "/api/v1/vms", None).await;
        if a.status == 200 {
            break;
        }
        assert_eq!(a.status, 503, "only 503s while it comes back: {}", a.text);
        assert!(
            Instant::now() < deadline,
            "carve did not recover: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Writes work again too, and the feed follows them.
    let a = app
        .call(
            "POST",
            "/api/v1/tenants",
            Some(json!({"name": "after-restart"})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_copy_moves_an_installation_from_sqlite_and_refuses_a_full_target() {
    if !postgres_or_skip("db_copy") {
        return;
    }
    // An installation on SQLite with users, a token, a plan, VMs, operations, audit entries
    // and events.
    let data = data_dir();
    let sqlite = format!("sqlite://{}", data.path().join("carve.db").display());
    let app = spawn_app_with(Backend::TestDriver, &[("CARVE_DATABASE_URL", &sqlite)]).await;
    let token = app.admin_token.clone();
    app.plan("small", 1, 128, 1).await;
    for i in 0..3 {
        let op = app
            .run_op(
                "POST",
                "/api/v1/vms",
                Some(json!({"name": format!("copied-{i}"), "plan": "small", "image": "tiny"})),
            )
            .await;
        assert_eq!(op["state"], "succeeded", "{op}");
    }
    let vms_before = app.call("GET", "/api/v1/vms", None).await.body;
    // The feed was trimmed (as after a quiet day): the copy's ids must still go on after the
    // last one given out.
    let last_event = carve::db::events::last_id(&app.state.db).await.unwrap();
    assert!(last_event > 0);
    carve::on_db!(&app.state.db, c => sqlx::query("DELETE FROM events").execute(c).await.map(|_| ()))
        .unwrap();
    app.stop().await;

    let target_dir = data_dir();
    let target = database_url(target_dir.path());
    let copy = |to: &str| {
        carve_command(data.path(), Backend::TestDriver, 0, &[])
            .args(["db", "copy", "--from", &sqlite, "--to", to])
            .output()
            .unwrap()
    };
    let out = copy(&target);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the counts match"), "{stdout}");
    assert!(
        !stdout.contains(
            target
                .split('@')
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
        ),
        "the password is not printed"
    );
    for table in [
        "vms",
        "operations",
        "audit_log",
        "api_tokens",
        "view_versions",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(table))
            .unwrap();
        let n: i64 = line.split_whitespace().last().unwrap().parse().unwrap();
        assert!(n > 0, "{table} copied no rows: {stdout}");
    }

    // A second copy into the now full target is refused and changes nothing.
    let out = copy(&target);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds carve tables"));

    // carve runs on the copy: the same token, the same VMs.
    let serve = [("CARVE_DATABASE_URL", target.as_str())];
    let server = serve_child(target_dir.path(), Backend::TestDriver, free_port(), &serve).await;
    let client = reqwest::Client::new();
    let a = call(
        &client,
        &token,
        Method::GET,
        format!("{}/api/v1/vms", server.base),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&a.body), names(&vms_before));
    // New rows get ids after the copied ones (the counters moved on).
    let a = call(
        &client,
        &token,
        Method::POST,
        format!("{}/api/v1/tenants", server.base),
        Some(json!({"name": "after-copy"})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = call(
        &client,
        &token,
        Method::POST,
        format!("{}/api/v1/vms", server.base),
        Some(json!({"name": "after-copy", "plan": "small", "image": "tiny"})),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let copy_db = carve::db::connect(&target).await.unwrap();
    let first_new = carve::db::events::first_id(&copy_db).await.unwrap();
    assert!(
        first_new > last_event,
        "event ids go on after {last_event}, not from {first_new}"
    );
    let audit = call(
        &client,
        &token,
        Method::GET,
        format!("{}/api/v1/audit?limit=1", server.base),
        None,
    )
    .await;
    assert_eq!(audit.status, 200, "{}", audit.text);
}
