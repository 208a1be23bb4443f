//! The hostile-tenant battery: each attack that was reproduced against `carve serve` (issue 9),
//! run again against a real server with real clients (paramiko, OpenSSH, plain sockets, HTTP).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::sftp::{Login, account, base64, data, keypair, ok_session, openssh, paramiko};

/// Sets a tenant's SFTP quota (and small VM limits).
async fn sftp_quota(app: &TestApp, tenant: &str, bytes: i64, files: i64) {
    let q = json!({"max_vms": 2, "max_vcpus": 2, "max_memory_mib": 256, "max_disk_gib": 2,
        "max_sftp_bytes": bytes, "max_sftp_files": files});
    let a = app
        .call("PUT", &format!("/api/v1/tenants/{tenant}/quota"), Some(q))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// Bytes the tenant uses by SFTP, as the API reports it.
async fn used_bytes(app: &TestApp, tenant: &str) -> i64 {
    let u = app
        .call("GET", &format!("/api/v1/tenants/{tenant}/usage"), None)
        .await;
    u.body["usage"]["sftp_bytes"]
        .as_i64()
        .unwrap_or_else(|| panic!("usage: {}", u.text))
}

/// Bytes really stored under a home (each inode once).
fn stored(app: &TestApp, account: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    std::fs::read_dir(app.data_dir.path().join("sftp").join(account))
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file() && seen.insert(m.ino()))
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_onto_the_same_file_free_nothing() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    let (tenant, _) = crate::tenancy::tenant_with_customer(&app, "renamers").await;
    sftp_quota(&app, &tenant, 2 << 20, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "ren");
    let id = account(
        &app,
        json!({"username": "ren", "password": "rename password", "public_keys": [public], "tenant_id": tenant}),
    )
    .await;
    let login = Login::Password("rename password".into());
    let mib = base64(&data(1 << 20, 7));
    // Upload 1 MiB, rename it onto itself, six times: only what fits is stored.
    let mut ops = Vec::new();
    for i in 0..6 {
        let f = format!("f{i}");
        ops.push(json!({"op": "write", "path": f, "data": mib}));
        ops.push(json!({"op": "posix_rename_raw", "from": f, "to": f}));
    }
    let r = ok_session(app.sftp_port, "ren", &login, json!(ops)).await;
    assert_eq!(r[0]["ok"], true, "{r:?}");
    assert!(
        r.iter()
            .any(|x| x["error"].as_str().unwrap_or("").contains("quota")),
        "writes past the quota are refused: {r:?}"
    );
    assert!(
        stored(&app, &id) <= 2 << 20,
        "at most the quota is stored: {}",
        stored(&app, &id)
    );
    // A rename between two hard links of one file (OpenSSH: ln, then rename) frees nothing.
    std::fs::write(dir.path().join("small"), data(100_000, 3)).unwrap();
    let batch = "rm f1\nrm f2\nrm f3\nrm f4\nrm f5\nput small a\nln a b\nrename a b\n";
    let _ = openssh(app.sftp_port, "ren", &key, dir.path(), batch).await;
    let r = ok_session(app.sftp_port, "ren", &login, json!([{"op": "listdir"}])).await;
    let names = r[0]["value"].as_array().unwrap().clone();
    // Usage is flushed every 2 s: poll until it agrees with the disk.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let used = used_bytes(&app, &tenant).await;
        if used as u64 == stored(&app, &id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage {used} does not match the disk's {} after self-renames and link renames ({names:?})",
            stored(&app, &id)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
}

/// Opens `n` TCP connections from `source` that send nothing.
async fn silent_connections(port: u16, source: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        if let Ok(s) = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
        {
            out.push(s);
        }
    }
    out
}

