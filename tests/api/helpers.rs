//! Test harness: `spawn_app` builds carve on port 0 with a fresh data directory and database,
//! against real libvirt (`qemu:///system`, software emulation) or the in-process test driver.
//! Logs are hidden unless `CARVETEST_LOG` is set (e.g. `CARVETEST_LOG=carve=debug`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use carve::app::{AppState, Application};
use carve::config::Config;
use serde_json::{Value, json};

/// Where built guest images are (images/build.sh writes them there).
pub fn image_dir() -> PathBuf {
    std::env::var_os("CARVETEST_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/carve/images".into())
}

/// Real libvirt, or libvirt's in-process test driver.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Qemu,
    TestDriver,
}

/// A running carve and an admin token for it.
pub struct TestApp {
    /// Declared first, so it runs before the data directory goes.
    sweeper: Sweeper,
    pub addr: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub state: AppState,
    pub data_dir: tempfile::TempDir,
    pub forward_ports: (u16, u16),
    /// Port of the SFTP server on 127.0.0.1.
    pub sftp_port: u16,
    backend: Backend,
    server: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

static LOG: Once = Once::new();

/// Of each app's 40 ports, how many (the last ones) are for pool listeners.
pub const LB_PORTS: u16 = 8;

/// Where test apps' port ranges come from: below Linux's ephemeral ports (32768 and up), so no
/// client socket of this machine can hold one, and clear of `make run`'s 19000-29999.
const PORT_WINDOWS: [(u16, u16); 2] = [(10000, 18999), (30000, 32767)];

/// The next range `port_range` tries (an index over `PORT_WINDOWS`' ranges of 40).
static NEXT_RANGE: Mutex<Option<usize>> = Mutex::new(None);

/// A fresh range of 40 ports, all free right now on 127.0.0.1: guest forwards, then pool
/// listeners. Each app of this process gets its own; another test process starts elsewhere.
pub fn port_range() -> (u16, u16) {
    let starts: Vec<u16> = PORT_WINDOWS
        .iter()
        .flat_map(|&(first, last)| (first..=last.saturating_sub(39)).step_by(40))
        .collect();
    let mut next = NEXT_RANGE.lock().unwrap();
    let mut index = next.unwrap_or(std::process::id() as usize * 37 % starts.len());
    for _ in 0..starts.len() {
        let base = starts[index % starts.len()];
        index += 1;
        let free =
            (base..=base + 39).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            *next = Some(index);
            return (base, base + 39);
        }
    }
    panic!("no range of 40 free ports left in {PORT_WINDOWS:?}; stop what holds them");
}

/// A data directory under /var/tmp (QEMU must be able to traverse to it).
pub fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("carve-test-")
        .tempdir_in("/var/tmp")
        .expect("temp dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

/// The database a test app on `data` uses: SQLite in the data directory, or, when
/// `CARVETEST_POSTGRES` names a PostgreSQL server (`postgres://user:password@host:port`), a fresh
/// database there named after the data directory (made on first use).
pub fn database_url(data: &Path) -> String {
    let Ok(server) = std::env::var("CARVETEST_POSTGRES") else {
        return format!("sqlite://{}", data.join("carve.db").display());
    };
    let leaf = data.file_name().unwrap_or_default().to_string_lossy();
    let name: String = format!("t_{leaf}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let made = std::process::Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args(["-qAtc", &format!("CREATE DATABASE {name}")])
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("psql runs");
    let err = String::from_utf8_lossy(&made.stderr);
    assert!(
        made.status.success() || err.contains("already exists"),
        "cannot make test database {name}: {err}"
    );
    format!("{server}/{name}")
}

/// Whether the tests run on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("CARVETEST_POSTGRES").is_ok()
}

/// The configuration a test app runs with; `extra` are `CARVE_*` overrides.
pub fn config(backend: Backend, data: &Path, ports: (u16, u16), extra: &[(&str, &str)]) -> Config {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let uri = match backend {
        Backend::Qemu => "qemu:///system",
        Backend::TestDriver => "test:///default",
    };
    for (k, v) in [
        ("CARVE_DATA_DIR", data.to_string_lossy().into_owned()),
        ("CARVE_DATABASE_URL", database_url(data)),
        (
            "CARVE_IMAGE_DIR",
            image_dir().to_string_lossy().into_owned(),
        ),
        ("CARVE_HTTP_LISTEN", "127.0.0.1:0".into()),
        ("CARVE_SFTP_LISTEN", "127.0.0.1:0".into()),
        ("CARVE_LIBVIRT_URI", uri.into()),
        ("CARVE_LIBVIRT_DOMAIN_TYPE", "qemu".into()),
        ("CARVE_LIBVIRT_STOP_TIMEOUT_SECS", "30".into()),
        (
            "CARVE_NETWORK_FORWARD_PORTS",
            format!("{}-{}", ports.0, ports.1 - LB_PORTS),
        ),
        (
            "CARVE_LB_PORTS",
            format!("{}-{}", ports.1 - LB_PORTS + 1, ports.1),
        ),
        ("CARVE_RECONCILER_INTERVAL_SECS", "2".into()),
        ("CARVE_RECONCILER_OPERATION_LEASE_SECS", "6".into()),
    ] {
        vars.insert(k.to_string(), v);
    }
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::load_with_env(None, &vars).expect("test config")
}

/// Starts carve in this process.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts carve in this process with extra `CARVE_*` settings.
pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let app = start_in(backend, data_dir(), extra).await;
    let admin_token = make_user(&app.state, "admin@example.com", "admin", None).await;
    TestApp { admin_token, ..app }
}

