//! Many hosts: a second libvirt daemon on this machine stands in for a second machine (the
//! session daemon of an unprivileged user the test makes, reached as
//! `qemu+ssh://<user>@127.0.0.1:<port>/session` through a private sshd with a key the test
//! makes). Hosts are checked before they are registered, VMs are placed on both by labels and
//! serve HTTP on their forwards, and a host with VMs cannot be removed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use carve::provision::reconciler;

use crate::helpers::{Backend, TestApp, free_port, port_range, spawn_app};

/// User-data that serves "hello from <hostname> <a random id>" on port 80 at every boot (the
/// page is written once, at first boot: the same id after a move shows the same disk).
const WEB_USER_DATA: &str = "#!/bin/sh
mkdir -p /srv/www
echo \"hello from $(hostname) $(cat /proc/sys/kernel/random/uuid)\" > /srv/www/index.html
printf '#!/bin/sh\\nhttpd -p 80 -h /srv/www\\n' > /etc/rc.local
chmod +x /etc/rc.local
";

/// A second libvirt host: an unprivileged user's session daemon behind a private sshd.
pub struct SecondHost {
    pub user: String,
    pub uri: String,
    /// Where carve's storage pool goes on it.
    pub pool_path: String,
    port: u16,
    sshd: Option<Child>,
    dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SecondHost {
    /// Makes the user, its key and a private sshd on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let user = format!("carveh{}", &uuid_hex()[..8]);
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", &user]));
        let home = PathBuf::from(format!("/home/{user}"));
        let dir = tempfile::Builder::new()
            .prefix("carve-host2-")
            .tempdir()
            .unwrap();
        let key = dir.path().join("key");
        let host_key = dir.path().join("host_key");
        for k in [&key, &host_key] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k));
        }
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::copy(key.with_extension("pub"), ssh.join("authorized_keys")).unwrap();
        run(Command::new("chown")
            .args(["-R", &format!("{user}:{user}")])
            .arg(&ssh));
        run(Command::new("chmod").args(["700"]).arg(&ssh));
        let port = free_port();
        let uri = format!(
            "qemu+ssh://{user}@127.0.0.1:{port}/session?keyfile={}&no_verify=1",
            key.display()
        );
        let mut host = Self {
            pool_path: format!("/home/{user}/carve-pool"),
            user,
            uri,
            port,
            sshd: None,
            dir,
        };
        host.start_sshd();
        host
    }

    /// Starts (again) the private sshd, on the same port with the same host key.
    pub fn start_sshd(&mut self) {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = self.dir.path();
        let sshd = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .args([
                "-p",
                &self.port.to_string(),
                "-o",
                "ListenAddress=127.0.0.1",
            ])
            .arg("-o")
            .arg(format!("HostKey={}", dir.join("host_key").display()))
            .arg("-o")
            .arg(format!("PidFile={}", dir.join("sshd.pid").display()))
            .args([
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "KbdInteractiveAuthentication=no",
                "-o",
                &format!("AllowUsers={}", self.user),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (openssh-server) runs");
        self.sshd = Some(sshd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the test's sshd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Takes the "machine" off the network: sshd stops, and the user's libvirt daemon with it
    /// (its guests keep running, as they do when libvirtd restarts).
    pub fn cut_off(&mut self) {
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        self.kill_daemons(&["libvirtd", "virtqemud"]);
    }

    /// Ends the user's session daemons, by their pid files.
    fn kill_daemons(&self, names: &[&str]) {
        for daemon in names {
            let pidfile = format!("/home/{}/.cache/libvirt/{daemon}.pid", self.user);
            if let Some(pid) = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    }

    /// Runs `virsh` against the host; its output.
    pub fn virsh(&self, args: &[&str]) -> String {
        let out = Command::new("virsh")
            .args(["-q", "-c", &self.uri])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for SecondHost {
    fn drop(&mut self) {
        // Guests a failed test left behind, then the daemon, sshd and the user.
        for domain in self.virsh(&["list", "--all", "--name"]).lines() {
            let domain = domain.trim();
            if !domain.is_empty() {
                self.virsh(&["destroy", domain]);
                self.virsh(&["undefine", domain]);
            }
        }
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        // The user's session daemons (started on demand over ssh).
        self.kill_daemons(&["libvirtd", "virtqemud", "virtlogd"]);
        // userdel refuses while a process of the user still runs: give them a moment to end,
        // then end what is left of this throwaway user's processes, by pid.
        let uid = Command::new("id")
            .args(["-u", &self.user])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u32>().ok());
        // Never root's or this test's own processes, whatever `id` said.
        let uid = uid.filter(|&u| u != 0 && u != own_uid());
        for attempt in 0..20 {
            if attempt >= 8
                && let Some(uid) = uid
            {
                for pid in pids_of_uid(uid) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
            let _ = Command::new("userdel")
                .args(["-r", &self.user])
                .stderr(Stdio::null())
                .status();
            let exists = Command::new("id")
                .arg(&self.user)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !exists {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The processes whose real or effective uid is `uid` (from /proc/<pid>/status, as userdel
/// judges; a process that changed uid without exec has a root-owned /proc entry).
fn pids_of_uid(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            uids.split_whitespace()
                .any(|u| u.parse() == Ok(uid))
                .then_some(pid)
        })
        .collect()
}

/// This process's uid (from /proc/self/status).
fn own_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn uuid_hex() -> String {
    format!("{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u128::from_le_bytes(b)
}

/// Waits until `url` answers 200 with a body starting with `body`.
async fn until_page(url: &str, body: &str, within: Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let deadline = Instant::now() + within;
    loop {
        let got = match client.get(url).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        if got.0 == 200 && got.1.starts_with(body) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} answered {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates a web VM with `labels` and waits until it runs; its id, host and forwarded port.
async fn web_vm(app: &TestApp, name: &str, labels: &[&str]) -> (String, String, u16) {
    let a = app
        .call(
            "POST",
            "/api/v1/vms",
            Some(
                json!({"name": name, "plan": "small", "image": "tiny", "ports": [80],
                "user_data": WEB_USER_DATA, "host_labels": labels}),
            ),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(180))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let vm = &a.body["vm"];
    (
        vm["id"].as_str().unwrap().to_string(),
        vm["host"].as_str().unwrap().to_string(),
        vm["forwards"][0]["host_port"].as_u64().unwrap() as u16,
    )
}

/// Runs reconciler passes until the host shows `state` (at most 90 s: a host that failed is
/// tried again only after carve's 15 s failure memory, and reconnecting over ssh starts the
/// user's libvirt daemon, which takes a while on a loaded 2-core CI machine); its view then.
async fn host_state_after_passes(app: &TestApp, host: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        reconciler::pass(&app.state.prov).await.unwrap();
        let h = app
            .call("GET", &format!("/api/v1/hosts/{host}"), None)
            .await;
        if h.body["state"] == state {
            return h.body;
        }
        assert!(Instant::now() < deadline, "host never {state}: {}", h.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn problem_field(a: &crate::helpers::Answer) -> String {
    a.body["errors"][0]["field"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_is_checked_runs_vms_by_label_outlives_an_outage_and_is_evacuated() {
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    let mut second = SecondHost::start();
    let (first_port, last_port) = port_range();
    let ports = format!("{first_port}-{}", last_port - 8);
    let register = |extra: Value| {
        let mut body = json!({"libvirt_uri": second.uri, "name": "host2", "domain_type": "qemu",
            "storage_path": second.pool_path, "labels": ["zone=b"], "forward_ports": ports});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    // What carve refuses, each naming the field to fix.
    let closed = free_port();
    let unreachable = format!(
        "qemu+ssh://{}@127.0.0.1:{closed}/session?no_verify=1",
        second.user
    );
    for (body, status, field, says) in [
        (
            register(json!({"libvirt_uri": unreachable})),
            422,
            "libvirt_uri",
            "cannot connect",
        ),
        (
            register(json!({"libvirt_uri": "xen:///system"})),
            422,
            "libvirt_uri",
            "not a QEMU driver URI",
        ),
        (
            register(json!({"storage_path": null})),
            422,
            "storage_path",
            "needs storage_path",
        ),
        (
            register(json!({"storage_path": "relative/dir"})),
            422,
            "storage_path",
            "absolute",
        ),
        (
            register(json!({"domain_type": "xen"})),
            422,
            "domain_type",
            "not a domain type",
        ),
        (
            register(json!({"labels": ["<b>"]})),
            422,
            "labels",
            "is not a label",
        ),
        (
            register(json!({"forward_ports": "9-1"})),
            422,
            "forward_ports",
            "first-last",
        ),
        (
            register(json!({"storage_path": "/proc/carve-pool"})),
            422,
            "storage_path",
            "cannot make storage pool",
        ),
    ] {
        let a = app.call("POST", "/api/v1/hosts", Some(body)).await;
        assert_eq!(a.status, status, "{}", a.text);
        assert_eq!(problem_field(&a), field, "{}", a.text);
        assert!(a.text.contains(says), "{}", a.text);
    }
    // Forwards that would share ports with the local host's.
    let local_ports = format!("{}-{}", app.forward_ports.0, app.forward_ports.0 + 5);
    let a = app
        .call(
            "POST",
            "/api/v1/hosts",
            Some(register(json!({"forward_ports": local_ports}))),
        )
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("would share ports"), "{}", a.text);
    let a = app
        .call(
            "POST",
            "/api/v1/hosts",
            Some(register(json!({"surprise": 1}))),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert!(a.text.contains("unknown field `surprise`"), "{}", a.text);

    // The real registration: checked, then listed with its pool, labels and forwards.
    let a = app
        .call("POST", "/api/v1/hosts", Some(register(json!({}))))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let host2 = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["state"], "active");
    assert_eq!(a.body["domain_type"], "qemu");
    assert_eq!(a.body["labels"], json!(["zone=b"]));
    assert_eq!(a.body["storage_path"], second.pool_path.as_str());
    assert_eq!(a.body["forward_ports"], ports.as_str());
    assert!(
        a.body["physical"]["vcpus"].as_u64().unwrap() > 0,
        "{}",
        a.text
    );
    assert!(std::path::Path::new(&second.pool_path).is_dir());
    let again = app
        .call(
            "POST",
            "/api/v1/hosts",
            Some(register(json!({"name": "again"}))),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    let hosts = app.call("GET", "/api/v1/hosts", None).await;
    assert_eq!(hosts.body.as_array().unwrap().len(), 2, "{}", hosts.text);
    let local = hosts.body[0]["id"].as_str().unwrap().to_string();
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/hosts/{local}"),
            Some(json!({"labels": ["zone=a"]})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);

    // A VM on each host, placed by label; each serves its page on its own forward.
    let ((vm_b, on_b, port_b), (vm_a, on_a, port_a)) = tokio::join!(
        web_vm(&app, "web-b", &["zone=b"]),
        web_vm(&app, "web-a", &["zone=a"])
    );
    assert_eq!(on_b, host2);
    assert_eq!(on_a, local);
    assert!((first_port..=last_port).contains(&port_b), "{port_b}");
    let (url_b, url_a) = (
        format!("http://127.0.0.1:{port_b}/"),
        format!("http://127.0.0.1:{port_a}/"),
    );
    tokio::join!(
        until_page(&url_b, "hello from web-b", Duration::from_secs(120)),
        until_page(&url_a, "hello from web-a", Duration::from_secs(120)),
    );
    // Its domain and files are the second host's: its user's daemon runs it, its pool holds
    // its disk, the base it is backed by, and its console log (read through libvirt).
    assert!(
        second
            .virsh(&["list", "--name"])
            .contains(&format!("carve-{vm_b}"))
    );
    let files: Vec<String> = std::fs::read_dir(&second.pool_path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.contains(&format!("{vm_b}.qcow2")), "{files:?}");
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("base-") && f.ends_with(".qcow2.checked")),
        "{files:?}"
    );
    let console = app
        .call("GET", &format!("/api/v1/vms/{vm_b}/console"), None)
        .await;
    assert!(console.text.contains("web-b"), "{}", console.text);

    // No label matches: a clear 422.
    let a = app
        .call("POST", "/api/v1/vms", Some(json!({"name": "nowhere", "plan": "small", "image": "tiny", "host_labels": ["zone=c"]})))
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(problem_field(&a), "host_labels");

    // The second machine goes off the network: the host is unreachable, its VM unknown, and
    // nothing is deleted. When it answers again both come back, the guest never stopped.
    let page_b = reqwest::get(&url_b).await.unwrap().text().await.unwrap();
    second.cut_off();
    // (The app's own reconciler runs too: the test runs passes until the change shows.)
    let h = host_state_after_passes(&app, &host2, "unreachable").await;
    assert!(h["state_reason"].as_str().is_some(), "{h}");
    let v = app.call("GET", &format!("/api/v1/vms/{vm_b}"), None).await;
    assert_eq!(v.body["state"], "unknown", "{}", v.text);
    let a = app
        .call("POST", "/api/v1/vms", Some(json!({"name": "meanwhile", "plan": "small", "image": "tiny", "host_labels": ["zone=b"]})))
        .await;
    assert_eq!(
        a.status, 422,
        "no new VM on an unreachable host: {}",
        a.text
    );
    second.start_sshd();
    host_state_after_passes(&app, &host2, "active").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = app.call("GET", &format!("/api/v1/vms/{vm_b}"), None).await;
        if v.body["state"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the VM did not come back: {}",
            v.text
        );
        reconciler::pass(&app.state.prov).await.unwrap();
    }
    until_page(&url_b, &page_b, Duration::from_secs(120)).await;

    // Evacuation: only from maintenance; the VM moves to the local host with its disk (the
    // page its first boot wrote), on a forward made again there; the old copy goes.
    let evacuate = format!("/api/v1/hosts/{host2}/evacuate");
    let a = app.call("POST", &evacuate, None).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("maintenance first"), "{}", a.text);
    let a = app
        .call(
            "PATCH",
            &format!("/api/v1/hosts/{host2}"),
            Some(json!({"state": "maintenance"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["state"], "maintenance");
    let a = app
        .call("POST", "/api/v1/vms", Some(json!({"name": "blocked", "plan": "small", "image": "tiny", "host_labels": ["zone=b"]})))
        .await;
    assert_eq!(
        a.status, 422,
        "no new VM on a host in maintenance: {}",
        a.text
    );
    let a = app
        .call("DELETE", &format!("/api/v1/hosts/{host2}"), None)
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("still holds 1 VM"), "{}", a.text);
    let a = app.call("POST", &evacuate, None).await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.body["refused"], json!([]), "{}", a.text);
    let moves = a.body["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{}", a.text);
    assert_eq!(moves[0]["kind"], "move");
    let op = app
        .wait_operation(moves[0]["id"].as_str().unwrap(), Duration::from_secs(240))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let v = app.call("GET", &format!("/api/v1/vms/{vm_b}"), None).await;
    assert_eq!(v.body["host"], local.as_str(), "{}", v.text);
    assert_eq!(v.body["state"], "running", "{}", v.text);
    let moved_port = v.body["forwards"][0]["host_port"].as_u64().unwrap();
    assert!(
        (app.forward_ports.0..=app.forward_ports.1).contains(&(moved_port as u16)),
        "{}",
        v.text
    );
    until_page(
        &format!("http://127.0.0.1:{moved_port}/"),
        &page_b,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        !second
            .virsh(&["list", "--all", "--name"])
            .contains("carve-")
    );
    let left: Vec<String> = std::fs::read_dir(&second.pool_path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(&vm_b))
        .collect();
    assert!(left.is_empty(), "the old copy stayed: {left:?}");

    // An empty host can go, and its URI can be registered again later.
    let a = app
        .call("DELETE", &format!("/api/v1/hosts/{local}"), None)
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    let a = app
        .call("DELETE", &format!("/api/v1/hosts/{host2}"), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = app
        .call("GET", &format!("/api/v1/hosts/{host2}"), None)
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    for vm in [&vm_a, &vm_b] {
        app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
            .await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_evacuation_converges() {
    use crate::recovery::{bootstrap, call};
    let settings: &[(&str, &str)] = &[
        ("CARVE_RECONCILER_INTERVAL_SECS", "2"),
        ("CARVE_RECONCILER_OPERATION_LEASE_SECS", "6"),
    ];
    let data = crate::helpers::data_dir();
    let _pool = crate::helpers::PoolCleanup::of(data.path());
    let http_port = free_port();
    let token = bootstrap(data.path(), http_port, settings);
    let mut server =
        crate::helpers::serve_child(data.path(), Backend::Qemu, http_port, settings).await;
    let second = SecondHost::start();
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let api = |method: reqwest::Method, path: &str, body: Option<Value>| {
        call(&client, &token, method, format!("{base}{path}"), body)
    };
    use reqwest::Method;
    let a = api(
        Method::POST,
        "/api/v1/plans",
        Some(json!({"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 1})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let (first, last) = port_range();
    let a = api(
        Method::POST,
        "/api/v1/hosts",
        Some(json!({"libvirt_uri": second.uri, "name": "host2",
        "domain_type": "qemu", "storage_path": second.pool_path, "labels": ["far"],
        "forward_ports": format!("{first}-{}", last - 8)})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let host2 = a.body["id"].as_str().unwrap().to_string();
    let a = api(
        Method::POST,
        "/api/v1/vms",
        Some(json!({"name": "mover", "plan": "small", "image": "tiny",
        "ports": [80], "user_data": WEB_USER_DATA, "host_labels": ["far"]})),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let vm = a.body["vm"]["id"].as_str().unwrap().to_string();
    let created = a.body["id"].as_str().unwrap().to_string();
    let op_state = async |id: &str| {
        api(Method::GET, &format!("/api/v1/operations/{id}"), None)
            .await
            .body
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while op_state(&created).await["state"] != "succeeded" {
        assert!(Instant::now() < deadline, "the create did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let port = a.body["vm"]["forwards"][0]["host_port"].as_u64().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    until_page(&url, "hello from mover", Duration::from_secs(120)).await;
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();

    let a = api(
        Method::PATCH,
        &format!("/api/v1/hosts/{host2}"),
        Some(json!({"state": "maintenance"})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = api(
        Method::POST,
        &format!("/api/v1/hosts/{host2}/evacuate"),
        None,
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let moving = a.body["moves"][0]["id"].as_str().unwrap().to_string();
    // Kill carve once the move has begun.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let op = op_state(&moving).await;
        if op["steps"].as_array().is_some_and(|s| !s.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the move did not start: {op}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let db = carve::db::connect(&crate::helpers::database_url(data.path()))
        .await
        .unwrap();
    let left: (String, String) =
        carve::on_db!(&db, c => sqlx::query_as("SELECT state, steps FROM operations WHERE id = $1")
            .bind(&moving)
            .fetch_one(c)
            .await)
        .unwrap();
    eprintln!("killed during the move: {left:?}");
    assert_eq!(left.0, "running", "the kill came too late to test recovery");
    db.close().await;
    server = crate::helpers::serve_child(data.path(), Backend::Qemu, http_port, settings).await;
    let base = server.base.clone();
    let get = |path: String| call(&client, &token, Method::GET, format!("{base}{path}"), None);
    let deadline = Instant::now() + Duration::from_secs(240);
    let op = loop {
        let op = get(format!("/api/v1/operations/{moving}")).await.body;
        if op["state"] == "succeeded" || op["state"] == "failed" {
            break op;
        }
        assert!(
            Instant::now() < deadline,
            "the move did not finish after the restart: {op}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(op["state"], "succeeded", "{op}");
    let v = get(format!("/api/v1/vms/{vm}")).await;
    assert_eq!(v.body["state"], "running", "{}", v.text);
    assert_ne!(v.body["host"], host2.as_str(), "{}", v.text);
    let moved = v.body["forwards"][0]["host_port"].as_u64().unwrap();
    until_page(
        &format!("http://127.0.0.1:{moved}/"),
        &page,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        !second
            .virsh(&["list", "--all", "--name"])
            .contains("carve-")
    );
    assert!(
        !std::fs::read_dir(&second.pool_path).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&vm)),
        "the old copy stayed"
    );
    let a = call(
        &client,
        &token,
        Method::DELETE,
        format!("{base}/api/v1/vms/{vm}"),
        None,
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let deleting = a.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(format!("/api/v1/operations/{deleting}")).await.body["state"] != "succeeded" {
        assert!(Instant::now() < deadline, "the delete did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
