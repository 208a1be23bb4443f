//! A scale group over real guests (tiny image, QEMU), one group through its whole life under
//! a request loop that must see no failure: desired 1 -> 3, a member powered off with virsh
//! is replaced, a template change rolls through every member, 3 -> 1, then target tracking
//! follows a load of slow requests up and back down, and deleting the group removes its VMs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, spawn_app};
use crate::pools::until_answer;
use crate::scale_groups::{pool, staying, until_group};
use crate::tenancy::tenant_with_customer;

/// Member user-data: `/` answers "<version> from <hostname>", `/cgi-bin/slow` after 3 s.
fn user_data(version: &str) -> String {
    format!(
        "#!/bin/sh
mkdir -p /srv/www/cgi-bin
echo \"{version} from $(hostname)\" > /srv/www/index.html
printf '#!/bin/sh\\nsleep 3\\necho \"Content-Type: text/plain\"\\necho\\necho slow\\n' > /srv/www/cgi-bin/slow
chmod +x /srv/www/cgi-bin/slow
printf '#!/bin/sh\\nhttpd -p 80 -h /srv/www\\n' > /etc/rc.local
chmod +x /etc/rc.local
"
    )
}

fn group(version: &str, desired: u32) -> Value {
    json!({"template": {"plan": "small", "image": "tiny", "port": 80, "user_data": user_data(version)},
           "min": 1, "max": 3, "desired": desired, "replace_after_s": 5, "health_grace_s": 240,
           "max_surge": 1, "min_healthy_percent": 100})
}

/// Members in rotation, not leaving.
fn healthy(g: &Value) -> usize {
    staying(g)
        .iter()
        .filter(|m| m["health"] == "healthy")
        .count()
}