/// Starts carve on an existing data directory (no admin token yet).
async fn start_in(
    backend: Backend,
    data_dir: tempfile::TempDir,
    extra: &[(&str, &str)],
) -> TestApp {
    LOG.call_once(|| {
        if let Ok(filter) = std::env::var("CARVETEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
    let ports = port_range();
    let config = config(backend, data_dir.path(), ports, extra);
    let app = Application::build(config).await.expect("carve builds");
    let addr = format!("http://{}", app.http_addr());
    let sftp_port = app.sftp_addr().port();
    let state = app.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async move {
                let _ = rx.await;
            })
            .await;
    });
    TestApp {
        sweeper: Sweeper {
            vm_dir: data_dir.path().join("vms"),
            armed: backend == Backend::Qemu,
        },
        addr,
        client: reqwest::Client::new(),
        admin_token: String::new(),
        state,
        data_dir,
        forward_ports: ports,
        sftp_port,
        backend,
        server,
        stop: Some(tx),
    }
}

/// Creates a user and a token for it straight in the database; returns the token.
pub async fn make_user(
    state: &AppState,
    email: &str,
    role: &str,
    tenant: Option<&carve::domain::ids::TenantId>,
) -> String {
    let hash = state
        .hasher
        .hash("test password 1".into())
        .await
        .expect("hash");
    let role = carve::auth::Role::parse(role).expect("admin or customer");
    let user = carve::db::users::insert(&state.db, email, role, tenant, &hash)
        .await
        .expect("user");
    let (secret, digest) = carve::auth::new_token();
    carve::db::tokens::insert(&state.db, &user, "test", &digest, None)
        .await
        .expect("token");
    secret
}

/// An HTTP answer: status, headers and JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    /// The app's /metrics text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sends a request with the admin token.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call_as(&self.admin_token.clone(), method, path, body)
            .await
    }

    /// Sends a request with the given token.
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.addr))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        answer(req.send().await.expect("request")).await
    }

    /// Sends a raw body with a content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let req = self
            .client
            .request(method, format!("{}{path}", self.addr))
            .bearer_auth(&self.admin_token)
            .header("content-type", content_type)
            .body(body);
        answer(req.send().await.expect("request")).await
    }

    /// Creates a plan and returns its id.
    pub async fn plan(&self, name: &str, vcpus: u32, memory_mib: u64, disk_gib: u64) -> String {
        let a = self
            .call("POST", "/api/v1/plans", Some(json!({"name": name, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib})))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["id"].as_str().unwrap().to_string()
    }

    /// Waits until an operation finishes; returns it.
    pub async fn wait_operation(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self
                .call("GET", &format!("/api/v1/operations/{id}"), None)
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            let state = a.body["state"].as_str().unwrap_or_default().to_string();
            if state == "succeeded" || state == "failed" {
                return a.body;
            }
            assert!(
                Instant::now() < deadline,
                "operation {id} still {state} after {timeout:?}: {}",
                a.text
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs an operation-returning call and waits for it to succeed.
    pub async fn run_op(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let a = self.call(method, path, body).await;
        assert_eq!(a.status, 202, "{method} {path}: {}", a.text);
        let location = a
            .headers
            .get("location")
            .expect("Location header")
            .to_str()
            .unwrap()
            .to_string();
        let id = a.body["id"].as_str().unwrap().to_string();
        assert_eq!(location, format!("/api/v1/operations/{id}"));
        let op = self.wait_operation(&id, Duration::from_secs(180)).await;
        assert_eq!(op["state"], "succeeded", "{method} {path}: {op}");
        op
    }

    /// The local host's libvirt connection.
    pub async fn hv(&self) -> carve::hypervisor::Hv {
        let prov = &self.state.prov;
        prov.hv_of(&prov.local_host).await.expect("the local host")
    }

    /// Names of libvirt domains of this app's live and deleted VMs that still exist.
    pub async fn domains(&self) -> Vec<String> {
        self.hv()
            .await
            .call(|h| h.list())
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect()
    }

    /// Stops the server (the state stays usable).
    pub async fn stop(mut self) -> AppState {
        self.halt().await;
        self.state.clone()
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.server).await;
        self.server.abort();
    }

    /// Stops carve and starts it again on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        self.halt().await;
        let token = self.admin_token.clone();
        let backend = self.backend;
        let TestApp {
            data_dir,
            mut sweeper,
            ..
        } = self;
        sweeper.armed = false;
        let app = start_in(backend, data_dir, &[]).await;
        TestApp {
            admin_token: token,
            ..app
        }
    }
}

