//! Health, metrics and the OpenAPI document.

use serde_json::json;

use crate::helpers::{Backend, spawn_app};

#[tokio::test]
async fn health_metrics_and_openapi() {
    let app = spawn_app(Backend::TestDriver).await;
    let health = crate::helpers::answer(
        app.client
            .get(format!("{}/healthz", app.addr))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, 200);
    assert_eq!(
        health.body,
        json!({"status": "ok", "database": "ok", "libvirt": "ok"})
    );

    app.plan("small", 1, 128, 1).await;
    let a = app
        .call(
            "POST",
            "/api/v1/vms",
            Some(json!({"name": "m1", "plan": "small", "image": "tiny"})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    app.wait_operation(
        a.body["id"].as_str().unwrap(),
        std::time::Duration::from_secs(30),
    )
    .await;
    app.call("GET", "/api/v1/vms/vm_0000000000000000", None)
        .await;

    let text = app.metrics().await;
    for needle in [
        "carve_http_requests_total{method=\"POST\",route=\"/api/v1/vms\",status=\"202\"} 1",
        "carve_http_requests_total{method=\"GET\",route=\"/api/v1/vms/{id}\",status=\"404\"} 1",
        "carve_http_request_duration_seconds_bucket{",
        "carve_vms{state=\"running\"} 1",
        "carve_operations{kind=\"create\",state=\"succeeded\"} 1",
        "process_resident_memory_bytes ",
        "carve_password_checks_total ",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    let doc: serde_json::Value = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/vms",
        "/api/v1/vms/{id}",
        "/api/v1/vms/{id}/actions",
        "/api/v1/vms/{id}/console",
        "/api/v1/operations/{id}",
        "/api/v1/plans",
        "/api/v1/images",
        "/api/v1/hosts/{id}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    app.stop().await;
}
