//! Custom images: an admin uploads a qcow2 base (tiny's, here), which is checked, offered,
//! booted, hidden from customers and removed when nothing uses it; bad uploads are refused
//! and leave nothing behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    Answer, Backend, HTTP_USER_DATA, TestApp, http_get_until, image_dir, spawn_app, spawn_app_with,
};
use crate::panel::{field, panel_client};
use crate::tenancy::tenant_with_customer;

/// Uploads `body` with the admin token (or `token`) to `POST /api/v1/images?<query>`.
async fn upload(app: &TestApp, token: Option<&str>, query: &str, body: Vec<u8>) -> Answer {
    let r = app
        .client
        .post(format!("{}/api/v1/images?{query}", app.addr))
        .bearer_auth(token.unwrap_or(&app.admin_token))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("request");
    crate::helpers::answer(r).await
}

/// What is left in the app's upload directory.
fn uploads_left(app: &TestApp) -> Vec<String> {
    let dir = app.data_dir.path().join("uploaded-images");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs qemu-img with these arguments.
fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tiny_base() -> PathBuf {
    image_dir().join("tiny/disk.qcow2")
}

/// A problem answer whose field `field` says something containing `words`.
fn refused(a: &Answer, status: u16, field: &str, words: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    let errors = a.body["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == field && e["message"].as_str().unwrap_or("").contains(words)),
        "expected {field}: …{words}… in {}",
        a.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_image_is_checked_boots_hides_and_is_removed() {
    let app = spawn_app(Backend::Qemu).await;
    app.plan("small", 1, 128, 1).await;
    let (_tenant, customer) = tenant_with_customer(&app, "uploads").await;
    let tiny = std::fs::read(tiny_base()).expect("tiny's base (images/build.sh)");
    let work = tempfile::tempdir().unwrap();
    let good =
        "name=tiny-copy&os=busybox&version=1.35&boot=kernel&kernel_from=tiny&min_memory_mib=96";

    // Refusals that come from the query string are answered before the body is read (so
    // these send a small one).
    let small = b"QFI\xfb".to_vec();
    // Customers cannot upload.
    let a = upload(&app, Some(&customer), good, small.clone()).await;
    assert_eq!(a.status, 403, "{}", a.text);

    // Bad uploads: each a 4xx that says what to fix.
    let a = upload(&app, None, "name=bad&os=x", b"not a disk image".repeat(100)).await;
    refused(&a, 422, "file", "not qcow2");
    let backed = work.path().join("backed.qcow2");
    let tiny_path = tiny_base();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        tiny_path.to_str().unwrap(),
        backed.to_str().unwrap(),
    ]);
    let a = upload(&app, None, "name=bad&os=x", std::fs::read(&backed).unwrap()).await;
    refused(&a, 422, "file", "backing file");
    let external = work.path().join("external.qcow2");
    let data = work.path().join("external.raw");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", data.display()),
        external.to_str().unwrap(),
        "16M",
    ]);
    let a = upload(
        &app,
        None,
        "name=bad&os=x",
        std::fs::read(&external).unwrap(),
    )
    .await;
    refused(&a, 422, "file", "external file");
    let a = upload(&app, None, "name=bad&os=x&boot=kernel", small.clone()).await;
    refused(&a, 422, "kernel_from", "kernel_from");
    let a = upload(
        &app,
        None,
        "name=bad&os=x&boot=kernel&kernel_from=nothing",
        small.clone(),
    )
    .await;
    refused(&a, 422, "kernel_from", "nothing");
    let a = upload(&app, None, "name=..%2Fevil&os=x", small.clone()).await;
    refused(&a, 422, "name", "not allowed");
    let a = upload(
        &app,
        None,
        "name=ok&os=x&default_user=Root%21",
        small.clone(),
    )
    .await;
    refused(&a, 422, "default_user", "Linux user name");
    let long = "d".repeat(501);
    let a = upload(
        &app,
        None,
        &format!("name=ok&os=x&description={long}"),
        small.clone(),
    )
    .await;
    refused(&a, 422, "description", "500");
    let a = upload(&app, None, "name=im_0123456789abcdef&os=x", small.clone()).await;
    refused(&a, 422, "name", "reserved");
    let a = upload(&app, None, "name=bad&os=x&colour=red", small.clone()).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("colour"), "{}", a.text);
    let a = upload(&app, None, "name=bad&os=x", Vec::new()).await;
    refused(&a, 422, "file", "empty");
    let a = app
        .raw(
            "POST",
            "/api/v1/images?name=bad&os=x",
            "application/json",
            "{}",
        )
        .await;
    assert_eq!(a.status, 415, "{}", a.text);
    assert!(uploads_left(&app).is_empty(), "{:?}", uploads_left(&app));

    // tiny's base, uploaded: its digest and size are what was sent.
    let a = upload(&app, None, good, tiny.clone()).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let image_id = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["source"], "uploaded");
    assert_eq!(a.body["visible"], true);
    assert_eq!(a.body["boot"], "kernel");
    assert_eq!(a.body["sha256"], hex::encode(Sha256::digest(&tiny)));
    let listed = app.call("GET", "/api/v1/images/tiny", None).await;
    assert_eq!(
        a.body["virtual_size_bytes"],
        listed.body["virtual_size_bytes"]
    );
    assert_eq!(uploads_left(&app), std::slice::from_ref(&image_id));
    let stored = app
        .data_dir
        .path()
        .join("uploaded-images")
        .join(&image_id)
        .join("disk.qcow2");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        tiny,
        "the stored file is the one sent"
    );
    let kernel = stored.with_file_name("vmlinuz");
    assert_eq!(
        std::fs::read(&kernel).unwrap(),
        std::fs::read(image_dir().join("tiny/vmlinuz")).unwrap(),
        "the upload boots with its own copy of tiny's kernel"
    );
    // (A small body: the refusal comes before the body is read.)
    let a = upload(&app, None, good, small.clone()).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("already exists"), "{}", a.text);
    assert_eq!(
        a.headers.get("connection").and_then(|v| v.to_str().ok()),
        Some("close"),
        "a refusal that left the body unread closes the connection"
    );

    // A customer sees it and boots a VM from it, which serves HTTP on its forward.
    let seen = app.call_as(&customer, "GET", "/api/v1/images", None).await;
    assert!(seen.text.contains("tiny-copy"), "{}", seen.text);
    let a = app
        .call_as(
            &customer,
            "POST",
            "/api/v1/vms",
            Some(json!({
                "name": "copy1", "plan": "small", "image": "tiny-copy", "ports": [80],
                "user_data": HTTP_USER_DATA,
            })),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let vm = a.body["vm"]["id"].as_str().unwrap().to_string();
    let op = app
        .wait_operation(a.body["id"].as_str().unwrap(), Duration::from_secs(180))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let got = app.call("GET", &format!("/api/v1/vms/{vm}"), None).await;
    let port = got.body["forwards"][0]["host_port"].as_u64().unwrap() as u16;
    let page = http_get_until(port, Duration::from_secs(120))
        .await
        .expect("the VM made from the uploaded image serves HTTP");
    assert_eq!(page.trim(), "hello from copy1");

    // In use: it cannot be deleted.
    let a = app
        .call("DELETE", &format!("/api/v1/images/{image_id}"), None)
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("VM copy1"), "{}", a.text);

    // Hidden: customers neither see it nor use it; admins still do.
    let a = app
        .call(
            "PATCH",
            "/api/v1/images/tiny-copy",
            Some(json!({"visible": false, "description": "tiny, uploaded"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["visible"], false);
    assert_eq!(a.body["description"], "tiny, uploaded");
    let a = app
        .call(
            "PATCH",
            "/api/v1/images/tiny-copy",
            Some(json!({"default_user": "", "os": ""})),
        )
        .await;
    refused(&a, 422, "default_user", "log in as");
    refused(&a, 422, "os", "which OS");
    let seen = app.call_as(&customer, "GET", "/api/v1/images", None).await;
    assert!(!seen.text.contains("tiny-copy"), "{}", seen.text);
    let a = app
        .call_as(&customer, "GET", "/api/v1/images/tiny-copy", None)
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = app
        .call_as(
            &customer,
            "POST",
            "/api/v1/vms",
            Some(json!({"name": "copy2", "plan": "small", "image": "tiny-copy"})),
        )
        .await;
    refused(&a, 422, "image", "no image is named");
    let a = app.call("GET", "/api/v1/images", None).await;
    assert!(a.text.contains("tiny-copy"), "{}", a.text);
    let a = app
        .call_as(
            &customer,
            "PATCH",
            "/api/v1/images/tiny-copy",
            Some(json!({"visible": true})),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text);

    // A built image's facts belong to its recipe; it cannot be deleted, only hidden.
    let a = app
        .call("PATCH", "/api/v1/images/tiny", Some(json!({"os": "other"})))
        .await;
    refused(&a, 422, "os", "recipe");
    let a = app
        .call(
            "PATCH",
            "/api/v1/images/tiny",
            Some(json!({"colour": "red"})),
        )
        .await;
    assert!(matches!(a.status, 400 | 422), "{}", a.text);
    let a = app.call("DELETE", "/api/v1/images/tiny", None).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("hide it"), "{}", a.text);

    // Once its VM is gone it can be deleted, file and all; its name can be used again.
    app.run_op("DELETE", &format!("/api/v1/vms/{vm}"), None)
        .await;
    let a = app
        .call("DELETE", &format!("/api/v1/images/{image_id}"), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert!(uploads_left(&app).is_empty(), "{:?}", uploads_left(&app));
    let a = app
        .call("GET", &format!("/api/v1/images/{image_id}"), None)
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = app.call("GET", "/api/v1/images", None).await;
    assert!(!a.text.contains("tiny-copy"), "{}", a.text);
    let a = upload(&app, None, good, tiny.clone()).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let again = a.body["id"].as_str().unwrap().to_string();
    assert_ne!(again, image_id);
    let a = app.call("DELETE", "/api/v1/images/tiny-copy", None).await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert!(uploads_left(&app).is_empty());
    app.stop().await;
}

/// Sends `POST /api/v1/images` by hand with a chunked body; returns the open connection after
/// the headers and `first` bytes of body are sent.
async fn chunked_upload(app: &TestApp, query: &str, first: &[u8]) -> tokio::net::TcpStream {
    let addr = app.addr.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/images?{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.admin_token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    if !first.is_empty() {
        s.write_all(format!("{:x}\r\n", first.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(first).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s
}

/// The status line of the answer on `s`.
async fn status_line(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Polls until the upload directory is empty.
async fn until_no_uploads_left(app: &TestApp) {
    for _ in 0..100 {
        if uploads_left(app).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("uploads left behind: {:?}", uploads_left(app));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_bounded_in_size_and_number_and_leave_nothing_when_cut_off() {
    let app = spawn_app_with(
        Backend::TestDriver,
        &[
            ("CARVE_IMAGES_MAX_UPLOAD_MIB", "1"),
            ("CARVE_IMAGES_UPLOADS_AT_ONCE", "1"),
        ],
    )
    .await;
    let tiny = std::fs::read(tiny_base()).expect("tiny's base");
    assert!(tiny.len() > 1 << 20);

    // Declared too large: refused before a byte is read (the answer comes while the client
    // would still be sending, so this one is sent by hand).
    let addr = app.addr.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/images?name=big&os=x HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        app.admin_token,
        tiny.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let line = status_line(&mut s).await;
    assert!(line.contains("413"), "{line}");
    drop(s);

    // Streamed without a length past the limit: refused as it crosses it.
    let mut s = chunked_upload(&app, "name=big&os=x", &vec![7u8; 600 << 10]).await;
    let more = vec![7u8; 600 << 10];
    let _ = s
        .write_all(format!("{:x}\r\n", more.len()).as_bytes())
        .await;
    let _ = s.write_all(&more).await;
    let _ = s.write_all(b"\r\n0\r\n\r\n").await;
    let line = status_line(&mut s).await;
    assert!(line.contains("413"), "{line}");
    until_no_uploads_left(&app).await;

    // One upload at a time here: a second one meanwhile is told to come back.
    let mut first = chunked_upload(&app, "name=slow&os=x", &[1u8; 1024]).await;
    // It holds the permit once its files exist.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while uploads_left(&app).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow upload did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = upload(&app, None, "name=second&os=x", b"x".to_vec()).await;
    assert_eq!(a.status, 429, "{}", a.text);
    assert!(a.headers.contains_key("retry-after"), "{:?}", a.headers);
    assert_eq!(uploads_left(&app).len(), 1, "the slow upload is under way");

    // The client going away mid-upload leaves nothing behind.
    first.shutdown().await.unwrap();
    drop(first);
    until_no_uploads_left(&app).await;
    let a = upload(&app, None, "name=second&os=x", b"x".to_vec()).await;
    assert_eq!(a.status, 422, "the permit came back: {}", a.text);

    // Files of an upload that never finished (carve was killed) go at the next start.
    let orphan = app
        .data_dir
        .path()
        .join("uploaded-images/im_0123456789abcdef");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("disk.qcow2.part"), b"half").unwrap();
    let app = app.restart().await;
    assert!(
        !orphan.exists(),
        "the unfinished upload's files are removed"
    );
    app.stop().await;
}

#[tokio::test]
async fn admins_hide_offer_and_delete_images_in_the_panel() {
    let app = spawn_app(Backend::TestDriver).await;
    let a = app
        .call("POST", "/api/v1/users", Some(json!({"email": "root@example.com", "password": "an admin password", "role": "admin"})))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let client = panel_client(&app, "root@example.com", "an admin password").await;
    let tiny = app.call("GET", "/api/v1/images/tiny", None).await;
    let id = tiny.body["id"].as_str().unwrap().to_string();
    let page = client
        .get(format!("{}/admin/images", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/api/v1/images?name="),
        "the upload command is shown"
    );
    let csrf = field(&html, "csrf");
    let addr = app.addr.clone();
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = format!("{addr}{path}");
        async move { client.post(url).form(&form).send().await.unwrap() }
    };
    let r = post(
        format!("/admin/images/{id}/visibility"),
        vec![("csrf", csrf.clone()), ("visible", "0".into())],
    )
    .await;
    assert_eq!(r.status(), 303);
    let tiny = app.call("GET", "/api/v1/images/tiny", None).await;
    assert_eq!(tiny.body["visible"], false);
    let html = client
        .get(format!("{}/admin/images", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("admins only") && html.contains(">Offer<"),
        "{html}"
    );
    let r = post(
        format!("/admin/images/{id}/visibility"),
        vec![("csrf", csrf.clone()), ("visible", "1".into())],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        app.call("GET", "/api/v1/images/tiny", None).await.body["visible"],
        true
    );
    // A built image cannot be deleted: the page says so and what to do instead.
    let r = post(
        format!("/admin/images/{id}/delete"),
        vec![("csrf", csrf.clone())],
    )
    .await;
    assert_eq!(r.status(), 409);
    let html = r.text().await.unwrap();
    assert!(html.contains("hide it"), "{html}");
    // Upload from the browser's form (multipart, the file last).
    let tiny_bytes = std::fs::read(tiny_base()).expect("tiny's base");
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", "tiny-panel"),
        ("os", "busybox"),
        ("boot", "kernel"),
        ("kernel_from", "tiny"),
        ("visible", "on"),
    ];
    let r = multipart(&client, &addr, &fields, b"not a disk image at all").await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("not qcow2"), "{html}");
    assert!(
        html.contains("value=\"tiny-panel\""),
        "the form keeps what was typed"
    );
    let r = multipart(&client, &addr, &fields, &tiny_bytes).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let a = app.call("GET", "/api/v1/images/tiny-panel", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["sha256"], hex::encode(Sha256::digest(&tiny_bytes)));
    assert_eq!(a.body["boot"], "kernel");
    let r = multipart(&client, &addr, &fields[1..], b"QFI").await;
    assert_eq!(r.status(), 403, "no CSRF token first");
    // A refused upload is read to its end, so the browser sees the answer, not a reset.
    let mut misnamed = fields;
    misnamed[1] = ("name", "../bad");
    let r = multipart(&client, &addr, &misnamed, &tiny_bytes).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("not allowed"));
    // Another site's page cannot make an admin's browser upload.
    let r = client
        .post(format!("{addr}/admin/images"))
        .header("origin", "http://evil.example")
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(uploads_left(&app).len(), 1);

    // Without the form's token nothing changes.
    let r = post(
        format!("/admin/images/{id}/visibility"),
        vec![("visible", "0".into())],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        app.call("GET", "/api/v1/images/tiny", None).await.body["visible"],
        true
    );
    app.stop().await;
}

/// Posts the panel's upload form: `fields`, then `file` as the file part.
async fn multipart(
    client: &reqwest::Client,
    addr: &str,
    fields: &[(&str, &str)],
    file: &[u8],
) -> reqwest::Response {
    let boundary = "carve-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"disk.qcow2\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    client
        .post(format!("{addr}/admin/images"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}
