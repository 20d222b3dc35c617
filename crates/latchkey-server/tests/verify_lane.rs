//! `POST /v1/verify` has two ways through the server: the connection's
//! direct path for the usual form of the request (latchkey_server::lane)
//! and the router. These tests hold them to the same answers, and check
//! that what the direct path must not take still reaches the router.
//!
//! A request with `Content-Type: application/json` (exactly) goes the
//! direct path; the same request with `application/json; charset=utf-8`
//! goes through the router, which accepts both.

mod common;

use common::{StatusCode, TestApp, read_response};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

const DIRECT: &str = "application/json";
const ROUTED: &str = "application/json; charset=utf-8";

/// Status, content type and body of one verification.
async fn ask(
    app: &TestApp,
    caller: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, String, Value) {
    let resp = app
        .http
        .post(app.url("/v1/verify"))
        .header("authorization", caller)
        .header(CONTENT_TYPE, content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let kind = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, kind, body)
}

#[tokio::test]
async fn both_paths_give_the_same_answer_to_every_credential() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_a = app.create_app(&owner, "A").await;
    let app_b = app.create_app(&owner, "B").await;
    let key = app.create_app_key(&owner, &app_a).await;
    let gone = app.create_app_key(&owner, &app_a).await;
    let r = app
        .delete(&format!("/v1/apps/{app_a}/keys/{}", gone.id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let sa = app.create_service_account(&owner).await;
    let sa_key = app.create_service_account_key(&owner, &sa).await;
    app.put(&format!("/v1/serviceAccounts/{sa}/apps/{app_b}"), &owner)
        .await;

    let credentials = [
        key.basic(),
        key.jwt(json!({"scope": "app"})),
        key.jwt(json!({"scope": "appUser", "userId": "alice"})),
        key.jwt(json!({"scope": "appUser"})),
        key.jwt(json!({"scope": "account"})),
        key.jwt(json!({"scope": "app", "exp": 1})),
        owner.clone(),
        sa_key.basic(),
        gone.basic(),
        app.operator(),
        "Basic bm9wZQ==".to_string(),
        "Bearer not.a.jwt".to_string(),
        String::new(),
    ];
    let targets = [
        json!({}),
        json!({"appId": app_a}),
        json!({"appId": app_b}),
        json!({"appId": "ap_missing"}),
        json!({"userId": "alice"}),
        json!({"appId": app_a, "userId": "bob"}),
        json!({"origin": "https://example.com"}),
    ];
    let mut compared = 0;
    let mut valid = 0;
    for credential in &credentials {
        for target in &targets {
            let mut body = target.clone();
            body["authorization"] = json!(credential);
            let body = body.to_string();
            let direct = ask(&app, &app.operator(), DIRECT, &body).await;
            let routed = ask(&app, &app.operator(), ROUTED, &body).await;
            assert_eq!(direct, routed, "{body}");
            assert_eq!(direct.0, StatusCode::OK, "{body}");
            assert_eq!(direct.1, "application/json");
            compared += 1;
            if direct.2["valid"] == true {
                valid += 1;
            }
        }
    }
    assert_eq!(compared, credentials.len() * targets.len());
    // The matrix holds both outcomes in number.
    assert!(valid >= 8, "only {valid} valid answers");
    assert!(compared - valid >= 40);
}

#[tokio::test]
async fn what_the_direct_path_must_not_answer_reaches_the_router() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let good = json!({"authorization": key.basic()}).to_string();

    // A caller that is not the operator: 403, and the refusal is audited.
    let (status, _, body) = ask(&app, &key.basic(), DIRECT, &good).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // (In the account's log: the path names no app.)
    let r = app.get("/v1/audit", &owner).await;
    let first = &r.body["events"][0];
    assert_eq!(first["outcome"], "failure", "{first}");
    assert_eq!(first["action"], "POST /v1/verify");
    assert_eq!(first["actor"]["id"], key.id.as_str());

    // No credential, or a wrong operator token: 401 with the challenge.
    let resp = app
        .http
        .post(app.url("/v1/verify"))
        .header(CONTENT_TYPE, DIRECT)
        .body(good.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    let (status, _, _) = ask(&app, "Bearer lkop_wrong", DIRECT, &good).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bodies the direct path cannot parse get the router's answers; so do
    // arrays, which serde would read as a VerifyRequest.
    let array = json!([key.basic()]).to_string();
    let array_with_app = json!([key.basic(), app_id]).to_string();
    for bad in [
        "{",
        "[]",
        r#"{"authorization": 5}"#,
        r#"{"authorization": "x", "colour": "red"}"#,
        r#"{"appId": "ap_1"}"#,
        &array,
        &array_with_app,
    ] {
        let direct = ask(&app, &app.operator(), DIRECT, bad).await;
        let routed = ask(&app, &app.operator(), ROUTED, bad).await;
        assert_eq!(direct.0, StatusCode::BAD_REQUEST, "{bad}: {:?}", direct.2);
        assert_eq!(direct, routed, "{bad}");
        assert_eq!(direct.2["errors"][0]["code"], "bad_request");
    }

    // Not JSON at all, and a body over the limit.
    let (status, _, body) = ask(&app, &app.operator(), "text/plain", &good).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let huge = format!(
        r#"{{"authorization": "{}"}}"#,
        "x".repeat(app_config_max_body() + 1)
    );
    let (status, _, body) = ask(&app, &app.operator(), DIRECT, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // The operator token from a browser: refused and recorded, as before.
    let resp = app
        .http
        .post(app.url("/v1/verify"))
        .header("authorization", app.operator())
        .header("origin", "https://example.com")
        .header(CONTENT_TYPE, DIRECT)
        .body(good.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Another method on the path.
    let r = app.get("/v1/verify", &app.operator()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // And the usual request still verifies.
    let (status, _, body) = ask(&app, &app.operator(), DIRECT, &good).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["valid"], true, "{body}");
    assert_eq!(body["keyId"], key.id.as_str());
}

/// The head of an operator's `POST /v1/verify` on the direct path, for a
/// body of `body`'s length.
fn verify_head(app: &TestApp, body: &str) -> String {
    format!(
        "POST /v1/verify HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        app.operator(),
        body.len()
    )
}

/// A raw connection to the server, each write sent at once.
async fn connect(app: &TestApp) -> tokio::net::TcpStream {
    let addr = app.base.trim_start_matches("http://");
    let conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    conn
}

#[tokio::test]
async fn a_body_that_comes_in_pieces_or_stops_short_is_read_as_declared() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let body = json!({"authorization": key.basic(), "appId": app_id}).to_string();
    let head = verify_head(&app, &body);
    let mut conn = connect(&app).await;

    // The whole request at once, then the same request with its body in
    // three pieces, on the same connection: both verify.
    conn.write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("write");
    let (status, answer) = read_response(&mut conn).await;
    assert_eq!(status, 200, "{answer}");
    let first: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(first["valid"], true, "{first}");
    conn.write_all(format!("{head}{}", &body[..10]).as_bytes())
        .await
        .expect("write");
    for piece in [&body[10..40], &body[40..]] {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        conn.write_all(piece.as_bytes()).await.expect("write");
    }
    let (status, answer) = read_response(&mut conn).await;
    assert_eq!(status, 200, "{answer}");
    let second: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(second, first);

    // A body that stops short of its declared length: 400, not an answer
    // to the part that came.
    let mut conn = connect(&app).await;
    let short = format!("{head}{}", &body[..body.len() - 5]);
    conn.write_all(short.as_bytes()).await.expect("write");
    conn.shutdown().await.expect("shutdown");
    let (status, answer) = read_response(&mut conn).await;
    assert_eq!(status, 400, "{answer}");
    let refused: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(refused["errors"][0]["code"], "bad_request", "{refused}");
}

#[tokio::test]
async fn a_credential_is_verified_at_the_time_its_body_arrived() {
    use latchkey_core::Clock;
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let now = app.clock.unix();
    let token = key.jwt(json!({"scope": "app", "iat": now, "exp": now + 60}));
    let body = json!({"authorization": token}).to_string();
    let head = verify_head(&app, &body);
    let mut conn = connect(&app).await;
    // The head (the operator token verifies now), then the body after the
    // token has expired.
    conn.write_all(format!("{head}{}", &body[..20]).as_bytes())
        .await
        .expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    app.clock.advance(time::Duration::seconds(120));
    conn.write_all(&body.as_bytes()[20..]).await.expect("write");
    let (status, answer) = read_response(&mut conn).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["valid"], false, "{answer}");
    assert_eq!(answer["code"], "token_expired", "{answer}");
}

/// The server's default body limit (`Config::max_body_bytes`).
fn app_config_max_body() -> usize {
    latchkey_server::Config::new("unused").max_body_bytes
}

/// Status, the `X-Latchkey-*` headers and the body of a request with
/// `authorization` as its one Authorization header.
async fn with_header(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    authorization: &str,
    body: Option<&str>,
) -> (StatusCode, Vec<(String, String)>, String) {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("authorization", authorization);
    if let Some(b) = body {
        req = req.header(CONTENT_TYPE, DIRECT).body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let mut identity: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-latchkey-"))
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.to_string(), value)
        })
        .collect();
    identity.sort();
    (status, identity, resp.text().await.expect("body"))
}

