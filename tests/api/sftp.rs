//! The SFTP server with real clients: OpenSSH `sftp` in batch mode and paramiko
//! (tests/sftp/client.py). Round trips, the jail, quotas, account changes and the host key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app};

/// The Python with paramiko (made by `make test`).
fn python() -> String {
    std::env::var("CARVETEST_PYTHON").unwrap_or_else(|_| "/opt/carve-testenv/bin/python".into())
}

fn client_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sftp/client.py")
}

/// How a client logs in.
#[derive(Clone)]
pub enum Login {
    Password(String),
    Key(PathBuf),
}

/// Runs paramiko operations in one session; returns the results (or `{"login": false}`).
pub async fn paramiko(port: u16, user: &str, login: &Login, ops: Value) -> Value {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(client_py()).arg(port.to_string()).arg(user);
    match login {
        Login::Password(p) => cmd.args(["--password", p]),
        Login::Key(k) => cmd.arg("--key").arg(k),
    };
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python with paramiko");
    use tokio::io::AsyncWriteExt;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ops.to_string().as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("client output: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Results of a session that must log in.
pub async fn ok_session(port: u16, user: &str, login: &Login, ops: Value) -> Vec<Value> {
    let v = paramiko(port, user, login, ops).await;
    assert_eq!(v["login"], true, "{v}");
    v["results"].as_array().unwrap().clone()
}

/// Runs an OpenSSH `sftp -b` batch with a key; returns (success, stdout + stderr).
pub async fn openssh(port: u16, user: &str, key: &Path, dir: &Path, batch: &str) -> (bool, String) {
    let batch_file = dir.join("batch");
    std::fs::write(&batch_file, batch).unwrap();
    let out = tokio::process::Command::new("sftp")
        .current_dir(dir)
        .arg("-b")
        .arg(&batch_file)
        .arg("-i")
        .arg(key)
        .args(["-P", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .output()
        .await
        .expect("OpenSSH sftp");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A fresh Ed25519 key pair; returns (private key path, public key line).
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    (key, public)
}

/// Creates an account through the API; returns its id.
pub async fn account(app: &TestApp, body: Value) -> String {
    let a = app.call("POST", "/api/v1/sftp-accounts", Some(body)).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert!(
        !a.text.contains("password\":\""),
        "no secret is echoed: {}",
        a.text
    );
    a.body["id"].as_str().unwrap().to_string()
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Waits until the API shows the account's usage equal to `bytes` (flushed every 2 s).
pub async fn wait_usage(app: &TestApp, id: &str, bytes: i64, files: i64) -> Value {
    let mut last = Value::Null;
    for _ in 0..40 {
        last = app
            .call("GET", &format!("/api/v1/sftp-accounts/{id}"), None)
            .await
            .body;
        if last["used_bytes"] == bytes && last["used_files"] == files {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("usage never became {bytes} bytes / {files} files: {last}");
}

#[tokio::test]
async fn round_trips_with_openssh_and_paramiko() {
    let app = spawn_app(Backend::TestDriver).await;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "alice");
    let id = account(
        &app,
        json!({"username": "alice", "password": "alice password", "public_keys": [public]}),
    )
    .await;
    let big = data(3 << 20, 1);
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    std::fs::write(dir.path().join("small.txt"), "hello\n").unwrap();

    let (ok, out) = openssh(
        app.sftp_port,
        "alice",
        &key,
        dir.path(),
        "\
put big.bin
put small.txt
mkdir site
rename small.txt site/index.txt
get site/index.txt back.txt
get big.bin big.back
ls -l site
",
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("index.txt") && out.contains("alice"), "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("big.back")).unwrap(),
        big,
        "download is byte-exact"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("back.txt")).unwrap(),
        "hello\n"
    );

    // Resume: half an upload is there; reput finishes it; reget finishes half a download.
    let half = base64(&big[..1 << 20]);
    ok_session(
        app.sftp_port,
        "alice",
        &Login::Password("alice password".into()),
        json!([{"op": "write", "path": "resume.bin", "data": half}]),
    )
    .await;
    std::fs::write(dir.path().join("partial.bin"), &big[..(1 << 20) + 123]).unwrap();
    let (ok, out) = openssh(
        app.sftp_port,
        "alice",
        &key,
        dir.path(),
        "reput big.bin resume.bin\nreget resume.bin partial.bin\n",
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("partial.bin")).unwrap(),
        big,
        "resumed transfers are byte-exact"
    );

    // paramiko: the same tree, attributes, rename and delete.
    let r = ok_session(
        app.sftp_port,
        "alice",
        &Login::Key(key.clone()),
        json!([
            {"op": "listdir"},
            {"op": "stat", "path": "/big.bin"},
            {"op": "normalize", "path": "site/../site/./index.txt"},
            {"op": "posix_rename", "from": "resume.bin", "to": "big.bin"},
            {"op": "chmod", "path": "big.bin", "mode": 0o600},
            {"op": "stat", "path": "big.bin"},
            {"op": "remove", "path": "site/index.txt"},
            {"op": "rmdir", "path": "site"},
            {"op": "listdir"},
        ]),
    )
    .await;
    assert_eq!(r[0]["value"], json!(["big.bin", "resume.bin", "site"]));
    assert_eq!(r[1]["value"]["size"], 3 << 20);
    assert_eq!(r[2]["value"], "/site/index.txt");
    assert!(r[3..=4].iter().all(|x| x["ok"] == true), "{r:?}");
    assert_eq!(r[5]["value"]["mode"].as_u64().unwrap() & 0o777, 0o600);
    assert_eq!(r[8]["value"], json!(["big.bin"]));
    wait_usage(&app, &id, 3 << 20, 1).await;

    // scp speaks SFTP since OpenSSH 9: upload and download through it too.
    let scp = |from: String, to: String| {
        let key = key.clone();
        let port = app.sftp_port;
        async move {
            tokio::process::Command::new("scp")
                .arg("-i")
                .arg(&key)
                .args([
                    "-P",
                    &port.to_string(),
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .arg(from)
                .arg(to)
                .output()
                .await
                .unwrap()
        }
    };
    let up = scp(
        dir.path().join("small.txt").display().to_string(),
        "alice@127.0.0.1:/scp.txt".into(),
    )
    .await;
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let down = scp(
        "alice@127.0.0.1:/scp.txt".into(),
        dir.path().join("scp-back.txt").display().to_string(),
    )
    .await;
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("scp-back.txt")).unwrap(),
        "hello\n"
    );

    // Uploads, deletions and logins are in the audit log.
    let audit = app.call("GET", "/api/v1/audit?limit=100", None).await.text;
    for needle in [
        "sftp login (publickey)",
        "sftp login (password)",
        "sftp upload",
        "/big.bin (3145728 bytes)",
        "sftp delete",
        "/site/index.txt",
    ] {
        assert!(audit.contains(needle), "{needle} missing from {audit}");
    }
    assert!(!audit.contains("alice password"));
    app.stop().await;
}

pub fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn the_jail_holds() {
    let app = spawn_app(Backend::TestDriver).await;
    let u1 = account(&app, json!({"username": "u1", "password": "u1 password!"})).await;
    let u10 = account(&app, json!({"username": "u10", "password": "u10 password"})).await;
    let homes = app.data_dir.path().join("sftp");
    std::fs::write(homes.join(&u10).join("private.txt"), "u10's secret").unwrap();
    // Links planted in u1's home by someone with shell access, pointing out of it.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("host-secret"), "host secret").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("host-secret"),
        homes.join(&u1).join("abs-link"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        format!("../{u10}/private.txt"),
        homes.join(&u1).join("rel-link"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), homes.join(&u1).join("dir-link")).unwrap();
    let login = Login::Password("u1 password!".into());
    let r = ok_session(
        app.sftp_port,
        "u1",
        &login,
        json!([
            {"op": "read", "path": "../../../../etc/passwd"},
            {"op": "read", "path": "/etc/passwd"},
            {"op": "read", "path": format!("../{u10}/private.txt")},
            {"op": "read", "path": "abs-link"},
            {"op": "read", "path": "rel-link"},
            {"op": "read", "path": "dir-link/host-secret"},
            {"op": "listdir", "path": "dir-link"},
            {"op": "readlink", "path": "abs-link"},
            {"op": "readlink", "path": "rel-link"},
            {"op": "symlink", "target": "/etc/passwd", "link": "made-abs"},
            {"op": "symlink", "target": format!("../{u10}/private.txt"), "link": "made-rel"},
            {"op": "write", "path": "dir-link/planted", "data": "eA=="},
            {"op": "rename", "from": "rel-link", "to": "dir-link/moved"},
            {"op": "remove", "path": "dir-link/host-secret"},
            {"op": "stat", "path": "hex:61006200"},
            {"op": "stat", "path": "hex:ff6e616d65"},
            {"op": "normalize", "path": "../../.."},
            {"op": "normalize", "path": "."},
            {"op": "symlink", "target": "sub/file", "link": "fine-link"},
            {"op": "readlink", "path": "fine-link"},
        ]),
    )
    .await;
    for (i, res) in r[..=15].iter().enumerate() {
        assert_eq!(res["ok"], false, "operation {i} should fail: {res}");
        let e = res["error"].as_str().unwrap().to_lowercase();
        assert!(
            e.contains("no such file") || e.contains("permission denied"),
            "operation {i}: {e}"
        );
    }
    assert_eq!(r[16]["value"], "/", "realpath never leaves the root");
    assert_eq!(r[17]["value"], "/", "realpath shows no host path");
    assert_eq!(
        (r[18]["ok"].as_bool(), r[19]["value"].as_str()),
        (Some(true), Some("sub/file"))
    );
    // Nothing outside changed.
    assert_eq!(
        std::fs::read_to_string(outside.path().join("host-secret")).unwrap(),
        "host secret"
    );
    assert!(!outside.path().join("planted").exists() && !outside.path().join("moved").exists());
    assert!(homes.join(&u1).join("rel-link").exists());
    // Hard links leading out of the jail are impossible too (OpenSSH's `ln` uses hardlink@openssh.com).
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "k");
    app.call(
        "PATCH",
        &format!("/api/v1/sftp-accounts/{u1}"),
        Some(json!({"public_keys": [public]})),
    )
    .await;
    let (ok, out) = openssh(
        app.sftp_port,
        "u1",
        &key,
        dir.path(),
        &format!("ln ../{u10}/private.txt stolen\n"),
    )
    .await;
    assert!(!ok && out.contains("No such file"), "{out}");
    std::fs::write(dir.path().join("own"), "mine").unwrap();
    let (ok, out) = openssh(
        app.sftp_port,
        "u1",
        &key,
        dir.path(),
        "put own\nln own own-link\nls -l own-link\n",
    )
    .await;
    assert!(ok, "a hard link inside the jail works: {out}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_hold_to_the_byte() {
    let app = spawn_app(Backend::TestDriver).await;
    let (tenant, _) = crate::tenancy::tenant_with_customer(&app, "hosting").await;
    let quota = 1 << 20;
    let q = json!({"max_vms": 1, "max_vcpus": 1, "max_memory_mib": 128, "max_disk_gib": 1, "max_sftp_bytes": quota, "max_sftp_files": 10});
    assert_eq!(
        app.call("PUT", &format!("/api/v1/tenants/{tenant}/quota"), Some(q))
            .await
            .status,
        200
    );
    let a = account(
        &app,
        json!({"username": "qa", "password": "quota password", "tenant_id": tenant}),
    )
    .await;
    let b = account(
        &app,
        json!({"username": "qb", "password": "quota password", "tenant_id": tenant}),
    )
    .await;
    let homes = app.data_dir.path().join("sftp");
    let login = Login::Password("quota password".into());

    // Four sessions of two accounts upload 400 KiB each at once: together they stop at the quota.
    let mut uploads = Vec::new();
    for (i, user) in ["qa", "qb", "qa", "qb"].into_iter().enumerate() {
        let login = login.clone();
        let port = app.sftp_port;
        uploads.push(tokio::spawn(async move {
            paramiko(port, user, &login, json!([{"op": "write", "path": format!("part{i}"), "data": base64(&data(400 << 10, i as u64))}])).await
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
    assert!(refused >= 1);
    let stored: u64 = [&a, &b]
        .iter()
        .flat_map(|id| std::fs::read_dir(homes.join(id)).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(
        stored, quota as u64,
        "the failing writes kept exactly what fit"
    );

    // Free everything, then the single-session battery.
    let clean = json!([{"op": "remove", "path": "part0"}, {"op": "remove", "path": "part2"}]);
    ok_session(app.sftp_port, "qa", &login, clean).await;
    ok_session(
        app.sftp_port,
        "qb",
        &login,
        json!([{"op": "remove", "path": "part1"}, {"op": "remove", "path": "part3"}]),
    )
    .await;
    let r = ok_session(
        app.sftp_port,
        "qa",
        &login,
        json!([
            // A write at a huge offset is charged for the size it gives the file.
            {"op": "write", "path": "sparse", "mode": "w", "offset": 100 << 20, "data": "eA=="},
            {"op": "stat", "path": "sparse"},
            // A file within quota, then setstat growing it past the quota.
            {"op": "write", "path": "f", "size": 600 << 10},
            {"op": "truncate", "path": "f", "size": 2 << 20},
            {"op": "stat", "path": "f"},
            // Rename over an existing file releases the replaced one.
            {"op": "write", "path": "g", "size": 300 << 10},
            {"op": "posix_rename", "from": "g", "to": "f"},
            {"op": "write", "path": "h", "size": 700 << 10},
            // Truncating frees space.
            {"op": "truncate", "path": "h", "size": 0},
            {"op": "write", "path": "i", "size": 700 << 10},
        ]),
    )
    .await;
    assert_eq!(r[0]["ok"], false, "{r:?}");
    assert!(r[0]["error"].as_str().unwrap().contains("quota exceeded"));
    assert_eq!(
        r[1]["value"]["size"], 0,
        "nothing past the quota was stored"
    );
    assert_eq!(r[2]["ok"], true);
    assert_eq!(r[3]["ok"], false, "{r:?}");
    assert_eq!(r[4]["value"]["size"], 600 << 10);
    assert!(r[5..].iter().all(|x| x["ok"] == true), "{r:?}");
    wait_usage(&app, &a, (300 << 10) + (700 << 10), 4).await;
    // Files are counted too: 10 at most for the tenant.
    let ops: Vec<Value> = (0..8)
        .map(|n| json!({"op": "mkdir", "path": format!("d{n}")}))
        .collect();
    let r = ok_session(app.sftp_port, "qa", &login, Value::Array(ops)).await;
    let made = r.iter().filter(|x| x["ok"] == true).count();
    assert_eq!(made, 6, "10 files in all: {r:?}");
    assert!(
        r.last().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("max_sftp_files")
    );
    // The usage shows in the API and survives a rescan from disk.
    let usage = app
        .call("GET", &format!("/api/v1/tenants/{tenant}/usage"), None)
        .await
        .body;
    assert_eq!(usage["quota"]["max_sftp_bytes"], quota);
    let rescanned = app.call("POST", "/api/v1/sftp-accounts/rescan", None).await;
    assert_eq!(rescanned.status, 200, "{}", rescanned.text);
    let qa = rescanned
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["username"] == "qa")
        .unwrap()
        .clone();
    assert_eq!(
        (qa["used_bytes"].as_i64(), qa["used_files"].as_i64()),
        (Some((300 << 10) + (700 << 10)), Some(10))
    );
    assert!(qa["scanned_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn account_changes_apply_at_the_next_login_and_the_host_key_stays() {
    let app = spawn_app(Backend::TestDriver).await;
    let id = account(&app, json!({"username": "bob", "password": "bob password"})).await;
    let login = Login::Password("bob password".into());
    let key_before = ok_session(app.sftp_port, "bob", &login, json!([{"op": "host_key"}])).await[0]
        ["value"]
        .clone();
    // Disabled: refused at the next login.
    app.call(
        "PATCH",
        &format!("/api/v1/sftp-accounts/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(
        paramiko(app.sftp_port, "bob", &login, json!([])).await["login"],
        false
    );
    app.call(
        "PATCH",
        &format!("/api/v1/sftp-accounts/{id}"),
        Some(json!({"enabled": true, "password": "new bob password"})),
    )
    .await;
    assert_eq!(
        paramiko(app.sftp_port, "bob", &login, json!([])).await["login"],
        false,
        "the old password is gone"
    );
    let login = Login::Password("new bob password".into());
    assert_eq!(
        paramiko(app.sftp_port, "bob", &login, json!([])).await["login"],
        true
    );
    // Failed logins are throttled per account (5 by default), even for the right password.
    for _ in 0..5 {
        assert_eq!(
            paramiko(
                app.sftp_port,
                "bob",
                &Login::Password("wrong password".into()),
                json!([])
            )
            .await["login"],
            false
        );
    }
    assert_eq!(
        paramiko(app.sftp_port, "bob", &login, json!([])).await["login"],
        false,
        "throttled"
    );
    let audit = app.call("GET", "/api/v1/audit?limit=50", None).await.text;
    assert!(
        audit.contains("sftp login (password)") && audit.contains("\"denied\""),
        "{audit}"
    );
    // After a restart on the same data directory the host key is the same.
    carve::on_db!(&app.state.db, c => sqlx::query("DELETE FROM login_failures")
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
    .unwrap();
    let app = app.restart().await;
    let key_after = ok_session(app.sftp_port, "bob", &login, json!([{"op": "host_key"}])).await[0]
        ["value"]
        .clone();
    assert_eq!(key_before, key_after);
    app.stop().await;
}

#[tokio::test]
async fn sftp_accounts_api_checks_input_and_tenants() {
    let app = spawn_app(Backend::TestDriver).await;
    let (_tenant_a, alice) = crate::tenancy::tenant_with_customer(&app, "sa-a").await;
    let (_tenant_b, bob) = crate::tenancy::tenant_with_customer(&app, "sa-b").await;
    for (body, field) in [
        (
            json!({"username": "Bad Name", "password": "long password"}),
            "username",
        ),
        (
            json!({"username": "../x", "password": "long password"}),
            "username",
        ),
        (json!({"username": "ok"}), "password"),
        (json!({"username": "ok", "password": "short"}), "password"),
        (
            json!({"username": "ok", "public_keys": ["ssh-rsa nope"]}),
            "public_keys",
        ),
        (
            json!({"username": "ok", "password": "long password", "shell": "/bin/sh"}),
            "shell",
        ),
    ] {
        let a = app
            .call_as(&alice, "POST", "/api/v1/sftp-accounts", Some(body.clone()))
            .await;
        assert_eq!(a.status, 422, "{body}: {}", a.text);
        assert!(a.text.contains(field), "{body}: {}", a.text);
    }
    let a = app
        .call_as(
            &alice,
            "POST",
            "/api/v1/sftp-accounts",
            Some(json!({"username": "shop", "password": "long password"})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_string();
    let a = app
        .call_as(
            &bob,
            "POST",
            "/api/v1/sftp-accounts",
            Some(json!({"username": "shop", "password": "long password"})),
        )
        .await;
    assert_eq!(a.status, 409, "usernames are global: {}", a.text);
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"enabled": false}))),
        ("DELETE", None),
    ] {
        let a = app
            .call_as(&bob, method, &format!("/api/v1/sftp-accounts/{id}"), body)
            .await;
        assert_eq!(a.status, 404, "{method}: {}", a.text);
    }
    assert!(
        app.call_as(&bob, "GET", "/api/v1/sftp-accounts", None)
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.call_as(&bob, "POST", "/api/v1/sftp-accounts/rescan", None)
            .await
            .status,
        403
    );
    // Deleting keeps the files aside on an admin's request (a customer may not).
    std::fs::write(
        app.data_dir.path().join("sftp").join(&id).join("keep.me"),
        "x",
    )
    .unwrap();
    assert_eq!(
        app.call_as(
            &alice,
            "DELETE",
            &format!("/api/v1/sftp-accounts/{id}?keep_files=true"),
            None
        )
        .await
        .status,
        403
    );
    assert_eq!(
        app.call(
            "DELETE",
            &format!("/api/v1/sftp-accounts/{id}?keep_files=true"),
            None
        )
        .await
        .status,
        204
    );
    let kept = std::fs::read_dir(app.data_dir.path().join("sftp-deleted"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(kept.join("keep.me").exists());
    assert!(!app.data_dir.path().join("sftp").join(&id).exists());
    app.stop().await;
}

#[tokio::test]
async fn bad_packets_and_idle_or_slow_clients_end_only_their_own_session() {
    let app = crate::helpers::spawn_app_with(
        Backend::TestDriver,
        &[
            // Long enough for a paramiko login on a loaded machine, short enough to wait out.
            ("CARVE_SFTP_IDLE_TIMEOUT_SECS", "3"),
            ("CARVE_SFTP_LOGIN_GRACE_SECS", "6"),
        ],
    )
    .await;
    account(
        &app,
        json!({"username": "carol", "password": "carol password"}),
    )
    .await;
    let login = Login::Password("carol password".into());
    // An over-long packet, then a malformed one: each ends its own channel, and the session's
    // other channel keeps working.
    let r = ok_session(
        app.sftp_port,
        "carol",
        &login,
        json!([
            {"op": "write", "path": "before", "data": "eA=="},
            {"op": "garbage_session", "hex": "0100000002"},
            {"op": "garbage_session", "hex": "0000000503ffffffff"},
            {"op": "listdir"},
        ]),
    )
    .await;
    assert_eq!(r[1]["value"], "closed", "{r:?}");
    assert_eq!(r[2]["value"], "closed", "{r:?}");
    assert_eq!(r[3]["value"], json!(["before"]), "{r:?}");
    // A client that logs in and then goes quiet is disconnected.
    let r = ok_session(
        app.sftp_port,
        "carol",
        &login,
        json!([{"op": "sleep", "seconds": 8}, {"op": "listdir"}]),
    )
    .await;
    assert_eq!(r[1]["ok"], false, "an idle session was closed: {r:?}");
    // A client that never logs in is disconnected after the grace time.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", app.sftp_port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"SSH-2.0-silent\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "an unauthenticated connection was closed");
    app.stop().await;
}

#[tokio::test]
async fn rclone_sftp_backend_works_unchanged() {
    let app = spawn_app(Backend::TestDriver).await;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "rc");
    account(&app, json!({"username": "rc", "public_keys": [public]})).await;
    let local = dir.path().join("site");
    std::fs::create_dir_all(local.join("assets")).unwrap();
    std::fs::write(local.join("index.html"), data(300_000, 9)).unwrap();
    std::fs::write(local.join("assets/app.js"), "console.log(1)\n").unwrap();
    let port = app.sftp_port.to_string();
    let rclone = async |args: &[&str]| -> String {
        let out = tokio::process::Command::new("rclone")
            .args(args)
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_CARVE_TYPE", "sftp")
            .env("RCLONE_CONFIG_CARVE_HOST", "127.0.0.1")
            .env("RCLONE_CONFIG_CARVE_PORT", &port)
            .env("RCLONE_CONFIG_CARVE_USER", "rc")
            .env("RCLONE_CONFIG_CARVE_KEY_FILE", &key)
            .env("RCLONE_CONFIG_CARVE_SHELL_TYPE", "none")
            .output()
            .await
            .expect("rclone");
        assert!(
            out.status.success(),
            "rclone {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let site = local.display().to_string();
    let back = dir.path().join("back").display().to_string();
    rclone(&["copy", &site, "carve:/www"]).await;
    let mut listed: Vec<String> = rclone(&["lsf", "-R", "carve:/www"])
        .await
        .lines()
        .map(String::from)
        .collect();
    listed.sort();
    assert_eq!(listed, ["assets/", "assets/app.js", "index.html"]);
    rclone(&["check", &site, "carve:/www"]).await;
    rclone(&["copy", "carve:/www", &back]).await;
    assert_eq!(
        std::fs::read(dir.path().join("back/index.html")).unwrap(),
        data(300_000, 9)
    );
    rclone(&["moveto", "carve:/www/index.html", "carve:/www/home.html"]).await;
    rclone(&["purge", "carve:/www/assets"]).await;
    assert_eq!(
        rclone(&["lsf", "-R", "carve:/www"]).await.trim(),
        "home.html"
    );
    app.stop().await;
}
