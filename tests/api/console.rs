//! The serial console of a real guest over carve's WebSocket: a VM created with a root
//! password is logged into at the getty prompt and answers a command; tickets work once, for
//! their VM, from this server's pages; a second writer takes over and the first is told; a
//! stopped VM says so; opening and closing are audited; the password is stored nowhere.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::tenancy::tenant_with_customer;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A console connection and everything it has shown so far.
struct Console {
    ws: Ws,
    screen: String,
    statuses: Vec<Value>,
}

impl Console {
    /// Opens `url` (a ticket's) with `origin`; the HTTP status when refused.
    async fn open(app: &TestApp, url: &str, origin: Option<&str>) -> Result<Console, u16> {
        let base = app.addr.replace("http://", "ws://");
        let mut req = format!("{base}{url}").into_client_request().unwrap();
        if let Some(origin) = origin {
            req.headers_mut().insert("origin", origin.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Console {
                ws,
                screen: String::new(),
                statuses: Vec::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("console connection failed: {e}"),
        }
    }

    async fn send(&mut self, keys: &str) {
        self.ws.send(Message::Text(keys.into())).await.unwrap();
    }

    /// Reads until `want(self)` holds, for at most `secs` seconds.
    async fn until(&mut self, secs: u64, what: &str, want: impl Fn(&Console) -> bool) {
        if !self.try_until(secs, what, want).await {
            panic!(
                "no {what} within {secs} s; screen:\n{}\nstatuses: {:?}",
                self.screen, self.statuses
            );
        }
    }

    /// Reads until `want(self)` holds; false if `secs` seconds pass first.
    async fn try_until(&mut self, secs: u64, what: &str, want: impl Fn(&Console) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !want(self) {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                return false;
            };
            match frame {
                Some(Ok(Message::Binary(b))) => self.screen.push_str(&String::from_utf8_lossy(&b)),
                Some(Ok(Message::Text(t))) => self.statuses.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None => {
                    assert!(
                        want(self),
                        "closed before {what}; statuses: {:?}",
                        self.statuses
                    );
                    return true;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("console error before {what}: {e}"),
            }
        }
        true
    }

    fn has_status(&self, status: &str) -> bool {
        self.statuses.iter().any(|s| s["status"] == status)
    }
}

async fn ticket(app: &TestApp, token: &str, vm: &str, mode: &str) -> (u16, Value) {
    let a = app
        .call_as(
            token,
            "POST",
            &format!("/api/v1/vms/{vm}/console/tickets"),
            Some(json!({"mode": mode})),
        )
        .await;
    (a.status, a.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_password_logs_in_at_the_console_and_one_writer_types_at_a_time() {
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    let origin = app.addr.clone();
    let password = "console password 42";
    let new_password = "another console password 7";

    // Root passwords out of range are refused, saying what to fix; nothing is made.
    let long = "x".repeat(1025);
    for (bad, says) in [
        ("short", "10 to 1024"),
        (long.as_str(), "10 to 1024"),
        ("line\nbreak pass", "line breaks"),
    ] {
        let a = app
            .call(
                "POST",
                "/api/v1/vms",
                Some(
                    json!({"name": "bad", "plan": "small", "image": "tiny", "root_password": bad}),
                ),
            )
            .await;
        assert_eq!(a.status, 422, "{}", a.text);
        assert!(
            a.text.contains("root_password") && a.text.contains(says),
            "{}",
            a.text
        );
    }
    let a = app
        .call("POST", "/api/v1/vms", Some(json!({"name": "con1", "plan": "small", "image": "tiny", "root_password": password})))
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let vm = a.body["vm"]["id"].as_str().unwrap().to_string();
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");

    // Another tenant's customer cannot get a ticket for it.
    let (_, other) = tenant_with_customer(&app, "othershop").await;
    assert_eq!(ticket(&app, &other, &vm, "write").await.0, 404);

    // Refused without this server's Origin, and a used ticket is refused.
    let (status, t) = ticket(&app, &app.admin_token, &vm, "write").await;
    assert_eq!(status, 201, "{t}");
    let url = t["url"].as_str().unwrap().to_string();
    assert_eq!(
        Console::open(&app, &url, None).await.err(),
        Some(403),
        "a missing Origin"
    );
    let (_, t) = ticket(&app, &app.admin_token, &vm, "write").await;
    let url = t["url"].as_str().unwrap().to_string();
    assert_eq!(
        Console::open(&app, &url, Some("http://evil.example"))
            .await
            .err(),
        Some(403)
    );
    let (_, t) = ticket(&app, &app.admin_token, &vm, "write").await;
    let url = t["url"].as_str().unwrap().to_string();
    let mut first = Console::open(&app, &url, Some(&origin))
        .await
        .expect("console opens");
    assert_eq!(
        Console::open(&app, &url, Some(&origin)).await.err(),
        Some(403),
        "a used ticket"
    );

    // Log in at the getty prompt with the password and run a command.
    first
        .until(10, "connected", |c| c.has_status("connected"))
        .await;
    log_in(&mut first, password).await;

    // A second writer takes over: the first is told and may no longer type.
    let (_, t) = ticket(&app, &app.admin_token, &vm, "write").await;
    let mut second = Console::open(&app, t["url"].as_str().unwrap(), Some(&origin))
        .await
        .unwrap();
    second
        .until(10, "connected", |c| c.has_status("connected"))
        .await;
    first
        .until(10, "the takeover", |c| c.has_status("taken_over"))
        .await;
    let mark2 = format!("second-{}", rand::random::<u32>());
    second.send(&format!("echo {mark2}\r")).await;
    second
        .until(20, "the second writer's answer", |c| {
            c.screen.contains(&format!("\n{mark2}"))
        })
        .await;
    first
        .until(20, "the watcher's view", |c| {
            c.screen.contains(&format!("\n{mark2}"))
        })
        .await;
    first.send("echo not-typed\r").await;
    first
        .until(10, "a read-only notice", |c| c.has_status("read_only"))
        .await;

    // A text frame over 64 KiB ends only that connection; the other goes on.
    let (_, t) = ticket(&app, &app.admin_token, &vm, "read").await;
    let mut third = Console::open(&app, t["url"].as_str().unwrap(), Some(&origin))
        .await
        .unwrap();
    third
        .until(10, "connected", |c| c.has_status("connected"))
        .await;
    let _ = third
        .ws
        .send(Message::Text("x".repeat(70_000).into()))
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = third.ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "an over-long frame ends its connection");
    let mark3 = format!("still-{}", rand::random::<u32>());
    second.send(&format!("echo {mark3}\r")).await;
    second
        .until(20, "an answer after the bad frame", |c| {
            c.screen.contains(&format!("\n{mark3}"))
        })
        .await;

    // Stopping the VM: both viewers are told.
    let a = app
        .call(
            "POST",
            &format!("/api/v1/vms/{vm}/actions"),
            Some(json!({"action": "force_stop"})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    second
        .until(60, "the stop", |c| c.has_status("stopped"))
        .await;
    first
        .until(10, "the stop", |c| c.has_status("stopped"))
        .await;
    // A stopped VM's console says so at once.
    app.wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    let (_, t) = ticket(&app, &app.admin_token, &vm, "write").await;
    let mut late = Console::open(&app, t["url"].as_str().unwrap(), Some(&origin))
        .await
        .unwrap();
    late.until(10, "the stopped notice", |c| c.has_status("stopped"))
        .await;

    // reset_password: refused without a good password, with another action, or for another
    // tenant; a stopped VM takes the new one at its next start.
    let actions = format!("/api/v1/vms/{vm}/actions");
    for (body, status) in [
        (json!({"action": "reset_password"}), 422),
        (
            json!({"action": "reset_password", "root_password": "short"}),
            422,
        ),
        (
            json!({"action": "start", "root_password": new_password}),
            422,
        ),
    ] {
        let a = app.call("POST", &actions, Some(body.clone())).await;
        assert_eq!(a.status, status, "{body}: {}", a.text);
        assert!(a.text.contains("root_password"), "{}", a.text);
    }
    let a = app
        .call_as(
            &other,
            "POST",
            &actions,
            Some(json!({"action": "reset_password", "root_password": new_password})),
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = app
        .call(
            "POST",
            &actions,
            Some(json!({"action": "reset_password", "root_password": new_password})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["kind"], "reset_password");
    let a = app
        .call("POST", &actions, Some(json!({"action": "start"})))
        .await;
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, t) = ticket(&app, &app.admin_token, &vm, "write").await;
    let mut again = Console::open(&app, t["url"].as_str().unwrap(), Some(&origin))
        .await
        .unwrap();
    again
        .until(10, "connected", |c| c.has_status("connected"))
        .await;
    log_in(&mut again, new_password).await;
    drop(again);

    // Opening and closing are in the audit log; the password is stored nowhere.
    let audit = app.call("GET", "/api/v1/audit?limit=200", None).await;
    let actions: Vec<&str> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == vm.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"console opened"), "{actions:?}");
    assert!(
        actions.iter().any(|a| a.starts_with("console closed")),
        "{actions:?}"
    );
    // (The console log is left out: it keeps whatever the guest echoed, as any serial log.)
    for entry in walk(app.data_dir.path())
        .into_iter()
        .filter(|e| !e.ends_with("console.log"))
    {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for secret in [password, new_password] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a password is in {}",
                entry.display()
            );
        }
    }
    // The guest goes (a test leaves no domain behind).
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}

/// Logs in as root at the getty prompt with `password` and checks a command's answer.
async fn log_in(console: &mut Console, password: &str) {
    // A login prompt, then the user name; getty may be re-showing its prompt (and drop what
    // came meanwhile), so try again until the password is asked for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no password prompt; screen:\n{}",
            console.screen
        );
        console.send("\r").await;
        if !console
            .try_until(5, "a login prompt", |c| c.screen.ends_with("login: "))
            .await
        {
            continue;
        }
        console.send("root\r").await;
        if console
            .try_until(8, "a password prompt", |c| c.screen.ends_with("Password: "))
            .await
        {
            break;
        }
    }
    assert!(
        console.screen.contains("log in as root with the password"),
        "the greeting says how: {}",
        console.screen
    );
    // As a person would: login turns echo off just after its prompt, and the guest echoes
    // (and the console log keeps) whatever arrives before.
    tokio::time::sleep(Duration::from_millis(500)).await;
    console.send(&format!("{password}\r")).await;
    console
        .until(30, "a shell", |c| {
            c.screen.contains("root login on 'ttyS0'") && c.screen.contains(" # ")
        })
        .await;
    let mark = format!("console-{}", rand::random::<u32>());
    console.send(&format!("echo {mark}\r")).await;
    console
        .until(20, "the command's answer", |c| {
            c.screen.contains(&format!("\n{mark}"))
        })
        .await;
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_close_when_idle_on_a_binary_frame_and_tickets_expire() {
    let app = crate::helpers::spawn_app_with(
        Backend::Qemu,
        &[
            ("CARVE_CONSOLE_IDLE_TIMEOUT_SECS", "3"),
            ("CARVE_CONSOLE_MAX_OPEN_PER_USER", "2"),
        ],
    )
    .await;
    app.plan("small", 1, 128, 1).await;
    let origin = app.addr.clone();
    let a = app
        .call(
            "POST",
            "/api/v1/vms",
            Some(json!({"name": "idle1", "plan": "small", "image": "tiny"})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let vm = a.body["vm"]["id"].as_str().unwrap().to_string();
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, late) = ticket(&app, &app.admin_token, &vm, "read").await;

    // A console nobody types into closes after the configured time, saying so.
    let (_, t) = ticket(&app, &app.admin_token, &vm, "read").await;
    let mut idle = Console::open(&app, t["url"].as_str().unwrap(), Some(&origin))
        .await
        .unwrap();
    idle.until(10, "connected", |c| c.has_status("connected"))
        .await;
    idle.until(15, "the idle close", |c| c.has_status("idle"))
        .await;
    assert!(
        idle.statuses.iter().any(|s| s["message"]
            .as_str()
            .unwrap_or("")
            .contains("without typing")),
        "{:?}",
        idle.statuses
    );

    // (The idle console's slot is given back as it closes.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A binary frame ends that connection (1003) and no other.
    let (_, t) = ticket(&app, &app.admin_token, &vm, "write").await;
    let mut typing = Console::open(&app, t["url"].as_str().unwrap(), Some(&origin))
        .await
        .unwrap();
    typing
        .until(10, "connected", |c| c.has_status("connected"))
        .await;
    let (_, t) = ticket(&app, &app.admin_token, &vm, "read").await;
    let mut bad = Console::open(&app, t["url"].as_str().unwrap(), Some(&origin))
        .await
        .unwrap();
    bad.until(10, "connected", |c| c.has_status("connected"))
        .await;
    // A user holds at most console.max_open_per_user consoles at once.
    let (_, t) = ticket(&app, &app.admin_token, &vm, "read").await;
    assert_eq!(
        Console::open(&app, t["url"].as_str().unwrap(), Some(&origin))
            .await
            .err(),
        Some(429),
        "a third console of one user"
    );
    bad.ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match bad.ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return Some(u16::from(frame.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the binary frame ended the connection");
    assert_eq!(code, Some(1003));
    typing.screen.clear();
    typing.send("\r").await;
    typing
        .until(20, "output after the bad frame", |c| {
            c.screen.contains("login: ")
        })
        .await;

    // A ticket not used within 30 s is refused.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(
        Console::open(&app, late["url"].as_str().unwrap(), Some(&origin))
            .await
            .err(),
        Some(403),
        "an expired ticket"
    );
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    app.stop().await;
}
