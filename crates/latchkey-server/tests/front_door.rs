//! The front door over real HTTP: `/v1/forward-auth` asked as a proxy asks
//! it, and the gateway listener in front of a real upstream (an echo
//! server on loopback). The same cases through real nginx, Traefik and
//! Caddy are in `proxies.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use common::{Key, StatusCode, TestApp};
use latchkey_core::{Clock, TargetRoutes};
use latchkey_server::config::GatewayConfig;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const ORIGIN: &str = "https://shop.example";

fn routes() -> TargetRoutes {
    TargetRoutes::parse(["/v2/apps/{appId}/users/{userId}", "/v2/apps/{appId}"]).expect("routes")
}

// ---------------------------------------------------------------------------
// The upstream: echoes what it received as JSON. `/_slow` answers after
// two seconds; `/_stream` streams chunks the test hands it; `/_cors` sets
// its own CORS header; `/_echo-body` streams the request body back.

struct Upstream {
    addr: SocketAddr,
    chunks: tokio::sync::Mutex<Option<mpsc::Sender<Bytes>>>,
    _task: tokio::task::JoinHandle<()>,
}

/// A body fed from a channel (a response the test streams by hand).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

async fn upstream() -> std::sync::Arc<Upstream> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let shared = std::sync::Arc::new(std::sync::Mutex::new(None::<mpsc::Receiver<Bytes>>));
    let (tx, rx) = mpsc::channel(8);
    *shared.lock().expect("lock") = Some(rx);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let shared = shared.clone();
        async move {
            let path = req.uri().path().to_string();
            match path.as_str() {
                "/_slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    axum::response::Response::new(Body::from("late"))
                }
                "/_stream" => {
                    let rx = shared.lock().expect("lock").take().expect("one stream");
                    axum::response::Response::new(Body::new(ChannelBody(rx)))
                }
                "/_echo-body" => axum::response::Response::new(req.into_body()),
                _ => {
                    let mut headers = serde_json::Map::new();
                    for (name, value) in req.headers() {
                        let entry = headers
                            .entry(name.as_str().to_string())
                            .or_insert_with(|| Value::Array(Vec::new()));
                        if let Value::Array(values) = entry {
                            values.push(json!(value.to_str().unwrap_or("<binary>")));
                        }
                    }
                    let body = json!({
                        "method": req.method().as_str(),
                        "uri": req.uri().to_string(),
                        "headers": headers,
                    });
                    let mut response = axum::response::Response::new(Body::from(body.to_string()));
                    let h = response.headers_mut();
                    h.insert("content-type", "application/json".parse().expect("ct"));
                    if path == "/_cors" {
                        h.insert("access-control-allow-origin", "*".parse().expect("acao"));
                    }
                    h.insert("connection", "x-upstream-secret".parse().expect("conn"));
                    h.insert("x-upstream-secret", "1".parse().expect("secret"));
                    response
                }
            }
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("upstream serves");
    });
    std::sync::Arc::new(Upstream {
        addr,
        chunks: tokio::sync::Mutex::new(Some(tx)),
        _task: task,
    })
}

/// A server with the target routes, and a gateway in front of `upstream`.
async fn spawn(upstream: &Upstream, configure: impl FnOnce(&mut GatewayConfig)) -> TestApp {
    let mut gateway = GatewayConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        &format!("http://{}", upstream.addr),
    );
    configure(&mut gateway);
    TestApp::spawn_with(|c| {
        c.target_routes = routes();
        c.gateway = Some(gateway);
    })
    .await
}

fn gateway_url(app: &TestApp, path: &str) -> String {
    let addr = app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gateway");
    format!("http://{addr}{path}")
}

struct Fixture {
    app: TestApp,
    app_id: String,
    key: Key,
    _upstream: std::sync::Arc<Upstream>,
}

async fn fixture() -> Fixture {
    let upstream = upstream().await;
    let app = spawn(&upstream, |_| {}).await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    Fixture {
        app,
        app_id,
        key,
        _upstream: upstream,
    }
}

impl Fixture {
    fn alice(&self) -> String {
        self.key.jwt(json!({"scope": "appUser", "userId": "alice"}))
    }
}