/// Reads a response into an [`Answer`].
pub async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// GETs `http://127.0.0.1:port/` until it answers 200 or the timeout passes.
pub async fn http_get_until(port: u16, timeout: Duration) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/")).send().await
            && r.status().is_success()
        {
            return r.text().await.ok();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}

/// User-data that installs an rc.local serving "hello from <hostname>" on port 80 (the
/// tiny image runs rc.local after user-data, at every boot).
pub const HTTP_USER_DATA: &str = "#!/bin/sh
mkdir -p /srv/www
echo \"hello from $(hostname)\" > /srv/www/index.html
printf '#!/bin/sh\\nhttpd -p 80 -h /srv/www\\n' > /etc/rc.local
chmod +x /etc/rc.local
";

/// A `carve` command for a child process on `data`, reached on `http_port`; `extra` are
/// more `CARVE_*` settings.
pub fn carve_command(
    data: &Path,
    backend: Backend,
    http_port: u16,
    extra: &[(&str, &str)],
) -> std::process::Command {
    let ports = port_range();
    let uri = match backend {
        Backend::Qemu => "qemu:///system",
        Backend::TestDriver => "test:///default",
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_carve"));
    cmd.env("CARVE_DATA_DIR", data)
        .env("CARVE_DATABASE_URL", database_url(data))
        .env("CARVE_IMAGE_DIR", image_dir())
        .env("CARVE_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
        .env("CARVE_SFTP_LISTEN", "127.0.0.1:0")
        .env("CARVE_LIBVIRT_URI", uri)
        .env("CARVE_LIBVIRT_DOMAIN_TYPE", "qemu")
        .env(
            "CARVE_NETWORK_FORWARD_PORTS",
            format!("{}-{}", ports.0, ports.1 - LB_PORTS),
        )
        .env(
            "CARVE_LB_PORTS",
            format!("{}-{}", ports.1 - LB_PORTS + 1, ports.1),
        )
        .env(
            "RUST_LOG",
            std::env::var("CARVETEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `carve serve` as a child process (killed when dropped).
pub struct ChildServer {
    pub child: std::process::Child,
    pub base: String,
}

/// When a test fails, removes the libvirt domains of its app's VMs, so a failed run does not
/// leave guests running that load every later run (a passing test cleans up itself, or hands
/// its VMs to another process on purpose). Either way, removes the app's storage pool.
struct Sweeper {
    vm_dir: PathBuf,
    armed: bool,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let virsh = |action: &str, name: &str| {
            let _ = std::process::Command::new("virsh")
                .args(["-q", "-c", "qemu:///system", action, name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        if std::thread::panicking() {
            for vm in vms_with_files(&self.vm_dir) {
                virsh("destroy", &format!("carve-{vm}"));
                virsh("undefine", &format!("carve-{vm}"));
            }
        }
        remove_pool(&self.vm_dir);
    }
}

/// The VMs that have files (disk, seed or console log volumes) in the storage pool directory
/// `vm_dir`, or a directory there (VMs made before volumes), sorted and without repeats.
pub fn vms_with_files(vm_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(vm_dir) else {
        return Vec::new();
    };
    let mut vms: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            carve::provision::disks::VmVolumes::owner(&name)
                .map(|vm| vm.to_string())
                .or_else(|| carve::domain::ids::VmId::parse(&name).map(|vm| vm.to_string()))
        })
        .collect();
    vms.sort();
    vms.dedup();
    vms
}

/// Removes the storage pool carve made on the local libvirt for the data directory `data`
/// (carve itself never removes a pool: it holds an installation's disks).
fn remove_pool(vm_dir: &Path) {
    let pool = carve::provision::host::local_pool_name(vm_dir);
    for action in ["pool-destroy", "pool-undefine"] {
        let _ = std::process::Command::new("virsh")
            .args(["-q", "-c", "qemu:///system", action, &pool])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Removes, when dropped, the local storage pool of a data directory that `carve serve`
/// children used (declare it after the directory, so it goes first).
pub struct PoolCleanup(PathBuf);

impl PoolCleanup {
    /// The guard for the data directory `data`.
    pub fn of(data: &Path) -> Self {
        Self(data.join("vms"))
    }
}

impl Drop for PoolCleanup {
    fn drop(&mut self) {
        remove_pool(&self.0);
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `carve serve` on `data` and waits until /healthz answers; stderr goes to
/// `<data>/serve.log`.
pub async fn serve_child(
    data: &Path,
    backend: Backend,
    http_port: u16,
    extra: &[(&str, &str)],
) -> ChildServer {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("serve.log"))
        .unwrap();
    let child = carve_command(data, backend, http_port, extra)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("carve serve starts");
    let server = ChildServer {
        child,
        base: format!("http://127.0.0.1:{http_port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{}/healthz", server.base))
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        assert!(
            Instant::now() < deadline,
            "carve serve did not come up; see {}",
            data.join("serve.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}
