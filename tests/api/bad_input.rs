//! Bad input gets a clear 4xx problem document, and nothing is created.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app};

/// Asserts a problem document with this status whose text mentions `needle`.
fn assert_problem(a: &crate::helpers::Answer, status: u16, needle: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    let ct = a
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert_eq!(ct, "application/problem+json", "{}", a.text);
    assert_eq!(a.body["status"], status);
    assert!(a.text.contains(needle), "expected {needle:?} in {}", a.text);
}

fn vm(overrides: Value) -> Value {
    let mut base = json!({"name": "ok", "plan": "small", "image": "tiny"});
    for (k, v) in overrides.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// Nothing of any VM exists: no rows, operations, ports, files or domains.
async fn assert_nothing_created(app: &TestApp) {
    let db = &app.state.db;
    for table in ["vms", "operations", "port_forwards"] {
        let n: i64 =
            carve::on_db!(db, c => sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(c)
            .await)
            .unwrap();
        assert_eq!(n, 0, "{table} has rows");
    }
    let files = crate::helpers::vms_with_files(&app.data_dir.path().join("vms"));
    assert!(files.is_empty(), "VM files exist: {files:?}");
}

#[tokio::test]
async fn bad_vm_requests_are_refused_with_clear_messages() {
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    let post = |body: Value| app.call("POST", "/api/v1/vms", Some(body));

    let a = app
        .raw(
            "POST",
            "/api/v1/vms",
            "application/json",
            "{\"name\": \"x\",",
        )
        .await;
    assert_problem(&a, 400, "not valid JSON");
    let a = app.raw("POST", "/api/v1/vms", "text/plain", "name=x").await;
    assert_problem(&a, 415, "Content-Type: application/json");
    assert_problem(
        &post(vm(json!({"colour": "red"}))).await,
        422,
        "unknown field `colour`",
    );
    assert_problem(
        &post(json!({"name": "x", "plan": "small"})).await,
        422,
        "missing field `image`",
    );
    assert_problem(
        &post(vm(json!({"plan": "huge"}))).await,
        422,
        "no plan is named \\\"huge\\\"",
    );
    assert_problem(
        &post(vm(json!({"image": "windows"}))).await,
        422,
        "no image is named",
    );

    let long = "a".repeat(300);
    for (name, needle) in [
        ("<script>", "'<' is not allowed"),
        ("a&b", "'&' is not allowed"),
        ("a/b", "'/' is not allowed"),
        ("..", "'.' is not allowed"),
        ("a\u{0}b", "is not allowed"),
        (long.as_str(), "got 300"),
        ("", "1 to 63 characters"),
    ] {
        let a = post(vm(json!({"name": name}))).await;
        assert_problem(&a, 422, needle);
        assert_eq!(a.body["errors"][0]["field"], "name", "{}", a.text);
    }
    assert_problem(
        &post(vm(json!({"ports": [0]}))).await,
        422,
        "0 is not a TCP port",
    );
    assert_problem(
        &post(vm(json!({"ports": [70000]}))).await,
        422,
        "70000 is not a TCP port",
    );
    assert_problem(
        &post(vm(json!({"ports": [80, 80]}))).await,
        422,
        "listed twice",
    );
    assert_problem(
        &post(vm(json!({"ports": (1..=17).collect::<Vec<u16>>()}))).await,
        422,
        "at most 16",
    );
    assert_problem(
        &post(vm(json!({"ssh_keys": ["ssh-rsa not-a-key"]}))).await,
        422,
        "ssh_keys",
    );
    assert_problem(
        &post(vm(json!({"user_data": "x".repeat(70_000)}))).await,
        422,
        "user_data",
    );
    assert_problem(&post(vm(json!({"user_data": "a\u{0}b"}))).await, 422, "NUL");
    assert_problem(
        &post(vm(json!({"tenant_id": "tn_ffffffffffffffff"}))).await,
        422,
        "no tenant has id",
    );
    assert_problem(
        &post(vm(json!({"pool": "web"}))).await,
        404,
        "pool web was not found",
    );
    assert_problem(
        &post(vm(json!({"pool_port": 80}))).await,
        422,
        "give pool too",
    );
    // Several problems are reported together.
    let a = post(vm(json!({"name": "Bad Name", "ports": [0]}))).await;
    assert_eq!(a.body["errors"].as_array().unwrap().len(), 2, "{}", a.text);
    // Oversized bodies stop at the limit.
    let a = app
        .raw(
            "POST",
            "/api/v1/vms",
            "application/json",
            format!("{{\"name\": \"{}\"}}", "a".repeat(400_000)),
        )
        .await;
    assert_problem(&a, 413, "too large");

    // Plans: zero and absurd sizes, hostile names, duplicates.
    let plan = |body: Value| app.call("POST", "/api/v1/plans", Some(body));
    assert_problem(
        &plan(json!({"name": "p", "vcpus": 0, "memory_mib": 128, "disk_gib": 1})).await,
        422,
        "vcpus",
    );
    assert_problem(
        &plan(json!({"name": "p", "vcpus": 1, "memory_mib": 1u64 << 40, "disk_gib": 1})).await,
        422,
        "memory_mib",
    );
    assert_problem(
        &plan(json!({"name": "p", "vcpus": 1, "memory_mib": 128, "disk_gib": 0})).await,
        422,
        "disk_gib",
    );
    assert_problem(
        &plan(json!({"name": "p", "vcpus": -1, "memory_mib": 128, "disk_gib": 1})).await,
        422,
        "vcpus",
    );
    assert_problem(
        &plan(json!({"name": "../p", "vcpus": 1, "memory_mib": 128, "disk_gib": 1})).await,
        422,
        "name",
    );
    assert_problem(
        &plan(json!({"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 1})).await,
        409,
        "already exists",
    );
    // A plan too small for the image.
    app.plan("mini", 1, 64, 1).await;
    assert_problem(
        &post(vm(json!({"plan": "mini"}))).await,
        422,
        "needs 96 MiB",
    );

    // Ids: unknown or malformed are 404, never 500.
    for path in [
        "/api/v1/vms/vm_0000000000000000",
        "/api/v1/vms/..%2F..%2Fetc",
        "/api/v1/vms/%3Cx%3E",
        "/api/v1/operations/op_zz",
    ] {
        assert_problem(&app.call("GET", path, None).await, 404, "was not found");
    }
    let a = app
        .call(
            "POST",
            "/api/v1/vms/vm_0000000000000000/actions",
            Some(json!({"action": "start"})),
        )
        .await;
    assert_problem(&a, 404, "was not found");
    let a = app
        .call(
            "POST",
            "/api/v1/vms/vm_0000000000000000/actions",
            Some(json!({"action": "explode"})),
        )
        .await;
    assert_problem(&a, 422, "unknown variant `explode`");
    assert_problem(
        &app.call("DELETE", "/api/v1/vms/vm_0000000000000000", None)
            .await,
        404,
        "was not found",
    );
    assert_problem(
        &app.call("DELETE", "/api/v1/plans/pl_0000000000000000", None)
            .await,
        404,
        "was not found",
    );
    let a = app
        .call(
            "PATCH",
            "/api/v1/hosts/hs_0000000000000000",
            Some(json!({"cpu_overcommit": 2.0})),
        )
        .await;
    assert_problem(&a, 404, "was not found");
    let host = app.call("GET", "/api/v1/hosts", None).await.body[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/hosts/{host}"),
            Some(json!({"cpu_overcommit": -1.0})),
        )
        .await;
    assert_problem(&a, 422, "cpu_overcommit");

    // Authentication.
    let a = crate::helpers::answer(
        app.client
            .get(format!("{}/api/v1/vms", app.addr))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&a, 401, "Bearer");
    assert!(a.headers.contains_key("www-authenticate"));
    assert_problem(
        &app.call_as("carve_not-a-real-token", "GET", "/api/v1/vms", None)
            .await,
        401,
        "unknown",
    );

    assert_nothing_created(&app).await;
    app.stop().await;
}
