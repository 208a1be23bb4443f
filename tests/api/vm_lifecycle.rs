//! A VM's whole life on real libvirt: create from the tiny image, serve HTTP from user-data on
//! its forwarded port, stop, start, reboot, resize, delete; afterwards nothing remains.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, HTTP_USER_DATA, http_get_until, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_lifecycle_on_real_libvirt() {
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    app.plan("bigger", 2, 192, 2).await;

    // Create: 202 with the VM and its operation; the operation succeeds.
    let a = app
        .call("POST", "/api/v1/vms", Some(json!({
            "name": "web1", "plan": "small", "image": "tiny", "ports": [80],
            "user_data": HTTP_USER_DATA,
            "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsLoyjJx4Nw7l7ZhBmSbfM7pY1LpMxRcYpV2oXq6qPz me@laptop"],
        })))
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let vm = a.body["vm"]["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["vm"]["state"], "creating");
    assert_eq!(a.body["kind"], "create");
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let steps: Vec<&str> = op["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "put the image on the host",
            "create disk",
            "write cloud-init seed",
            "define domain",
            "start domain",
            "wait until running"
        ]
    );

    // Its disk, seed and console log are volumes of the app's storage pool.
    let pool_dir = app.data_dir.path().join("vms");
    for suffix in [".qcow2", "-seed.iso", "-console.log"] {
        assert!(
            pool_dir.join(format!("{vm}{suffix}")).exists(),
            "{vm}{suffix} is missing"
        );
    }

    let got = app.call("GET", &format!("/api/v1/vms/{vm}"), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["state"], "running");
    assert_eq!(got.body["image_name"], "tiny");
    let forward = &got.body["forwards"][0];
    assert_eq!(forward["guest_port"], 80);
    assert_eq!(forward["host_address"], "127.0.0.1");
    let port = forward["host_port"].as_u64().unwrap() as u16;
    assert!((app.forward_ports.0..=app.forward_ports.1).contains(&port));

    // The guest ran its user-data with the hostname from meta-data.
    let page = http_get_until(port, Duration::from_secs(90))
        .await
        .expect("the guest serves HTTP");
    assert_eq!(page.trim(), "hello from web1");
    let console = app
        .call("GET", &format!("/api/v1/vms/{vm}/console"), None)
        .await;
    assert_eq!(console.status, 200);
    assert!(
        console.text.contains("carve-guest: ready as web1"),
        "{}",
        console.text
    );
    let listed = app.call("GET", "/api/v1/vms", None).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);

    // Stop (ACPI), then start again: the guest serves again.
    app.run_op(
        "POST",
        &format!("/api/v1/vms/{vm}/actions"),
        Some(json!({"action": "stop"})),
    )
    .await;
    assert_eq!(
        app.call("GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .body["state"],
        "stopped"
    );
    let again = app
        .call(
            "POST",
            &format!("/api/v1/vms/{vm}/actions"),
            Some(json!({"action": "stop"})),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    app.run_op(
        "POST",
        &format!("/api/v1/vms/{vm}/actions"),
        Some(json!({"action": "start"})),
    )
    .await;
    assert!(
        http_get_until(port, Duration::from_secs(90))
            .await
            .is_some(),
        "serves after start"
    );

    // Reboot.
    app.run_op(
        "POST",
        &format!("/api/v1/vms/{vm}/actions"),
        Some(json!({"action": "reboot"})),
    )
    .await;
    assert_eq!(
        app.call("GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .body["state"],
        "running"
    );
    assert!(
        http_get_until(port, Duration::from_secs(90))
            .await
            .is_some(),
        "serves after reboot"
    );

    // Resize up: vCPUs and memory change, the disk grows; the VM comes back running.
    let op = app
        .run_op(
            "PATCH",
            &format!("/api/v1/vms/{vm}"),
            Some(json!({"plan": "bigger"})),
        )
        .await;
    let steps: Vec<&str> = op["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"grow disk"), "{steps:?}");
    let got = app
        .call("GET", &format!("/api/v1/vms/{vm}"), None)
        .await
        .body;
    assert_eq!(
        (
            got["state"].as_str(),
            got["vcpus"].as_u64(),
            got["memory_mib"].as_u64(),
            got["disk_gib"].as_u64()
        ),
        (Some("running"), Some(2), Some(192), Some(2))
    );
    let domain = format!("carve-{vm}");
    let xml = std::process::Command::new("virsh")
        .args(["-c", "qemu:///system", "dumpxml", &domain])
        .output()
        .unwrap();
    let xml = String::from_utf8_lossy(&xml.stdout);
    assert!(xml.contains("<vcpu placement='static'>2</vcpu>"), "{xml}");
    assert!(xml.contains("<memory unit='KiB'>196608</memory>"), "{xml}");
    assert!(
        http_get_until(port, Duration::from_secs(90))
            .await
            .is_some(),
        "serves after resize"
    );
    // Shrinking the disk is refused.
    let shrink = app
        .call(
            "PATCH",
            &format!("/api/v1/vms/{vm}"),
            Some(json!({"plan": "small"})),
        )
        .await;
    assert_eq!(shrink.status, 422, "{}", shrink.text);
    assert!(
        shrink.body["detail"]
            .as_str()
            .unwrap()
            .contains("disks never shrink"),
        "{}",
        shrink.text
    );

    // Force stop, then delete: nothing remains in libvirt, on disk or in port reservations.
    app.run_op(
        "POST",
        &format!("/api/v1/vms/{vm}/actions"),
        Some(json!({"action": "force_stop"})),
    )
    .await;
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    assert_eq!(
        app.call("GET", &format!("/api/v1/vms/{vm}"), None)
            .await
            .status,
        404
    );
    assert!(!app.domains().await.contains(&domain), "domain removed");
    assert!(
        !crate::helpers::vms_with_files(&app.data_dir.path().join("vms")).contains(&vm),
        "files removed"
    );
    let ports: i64 =
        carve::on_db!(&app.state.db, c => sqlx::query_scalar("SELECT COUNT(*) FROM port_forwards")
        .fetch_one(c)
        .await)
        .unwrap();
    assert_eq!(ports, 0);
    assert!(
        http_get_until(port, Duration::from_secs(1)).await.is_none(),
        "the forward is gone"
    );
    app.stop().await;
}