/// Asks `/v1/forward-auth` as Traefik does: the original request's headers
/// plus `X-Forwarded-Method` and `X-Forwarded-Uri`.
async fn ask(
    app: &TestApp,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .http
        .get(app.url("/v1/forward-auth"))
        .header("x-forwarded-method", method)
        .header("x-forwarded-uri", uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.expect("forward-auth")
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_string())
}

async fn error_code(r: reqwest::Response) -> String {
    let body: Value = r.json().await.expect("json error");
    body["errors"][0]["code"]
        .as_str()
        .expect("code")
        .to_string()
}

// ---------------------------------------------------------------------------
// Forward-auth

#[tokio::test]
async fn forward_auth_without_a_credential_is_401_with_the_reason() {
    let f = fixture().await;
    let r = ask(&f.app, "GET", &format!("/v2/apps/{}", f.app_id), &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").is_some());
    assert_eq!(
        header(&r, "x-latchkey-error").as_deref(),
        Some("unauthorized")
    );
    assert_eq!(error_code(r).await, "unauthorized");
}

#[tokio::test]
async fn forward_auth_allows_an_app_key_on_its_app_with_every_identity_header() {
    let f = fixture().await;
    let basic = f.key.basic();
    let r = ask(
        &f.app,
        "POST",
        &format!("/v2/apps/{}/messages?limit=5", f.app_id),
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-latchkey-scope").as_deref(), Some("app"));
    assert_eq!(header(&r, "x-latchkey-app-id"), Some(f.app_id.clone()));
    assert_eq!(
        header(&r, "x-latchkey-account-id"),
        Some(f.app.account_id())
    );
    assert_eq!(header(&r, "x-latchkey-key-id"), Some(f.key.id.clone()));
    // Present and empty: a proxy copying it overwrites a client's own.
    assert_eq!(header(&r, "x-latchkey-user-id").as_deref(), Some(""));
    assert_eq!(header(&r, "x-latchkey-error"), None);
}

#[tokio::test]
async fn forward_auth_holds_an_app_user_to_its_own_user() {
    let f = fixture().await;
    let alice = f.alice();
    let own = ask(
        &f.app,
        "GET",
        &format!("/v2/apps/{}/users/alice/messages", f.app_id),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(header(&own, "x-latchkey-scope").as_deref(), Some("appUser"));
    assert_eq!(header(&own, "x-latchkey-user-id").as_deref(), Some("alice"));
    let other = ask(
        &f.app,
        "GET",
        &format!("/v2/apps/{}/users/bob", f.app_id),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        header(&other, "x-latchkey-error").as_deref(),
        Some("not_found")
    );
    // The external id is compared decoded, as the API will read it.
    let encoded = ask(
        &f.app,
        "GET",
        &format!("/v2/apps/{}/users/%61lice", f.app_id),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(encoded.status(), StatusCode::OK);
}

#[tokio::test]
async fn forward_auth_refuses_a_key_of_another_app() {
    let f = fixture().await;
    let other_app = f.app.create_app(&f.app.owner(), "Other").await;
    let other_key = f.app.create_app_key(&f.app.owner(), &other_app).await;
    let r = ask(
        &f.app,
        "GET",
        &format!("/v2/apps/{}", f.app_id),
        &[("authorization", &other_key.basic())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "not_found");
}

#[tokio::test]
async fn forward_auth_checks_only_the_credential_where_no_route_matches() {
    let f = fixture().await;
    let r = ask(
        &f.app,
        "GET",
        "/health?x=1",
        &[("authorization", &f.key.basic())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-latchkey-app-id"), Some(f.app_id.clone()));
    let wrong = common::basic(&f.key.id, "lksk_wrong");
    let r = ask(&f.app, "GET", "/health", &[("authorization", &wrong)]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forward_auth_refuses_a_deleted_key_on_the_next_request() {
    let f = fixture().await;
    let path = format!("/v2/apps/{}", f.app_id);
    let auth = [("authorization", f.key.basic())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        ask(&f.app, "GET", &path, &auth).await.status(),
        StatusCode::OK
    );
    let alice = f.alice();
    let r = f
        .app
        .delete(
            &format!("/v1/apps/{}/keys/{}", f.app_id, f.key.id),
            &f.app.owner(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(
        ask(&f.app, "GET", &path, &auth).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = ask(&f.app, "GET", &path, &[("authorization", &alice)]).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "JWTs it signed die too"
    );
}

#[tokio::test]
async fn forward_auth_refuses_and_records_a_server_secret_from_a_browser() {
    let f = fixture().await;
    let r = ask(
        &f.app,
        "GET",
        &format!("/v2/apps/{}", f.app_id),
        &[("authorization", &f.key.basic()), ("origin", ORIGIN)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(error_code(r).await, "forbidden");
    let audit = f
        .app
        .get(
            &format!("/v1/apps/{}/audit?action=credential.exposed", f.app_id),
            &f.app.owner(),
        )
        .await;
    assert_eq!(audit.status, StatusCode::OK, "{:?}", audit.body);
    let events = audit.body["events"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "credential.exposed" && e["target"]["id"] == json!(f.key.id)),
        "{events:#?}"
    );
}

#[tokio::test]
async fn forward_auth_refuses_a_path_header_the_client_sent_itself() {
    let f = fixture().await;
    // The proxy set X-Forwarded-Uri; the client added X-Original-URI naming
    // a path no route matches.
    let alice = f.alice();
    let r = ask(
        &f.app,
        "GET",
        &format!("/v2/apps/{}/users/bob", f.app_id),
        &[("authorization", &alice), ("x-original-uri", "/health")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "forbidden");
    // Agreeing headers are fine (a proxy configured to send both).
    let path = format!("/v2/apps/{}/users/alice", f.app_id);
    let r = ask(
        &f.app,
        "GET",
        &path,
        &[("authorization", &alice), ("x-original-uri", &path)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn forward_auth_refuses_paths_servers_read_differently() {
    let f = fixture().await;
    let alice = f.alice();
    for path in [
        format!("/v2/apps/{}/users/alice/../bob", f.app_id),
        format!("/v2//apps/{}/users/bob", f.app_id),
        format!("/v2/apps/{}/users/alice%2f..%2fbob", f.app_id),
        format!("/v2/apps;v=1/{}/users/bob", f.app_id),
    ] {
        let r = ask(&f.app, "GET", &path, &[("authorization", &alice)]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            header(&r, "x-latchkey-error").as_deref(),
            Some("bad_request"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn forward_auth_reads_nginx_headers_any_method_and_ignores_its_own_query() {
    let f = fixture().await;
    let alice = f.alice();
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ] {
        let r = f
            .app
            .http
            .request(
                method.clone(),
                f.app.url("/v1/forward-auth?ignored=1&x=/v2"),
            )
            .header("authorization", &alice)
            .header("x-original-method", "GET")
            .header("x-original-uri", format!("/v2/apps/{}/users/bob", f.app_id))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method}");
        assert_eq!(header(&r, "x-latchkey-error").as_deref(), Some("not_found"));
    }
}

#[tokio::test]
async fn forward_auth_without_a_path_is_refused_when_routes_are_set() {
    let f = fixture().await;
    let r = f
        .app
        .http
        .get(f.app.url("/v1/forward-auth"))
        .header("authorization", f.key.basic())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["errors"][0]["title"]
            .as_str()
            .expect("title")
            .contains("X-Forwarded-Uri"),
        "{body}"
    );
}

#[tokio::test]
async fn forward_auth_says_when_a_token_expired() {
    let f = fixture().await;
    let now = f.app.clock.unix();
    let expired = f
        .key
        .jwt(json!({"scope": "appUser", "userId": "alice", "exp": now - 120}));
    let r = ask(
        &f.app,
        "GET",
        &format!("/v2/apps/{}/users/alice", f.app_id),
        &[("authorization", &expired)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "x-latchkey-error").as_deref(),
        Some("token_expired")
    );
}

#[tokio::test]
async fn forward_auth_gives_app_users_the_cors_headers_and_answers_preflights() {
    let f = fixture().await;
    let r = f
        .app
        .patch(
            &format!("/v1/apps/{}", f.app_id),
            &f.app.owner(),
            json!({"settings": {"allowedOrigins": [ORIGIN]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let path = format!("/v2/apps/{}/users/alice", f.app_id);
    let alice = f.alice();
    let r = ask(
        &f.app,
        "GET",
        &path,
        &[("authorization", &alice), ("origin", ORIGIN)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    let r = ask(
        &f.app,
        "GET",
        &path,
        &[
            ("authorization", &alice),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    let preflight = [
        ("origin", ORIGIN),
        ("access-control-request-method", "PATCH"),
    ];
    let r = ask(&f.app, "OPTIONS", &path, &preflight).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert!(
        header(&r, "access-control-allow-methods")
            .expect("methods")
            .contains("PATCH")
    );
    assert_eq!(header(&r, "x-latchkey-scope").as_deref(), Some(""));
    let r = ask(
        &f.app,
        "OPTIONS",
        &path,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn forward_auth_without_routes_checks_the_credential_only() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let other = app.create_app(&app.owner(), "Other").await;
    let r = ask(
        &app,
        "GET",
        &format!("/v2/apps/{other}"),
        &[("authorization", &key.basic())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-latchkey-app-id"), Some(app_id));
}

// ---------------------------------------------------------------------------
// The gateway

async fn through(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app.http.request(method, gateway_url(app, path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.expect("gateway")
}

#[tokio::test]
async fn the_gateway_forwards_with_latchkeys_headers_only() {
    let f = fixture().await;
    let alice = f.alice();
    let r = through(
        &f.app,
        Method::GET,
        &format!("/v2/apps/{}/users/alice?limit=3&q=%20x", f.app_id),
        &[
            ("authorization", &alice),
            ("x-latchkey-user-id", "bob"),
            ("X-Latchkey-App-Id", "ap_forged"),
            ("x-latchkey-extra", "forged"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "x-upstream-secret"),
        None,
        "hop-by-hop on the way back"
    );
    let seen: Value = r.json().await.expect("echo");
    let h = &seen["headers"];
    assert_eq!(
        seen["uri"],
        json!(format!("/v2/apps/{}/users/alice?limit=3&q=%20x", f.app_id))
    );
    assert_eq!(h["x-latchkey-user-id"], json!(["alice"]));
    assert_eq!(h["x-latchkey-app-id"], json!([f.app_id]));
    assert_eq!(h["x-latchkey-scope"], json!(["appUser"]));
    assert_eq!(h["x-latchkey-key-id"], json!([f.key.id]));
    assert_eq!(h["x-latchkey-account-id"], json!([f.app.account_id()]));
    assert!(h.get("x-latchkey-extra").is_none(), "{h}");
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(h.get("x-hop").is_none(), "{h}");
    assert!(h.get("forwarded").is_none(), "{h}");
    assert_eq!(h["x-forwarded-for"], json!(["203.0.113.9, 127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], json!(["http"]));
    let gateway = gateway_url(&f.app, "");
    assert_eq!(
        h["x-forwarded-host"],
        json!([gateway.trim_start_matches("http://")])
    );
}

#[tokio::test]
async fn the_gateway_keeps_authorization_when_asked() {
    let upstream = upstream().await;
    let app = spawn(&upstream, |g| g.keep_authorization = true).await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let r = through(
        &app,
        Method::GET,
        "/anything",
        &[("authorization", &key.basic())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen: Value = r.json().await.expect("echo");
    assert_eq!(seen["headers"]["authorization"], json!([key.basic()]));
}

#[tokio::test]
async fn the_gateway_refuses_with_the_real_status() {
    let f = fixture().await;
    let alice = f.alice();
    let r = through(&f.app, Method::GET, "/v2/anything", &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").is_some());
    let r = through(
        &f.app,
        Method::GET,
        &format!("/v2/apps/{}/users/bob", f.app_id),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "not_found");
    let r = through(
        &f.app,
        Method::GET,
        &format!("/v2/apps/{}", f.app_id),
        &[("authorization", &f.key.basic()), ("origin", ORIGIN)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = through(
        &f.app,
        Method::GET,
        &format!("/v2/apps/{}/users/alice%2F..%2Fbob", f.app_id),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_gateway_answers_preflights_and_owns_cors() {
    let f = fixture().await;
    f.app
        .patch(
            &format!("/v1/apps/{}", f.app_id),
            &f.app.owner(),
            json!({"settings": {"allowedOrigins": [ORIGIN]}}),
        )
        .await;
    let r = through(
        &f.app,
        Method::OPTIONS,
        &format!("/v2/apps/{}/users/alice", f.app_id),
        &[("origin", ORIGIN), ("access-control-request-method", "PUT")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    let alice = f.alice();
    // The upstream's own `Access-Control-Allow-Origin: *` never reaches a
    // browser holding a server secret, nor one holding an appUser token.
    let r = through(
        &f.app,
        Method::GET,
        "/_cors",
        &[("authorization", &f.key.basic())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = through(
        &f.app,
        Method::GET,
        "/_cors",
        &[("authorization", &alice), ("origin", ORIGIN)],
    )
    .await;
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
}

#[tokio::test]
async fn the_gateway_streams_response_bodies() {
    let f = fixture().await;
    let mut r = through(
        &f.app,
        Method::GET,
        "/_stream",
        &[("authorization", &f.key.basic())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let tx = f._upstream.chunks.lock().await.take().expect("sender");
    tx.send(Bytes::from_static(b"first")).await.expect("send");
    // The first chunk arrives while the upstream has not finished.
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("first chunk in time")
        .expect("read")
        .expect("a chunk");
    assert_eq!(&first[..], b"first");
    tx.send(Bytes::from_static(b"second")).await.expect("send");
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = r.chunk().await.expect("read") {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"second");
}

#[tokio::test]
async fn the_gateway_streams_request_bodies() {
    let f = fixture().await;
    let addr = f
        .app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gw");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /_echo-body HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        f.key.basic()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    // The upstream echoes the first chunk before the client sends the rest.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains("hello") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the first chunk came back before the body ended");
    s.write_all(b"5\r\nworld\r\n0\r\n\r\n")
        .await
        .expect("write");
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains("world") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the rest");
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    // Nothing listens on the upstream's port once its listener is dropped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let (app, key) = gateway_before(dead).await;
    let r = through(&app, Method::GET, "/x", &[("authorization", &key.basic())]).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(r).await, "bad_gateway");

    let upstream = upstream().await;
    let app = spawn(&upstream, |g| {
        g.upstream_timeout = Duration::from_millis(300)
    })
    .await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let r = through(
        &app,
        Method::GET,
        "/_slow",
        &[("authorization", &key.basic())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(r).await, "gateway_timeout");
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout() {
    let upstream = upstream().await;
    let app = spawn(&upstream, |g| g.header_timeout = Duration::from_millis(500)).await;
    let addr = app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gw");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed within the timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "the gateway closed the silent connection");
}

#[tokio::test]
async fn a_request_head_trickled_in_is_closed_after_the_header_timeout() {
    let upstream = upstream().await;
    let app = spawn(&upstream, |g| g.header_timeout = Duration::from_millis(500)).await;
    let addr = app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gw");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let opened = std::time::Instant::now();
    // A header line every 100 ms, never the blank line that ends the head.
    let mut buf = [0u8; 64];
    let closed = loop {
        if opened.elapsed() > Duration::from_secs(3) {
            break false;
        }
        if s.write_all(b"x-slow: 1\r\n").await.is_err() {
            break true;
        }
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            break true;
        }
    };
    assert!(closed, "a head trickled in for 3 s was kept");
    assert!(
        opened.elapsed() < Duration::from_secs(2),
        "closed only after {:?}",
        opened.elapsed()
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let upstream = upstream().await;
    let app = spawn(&upstream, |g| g.idle_timeout = Duration::from_millis(600)).await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let addr = app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gw");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /x HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\n\r\n",
        key.basic()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was closed");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "served first"
    );
}

#[tokio::test]
async fn an_idle_socket_flood_does_not_starve_the_gateway() {
    let upstream = upstream().await;
    let app = spawn(&upstream, |g| {
        g.max_connections = 50;
        // Longer than the test: only shedding can make room.
        g.header_timeout = Duration::from_secs(60);
    })
    .await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let addr = app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gw");
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        through(&app, Method::GET, "/x", &[("authorization", &key.basic())]),
    )
    .await
    .expect("answered within 3 s despite 200 idle connections");
    assert_eq!(r.status(), StatusCode::OK, "after {:?}", started.elapsed());
    let open = app
        .server
        .as_ref()
        .expect("running")
        .state
        .config
        .gateway
        .as_ref()
        .expect("gw")
        .max_connections;
    assert_eq!(open, 50);
}

#[tokio::test]
async fn forward_auth_refuses_underscore_spellings_of_identity_headers() {
    let f = fixture().await;
    let r = ask(
        &f.app,
        "GET",
        &format!("/v2/apps/{}", f.app_id),
        &[
            ("authorization", &f.key.basic()),
            ("x_latchkey_app_id", "ap_forged"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "forbidden");
}

#[tokio::test]
async fn a_lowercase_options_is_not_a_preflight() {
    let f = fixture().await;
    let r = ask(
        &f.app,
        "options",
        &format!("/v2/apps/{}/users/bob", f.app_id),
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "DELETE"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_gateway_refuses_ambiguous_paths_without_routes_too() {
    let upstream = upstream().await;
    let mut gateway = GatewayConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        &format!("http://{}/public/", upstream.addr),
    );
    gateway.keep_authorization = false;
    let app = TestApp::spawn_with(|c| c.gateway = Some(gateway)).await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let addr = app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gw");
    for path in ["/../admin/x", "/%2e%2e/admin", "//evil.example/x"] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\nconnection: close\r\n\r\n",
            key.basic()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 400"), "{path}: {text}");
    }
    let r = through(&app, Method::GET, "/ok", &[("authorization", &key.basic())]).await;
    let seen: Value = r.json().await.expect("echo");
    assert_eq!(seen["uri"], json!("/public/ok"));
}

// ---------------------------------------------------------------------------
// The gateway's connections to the upstream

/// A hand-written HTTP/1.1 upstream that counts the connections it accepts.
/// Every request (heads only) gets `ok`; with `close_after_each` it closes
/// the connection after each answer without saying so (as an upstream
/// whose keep-alive timeout has passed does); `/_partial` gets a head
/// announcing ten bytes and only five of them.
async fn counting_upstream(
    close_after_each: bool,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).to_string();
                    got.drain(..end + 4);
                    if head.starts_with("GET /_partial ") {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")
                            .await;
                        // Never sends the rest.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                        || close_after_each
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A GET of `/x` through the gateway: 200 with the counting upstream's `ok`.
async fn answered_ok(app: &TestApp, key: &Key) {
    let r = through(app, Method::GET, "/x", &[("authorization", &key.basic())]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.expect("body"), "ok");
}

/// A server whose gateway forwards to `addr`, with an app key.
async fn gateway_before(addr: SocketAddr) -> (TestApp, Key) {
    let app = TestApp::spawn_with(|c| {
        c.gateway = Some(GatewayConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            &format!("http://{addr}"),
        ));
    })
    .await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    (app, key)
}

#[tokio::test]
async fn the_gateway_reuses_its_upstream_connections() {
    use std::sync::atomic::Ordering;
    let (addr, accepted) = counting_upstream(false).await;
    let (app, key) = gateway_before(addr).await;
    for _ in 0..20 {
        answered_ok(&app, &key).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive connection served all twenty requests, one after another"
    );
}

#[tokio::test]
async fn an_upstream_that_closes_idle_connections_costs_no_request() {
    use std::sync::atomic::Ordering;
    let (addr, accepted) = counting_upstream(true).await;
    let (app, key) = gateway_before(addr).await;
    for _ in 0..5 {
        answered_ok(&app, &key).await;
        // Time for the upstream's close to arrive at the idle connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        5,
        "a new connection each time"
    );
}

#[tokio::test]
async fn a_response_the_client_abandons_does_not_poison_the_pool() {
    use std::sync::atomic::Ordering;
    let (addr, accepted) = counting_upstream(false).await;
    let (app, key) = gateway_before(addr).await;
    let r = through(
        &app,
        Method::GET,
        "/_partial",
        &[("authorization", &key.basic())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    drop(r);
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), answered_ok(&app, &key))
            .await
            .expect("answered, not stuck behind the half-read response");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the half-read connection was not reused; the next one was"
    );
}