/// GETs `url` until stopped; returns the count and every answer that was not a 200.
fn request_loop(
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (mut n, mut bad) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => bad.push(r.status().to_string()),
                Err(e) => bad.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (n, bad)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_group_grows_heals_refreshes_shrinks_and_follows_load_without_a_failed_request() {
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    let (_tenant, alice) = tenant_with_customer(&app, "shop").await;
    let web = pool(&app, &alice, "web").await;
    let listen = app
        .call_as(&alice, "GET", &format!("/api/v1/pools/{web}"), None)
        .await
        .body["listen"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{listen}/");
    let path = format!("/api/v1/pools/{web}/scale-group");

    let a = app
        .call_as(&alice, "PUT", &path, Some(group("v1", 1)))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    until_group(&app, &alice, &web, "one healthy member", |g| {
        healthy(g) == 1
    })
    .await;
    until_answer(&url, 200, "v1 from web-1").await;

    let stop = Arc::new(AtomicBool::new(false));
    let looping = request_loop(url.clone(), stop.clone());

    // 1 -> 3: each new member takes traffic once healthy.
    let a = app
        .call_as(&alice, "PUT", &path, Some(group("v1", 3)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let g = until_group(&app, &alice, &web, "three healthy", |g| healthy(g) == 3).await;

    // A member powered off behind carve's back is replaced; the loop does not notice.
    let victim = staying(&g)[0]["vm_id"].as_str().unwrap().to_string();
    let out = std::process::Command::new("virsh")
        .args([
            "-c",
            "qemu:///system",
            "destroy",
            &format!("carve-{victim}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until_group(&app, &alice, &web, "the powered-off member replaced", |g| {
        healthy(g) == 3 && !g["members"].to_string().contains(&victim)
    })
    .await;

    // A template change rolls through every member, one at a time.
    let a = app
        .call_as(&alice, "PUT", &path, Some(group("v2", 3)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["refresh"]["state"], "running", "{}", a.text);
    let refresh = a.body["refresh"]["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let op = app.wait_operation(&refresh, Duration::from_secs(600)).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let steps = op["steps"].to_string();
    assert_eq!(steps.matches("retire web-").count(), 3, "{op}");
    let g = until_group(&app, &alice, &web, "three on v2", |g| {
        healthy(g) == 3 && staying(g).iter().all(|m| m["template_version"] == 2)
    })
    .await;
    assert_eq!(g["refresh"]["state"], "none", "{g}");
    until_answer(&url, 200, "v2 from").await;

    // 3 -> 1: the newest drain and go.
    let a = app
        .call_as(&alice, "PUT", &path, Some(group("v2", 1)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    until_group(&app, &alice, &web, "one member", |g| {
        g["members"].as_array().is_some_and(|m| m.len() == 1) && healthy(g) == 1
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (n, bad) = looping.await.unwrap();
    assert!(
        n > 100 && bad.is_empty(),
        "{n} requests while the group grew, healed, refreshed and shrank; failed: {bad:?}"
    );

    // Target tracking: 6 slow requests at a time, 2 per member wanted, scale out to 3; once
    // the load stops, back to 1 after the scale-in cooldown.
    let mut tracked = group("v2", 1);
    tracked["target"] = json!({"metric": "connections", "value": 2,
        "scale_out_cooldown_s": 0, "scale_in_cooldown_s": 10});
    let a = app.call_as(&alice, "PUT", &path, Some(tracked)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body["template"]["version"], 2,
        "tracking is no template change"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (url, stop) = (format!("http://{listen}/cgi-bin/slow"), stop.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(400);
            let mut bad = Vec::new();
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => bad.push(r.status().to_string()),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            bad
        }));
    }
    let g = until_group(&app, &alice, &web, "scaled out on load", |g| {
        g["desired"] == 3 && healthy(g) == 3
    })
    .await;
    assert!(g["load"]["connections"].as_i64().is_some(), "{g}");
    stop.store(true, Ordering::SeqCst);
    for t in load {
        let bad = t.await.unwrap();
        assert!(
            bad.is_empty(),
            "slow requests failed under scaling: {bad:?}"
        );
    }
    until_group(&app, &alice, &web, "scaled back in", |g| {
        g["desired"] == 1 && g["members"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    let audit = app
        .call_as(&alice, "GET", "/api/v1/audit?limit=500", None)
        .await;
    // The load is measured while it rises and falls, so the group may scale in steps (a
    // measure taken while the last slow requests end can call for 2 first).
    let any_of = |lines: &[&str]| lines.iter().any(|l| audit.text.contains(l));
    assert!(
        any_of(&[
            "scale group: desired 1 -> 3: scale out",
            "scale group: desired 1 -> 2: scale out"
        ]),
        "no scale out from 1 in the audit log"
    );
    assert!(
        any_of(&[
            "scale group: desired 3 -> 1: scale in",
            "scale group: desired 2 -> 1: scale in"
        ]),
        "no scale in to 1 in the audit log"
    );
    for says in ["retired VM", "refresh done"] {
        assert!(audit.text.contains(says), "{says:?} not in the audit log");
    }

    // Deleting the group drains and deletes its VMs; the pool stays.
    let last = app.call_as(&alice, "GET", &path, None).await;
    let left: Vec<String> = staying(&last.body)
        .iter()
        .map(|m| format!("carve-{}", m["vm_id"].as_str().unwrap()))
        .collect();
    let a = app.call_as(&alice, "DELETE", &path, None).await;
    assert_eq!(a.status, 202, "{}", a.text);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let g = app.call_as(&alice, "GET", &path, None).await;
        let vms = app.call_as(&alice, "GET", "/api/v1/vms", None).await;
        if g.status == 404 && vms.body.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group is {} with VMs {}",
            g.text,
            vms.text
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let domains = app.domains().await;
    assert!(
        left.iter().all(|d| !domains.contains(d)),
        "{left:?} still in libvirt"
    );
    let a = app
        .call_as(&alice, "GET", &format!("/api/v1/pools/{web}"), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    app.stop().await;
}
