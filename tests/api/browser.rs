//! The panel's login and logout in a real browser (headless Chromium driven by selenium).

use serde_json::json;

use crate::helpers::{Backend, spawn_app};

#[tokio::test]
async fn log_in_and_out_in_chromium() {
    let app = spawn_app(Backend::TestDriver).await;
    let a = app
        .call("POST", "/api/v1/users", Some(json!({"email": "dora@example.com", "password": "dora's password", "role": "customer", "tenant_id": "tn_0000000000000000"})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let python = std::env::var("CARVETEST_PYTHON")
        .unwrap_or_else(|_| "/opt/carve-testenv/bin/python".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/login.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&app.addr)
        .args(["dora@example.com", "dora's password"])
        .output()
        .await
        .expect("python with selenium (tests/setup-test-tools.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = app.call("GET", "/api/v1/audit", None).await.text;
    assert!(
        audit.contains("\"login\"") && audit.contains("\"logout\""),
        "{audit}"
    );
    app.stop().await;
}