/// Whether the server closes `s` within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_locks_no_one_out() {
    // A grace far longer than an honest login takes even on a loaded machine: a login held up
    // by the flood would wait for the grace to free a slot.
    let app = spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_SFTP_LOGIN_GRACE_SECS", "20")],
    )
    .await;
    account(
        &app,
        json!({"username": "honest", "password": "honest password"}),
    )
    .await;
    // 70 silent connections from one address (127.0.0.2), as in the report.
    let mut flood = silent_connections(app.sftp_port, "127.0.0.2", 70).await;
    let started = Instant::now();
    let r = ok_session(
        app.sftp_port,
        "honest",
        &Login::Password("honest password".into()),
        json!([{"op": "listdir"}]),
    )
    .await;
    assert_eq!(r[0]["ok"], true, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "an honest login was not held up by the flood: {:?}",
        started.elapsed()
    );
    // Past the per-address limit the flood's connections were closed at once, and the rest
    // are closed by the login grace, which counts from accept (no version line was sent).
    let mut closed = 0;
    for s in flood.iter_mut() {
        if closed_within(s, Duration::from_secs(30)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, flood.len(), "every silent connection was closed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_disable_and_delete_end_live_sessions() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    let (tenant, _) = crate::tenancy::tenant_with_customer(&app, "evicted").await;
    let mut ids = Vec::new();
    for user in ["ev1", "ev2", "ev3"] {
        ids.push(
            account(
                &app,
                json!({"username": user, "password": "evicted password", "tenant_id": tenant}),
            )
            .await,
        );
    }
    let login = Login::Password("evicted password".into());
    let chunk = base64(&data(1000, 1));
    // Each session writes, waits, and writes again; meanwhile its access is taken away.
    let session = |user: &'static str| {
        let (port, login, chunk) = (app.sftp_port, login.clone(), chunk.clone());
        tokio::spawn(async move {
            paramiko(
                port,
                user,
                &login,
                json!([{"op": "write", "path": "one", "data": chunk},
                       {"op": "sleep", "seconds": 30},
                       {"op": "write", "path": "two", "data": chunk}]),
            )
            .await
        })
    };
    let (s1, s2, s3) = (session("ev1"), session("ev2"), session("ev3"));
    // Every session is in (its first write is on disk) before its access is taken away.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sftp_dir = app.data_dir.path().join("sftp");
    while !ids.iter().all(|id| sftp_dir.join(id).join("one").exists()) {
        assert!(Instant::now() < deadline, "the sessions did not all log in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/sftp-accounts/{}", ids[1]),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = app
        .call("DELETE", &format!("/api/v1/sftp-accounts/{}", ids[2]), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/tenants/{tenant}"),
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    for (name, s) in [("suspended", s1), ("disabled", s2), ("deleted", s3)] {
        let v = s.await.unwrap();
        assert_eq!(v["results"][0]["ok"], true, "{name}: {v}");
        assert_eq!(
            v["results"][2]["ok"], false,
            "the {name} account's session was ended: {v}"
        );
    }
    assert!(
        !app.data_dir
            .path()
            .join("sftp")
            .join(&ids[0])
            .join("two")
            .exists()
    );
    app.stop().await;
}

#[tokio::test]
async fn setstat_keeps_only_permission_bits() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    let id = account(
        &app,
        json!({"username": "chm", "password": "chmod password"}),
    )
    .await;
    let r = ok_session(
        app.sftp_port,
        "chm",
        &Login::Password("chmod password".into()),
        json!([{"op": "write", "path": "f", "data": "eA=="},
               {"op": "chmod", "path": "f", "mode": 0o6755},
               {"op": "mkdir", "path": "d"},
               {"op": "chmod", "path": "d", "mode": 0o3777}]),
    )
    .await;
    assert!(r.iter().all(|x| x["ok"] == true), "{r:?}");
    let home = app.data_dir.path().join("sftp").join(&id);
    let mode = |p: &str| {
        std::fs::metadata(home.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("f"), 0o755, "no setuid or setgid on files");
    assert_eq!(mode("d") & 0o7000, 0, "no special bits on directories");
    app.stop().await;
}

#[tokio::test]
async fn files_holding_secrets_are_readable_by_carve_alone() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    // Make sure the WAL exists: write something.
    account(
        &app,
        json!({"username": "sec", "password": "secret password"}),
    )
    .await;
    let data_dir = app.data_dir.path().to_path_buf();
    // On PostgreSQL the database's files are the server's; the SQLite pass checks carve's.
    let database_files: &[&str] = if crate::helpers::on_postgres() {
        &[]
    } else {
        &["carve.db", "carve.db-wal", "carve.db-shm"]
    };
    for name in database_files.iter().chain(&["ssh_host_ed25519_key"]) {
        let path = data_dir.join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{name} is private (mode {:o})",
            mode & 0o777
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn unauthenticated_requests_cannot_grow_the_database() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    let long = format!("{}@example.com", "a".repeat(200_000));
    for _ in 0..5 {
        let r = app
            .client
            .post(format!("{}/api/v1/tokens", app.addr))
            .json(&json!({"email": long, "password": "whatever password"}))
            .send()
            .await
            .unwrap();
        let a = crate::helpers::answer(r).await;
        assert_eq!(a.status, 422, "{}", a.text);
        assert!(a.text.contains("254"), "says the limit: {}", a.text);
    }
    let db = &app.state.db;
    let (longest_actor,): (i64,) =
        carve::on_db!(db, c => sqlx::query_as("SELECT CAST(COALESCE(MAX(LENGTH(actor)), 0) AS BIGINT) FROM audit_log")
            .fetch_one(c)
            .await)
            .unwrap();
    assert!(
        longest_actor <= 254,
        "audit actors are bounded: {longest_actor}"
    );
    let (keys,): (i64,) =
        carve::on_db!(db, c => sqlx::query_as("SELECT COUNT(*) FROM login_failures WHERE LENGTH(key) > 300")
            .fetch_one(c)
            .await)
            .unwrap();
    assert_eq!(keys, 0, "no over-long throttle key was stored");
    // Retention: entries older than the retention go at housekeeping.
    carve::on_db!(db, c => sqlx::query("UPDATE audit_log SET at = '2000-01-01T00:00:00Z'")
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
    .unwrap();
    let removed = carve::db::audit::purge(db, chrono::Duration::days(365), 1_000_000)
        .await
        .unwrap();
    assert!(removed >= 5, "old entries removed: {removed}");
    app.stop().await;
}

#[tokio::test]
async fn customers_cannot_keep_deleted_accounts_files() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    let (tenant, customer) = crate::tenancy::tenant_with_customer(&app, "keepers").await;
    let id = account(
        &app,
        json!({"username": "kept", "password": "kept password", "tenant_id": tenant}),
    )
    .await;
    let path = format!("/api/v1/sftp-accounts/{id}?keep_files=true");
    let a = app.call_as(&customer, "DELETE", &path, None).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("admin"), "{}", a.text);
    let a = app
        .call_as(
            &customer,
            "GET",
            &format!("/api/v1/sftp-accounts/{id}"),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "nothing was deleted: {}", a.text);
    // An admin may.
    let a = app.call("DELETE", &path, None).await;
    assert_eq!(a.status, 204, "{}", a.text);
    app.stop().await;
}

/// `POST /tokens` with email and password; the status.
async fn try_login(app: &TestApp, email: &str, password: &str) -> u16 {
    app.client
        .post(format!("{}/api/v1/tokens", app.addr))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling_holds_against_bursts() {
    let app = spawn_app_with(
        Backend::TestDriver,
        &[
            ("CARVE_AUTH_CONCURRENT_HASHES", "2"),
            ("CARVE_AUTH_MAX_QUEUED_HASHES", "64"),
        ],
    )
    .await;
    let (_, customer) = crate::tenancy::tenant_with_customer(&app, "burst").await;
    // 20 wrong passwords at once for one account: at most the limit (5) are even checked.
    let mut tries = Vec::new();
    for _ in 0..20 {
        let app_addr = app.addr.clone();
        let client = app.client.clone();
        tries.push(tokio::spawn(async move {
            client
                .post(format!("{app_addr}/api/v1/tokens"))
                .json(&json!({"email": "owner@burst.example", "password": "wrong password"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut checked = 0;
    for t in tries {
        match t.await.unwrap() {
            401 => checked += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        checked <= 5,
        "{checked} guesses were checked; the limit is 5"
    );
    assert_eq!(
        try_login(&app, "owner@burst.example", "customer password").await,
        429
    );
    // Changing a password is a login too: guesses at the current one are throttled.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let a = app
            .call_as(
                &customer,
                "PUT",
                "/api/v1/me/password",
                Some(json!({"current_password": "not my password", "new_password": "a new long password"})),
            )
            .await;
        statuses.push(a.status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hash_queue_answers_at_once() {
    let app = spawn_app_with(
        Backend::TestDriver,
        &[
            ("CARVE_AUTH_CONCURRENT_HASHES", "1"),
            ("CARVE_AUTH_MAX_QUEUED_HASHES", "1"),
            ("CARVE_AUTH_MAX_FAILURES_PER_CLIENT", "1000"),
        ],
    )
    .await;
    let mut tries = Vec::new();
    for i in 0..12 {
        let (addr, client) = (app.addr.clone(), app.client.clone());
        tries.push(tokio::spawn(async move {
            let r = client
                .post(format!("{addr}/api/v1/tokens"))
                .json(&json!({"email": format!("nobody{i}@example.com"), "password": "wrong password"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    let mut busy = 0;
    for t in tries {
        let (status, text) = t.await.unwrap();
        if status == 429 {
            assert!(text.contains("busy"), "{text}");
            busy += 1;
        } else {
            assert_eq!(status, 401, "{text}");
        }
    }
    assert!(busy >= 1, "some logins were turned away at once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_failures_do_not_lock_out_key_logins() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "keyed");
    account(
        &app,
        json!({"username": "keyed", "password": "keyed password", "public_keys": [public]}),
    )
    .await;
    for _ in 0..6 {
        let v = paramiko(
            app.sftp_port,
            "keyed",
            &Login::Password("guess guess guess".into()),
            json!([]),
        )
        .await;
        assert_eq!(v["login"], false);
    }
    // The password is now throttled, even the right one…
    let v = paramiko(
        app.sftp_port,
        "keyed",
        &Login::Password("keyed password".into()),
        json!([]),
    )
    .await;
    assert_eq!(v["login"], false, "{v}");
    // …but the key still logs in.
    let r = ok_session(
        app.sftp_port,
        "keyed",
        &Login::Key(key),
        json!([{"op": "listdir"}]),
    )
    .await;
    assert_eq!(r[0]["ok"], true, "{r:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_limits_slow_clients_and_odd_methods() {
    let app = spawn_app_with(
        Backend::TestDriver,
        &[
            ("CARVE_HTTP_HEADER_TIMEOUT_SECS", "2"),
            ("CARVE_HTTP_MAX_CONNECTIONS_PER_CLIENT", "3"),
        ],
    )
    .await;
    let port = app.addr.rsplit(':').next().unwrap().to_string();
    // A client that sends half a header and stops is disconnected.
    let mut slow = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(6)).await);
    // An idle kept-alive connection is closed too.
    let mut idle = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(6)).await);
    // One address may hold only so many connections; another address is still served.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_secs(1)).await,
        "a fourth connection from one address is closed at once"
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    // The server notices the closed connections and gives their places back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Made-up methods share one metrics series.
    for m in ["FOOBAR", "BAZQUX"] {
        let _ = app
            .client
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                format!("{}/healthz", app.addr),
            )
            .send()
            .await
            .unwrap();
    }
    let metrics = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("FOOBAR") && !metrics.contains("BAZQUX"));
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_stops_vms_of_suspended_tenants() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    app.plan("small", 1, 128, 1).await;
    let (tenant, customer) = crate::tenancy::tenant_with_customer(&app, "behind").await;
    let (vm, _) = crate::tenancy::create_vm(&app, &customer, "sneaky").await;
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/tenants/{tenant}"),
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(a.status, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm_state(&app, &vm).await != "stopped" {
        assert!(
            Instant::now() < deadline,
            "the suspended tenant's VM stopped"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Started again behind carve's back: the reconciler stops it once more (a new stop
    // operation, and the VM ends stopped).
    let before = succeeded_stops(&app, &vm).await;
    let domain: String = carve::on_db!(&app.state.db, c => sqlx::query_scalar("SELECT domain_name FROM vms WHERE id = $1")
        .bind(&vm)
        .fetch_one(c)
        .await)
        .unwrap();
    app.hv()
        .await
        .call(move |h| h.start(&domain))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if succeeded_stops(&app, &vm).await > before && vm_state(&app, &vm).await == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "the VM was stopped again");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    app.stop().await;
}

/// A VM's state as the API shows it.
async fn vm_state(app: &TestApp, vm: &str) -> String {
    app.call("GET", &format!("/api/v1/vms/{vm}"), None)
        .await
        .body["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Stop operations of a VM that succeeded.
async fn succeeded_stops(app: &TestApp, vm: &str) -> usize {
    let ops = app
        .call("GET", &format!("/api/v1/operations?target={vm}"), None)
        .await
        .body;
    ops.as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "stop" && o["state"] == "succeeded")
        .count()
}

/// Follows `Link: rel="next"` from `first` with the admin token; every item's `key`.
async fn walk(app: &TestApp, first: &str, key: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut url = Some(first.to_string());
    let mut pages = 0;
    while let Some(u) = url {
        let a = app.call("GET", &u, None).await;
        assert_eq!(a.status, 200, "{u}: {}", a.text);
        let items = a
            .body
            .as_array()
            .unwrap_or_else(|| panic!("{u}: {}", a.text));
        assert!(items.len() <= 2, "{u}: a page holds at most the limit");
        seen.extend(items.iter().map(|i| i[key].to_string()));
        url = a.headers.get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with("rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_string()
        });
        pages += 1;
        assert!(pages < 100, "paging ends");
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_is_paged_with_a_next_link() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    for (i, mem) in [128, 256, 384].into_iter().enumerate() {
        app.plan(&format!("p{i}"), 1, mem, 1).await;
    }
    let (tenant, customer) = crate::tenancy::tenant_with_customer(&app, "pager").await;
    for i in 0..4 {
        let a = app
            .call(
                "POST",
                "/api/v1/tenants",
                Some(json!({"name": format!("extra{i}")})),
            )
            .await;
        assert_eq!(a.status, 201);
        account(
            &app,
            json!({"username": format!("pg{i}"), "password": "pager password", "tenant_id": tenant}),
        )
        .await;
        let a = app
            .call_as(
                &customer,
                "POST",
                "/api/v1/vms",
                Some(json!({"name": format!("vm{i}"), "plan": "p0", "image": "tiny"})),
            )
            .await;
        assert_eq!(a.status, 202, "{}", a.text);
        let a = app
            .call(
                "POST",
                "/api/v1/tokens",
                Some(json!({"name": format!("t{i}")})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
    for (list, key) in [
        ("/api/v1/tenants", "id"),
        ("/api/v1/users", "id"),
        ("/api/v1/plans", "id"),
        ("/api/v1/images", "name"),
        ("/api/v1/hosts", "id"),
        ("/api/v1/tokens", "id"),
        ("/api/v1/sftp-accounts", "id"),
        ("/api/v1/vms", "id"),
        ("/api/v1/operations", "id"),
        ("/api/v1/audit", "id"),
    ] {
        let all = app.call("GET", &format!("{list}?limit=500"), None).await;
        let mut all: Vec<String> = all
            .body
            .as_array()
            .unwrap_or_else(|| panic!("{list}: {}", all.text))
            .iter()
            .map(|i| i[key].to_string())
            .collect();
        let mut paged = walk(&app, &format!("{list}?limit=2"), key).await;
        assert_eq!(paged.len(), all.len(), "{list}: every item once");
        all.sort();
        paged.sort();
        assert_eq!(paged, all, "{list}");
        for bad in ["limit=0", "limit=501", "cursor=bm90IGEgY3Vyc29y"] {
            let a = app.call("GET", &format!("{list}?{bad}"), None).await;
            assert_eq!(a.status, 422, "{list}?{bad}: {}", a.text);
        }
    }
    // Filters stay in the next link.
    let vm_ops = walk(&app, "/api/v1/operations?limit=2&target=nothing", "id").await;
    assert!(vm_ops.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_hold_one_sftp_quota() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    let (tenant, _) = crate::tenancy::tenant_with_customer(&app, "twice").await;
    let quota: i64 = 1 << 20;
    sftp_quota(&app, &tenant, quota, 100).await;
    let mut ids = Vec::new();
    for user in ["tw1", "tw2"] {
        ids.push(
            account(
                &app,
                json!({"username": user, "password": "twice password", "tenant_id": tenant}),
            )
            .await,
        );
    }
    // A second `carve serve` on the same database, with its own SFTP port.
    let sftp2 = crate::helpers::free_port();
    let _child = crate::helpers::serve_child(
        app.data_dir.path(),
        Backend::TestDriver,
        crate::helpers::free_port(),
        &[("CARVE_SFTP_LISTEN", &format!("127.0.0.1:{sftp2}"))],
    )
    .await;
    // Four uploads of 400 KiB, two through each process, at once: 1.6 MiB asked of 1 MiB.
    let login = Login::Password("twice password".into());
    let mut uploads = Vec::new();
    for (i, (port, user)) in [
        (app.sftp_port, "tw1"),
        (sftp2, "tw2"),
        (app.sftp_port, "tw2"),
        (sftp2, "tw1"),
    ]
    .into_iter()
    .enumerate()
    {
        let login = login.clone();
        uploads.push(tokio::spawn(async move {
            paramiko(port, user, &login, json!([{"op": "write", "path": format!("part{i}"), "data": base64(&data(400 << 10, i as u64))}])).await
        }));
    }
    let mut refused = 0;
    for u in uploads {
        let v = u.await.unwrap();
        assert_eq!(v["login"], true, "{v}");
        if v["results"][0]["ok"] == false {
            assert!(
                v["results"][0]["error"].as_str().unwrap().contains("quota"),
                "{v}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 1, "some upload was refused");
    let on_disk: u64 = ids.iter().map(|id| stored(&app, id)).sum();
    assert!(
        on_disk <= quota as u64,
        "both processes together stored {on_disk} bytes of a {quota}-byte quota"
    );
    // Once both have flushed, the database agrees with the disk.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let used = used_bytes(&app, &tenant).await;
        if used as u64 == on_disk {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage {used} never matched the disk {on_disk}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_account_are_bounded_and_big_listings_stream() {
    let app = spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_SFTP_MAX_SESSIONS_PER_ACCOUNT", "2")],
    )
    .await;
    let id = account(
        &app,
        json!({"username": "many", "password": "many password"}),
    )
    .await;
    // 3,000 names in one directory: every one is listed, a batch at a time.
    let big = app.data_dir.path().join("sftp").join(&id).join("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..3000 {
        std::fs::write(big.join(format!("f{i:04}")), b"").unwrap();
    }
    let login = Login::Password("many password".into());
    let r = ok_session(
        app.sftp_port,
        "many",
        &login,
        json!([{"op": "listdir", "path": "big"}]),
    )
    .await;
    assert_eq!(r[0]["value"].as_array().unwrap().len(), 3000);
    // Two sessions stay open; a third for the same account is refused, and works once one
    // of them has ended.
    // Each holder leaves a marker once its session is open, then holds it long enough for the
    // third login to be tried even on a loaded machine.
    let hold = |marker: &'static str| {
        let (port, login) = (app.sftp_port, login.clone());
        tokio::spawn(async move {
            paramiko(
                port,
                "many",
                &login,
                json!([{"op": "write", "path": marker, "data": ""},
                       {"op": "sleep", "seconds": 15}]),
            )
            .await
        })
    };
    let (a, b) = (hold("held-a"), hold("held-b"));
    let home = app.data_dir.path().join("sftp").join(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(home.join("held-a").exists() && home.join("held-b").exists()) {
        assert!(
            Instant::now() < deadline,
            "the two holding sessions did not open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = paramiko(app.sftp_port, "many", &login, json!([{"op": "listdir"}])).await;
    assert_eq!(third["sftp"], false, "a third session is refused: {third}");
    for s in [a, b] {
        assert_eq!(s.await.unwrap()["login"], true);
    }
    let again = ok_session(app.sftp_port, "many", &login, json!([{"op": "listdir"}])).await;
    assert_eq!(again[0]["ok"], true);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_resumed_after_its_last_step_succeeds() {
    let app = spawn_app_with(Backend::TestDriver, &[]).await;
    app.plan("small", 1, 128, 1).await;
    let (vm, _) = crate::tenancy::create_vm(&app, &app.admin_token, "gone").await;
    // As a process that died right after the delete's last step leaves it: the VM marked
    // deleted, the operation never finished (and never claimed by a live process).
    let vm_id = carve::domain::ids::VmId::parse(&vm).unwrap();
    let row = carve::db::vms::get_any(&app.state.db, &vm_id)
        .await
        .unwrap()
        .unwrap();
    let mut conn = app.state.db.acquire().await.unwrap();
    let orphan = carve::db::operations::insert(
        &mut conn,
        &row.tenant_id,
        carve::domain::operation::OpKind::Delete,
        "vm",
        &vm,
        &json!({}),
    )
    .await
    .unwrap();
    carve::db::vms::mark_deleted(&mut conn, &vm_id)
        .await
        .unwrap();
    drop(conn);
    // The reconciler takes it over and reports it done, not failed.
    let op = app
        .wait_operation(orphan.id.as_str(), Duration::from_secs(60))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    app.stop().await;
}
