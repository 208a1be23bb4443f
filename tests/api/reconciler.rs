//! The reconciler against libvirt's test driver (fast; boots nothing): vanished domains,
//! unmanaged domains, and operations left by a dead process.

use std::time::Duration;

use carve::provision::reconciler;
use serde_json::json;

use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

async fn running_vm(app: &TestApp, name: &str) -> String {
    let a = app
        .call(
            "POST",
            "/api/v1/vms",
            Some(json!({"name": name, "plan": "small", "image": "tiny", "ports": [22]})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    a.body["vm"]["id"].as_str().unwrap().to_string()
}

/// Records a running `kind` operation on `vm` that this process holds (so no pass takes it).
async fn running_op_of_this_process(
    app: &TestApp,
    kind: &str,
    vm: &str,
) -> carve::domain::ids::OperationId {
    let op_id = carve::domain::ids::OperationId::generate();
    carve::on_db!(&app.state.db, c => sqlx::query(
        "INSERT INTO operations (id, tenant_id, kind, target_type, target_id, state, owner, heartbeat_at, created_at)
         VALUES ($1, 'tn_0000000000000000', $5, 'vm', $2, 'running', $3, $4, $4)",
    )
    .bind(&op_id)
    .bind(vm)
    .bind(&app.state.prov.owner.id)
    .bind(chrono::Utc::now())
    .bind(kind)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    op_id
}

/// Ends an operation as failed, as a process giving up on it would.
async fn fail_op(app: &TestApp, op: &carve::domain::ids::OperationId) {
    carve::on_db!(&app.state.db, c => sqlx::query("UPDATE operations SET state = 'failed' WHERE id = $1")
        .bind(op)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .unwrap();
}

#[tokio::test]
async fn vanished_domains_are_marked_missing_and_start_brings_them_back() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let vm = running_vm(&app, "ghost").await;
    let domain = format!("carve-{vm}");
    let d = domain.clone();
    app.hv()
        .await
        .call(move |h| {
            h.destroy(&d)?;
            h.undefine(&d)
        })
        .await
        .unwrap();

    // The background loop may get there first; either way one pass settles it.
    reconciler::pass(&app.state.prov).await.unwrap();
    assert_eq!(
        app.call("GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .body["state"],
        "missing"
    );
    // Start redefines the domain from carve's records.
    app.run_op(
        "POST",
        &format!("/api/v1/vms/{vm}/actions"),
        Some(json!({"action": "start"})),
    )
    .await;
    assert_eq!(
        app.call("GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .body["state"],
        "running"
    );
    assert!(app.domains().await.contains(&domain));
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn unmanaged_domains_are_reported_and_left_alone() {
    let app = spawn_app(Backend::TestDriver).await;
    let name = format!("someone-elses-{}", std::process::id());
    let xml = format!(
        "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>"
    );
    app.hv().await.call(move |h| h.define(&xml)).await.unwrap();
    let report = reconciler::pass(&app.state.prov).await.unwrap();
    assert!(report.unmanaged.contains(&name), "{report:?}");
    let host = &app.call("GET", "/api/v1/hosts", None).await.body[0];
    assert!(
        host["unmanaged_domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == name.as_str()),
        "{host}"
    );
    assert!(app.domains().await.contains(&name), "never deleted");
    let n = name.clone();
    app.hv().await.call(move |h| h.undefine(&n)).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn operations_of_a_dead_process_are_finished() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let vm = running_vm(&app, "orphan").await;
    // A stop that a process which no longer exists had claimed and half done.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let dead_owner = format!("{host}/4194304/1");
    let op_id = carve::domain::ids::OperationId::generate();
    carve::on_db!(&app.state.db, c => sqlx::query(
        "INSERT INTO operations (id, tenant_id, kind, target_type, target_id, state, owner, heartbeat_at, created_at, started_at)
         VALUES ($1, 'tn_0000000000000000', 'stop', 'vm', $2, 'running', $3, $4, $4, $4)",
    )
    .bind(&op_id)
    .bind(&vm)
    .bind(&dead_owner)
    .bind(chrono::Utc::now())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    carve::on_db!(&app.state.db, c => sqlx::query("UPDATE vms SET state = 'stopping' WHERE id = $1")
        .bind(&vm)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))
        .unwrap();

    let report = reconciler::pass(&app.state.prov).await.unwrap();
    let owner: Option<String> = carve::on_db!(&app.state.db, c => sqlx::query_scalar("SELECT owner FROM operations WHERE id = $1")
        .bind(&op_id)
        .fetch_one(c)
        .await)
        .unwrap();
    assert!(
        report.resumed.contains(&op_id.to_string())
            || owner.as_deref() == Some(app.state.prov.owner.id.as_str()),
        "taken over by this process: {report:?} {owner:?}"
    );
    let op = app
        .wait_operation(op_id.as_str(), Duration::from_secs(60))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(
        app.call("GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .body["state"],
        "stopped"
    );
    // A second pass finds nothing to take over.
    assert!(
        reconciler::pass(&app.state.prov)
            .await
            .unwrap()
            .resumed
            .is_empty()
    );
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_second_operation_on_a_busy_vm_is_refused() {
    let app = spawn_app(Backend::TestDriver).await;
    app.plan("small", 1, 128, 1).await;
    let vm = running_vm(&app, "busy").await;
    let op_id = running_op_of_this_process(&app, "reboot", &vm).await;
    let a = app.call("DELETE", &format!("/api/v1/vms/{vm}"), None).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(
        a.body["detail"].as_str().unwrap().contains(op_id.as_str()),
        "{}",
        a.text
    );
    fail_op(&app, &op_id).await;
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}

/// The reconciler's writes check again, in the write lock, that no operation holds the VM:
/// a move admitted after a pass listed the busy VMs keeps its state and its reserved room.
#[tokio::test]
async fn the_reconciler_never_settles_a_vm_an_operation_took_meanwhile() {
    use carve::domain::ids::VmId;
    use carve::domain::vm_state::VmState;
    // No background pass: this test plays the pass's part.
    let app = spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_RECONCILER_INTERVAL_SECS", "3600")],
    )
    .await;
    app.plan("small", 1, 128, 1).await;
    let vm = running_vm(&app, "mover").await;
    let id = VmId::parse(&vm).unwrap();
    // A move as an evacuation admits it: an open operation, the VM moving, room held on the
    // target.
    let op_id = running_op_of_this_process(&app, "move", &vm).await;
    carve::on_db!(&app.state.db, c => sqlx::query(
        "UPDATE vms SET state = 'moving', moving_to = host_id WHERE id = $1",
    )
    .bind(&vm)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    let db = &app.state.db;
    assert!(!carve::db::vms::drop_stale_move(db, &id).await.unwrap());
    assert!(
        !carve::db::vms::set_state_if(db, &id, VmState::Moving, VmState::Running)
            .await
            .unwrap()
    );
    let held: (String, Option<String>) = carve::on_db!(db, c => sqlx::query_as(
        "SELECT state, moving_to FROM vms WHERE id = $1",
    )
    .bind(&vm)
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(held.0, "moving");
    assert!(held.1.is_some(), "the move's room was given back");
    // Once the move is over without a word, the room goes back and the state is settled.
    fail_op(&app, &op_id).await;
    assert!(carve::db::vms::drop_stale_move(db, &id).await.unwrap());
    assert!(
        carve::db::vms::set_state_if(db, &id, VmState::Moving, VmState::Running)
            .await
            .unwrap()
    );
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_failed_create_is_rolled_back_completely() {
    // A private copy of the image whose base disk disappears after registration.
    let images = crate::helpers::data_dir();
    let tiny = images.path().join("tiny");
    std::fs::create_dir(&tiny).unwrap();
    for f in std::fs::read_dir(crate::helpers::image_dir().join("tiny")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), tiny.join(f.file_name())).unwrap();
    }
    let dir = images.path().to_string_lossy().into_owned();
    let app =
        crate::helpers::spawn_app_with(Backend::TestDriver, &[("CARVE_IMAGE_DIR", dir.as_str())])
            .await;
    app.plan("small", 1, 128, 1).await;
    std::fs::remove_file(tiny.join("disk.qcow2")).unwrap();

    let a = app
        .call(
            "POST",
            "/api/v1/vms",
            Some(json!({"name": "doomed", "plan": "small", "image": "tiny", "ports": [80]})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let vm = a.body["vm"]["id"].as_str().unwrap().to_string();
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(op["state"], "failed", "{op}");
    let error = op["error"].as_str().unwrap();
    assert!(
        error.contains("everything made for it was removed"),
        "{error}"
    );
    assert!(
        error.contains("step \"put the image on the host\" failed"),
        "{error}"
    );
    let steps: Vec<(&str, &str)> = op["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("put the image on the host", "failed"),
            ("roll back", "done")
        ]
    );
    assert_eq!(
        app.call("GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .status,
        404
    );
    assert!(!crate::helpers::vms_with_files(&app.data_dir.path().join("vms")).contains(&vm));
    assert!(!app.domains().await.contains(&format!("carve-{vm}")));
    let ports: i64 =
        carve::on_db!(&app.state.db, c => sqlx::query_scalar("SELECT COUNT(*) FROM port_forwards")
        .fetch_one(c)
        .await)
        .unwrap();
    assert_eq!(ports, 0);
    // The name is free again.
    let host = &app.call("GET", "/api/v1/hosts", None).await.body[0];
    assert_eq!(host["allocated"]["memory_mib"], 0);
    app.stop().await;
}

#[tokio::test]
async fn directories_of_deleted_vms_go_and_unknown_ones_stay() {
    // No background pass: the test's own pass must be the one that finds the files.
    let app = spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_RECONCILER_INTERVAL_SECS", "3600")],
    )
    .await;
    app.plan("small", 1, 128, 1).await;
    let vm = running_vm(&app, "leftover").await;
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    // A crash between removing the files and recording the deletion would leave this.
    let vms = app.data_dir.path().join("vms");
    std::fs::create_dir(vms.join(&vm)).unwrap();
    // A directory this database never heard of (another carve sharing the directory).
    let stranger = carve::domain::ids::VmId::generate().to_string();
    std::fs::create_dir(vms.join(&stranger)).unwrap();
    let report = reconciler::pass(&app.state.prov).await.unwrap();
    assert!(!vms.join(&vm).exists(), "{report:?}");
    assert!(vms.join(&stranger).exists(), "never removed: {report:?}");
    assert_eq!(report.unknown_dirs, vec![stranger]);
    app.stop().await;
}

#[tokio::test]
async fn volumes_of_deleted_vms_go_and_unknown_ones_stay() {
    // No background pass: the test's own pass must be the one that finds the files.
    let app = spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_RECONCILER_INTERVAL_SECS", "3600")],
    )
    .await;
    app.plan("small", 1, 128, 1).await;
    let vm = running_vm(&app, "leftover").await;
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    let prov = &app.state.prov;
    let host = prov.host(&prov.local_host).await.unwrap();
    let pool = host.row.storage_pool.clone();
    let stranger = carve::domain::ids::VmId::generate().to_string();
    // A crash between removing the volumes and recording the deletion would leave these; the
    // stranger's belongs to a VM this database never heard of.
    let names = [
        format!("{vm}.qcow2"),
        format!("{vm}-seed.iso"),
        format!("{stranger}.qcow2"),
    ];
    let (p, n) = (pool.clone(), names.clone());
    host.hv
        .call(move |h| {
            for name in &n {
                h.upload(&p, name, &mut std::io::empty(), 0, false)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let report = reconciler::pass(prov).await.unwrap();
    let left = host.hv.call(move |h| h.volumes(&pool)).await.unwrap();
    assert!(
        !left.contains(&names[0]) && !left.contains(&names[1]),
        "{left:?} {report:?}"
    );
    assert!(left.contains(&names[2]), "never removed: {left:?}");
    assert!(report.removed_dirs.contains(&vm), "{report:?}");
    app.stop().await;
}

#[tokio::test]
async fn files_of_vms_made_before_volumes_move_into_the_pool() {
    // No background pass: the test's own pass must be the one that finds the files.
    let app = spawn_app_with(
        Backend::TestDriver,
        &[("CARVE_RECONCILER_INTERVAL_SECS", "3600")],
    )
    .await;
    app.plan("small", 1, 128, 1).await;
    let vm = running_vm(&app, "older").await;
    // How a VM's files lay before storage pools: a directory of its own.
    let vms = app.data_dir.path().join("vms");
    let old = vms.join(&vm);
    std::fs::create_dir(&old).unwrap();
    for (name, bytes) in [
        ("disk.qcow2", "disk"),
        ("seed.iso", "seed"),
        ("console.log", "log"),
    ] {
        std::fs::write(old.join(name), bytes).unwrap();
    }
    let report = reconciler::pass(&app.state.prov).await.unwrap();
    assert!(!old.exists(), "{report:?}");
    for (name, bytes) in [
        (".qcow2", "disk"),
        ("-seed.iso", "seed"),
        ("-console.log", "log"),
    ] {
        let moved = vms.join(format!("{vm}{name}"));
        assert_eq!(
            std::fs::read_to_string(&moved).unwrap(),
            bytes,
            "{}",
            moved.display()
        );
    }
    assert!(report.unknown_dirs.is_empty(), "{report:?}");
    app.stop().await;
}
