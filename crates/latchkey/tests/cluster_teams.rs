//! Teams across nodes: two `latchkey serve` processes over one PostgreSQL
//! database. A member who joins on node A can use their key on node B; a
//! role change made on A is in effect on B within the revocation bound
//! (1 s), and so is the member's removal (their key refused), both by the
//! change feed's LISTEN/NOTIFY (resyncs are far apart).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde_json::json;

mod support;
use latchkey_testkit::{Key, call, delete, get, post};
use support::{Proc, client, client_no_redirects, init, serve_cmd};

const BOUND: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_secs(30);

/// A node; its process is killed when dropped.
struct Node {
    _proc: Proc,
    base: String,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn start(dir: &Path, name: &str, master_key: &[u8], url: &str) -> Node {
    let data = dir.join(format!("node-{name}"));
    std::fs::create_dir(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let key = data.join("master.key");
    std::fs::write(&key, master_key).expect("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cmd = serve_cmd(
        &data,
        &[
            "--database-url",
            url,
            "--staleness-window-ms",
            "60000",
            "--resync-interval-ms",
            "20000",
        ],
    );
    let (proc, base) = tokio::task::block_in_place(|| {
        let mut p = Proc::spawn(cmd);
        let (base, _) = p.wait_listening();
        (p, base)
    });
    Node { _proc: proc, base }
}

async fn eventually(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if probe().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of cookie `name` among a response's `Set-Cookie` headers.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next()?.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

/// An `application/x-www-form-urlencoded` body.
fn form_body(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn between(body: &str, prefix: &str, end: char) -> String {
    let start = body.find(prefix).expect(prefix) + prefix.len();
    body[start..].split(end).next().expect("end").to_string()
}

/// Accepts an invite on `node` as a browser would, then makes a key of
/// the new member's own in the dashboard.
async fn join(node: &Node, token: &str, password: &str) -> Key {
    let http = client_no_redirects();
    let form = |cookie: String, body: String, path: &str| {
        http.post(node.url(path))
            .header(COOKIE, cookie)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
    };
    let page = http
        .get(node.url(&format!("/dashboard/invite?token={token}")))
        .send()
        .await
        .expect("accept page");
    assert_eq!(page.status(), StatusCode::OK);
    let signin = set_cookie(page.headers(), "latchkey_signin").expect("signin cookie");
    let csrf = between(
        &page.text().await.expect("body"),
        r#"name="csrf" value=""#,
        '"',
    );
    let body = form_body(&[
        ("csrf", csrf.as_str()),
        ("token", token),
        ("password", password),
        ("confirm", password),
    ]);
    let done = form(
        format!("latchkey_signin={signin}"),
        body,
        "/dashboard/invite",
    )
    .send()
    .await
    .expect("accept");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(done.headers(), "latchkey_session").expect("session");
    let cookie = format!("latchkey_session={session}");
    let home = http
        .get(node.url("/dashboard"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("home");
    let csrf = between(
        &home.text().await.expect("body"),
        r#"name="csrf" value=""#,
        '"',
    );
    let body = form_body(&[("csrf", csrf.as_str()), ("display_name", "mine")]);
    let made = form(cookie, body, "/dashboard/account/keys")
        .send()
        .await
        .expect("own key");
    assert_eq!(made.status(), StatusCode::OK);
    let page = made.text().await.expect("body");
    let text_of = |id: &str| {
        let at = between(&page, &format!(r#"id="{id}""#), '<');
        at.split_once('>').expect("tag end").1.to_string()
    };
    Key {
        id: text_of("new-key-id"),
        secret: text_of("new-key-secret"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_and_removals_reach_every_node_within_the_bound() {
    let schema = latchkey_testdb::fresh_schema().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("init");
    let report = tokio::task::block_in_place(|| init(&data, Some(&schema.url)));
    let master_key = std::fs::read(data.join("master.key")).expect("master.key");
    let a = start(dir.path(), "a", &master_key, &schema.url);
    let b = start(dir.path(), "b", &master_key, &schema.url);
    let http = client();
    for node in [&a, &b] {
        eventually("ready", SETTLE, async || {
            call(
                &http,
                reqwest::Method::GET,
                &node.url("/readyz"),
                None,
                None,
            )
            .await
            .status
                == StatusCode::OK
        })
        .await;
    }
    let owner = report.owner();

    let r = post(
        &http,
        &a.url("/v1/account/invites"),
        &owner,
        json!({"email": "dev@example.com", "role": "developer"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let token = r.body["token"].as_str().expect("token").to_string();
    let key = join(&a, &token, "a long enough password").await;
    let member = key.basic();

    // Joined on A, known on B.
    eventually("the new member's key on B", SETTLE, async || {
        get(&http, &b.url("/v1/account"), &member).await.status == StatusCode::OK
    })
    .await;
    let who = get(&http, &b.url("/v1/account"), &member).await;
    let user_id = who.body["userAccountId"].as_str().expect("id").to_string();
    let create_on_b = async || {
        call(
            &http,
            reqwest::Method::POST,
            &b.url("/v1/apps"),
            Some(&member),
            Some(json!({"displayName": "x"})),
        )
        .await
        .status
    };
    assert_eq!(create_on_b().await, StatusCode::CREATED);

    // Demoted on A: refused on B within the bound.
    let r = latchkey_testkit::call(
        &http,
        reqwest::Method::PATCH,
        &a.url(&format!("/v1/account/members/{user_id}")),
        Some(&owner),
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let took = eventually("the demotion on B", BOUND, async || {
        create_on_b().await == StatusCode::FORBIDDEN
    })
    .await;
    eprintln!("a role change reached node B in {took:?}");

    // Removed on A: the key is refused on B within the bound.
    let r = delete(
        &http,
        &a.url(&format!("/v1/account/members/{user_id}")),
        &owner,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let took = eventually("the removal on B", BOUND, async || {
        get(&http, &b.url("/v1/apps"), &member).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    eprintln!("a removal reached node B in {took:?}");
    let jwt = latchkey_testkit::bearer_jwt(&key.id, &key.secret, &json!({"scope": "account"}));
    assert_eq!(
        get(&http, &b.url("/v1/apps"), &jwt).await.status,
        StatusCode::UNAUTHORIZED
    );
}
