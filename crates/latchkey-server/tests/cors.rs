//! CORS by scope, server credentials seen in a browser, and minted appUser
//! tokens, over real HTTP (the real-browser checks are in the Chromium
//! end-to-end tests).

mod common;

use common::{Key, StatusCode, TestApp};
use latchkey_core::Clock;
use reqwest::Method;
use serde_json::json;

const ORIGIN: &str = "https://shop.example";

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    auth: Option<&str>,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = app.http.request(method, app.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("send")
}

fn acao(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().expect("ascii").to_string())
}

async fn setup() -> (TestApp, String, Key) {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    (app, app_id, key)
}

#[tokio::test]
async fn only_app_user_credentials_get_cors_headers() {
    let (app, app_id, key) = setup().await;
    let user_path = format!("/v1/apps/{app_id}/users/alice");
    let alice = key.jwt(json!({"scope": "appUser", "userId": "alice"}));

    let r = send(&app, Method::GET, &user_path, Some(&alice), Some(ORIGIN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(acao(&r).as_deref(), Some(ORIGIN));
    assert!(r.headers().get_all("vary").iter().any(|v| v == "Origin"));
    // Without an Origin (a server), nothing CORS-related is added.
    let r = send(&app, Method::GET, &user_path, Some(&alice), None).await;
    assert_eq!(acao(&r), None);

    // Server credentials: refused from a browser (blockBrowserSecrets is on
    // for new apps), and never with CORS headers.
    let r = send(
        &app,
        Method::GET,
        &user_path,
        Some(&key.basic()),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(acao(&r), None);
    let r = send(
        &app,
        Method::GET,
        "/v1/account",
        Some(&app.owner()),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // With blocking off, the app key works but still gets no CORS headers,
    // so a browser will not hand the response to the page.
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &app.owner(),
            json!({"settings": {"blockBrowserSecrets": false}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = send(
        &app,
        Method::GET,
        &user_path,
        Some(&key.basic()),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(acao(&r), None);
    // Account credentials are refused whatever the app says.
    let r = send(
        &app,
        Method::GET,
        &user_path,
        Some(&app.owner()),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // An expired appUser token's 401 is readable by the page.
    let now = app.clock.now().unix_timestamp();
    let expired = key.jwt(json!({"scope": "appUser", "userId": "alice", "exp": now - 3600}));
    let r = send(&app, Method::GET, &user_path, Some(&expired), Some(ORIGIN)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(acao(&r).as_deref(), Some(ORIGIN));
}

#[tokio::test]
async fn preflights_follow_allowed_origins() {
    let (app, app_id, key) = setup().await;
    let user_path = format!("/v1/apps/{app_id}/users/alice");
    let preflight = |origin: &'static str| {
        let req = app
            .http
            .request(Method::OPTIONS, app.url(&user_path))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            );
        async move { req.send().await.expect("send") }
    };
    // Default: any origin.
    let r = preflight(ORIGIN).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(acao(&r).as_deref(), Some(ORIGIN));
    let allow_headers = r.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    assert!(allow_headers.contains("authorization") && allow_headers.contains("content-type"));
    assert!(
        r.headers()["access-control-allow-methods"]
            .to_str()
            .expect("ascii")
            .contains("PATCH")
    );

    for bad in [
        json!(["shop.example"]),
        json!(["https://shop.example/"]),
        json!("https://shop.example"),
    ] {
        let r = app
            .patch(
                &format!("/v1/apps/{app_id}"),
                &app.owner(),
                json!({"settings": {"allowedOrigins": bad}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &app.owner(),
            json!({"settings": {"allowedOrigins": ["https://app.example"]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = preflight(ORIGIN).await;
    assert_eq!(acao(&r), None, "not an allowed origin");
    let r = preflight("https://app.example").await;
    assert_eq!(acao(&r).as_deref(), Some("https://app.example"));
    // The actual request from a disallowed origin gets no CORS headers.
    let alice = key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    let r = send(&app, Method::GET, &user_path, Some(&alice), Some(ORIGIN)).await;
    assert_eq!(acao(&r), None);
    let r = send(
        &app,
        Method::GET,
        &user_path,
        Some(&alice),
        Some("https://app.example"),
    )
    .await;
    assert_eq!(acao(&r).as_deref(), Some("https://app.example"));
    // Unknown app: no CORS.
    let r = app
        .http
        .request(
            Method::OPTIONS,
            app.url("/v1/apps/ap_0000000000000000000000/users/x"),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("send");
    assert_eq!(acao(&r), None);
}

#[tokio::test]
async fn exposed_secrets_are_recorded_once_per_window() {
    let (app, app_id, key) = setup().await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/webhooks"),
            &app.owner(),
            json!({"target": "http://127.0.0.1:9/hook", "triggers": ["credential:exposed"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    for _ in 0..3 {
        let r = send(
            &app,
            Method::GET,
            &format!("/v1/apps/{app_id}"),
            Some(&key.basic()),
            Some(ORIGIN),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/audit?action=credential.exposed"),
            &app.owner(),
        )
        .await;
    let events = r.body["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 1, "{:?}", r.body);
    assert_eq!(events[0]["target"]["id"], key.id.as_str());
    assert_eq!(events[0]["details"]["origin"], ORIGIN);
    assert_eq!(events[0]["details"]["refused"], true);
    assert!(!r.body.to_string().contains(&key.secret));
    let state = app.server.as_ref().expect("running").state.clone();
    let r = app
        .get(&format!("/v1/apps/{app_id}/webhooks"), &app.owner())
        .await;
    let webhook = r.body["webhooks"][0]["id"]
        .as_str()
        .expect("webhook")
        .to_string();
    let deliveries = state
        .store
        .list_deliveries(
            &webhook,
            &latchkey_store::Page {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("deliveries");
    assert_eq!(deliveries.items.len(), 1);
    app.clock.advance(time::Duration::minutes(11));
    send(
        &app,
        Method::GET,
        &format!("/v1/apps/{app_id}"),
        Some(&key.basic()),
        Some(ORIGIN),
    )
    .await;
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/audit?action=credential.exposed"),
            &app.owner(),
        )
        .await;
    assert_eq!(r.body["events"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn minted_app_user_tokens() {
    let (app, app_id, key) = setup().await;
    let owner = app.owner();
    let mint = format!("/v1/apps/{app_id}/users/carol/tokens");
    let r = app
        .post(&mint, &key.basic(), json!({"ttlSeconds": 900}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = r.body["token"].as_str().expect("token").to_string();
    let expected = (app.clock.now() + time::Duration::seconds(900))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    assert_eq!(r.body["expiresAt"], expected.as_str());
    let bearer = format!("Bearer {token}");
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/carol"), &bearer)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the token works and creates carol"
    );
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/dave"), &bearer)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "and only for carol");

    // Capped by the app's policy.
    app.patch(
        &format!("/v1/apps/{app_id}"),
        &owner,
        json!({"settings": {"maxTokenTtlSeconds": 120}}),
    )
    .await;
    let r = app.post(&mint, &owner, json!({"ttlSeconds": 3600})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let capped = (app.clock.now() + time::Duration::seconds(120))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    assert_eq!(r.body["expiresAt"], capped.as_str());

    for bad in [
        json!({"ttlSeconds": 10}),
        json!({"ttlSeconds": 999_999}),
        json!({"ttl": 60}),
    ] {
        assert_eq!(
            app.post(&mint, &owner, bad).await.status,
            StatusCode::BAD_REQUEST
        );
    }
    let now = app.clock.now().unix_timestamp();
    let user = key.jwt(json!({"scope": "appUser", "userId": "carol", "iat": now, "exp": now + 60}));
    assert_eq!(
        app.post(&mint, &user, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    // An app without keys has nothing to sign with.
    let empty = app.create_app(&owner, "Keyless").await;
    let r = app
        .post(
            &format!("/v1/apps/{empty}/users/carol/tokens"),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users/usr_0000000000000000000000/tokens"),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_by_default() {
    let app = TestApp::spawn_with(|c| c.allow_private_webhook_targets = false).await;
    let app_id = app.create_app(&app.owner(), "Ssrf").await;
    for target in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://localhost/",
    ] {
        let r = app
            .post(
                &format!("/v1/apps/{app_id}/webhooks"),
                &app.owner(),
                json!({"target": target, "triggers": ["key:created"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{target}: {:?}", r.body);
    }
    assert!(!latchkey_server::webhooks::is_public_ip(
        "10.1.2.3".parse().expect("ip")
    ));
    assert!(!latchkey_server::webhooks::is_public_ip(
        "100.64.0.1".parse().expect("ip")
    ));
    assert!(!latchkey_server::webhooks::is_public_ip(
        "fd00::1".parse().expect("ip")
    ));
    assert!(latchkey_server::webhooks::is_public_ip(
        "93.184.216.34".parse().expect("ip")
    ));
}
