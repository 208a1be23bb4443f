//! Admission control: concurrent creates can never exceed a host's capacity.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_against_capacity_for_five() {
    let app = Arc::new(spawn_app(Backend::Qemu).await);
    app.plan("small", 1, 128, 1).await;
    // Leave exactly 5 × 128 MiB of sellable memory on the host.
    let host = app.call("GET", "/api/v1/hosts", None).await.body[0].clone();
    let memory = host["physical"]["memory_mib"].as_u64().unwrap();
    let id = host["id"].as_str().unwrap();
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/hosts/{id}"),
            Some(json!({"memory_overcommit": 1.0, "reserved_memory_mib": memory - 5 * 128 - 100})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["free"]["memory_mib"], 5 * 128 + 100);

    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.call(
                "POST",
                "/api/v1/vms",
                Some(json!({"name": format!("vm{i}"), "plan": "small", "image": "tiny"})),
            )
            .await
        }));
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            202 => accepted.push(a.body),
            409 => {
                refused += 1;
                assert!(
                    a.body["detail"]
                        .as_str()
                        .unwrap()
                        .starts_with("not enough memory on host"),
                    "{}",
                    a.text
                );
            }
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    assert_eq!((accepted.len(), refused), (5, 15));
    let host = app
        .call("GET", &format!("/api/v1/hosts/{id}"), None)
        .await
        .body;
    assert_eq!(host["allocated"]["memory_mib"], 5 * 128);
    for op in &accepted {
        let done = app
            .wait_operation(op["id"].as_str().unwrap(), Duration::from_secs(240))
            .await;
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    let vms = app.call("GET", "/api/v1/vms", None).await.body;
    assert_eq!(vms.as_array().unwrap().len(), 5);
    assert!(
        vms.as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "running"),
        "{vms}"
    );

    // Deleting frees the capacity again.
    for op in &accepted {
        app.run_op(
            "DELETE",
            &format!("/api/v1/vms/{}", op["vm"]["id"].as_str().unwrap()),
            None,
        )
        .await;
    }
    let host = app
        .call("GET", &format!("/api/v1/hosts/{id}"), None)
        .await
        .body;
    assert_eq!(host["allocated"]["memory_mib"], 0);
    let ours = app
        .domains()
        .await
        .into_iter()
        .filter(|d| {
            accepted
                .iter()
                .any(|op| d.ends_with(op["vm"]["id"].as_str().unwrap()))
        })
        .count();
    assert_eq!(ours, 0);
    Arc::try_unwrap(app)
        .ok()
        .expect("no other owners")
        .stop()
        .await;
}
