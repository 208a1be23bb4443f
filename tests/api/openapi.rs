//! The OpenAPI document is snapshotted: any API change shows as a diff of
//! tests/api/snapshots/openapi.json. Run with CARVETEST_UPDATE_SNAPSHOTS=1 to accept a change.

use crate::helpers::{Backend, spawn_app};

#[tokio::test]
async fn openapi_document_matches_the_snapshot() {
    let app = spawn_app(Backend::TestDriver).await;
    let doc = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/snapshots/openapi.json");
    if std::env::var_os("CARVETEST_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &doc).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    let (got, want): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&doc).unwrap(),
        serde_json::from_str(&expected).unwrap_or_default(),
    );
    if got != want {
        let diff: Vec<String> = doc
            .lines()
            .zip(expected.lines().chain(std::iter::repeat("")))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(20)
            .map(|(i, (a, b))| format!("line {}:\n  now:      {a}\n  snapshot: {b}", i + 1))
            .collect();
        panic!(
            "the OpenAPI document changed; review and run with CARVETEST_UPDATE_SNAPSHOTS=1\n{}",
            diff.join("\n")
        );
    }
    // Every operation declares its errors and security.
    for (path, item) in got["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('4')),
                "{method} {path} documents no error"
            );
            assert!(
                op.get("security").is_some(),
                "{method} {path} declares no security"
            );
        }
    }
    app.stop().await;
}
