//! A real Debian guest (the `debian-12` image built by `images/debian-12/build.sh`): created
//! with an SSH key and port 22 forwarded, it answers OpenSSH's `ssh` as root and as the image's
//! default user, says Debian in `/etc/os-release`, has the VM's name, and its root filesystem
//! fills the plan's disk. Under software emulation this takes a while, so one VM serves every
//! check. The catalogue describes the image, a plan too small for it is refused, a reinstall
//! brings back a clean disk with the same forward, a stop goes through the guest agent, and a
//! disk grown by a resize is seen after the next start.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::sftp::keypair;

/// Runs `command` on the guest by ssh as `user`; None until it answers.
fn ssh(key: &std::path::Path, port: u16, user: &str, command: &str) -> Option<String> {
    let out = Command::new("ssh")
        .args(["-p", &port.to_string(), "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            &format!("{user}@127.0.0.1"),
            command,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `command` by ssh as `user` until its output passes `done` (a guest under software
/// emulation takes minutes to boot); on timeout, fails with the VM's console.
async fn ssh_until(
    app: &TestApp,
    vm: &str,
    key: &Path,
    port: u16,
    user: &str,
    command: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(900);
    loop {
        let (key, user, command) = (key.to_path_buf(), user.to_string(), command.to_string());
        let answer = tokio::task::spawn_blocking(move || ssh(&key, port, &user, &command))
            .await
            .unwrap();
        if let Some(out) = answer.filter(|o| done(o)) {
            eprintln!("{vm}: ssh answered after {:?}", started.elapsed());
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "no ssh answer after {:?}; console:\n{}",
            started.elapsed(),
            app.call("GET", &format!("/api/v1/vms/{vm}/console"), None)
                .await
                .text
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The guest agent's report in the VM's view once it names `hostname` and an IPv4 address.
async fn agent_report(app: &TestApp, vm: &str, hostname: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = app.call("GET", &format!("/api/v1/vms/{vm}"), None).await;
        let guest = &v.body["guest"];
        if guest["hostname"] == hostname
            && guest["addresses"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.contains('.')))
            })
        {
            return guest.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no guest agent report: {}",
            v.text
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Creates VM `name` of plan `deb` from `image` with the key `public` and port 22 forwarded;
/// waits for its create to succeed. Returns its id, its ssh forward and its view.
async fn create_with_key(
    app: &TestApp,
    name: &str,
    image: &str,
    public: &str,
) -> (String, u16, crate::helpers::Answer) {
    let a = app
        .call(
            "POST",
            "/api/v1/vms",
            Some(json!({"name": name, "plan": "deb", "image": image,
                "ssh_keys": [public], "ports": [22]})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let vm = a.body["vm"]["id"].as_str().unwrap().to_string();
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(240))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let got = app.call("GET", &format!("/api/v1/vms/{vm}"), None).await;
    let port = got.body["forwards"][0]["host_port"].as_u64().unwrap() as u16;
    (vm, port, got)
}

/// The catalogue entry of `name`.
async fn image(app: &TestApp, name: &str) -> Value {
    let a = app
        .call("GET", &format!("/api/v1/images/{name}"), None)
        .await;
    assert_eq!(
        a.status, 200,
        "no {name} image (images/build.sh builds it): {}",
        a.text
    );
    a.body
}

/// The root filesystem's size, from the last number in `df` output.
fn root_size(out: &str) -> u64 {
    out.lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debian_vm_answers_ssh_with_its_key_and_fills_its_disk() {
    let app = spawn_app(Backend::Qemu).await;
    // The catalogue says what the image is.
    let debian = image(&app, "debian-12").await;
    assert_eq!(debian["os"], "debian", "{debian}");
    assert_eq!(debian["default_user"], "debian", "{debian}");
    assert!(
        debian["version"].as_str().unwrap().starts_with("12."),
        "{debian}"
    );
    assert_eq!(debian["guest_agent"], true, "{debian}");
    let min_disk = debian["min_disk_gib"].as_u64().unwrap();
    // A plan with less memory than the image needs is refused, saying so.
    let min_memory = debian["min_memory_mib"].as_u64().unwrap();
    app.plan("wee", 1, min_memory / 2, min_disk).await;
    let a = app
        .call(
            "POST",
            "/api/v1/vms",
            Some(json!({"name": "wee", "plan": "wee", "image": "debian-12"})),
        )
        .await;
    assert!(
        a.status == 422 && a.text.contains("MiB of memory but image debian-12 needs"),
        "{}",
        a.text
    );
    let disk_gib = min_disk + 2;
    app.plan("deb", 1, 512, disk_gib).await;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "debkey");
    let (vm, port, got) = create_with_key(&app, "deb1", "debian-12", &public).await;

    // systemd, cloud-init and sshd under software emulation: give it minutes.
    let facts = ssh_until(
        &app,
        &vm,
        &key,
        port,
        "root",
        "cat /etc/os-release; hostname; df -B1 --output=size / | tail -1; cloud-init status --wait >/dev/null; echo done",
        |o| o.trim_end().ends_with("done"),
    )
    .await;
    assert!(facts.contains("Debian GNU/Linux 12"), "{facts}");
    let lines: Vec<&str> = facts.lines().collect();
    assert!(
        lines.contains(&"deb1"),
        "the hostname is the VM's name: {facts}"
    );
    let size = root_size(&facts);
    assert!(
        size > (disk_gib << 30) * 9 / 10,
        "the root filesystem ({size} bytes) fills the plan's {disk_gib} GiB disk: {facts}"
    );
    // The image's default user has the key too, with sudo.
    let key2 = key.clone();
    let user = tokio::task::spawn_blocking(move || ssh(&key2, port, "debian", "sudo -n id -u"))
        .await
        .unwrap();
    assert_eq!(
        user.as_deref().map(str::trim),
        Some("0"),
        "debian with sudo"
    );

    // The guest agent: the VM's view shows the guest's hostname and addresses.
    let guest = agent_report(&app, &vm, "deb1").await;
    eprintln!("guest agent: {guest}");
    // A new root password reaches the running guest through its agent, without a reboot.
    let key4 = key.clone();
    let before = tokio::task::spawn_blocking(move || {
        ssh(&key4, port, "root", "grep ^root: /etc/shadow | cut -d: -f2")
    })
    .await
    .unwrap()
    .unwrap_or_default();
    let op = app
        .run_op(
            "POST",
            &format!("/api/v1/vms/{vm}/actions"),
            Some(json!({"action": "reset_password", "root_password": "a debian console password"})),
        )
        .await;
    let steps = op["steps"].to_string();
    assert!(
        steps.contains("set password (guest agent)") && !steps.contains("reboot"),
        "{op}"
    );
    let key5 = key.clone();
    let after = tokio::task::spawn_blocking(move || {
        ssh(&key5, port, "root", "grep ^root: /etc/shadow | cut -d: -f2")
    })
    .await
    .unwrap()
    .unwrap_or_default();
    assert!(
        after.starts_with("$6$") && after != before,
        "root's hash changed in place: {before:?} -> {after:?}"
    );

    // Reinstall: a file written before is gone, the forward is the same, ssh answers again.
    let key3 = key.clone();
    let marked = tokio::task::spawn_blocking(move || {
        ssh(
            &key3,
            port,
            "root",
            "echo before > /root/mark && sync && cat /root/mark",
        )
    })
    .await
    .unwrap();
    assert_eq!(marked.as_deref().map(str::trim), Some("before"));
    let actions = format!("/api/v1/vms/{vm}/actions");
    let a = app
        .call(
            "POST",
            &actions,
            Some(json!({"action": "reinstall", "image": "windows-11"})),
        )
        .await;
    assert!(
        a.status == 422 && a.text.contains("no image is named"),
        "{}",
        a.text
    );
    let a = app
        .call("POST", &actions, Some(json!({"action": "reinstall"})))
        .await;
    assert!(
        a.status == 422 && a.text.contains("needs the image"),
        "{}",
        a.text
    );
    let a = app
        .call(
            "POST",
            &actions,
            Some(json!({"action": "start", "image": "debian-12"})),
        )
        .await;
    assert!(
        a.status == 422 && a.text.contains("only with the reinstall"),
        "{}",
        a.text
    );
    let (_, mallory) = crate::tenancy::tenant_with_customer(&app, "mallory").await;
    let a = app
        .call_as(
            &mallory,
            "POST",
            &actions,
            Some(json!({"action": "reinstall", "image": "debian-12"})),
        )
        .await;
    assert_eq!(a.status, 404, "another tenant's VM: {}", a.text);
    let op = app
        .run_op(
            "POST",
            &actions,
            Some(json!({"action": "reinstall", "image": "debian-12"})),
        )
        .await;
    for step in [
        "shut down",
        "replace disk",
        "write cloud-init seed",
        "define domain",
        "start domain",
    ] {
        assert!(
            op["steps"].to_string().contains(step),
            "{step} missing: {op}"
        );
    }
    let after = app.call("GET", &format!("/api/v1/vms/{vm}"), None).await;
    assert_eq!(
        after.body["forwards"], got.body["forwards"],
        "the forwards stay"
    );
    assert_eq!(after.body["state"], "running", "{}", after.text);
    let mark = ssh_until(
        &app,
        &vm,
        &key,
        port,
        "root",
        "cloud-init status --wait >/dev/null; cat /root/mark 2>&1; echo done",
        |o| o.trim_end().ends_with("done"),
    )
    .await;
    assert!(
        mark.contains("No such file"),
        "the fresh disk has no file from before: {mark}"
    );

    // A stop goes through the guest agent: with the power button ignored by the guest, the
    // guest still shuts down cleanly, without being powered off.
    let key6 = key.clone();
    let ignored = tokio::task::spawn_blocking(move || {
        ssh(
            &key6,
            port,
            "root",
            "mkdir -p /etc/systemd/logind.conf.d && printf '[Login]\\nHandlePowerKey=ignore\\n' > /etc/systemd/logind.conf.d/ignore-power-key.conf && systemctl restart systemd-logind; echo ok",
        )
    })
    .await
    .unwrap();
    assert_eq!(ignored.as_deref().map(str::trim), Some("ok"));
    let op = app
        .run_op("POST", &actions, Some(json!({"action": "stop"})))
        .await;
    let steps = op["steps"].to_string();
    assert!(
        steps.contains("shut down (guest agent)") && !steps.contains("power off"),
        "{op}"
    );

    // A resize that grows the disk is seen by the guest when it starts again.
    app.plan("deb-big", 1, 512, disk_gib + 2).await;
    app.run_op(
        "PATCH",
        &format!("/api/v1/vms/{vm}"),
        Some(json!({"plan": "deb-big"})),
    )
    .await;
    app.run_op("POST", &actions, Some(json!({"action": "start"})))
        .await;
    let grown = root_size(
        &ssh_until(
            &app,
            &vm,
            &key,
            port,
            "root",
            "df -B1 --output=size / | tail -1",
            |o| o.trim().parse::<u64>().is_ok(),
        )
        .await,
    );
    assert!(
        grown > ((disk_gib + 2) << 30) * 9 / 10 && grown > size,
        "the root filesystem ({grown} bytes, {size} before) fills the grown {} GiB disk",
        disk_gib + 2
    );

    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debian_13_vm_answers_ssh_and_reports_through_its_agent() {
    let app = spawn_app(Backend::Qemu).await;
    let debian = image(&app, "debian-13").await;
    assert_eq!(debian["os"], "debian", "{debian}");
    assert!(
        debian["version"].as_str().unwrap().starts_with("13."),
        "{debian}"
    );
    let disk_gib = debian["min_disk_gib"].as_u64().unwrap() + 1;
    app.plan("deb", 1, 512, disk_gib).await;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "trixiekey");
    let (vm, port, _) = create_with_key(&app, "trixie1", "debian-13", &public).await;
    let facts = ssh_until(
        &app,
        &vm,
        &key,
        port,
        "debian",
        "cat /etc/os-release; hostname; sudo -n df -B1 --output=size / | tail -1; cloud-init status --wait >/dev/null; echo done",
        |o| o.trim_end().ends_with("done"),
    )
    .await;
    assert!(facts.contains("Debian GNU/Linux 13"), "{facts}");
    assert!(facts.lines().any(|l| l == "trixie1"), "{facts}");
    let size = root_size(&facts);
    assert!(
        size > (disk_gib << 30) * 9 / 10,
        "the root filesystem ({size} bytes) fills the {disk_gib} GiB disk: {facts}"
    );
    // The agent answers: the view has the guest's hostname; a stop goes through it.
    agent_report(&app, &vm, "trixie1").await;
    let op = app
        .run_op(
            "POST",
            &format!("/api/v1/vms/{vm}/actions"),
            Some(json!({"action": "stop"})),
        )
        .await;
    let steps = op["steps"].to_string();
    assert!(
        steps.contains("shut down (guest agent)") && !steps.contains("power off"),
        "{op}"
    );
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}
