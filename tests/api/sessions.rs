//! Browser sessions live in the database: log in through one `carve serve`, use the cookie on
//! another on the same database; logging out ends it on both.

use std::process::Stdio;

use crate::helpers::{Backend, carve_command, data_dir, free_port, serve_child};

/// The value of a cookie set by a response.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = pair.split_once('=')?;
            (k == name).then(|| (val.to_string(), attrs.to_string()))
        })
}

/// The hidden csrf field of a form page.
fn csrf_field(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn a_session_works_on_every_process_and_logout_ends_it_everywhere() {
    let data = data_dir();
    let mut create = carve_command(data.path(), Backend::TestDriver, 0, &[])
        .args([
            "admin",
            "create-user",
            "--email",
            "carol@example.com",
            "--role",
            "customer",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    create
        .stdin
        .take()
        .unwrap()
        .write_all(b"carol's password\n")
        .unwrap();
    assert!(create.wait().unwrap().success());
    let one = serve_child(data.path(), Backend::TestDriver, free_port(), &[]).await;
    let two = serve_child(data.path(), Backend::TestDriver, free_port(), &[]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Not logged in: the landing page sends to /login.
    let r = client.get(format!("{}/", one.base)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");

    // The login form sets a CSRF cookie matching its hidden field.
    let r = client
        .get(format!("{}/login", one.base))
        .send()
        .await
        .unwrap();
    let (csrf_cookie, _) = set_cookie(&r, "carve_login_csrf").expect("csrf cookie");
    let html = r.text().await.unwrap();
    assert_eq!(csrf_field(&html), csrf_cookie);

    // A post without the CSRF cookie is refused.
    let form = [
        ("email", "carol@example.com"),
        ("password", "carol's password"),
        ("csrf", csrf_cookie.as_str()),
    ];
    let r = client
        .post(format!("{}/login", one.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A wrong password re-renders the form with a message.
    let bad = [
        ("email", "carol@example.com"),
        ("password", "wrong"),
        ("csrf", csrf_cookie.as_str()),
    ];
    let r = client
        .post(format!("{}/login", one.base))
        .header("cookie", format!("carve_login_csrf={csrf_cookie}"))
        .form(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("the email or password is wrong")
    );

    // Log in through process one (behind a TLS proxy, so the cookie is Secure).
    let r = client
        .post(format!("{}/login", one.base))
        .header("cookie", format!("carve_login_csrf={csrf_cookie}"))
        .header("x-forwarded-proto", "https")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (session, attrs) = set_cookie(&r, "carve_session").expect("session cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=43200",
        "Secure",
        "Path=/",
    ] {
        assert!(attrs.contains(attr), "{attr} missing from {attrs}");
    }
    let cookie = format!("carve_session={session}");

    // Process two knows the session: it lives in the database.
    let r = client
        .get(format!("{}/", two.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<h1>Dashboard</h1>") && html.contains(">carol@example.com</a>"),
        "{html}"
    );

    // Log out through process two; process one no longer knows the session either.
    let r = client
        .get(format!("{}/logout", two.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let logout_csrf = csrf_field(&r.text().await.unwrap());
    let r = client
        .post(format!("{}/logout", two.base))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a forged logout is refused");
    let r = client
        .post(format!("{}/logout", two.base))
        .header("cookie", &cookie)
        .form(&[("csrf", logout_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        set_cookie(&r, "carve_session")
            .is_some_and(|(v, a)| v.is_empty() && a.contains("Max-Age=0"))
    );
    for base in [&one.base, &two.base] {
        let r = client
            .get(format!("{base}/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{base} still accepts the session");
    }
    // The database holds only a digest of the cookie, never the cookie.
    let db = carve::db::connect(&crate::helpers::database_url(data.path()))
        .await
        .unwrap();
    let n: i64 = carve::on_db!(&db, c => sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
        .fetch_one(c)
        .await)
    .unwrap();
    assert_eq!(n, 0);
}