/// RFC 9110 §5.5: spaces and tabs before and after a field value are not
/// part of it. A gateway that forwards the Authorization header as it
/// received it must get the same answer as for the bare value, for every
/// scheme: in /v1/verify's body (on its direct path and through the
/// router), as the header of an API request, as /v1/verify's own caller
/// (the operator token, a verifier token, and a verifier token as the
/// password of Basic) and on forward-auth, which the gateway shares.
#[tokio::test]
async fn spaces_and_tabs_around_a_credential_change_no_answer() {
    use reqwest::Method;
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let other = app.create_app_key(&owner, &app_id).await;
    let (_, verifier) = app.create_verifier_token("gateway").await;
    let verifier_token = verifier.trim_start_matches("Bearer ").to_string();
    let now = latchkey_core::Clock::unix(&*app.clock);
    let credentials = [
        ("Basic, app key", key.basic()),
        ("Basic, user-account key", owner.clone()),
        (
            "Bearer JWT, app",
            key.jwt(json!({"scope": "app", "exp": now + 600})),
        ),
        (
            "Bearer JWT, appUser",
            key.jwt(json!({"scope": "appUser", "userId": "alice"})),
        ),
        ("Bearer, operator token", app.operator()),
        ("Bearer, verifier token", verifier.clone()),
        (
            "Basic, verifier token as the password",
            common::basic("gateway", &verifier_token),
        ),
        (
            "Basic, another key's secret (refused)",
            common::basic(&key.id, &other.secret),
        ),
        (
            "Bearer JWT signed with another key's secret (refused)",
            common::bearer_jwt(&key.id, &other.secret, &json!({"scope": "app"})),
        ),
    ];
    let paddings = [
        (" ", ""),
        ("", " "),
        ("\t", ""),
        ("", "\t"),
        (" \t ", "\t \t"),
        ("   ", "   "),
    ];
    let verify_body =
        |authorization: &str| json!({"authorization": authorization, "appId": app_id}).to_string();
    let mut differences = Vec::new();
    let mut valid = 0;
    for (name, bare) in &credentials {
        // The bare credential's answers.
        let body_direct = ask(&app, &app.operator(), DIRECT, &verify_body(bare)).await;
        let body_routed = ask(&app, &app.operator(), ROUTED, &verify_body(bare)).await;
        assert_eq!(body_direct, body_routed, "{name}");
        if body_direct.2["valid"] == true {
            valid += 1;
        }
        let api = with_header(&app, Method::GET, "/v1/account", bare, None).await;
        let forward = with_header(&app, Method::GET, "/v1/forward-auth", bare, None).await;
        let as_caller = with_header(
            &app,
            Method::POST,
            "/v1/verify",
            bare,
            Some(&verify_body(&key.basic())),
        )
        .await;
        for (before, after) in paddings {
            let padded = format!("{before}{bare}{after}");
            let shown = format!("{name}, {before:?} before and {after:?} after");
            let got = ask(&app, &app.operator(), DIRECT, &verify_body(&padded)).await;
            if got != body_direct {
                differences.push(format!("{shown}: /v1/verify body (direct): {got:?}"));
            }
            let got = ask(&app, &app.operator(), ROUTED, &verify_body(&padded)).await;
            if got != body_routed {
                differences.push(format!("{shown}: /v1/verify body (router): {got:?}"));
            }
            let got = with_header(&app, Method::GET, "/v1/account", &padded, None).await;
            if got != api {
                differences.push(format!("{shown}: header of GET /v1/account: {got:?}"));
            }
            let got = with_header(&app, Method::GET, "/v1/forward-auth", &padded, None).await;
            if got != forward {
                differences.push(format!("{shown}: forward-auth: {got:?}"));
            }
            let got = with_header(
                &app,
                Method::POST,
                "/v1/verify",
                &padded,
                Some(&verify_body(&key.basic())),
            )
            .await;
            if got != as_caller {
                differences.push(format!("{shown}: caller of /v1/verify: {got:?}"));
            }
        }
    }
    // Four good credentials for the operator's API; the operator and
    // verifier tokens are not, and two are refused.
    assert_eq!(valid, 4, "the bare credentials' answers");
    assert!(
        differences.is_empty(),
        "{} answers changed with whitespace around the credential:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
