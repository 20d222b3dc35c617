//! Webhooks over real HTTP: management (scopes, validation, the limit, the
//! secret shown once) and delivery to a real local receiver (signature,
//! delivery id, retries with backoff on the injected clock, final answers,
//! at most 5 attempts, no loss across a restart, deletion stops delivery).
//!
//! The server's own dispatcher also polls in the background, so a test
//! never relies on which pass sends a delivery: it triggers a pass with
//! `dispatch_due` and then waits (bounded) for the receiver and the store.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use common::{StatusCode, TestApp};
use latchkey_core::Clock;
use latchkey_server::AppState;
use latchkey_server::webhooks::{PER_WEBHOOK, REQUEST_TIMEOUT, dispatch_due, signature};
use latchkey_store::{
    Actor, AuditEvent, Delivery, DeliveryStatus, Notification, Page, delivery_id,
};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long a test waits for something another task does.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// A webhook receiver on 127.0.0.1 that records every request and answers
// with a status the test chooses; it can be stopped (connections refused)
// and started again on the same port.

#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("header {name} missing"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }
}

#[derive(Debug)]
struct Shared {
    answer: AtomicU16,
    got: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
}

struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let status = StatusCode::from_u16(shared.answer.load(Ordering::SeqCst)).expect("status");
    shared.got.lock().expect("lock").push(Received {
        method,
        path: uri.path().to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    shared.count.send_modify(|n| *n += 1);
    // No keep-alive: once stopped, the receiver is really gone.
    (status, [("connection", "close")]).into_response()
}

impl Receiver {
    async fn start(answer: u16) -> Self {
        let (count, _) = watch::channel(0);
        let mut r = Receiver {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shared: Arc::new(Shared {
                answer: AtomicU16::new(answer),
                got: Mutex::new(Vec::new()),
                count,
            }),
            running: None,
        };
        r.resume().await;
        r
    }

    /// A receiver whose port refuses connections until `resume`.
    async fn down() -> Self {
        let mut r = Self::start(200).await;
        r.stop().await;
        r
    }

    /// (Re)starts listening on the same address.
    async fn resume(&mut self) {
        assert!(self.running.is_none(), "already running");
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the receiver");
        self.addr = listener.local_addr().expect("addr");
        let router = axum::Router::new()
            .fallback(record)
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("receiver");
        });
        self.running = Some((stop, task));
    }

    /// Stops listening: connections are refused.
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.await.expect("receiver stopped");
        }
    }

    fn answer(&self, status: u16) {
        self.shared.answer.store(status, Ordering::SeqCst);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn count(&self) -> usize {
        *self.shared.count.borrow()
    }

    fn received(&self) -> Vec<Received> {
        self.shared.got.lock().expect("lock").clone()
    }

    /// Waits (bounded) until `n` requests have arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut rx = self.shared.count.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("the receiver got {} of {n} requests", self.count()))
            .expect("receiver alive");
        self.received()
    }
}

/// A receiver that accepts connections and never answers: every attempt
/// sent to it lasts until the request timeout.
struct Silent {
    addr: SocketAddr,
    accepted: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl Silent {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the silent receiver");
        let addr = listener.local_addr().expect("addr");
        let (count, accepted) = watch::channel(0);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
                count.send_modify(|n| *n += 1);
            }
        });
        Silent {
            addr,
            accepted,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn accepted(&self) -> usize {
        *self.accepted.borrow()
    }

    /// Waits (bounded) until `n` connections are open.
    async fn wait_for(&self, n: usize) {
        let mut rx = self.accepted.clone();
        tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{} of {n} connections", self.accepted()))
            .expect("silent receiver alive");
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------

fn state(app: &TestApp) -> &AppState {
    &app.server.as_ref().expect("running").state
}

/// Creates a webhook with `auth`; returns its id and secret.
async fn create_webhook(
    app: &TestApp,
    auth: &str,
    app_id: &str,
    target: &str,
    triggers: &[&str],
) -> (String, String) {
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/webhooks"),
            auth,
            json!({"target": target, "triggers": triggers}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (
        r.body["webhook"]["id"].as_str().expect("id").to_string(),
        r.body["webhook"]["secret"]
            .as_str()
            .expect("secret")
            .to_string(),
    )
}

async fn deliveries(app: &TestApp, webhook_id: &str) -> Vec<Delivery> {
    state(app)
        .store
        .list_deliveries(
            webhook_id,
            &Page {
                limit: 100,
                after: None,
            },
        )
        .await
        .expect("deliveries")
        .items
}

async fn only_delivery(app: &TestApp, webhook_id: &str) -> Delivery {
    let mut all = deliveries(app, webhook_id).await;
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// Waits (bounded) until the delivery satisfies `done`, e.g. until the
/// outcome of an attempt the receiver has seen is recorded.
async fn wait_delivery(app: &TestApp, id: &str, done: impl Fn(&Delivery) -> bool) -> Delivery {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = state(app)
            .store
            .get_delivery(id)
            .await
            .expect("get")
            .expect("the delivery exists");
        if done(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery never reached the expected state: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks a request's `Latchkey-Signature` the way a receiver would.
fn signature_ok(r: &Received, secret: &str) -> bool {
    latchkey_testkit::webhook_signature_ok(r.header("latchkey-signature"), &r.body, secret)
}

fn signed_at(r: &Received) -> i64 {
    r.header("latchkey-signature")
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .expect("t=<unix seconds>")
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn webhooks_are_managed_with_app_or_account_scope() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Hooked").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let hooks = format!("/v1/apps/{app_id}/webhooks");

    // Created with app scope; the secret is shown once.
    let r = app
        .post(
            &hooks,
            &key.basic(),
            json!({"target": "https://hooks.example.com/in?token=abc", "triggers": ["key:deleted", "key:created"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let w = &r.body["webhook"];
    let id = w["id"].as_str().expect("id").to_string();
    let secret = w["secret"].as_str().expect("secret").to_string();
    assert!(id.starts_with("whk_"), "{id}");
    latchkey_core::secret::check_format("lkwh_", &secret).expect("a well-formed lkwh_ secret");
    assert_eq!(w["appId"], app_id.as_str());
    assert_eq!(w["target"], "https://hooks.example.com/in?token=abc");
    assert_eq!(w["triggers"], json!(["key:created", "key:deleted"]));
    assert_eq!(w["createdAt"], "2026-01-01T00:00:00Z");

    // Read with account scope or app scope; never the secret again.
    let r = app.get(&hooks, &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["webhooks"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["webhooks"][0]["id"], id.as_str());
    assert_eq!(
        r.body["meta"],
        json!({"hasMore": false, "afterCursor": null})
    );
    let one = format!("{hooks}/{id}");
    let r = app.get(&one, &key.jwt(json!({"scope": "app"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["webhook"].get("secret").is_none());
    for path in [hooks.clone(), one.clone()] {
        let r = app.get(&path, &owner).await;
        assert!(!r.body.to_string().contains(&secret), "{path}");
    }

    // Updated: target and triggers, each alone.
    let r = app
        .patch(&one, &owner, json!({"target": "http://127.0.0.1:9/x"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["webhook"]["target"], "http://127.0.0.1:9/x");
    assert_eq!(
        r.body["webhook"]["triggers"],
        json!(["key:created", "key:deleted"])
    );
    assert!(r.body["webhook"].get("secret").is_none());
    let r = app
        .patch(
            &one,
            &key.basic(),
            json!({"triggers": ["key:rotation-due", "key:expiring", "key:rotated"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["webhook"]["triggers"],
        json!(["key:rotated", "key:expiring", "key:rotation-due"])
    );
    let r = app.get(&one, &owner).await;
    assert_eq!(r.body["webhook"]["target"], "http://127.0.0.1:9/x");
    assert_eq!(
        r.body["webhook"]["triggers"],
        json!(["key:rotated", "key:expiring", "key:rotation-due"])
    );

    // Bad input: 400 in the documented format, nothing changed.
    let before = app.get(&one, &owner).await.body;
    let long = format!("https://example.com/{}", "a".repeat(2049 - 20));
    let bad_bodies = [
        json!({"target": "not a url", "triggers": ["key:created"]}),
        json!({"target": "/relative/path", "triggers": ["key:created"]}),
        json!({"target": "ftp://example.com/", "triggers": ["key:created"]}),
        json!({"target": long, "triggers": ["key:created"]}),
        json!({"target": "https://example.com/", "triggers": ["key:exploded"]}),
        json!({"target": "https://example.com/", "triggers": []}),
        json!({"target": "https://example.com/", "triggers": ["key:created", "key:created"]}),
        json!({"target": "https://example.com/"}),
        json!({"triggers": ["key:created"]}),
        json!({"target": "https://example.com/", "triggers": ["key:created"], "secret": "mine"}),
        json!({"target": 7, "triggers": ["key:created"]}),
    ];
    for body in &bad_bodies {
        let r = app.post(&hooks, &owner, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.code(), "bad_request");
        assert!(
            r.body["errors"][0]["title"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
    }
    let r = app
        .post(
            &hooks,
            &owner,
            json!({"target": "https://example.com/", "triggers": ["key:nope"]}),
        )
        .await;
    let title = r.body["errors"][0]["title"].as_str().unwrap_or("");
    assert!(
        title.contains("key:rotation-due"),
        "the error lists the triggers: {title}"
    );
    for body in [
        json!({}),
        json!({"target": "mailto:x@example.com"}),
        json!({"triggers": ["key:unknown"]}),
        json!({"triggers": []}),
        json!({"target": "https://example.com/", "colour": "red"}),
    ] {
        let r = app.patch(&one, &owner, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
    }
    assert_eq!(app.get(&one, &owner).await.body, before);
    let r = app.get(&hooks, &owner).await;
    assert_eq!(r.body["webhooks"].as_array().map(Vec::len), Some(1));

    // appUser credentials are refused; operators have no app scope.
    let alice = key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    for auth in [alice.as_str(), app.operator().as_str()] {
        let r = app.get(&hooks, auth).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
        assert_eq!(r.code(), "forbidden");
        let r = app
            .post(
                &hooks,
                auth,
                json!({"target": "https://example.com/", "triggers": ["key:created"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
        let r = app.delete(&one, auth).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    }

    // Another account's app, and this webhook under another app: 404.
    let stranger = app.create_account("stranger@example.com").await.basic();
    let body = json!({"target": "https://example.com/", "triggers": ["key:created"]});
    assert_eq!(
        app.get(&hooks, &stranger).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&hooks, &stranger, body.clone()).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get(&one, &stranger).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.patch(&one, &stranger, json!({"target": "https://evil.example/"}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&one, &stranger).await.status,
        StatusCode::NOT_FOUND
    );
    let other_app = app.create_app(&owner, "Other").await;
    let elsewhere = format!("/v1/apps/{other_app}/webhooks/{id}");
    let r = app.get(&elsewhere, &owner).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    assert_eq!(
        app.delete(&elsewhere, &owner).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get(&one, &owner).await.status, StatusCode::OK);

    // At most 10 per app.
    for i in 1..10 {
        create_webhook(
            &app,
            &owner,
            &app_id,
            &format!("https://example.com/{i}"),
            &["key:created"],
        )
        .await;
    }
    let r = app.post(&hooks, &owner, body.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "conflict");
    let r = app.get(&format!("{hooks}?limit=4"), &owner).await;
    assert_eq!(r.body["webhooks"].as_array().map(Vec::len), Some(4));
    assert_eq!(r.body["meta"]["hasMore"], true);
    let cursor = r.body["meta"]["afterCursor"].as_str().expect("cursor");
    let r = app
        .get(&format!("{hooks}?limit=100&after={cursor}"), &owner)
        .await;
    assert_eq!(r.body["webhooks"].as_array().map(Vec::len), Some(6));
    // The other app is not affected by this app's limit.
    create_webhook(
        &app,
        &owner,
        &other_app,
        "https://example.com/",
        &["key:created"],
    )
    .await;

    // Deleted: gone, and room again.
    let r = app.delete(&one, &owner).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(app.get(&one, &owner).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&one, &owner).await.status, StatusCode::NOT_FOUND);
    let r = app.post(&hooks, &key.basic(), body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    // Audited, without the secret or the target's path and query.
    let r = app
        .get(&format!("/v1/apps/{app_id}/audit?limit=100"), &key.basic())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let events = r.body["events"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["webhook.created", "webhook.updated", "webhook.deleted"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let log = r.body.to_string();
    assert!(!log.contains(&secret));
    assert!(!log.contains("token=abc"), "{log}");
}

/// A user name or password in a target URL would be stored and shown in
/// clear to everyone who reads the app's webhooks (and sent to the
/// receiver): refused with a 400 that says so, on create and update, and
/// nothing changes.
#[tokio::test]
async fn targets_with_a_user_name_or_password_are_refused() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Hooked").await;
    let hooks = format!("/v1/apps/{app_id}/webhooks");
    let r = app
        .post(
            &hooks,
            &owner,
            json!({"target": "https://hooks.example.com/in", "triggers": ["key:created"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let one = format!("{hooks}/{}", r.body["webhook"]["id"].as_str().expect("id"));
    let before = (
        app.get(&hooks, &owner).await.body,
        app.get(&one, &owner).await.body,
    );
    for target in [
        "https://user:s3cr3t-passw0rd@hooks.example.com/in",
        "https://user@hooks.example.com/in",
        "https://:s3cr3t-passw0rd@hooks.example.com/in",
        "https://@hooks.example.com/in",
        "http://user:s3cr3t-passw0rd@127.0.0.1:9/in",
    ] {
        for r in [
            app.post(
                &hooks,
                &owner,
                json!({"target": target, "triggers": ["key:created"]}),
            )
            .await,
            app.patch(&one, &owner, json!({"target": target})).await,
        ] {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{target}: {:?}", r.body);
            assert_eq!(r.code(), "bad_request");
            let title = r.body["errors"][0]["title"].as_str().unwrap_or("");
            assert!(title.contains("user name or password"), "{title}");
            assert!(
                !title.contains("s3cr3t"),
                "the answer echoes the password: {title}"
            );
        }
    }
    let after = (
        app.get(&hooks, &owner).await.body,
        app.get(&one, &owner).await.body,
    );
    assert_eq!(after, before, "a refused target changed something");
    // An @ in the path or query is not userinfo.
    let r = app
        .post(
            &hooks,
            &owner,
            json!({"target": "https://hooks.example.com/in/@team?to=a@b.example", "triggers": ["key:created"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn key_created_is_delivered_signed_with_a_delivery_id() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Notified").await;
    let receiver = Receiver::start(200).await;
    let (webhook, secret) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/hooks/latchkey"),
        &["key:created"],
    )
    .await;
    // Subscribed to something else: not notified.
    let (other, _) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/other"),
        &["key:deleted"],
    )
    .await;

    let sent_at = app.clock.unix();
    let key = app.create_app_key(&owner, &app_id).await;
    let queued = only_delivery(&app, &webhook).await;
    assert!(deliveries(&app, &other).await.is_empty());
    dispatch_due(state(&app)).await;
    let got = receiver.wait_for(1).await;
    let r = &got[0];

    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/hooks/latchkey");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("latchkey-event"), "key:created");
    let body = r.json();
    assert_eq!(body["type"], "key:created");
    assert_eq!(body["appId"], app_id.as_str());
    assert_eq!(body["accountId"], app.account_id().as_str());
    assert_eq!(body["data"]["key"]["id"], key.id.as_str());
    assert_eq!(body["createdAt"], "2026-01-01T00:00:00Z");
    // The delivery id is stable: derived from the event and the webhook.
    let event_id = body["id"].as_str().expect("event id");
    assert_eq!(r.header("latchkey-delivery"), queued.id);
    assert_eq!(queued.id, delivery_id(event_id, &webhook));
    // The signature, checked as a receiver would.
    assert_eq!(signed_at(r), sent_at);
    assert!(
        signature_ok(r, &secret),
        "{}",
        r.header("latchkey-signature")
    );
    assert_eq!(
        r.header("latchkey-signature"),
        signature(secret.as_bytes(), sent_at, r.body.as_bytes())
    );
    // ...and it would catch a forgery.
    let mut forged = r.clone();
    forged.body = forged.body.replace("key:created", "key:deleted");
    assert!(!signature_ok(&forged, &secret));
    assert!(!signature_ok(r, "lkwh_not_the_secret"));
    // No secret travels in a notification.
    assert!(!r.body.contains(&key.secret));
    assert!(!r.body.contains(&secret));

    let d = wait_delivery(&app, &queued.id, |d| d.status != DeliveryStatus::Pending).await;
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!((d.attempts, d.last_status), (1, Some(200)));
    assert_eq!(d.last_error, None);
    // Delivered once: nothing more is sent, however late it gets.
    app.clock.advance(time::Duration::hours(1));
    dispatch_due(state(&app)).await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_the_delivery_on_retry() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Retried").await;
    let mut receiver = Receiver::down().await;
    let (webhook, secret) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/in"),
        &["key:created"],
    )
    .await;
    app.create_app_key(&owner, &app_id).await;
    let id = only_delivery(&app, &webhook).await.id;

    // Attempt 1: connection refused; retried 30 s later.
    let t0 = app.clock.unix();
    dispatch_due(state(&app)).await;
    let d = wait_delivery(&app, &id, |d| d.attempts == 1).await;
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.next_attempt_at, t0 + 30);
    assert_eq!(d.last_status, None);
    let error = d.last_error.expect("why it failed");
    assert!(error.contains("connect"), "{error}");
    assert!(!error.contains("/in"), "no URL in the error: {error}");

    // Back up, answering 500: not before the backoff has passed.
    receiver.resume().await;
    receiver.answer(500);
    app.clock.advance(time::Duration::seconds(29));
    assert_eq!(dispatch_due(state(&app)).await, 0);
    assert_eq!(receiver.count(), 0);
    app.clock.advance(time::Duration::seconds(1));
    dispatch_due(state(&app)).await;
    receiver.wait_for(1).await;
    let d = wait_delivery(&app, &id, |d| d.attempts == 2).await;
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.last_status, Some(500));
    assert_eq!(d.next_attempt_at, t0 + 30 + 120);

    // Attempt 3 is accepted.
    receiver.answer(204);
    app.clock.advance(time::Duration::seconds(120));
    dispatch_due(state(&app)).await;
    let got = receiver.wait_for(2).await;
    let d = wait_delivery(&app, &id, |d| d.status != DeliveryStatus::Pending).await;
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!((d.attempts, d.last_status), (3, Some(204)));
    assert_eq!(got.len(), 2);
    // The same delivery, body and id every time, signed afresh.
    for r in &got {
        assert_eq!(r.header("latchkey-delivery"), id);
        assert!(signature_ok(r, &secret));
    }
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(signed_at(&got[0]), t0 + 30);
    assert_eq!(signed_at(&got[1]), t0 + 150);
    receiver.stop().await;
}

#[tokio::test]
async fn final_answers_end_a_delivery_and_others_are_retried() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Final").await;
    let receiver = Receiver::start(404).await;
    let (webhook, _) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/gone"),
        &["key:created"],
    )
    .await;
    app.create_app_key(&owner, &app_id).await;
    let first = only_delivery(&app, &webhook).await.id;
    dispatch_due(state(&app)).await;
    receiver.wait_for(1).await;
    let d = wait_delivery(&app, &first, |d| d.status != DeliveryStatus::Pending).await;
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!((d.attempts, d.last_status), (1, Some(404)));
    // Never retried.
    app.clock.advance(time::Duration::hours(2));
    assert_eq!(dispatch_due(state(&app)).await, 0);
    assert_eq!(receiver.count(), 1);

    // 400, 401, 403 and 406 are final too; 410 and 429 are not.
    for (status, is_final) in [
        (400, true),
        (401, true),
        (403, true),
        (406, true),
        (410, false),
        (429, false),
    ] {
        receiver.answer(status);
        let seen = receiver.count();
        app.create_app_key(&owner, &app_id).await;
        let newest = deliveries(&app, &webhook).await.remove(0).id;
        dispatch_due(state(&app)).await;
        receiver.wait_for(seen + 1).await;
        let d = wait_delivery(&app, &newest, |d| d.attempts == 1).await;
        assert_eq!(d.last_status, Some(status));
        let want = if is_final {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Pending
        };
        assert_eq!(d.status, want, "{status}");
    }
}

#[tokio::test]
async fn at_most_five_attempts_over_about_fifteen_minutes() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Stubborn").await;
    let receiver = Receiver::start(503).await;
    let (webhook, _) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/busy"),
        &["key:created"],
    )
    .await;
    app.create_app_key(&owner, &app_id).await;
    let id = only_delivery(&app, &webhook).await.id;
    let start = app.clock.unix();
    let mut times = Vec::new();
    for n in 1..=5u32 {
        dispatch_due(state(&app)).await;
        receiver.wait_for(n as usize).await;
        let d = wait_delivery(&app, &id, |d| d.attempts == n).await;
        times.push(app.clock.unix() - start);
        if n < 5 {
            assert_eq!(d.status, DeliveryStatus::Pending, "after attempt {n}");
            let wait = d.next_attempt_at - app.clock.unix();
            app.clock.advance(time::Duration::seconds(wait));
        } else {
            assert_eq!(d.status, DeliveryStatus::Failed);
            assert_eq!(d.last_status, Some(503));
        }
    }
    assert_eq!(times, [0, 30, 150, 450, 930]);
    // Nothing after the fifth.
    app.clock.advance(time::Duration::days(1));
    assert_eq!(dispatch_due(state(&app)).await, 0);
    assert_eq!(receiver.count(), 5);
}

#[tokio::test]
async fn no_delivery_is_lost_across_a_restart() {
    let mut app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Durable").await;
    let mut receiver = Receiver::down().await;
    let (webhook, secret) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/in"),
        &["key:created", "key:deleted"],
    )
    .await;
    // One delivery tried once while the receiver is down...
    let key = app.create_app_key(&owner, &app_id).await;
    let tried = only_delivery(&app, &webhook).await.id;
    dispatch_due(state(&app)).await;
    wait_delivery(&app, &tried, |d| d.attempts == 1).await;
    // ...and one enqueued just before the restart.
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", key.id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    app.restart().await;
    // Read while the receiver is still down: the restarted node's own
    // dispatcher may try the due delivery at once, and must not have
    // delivered it before this check sees it pending.
    let queued = deliveries(&app, &webhook).await;
    assert_eq!(queued.len(), 2);
    assert!(
        queued.iter().all(|d| d.status == DeliveryStatus::Pending),
        "{queued:?}"
    );
    receiver.resume().await;
    app.clock.advance(time::Duration::seconds(30));
    dispatch_due(state(&app)).await;
    let got = receiver.wait_for(2).await;
    for d in &queued {
        let d = wait_delivery(&app, &d.id, |d| d.status != DeliveryStatus::Pending).await;
        assert_eq!(d.status, DeliveryStatus::Delivered, "{d:?}");
    }
    let mut events: Vec<&str> = got.iter().map(|r| r.header("latchkey-event")).collect();
    events.sort_unstable();
    assert_eq!(events, ["key:created", "key:deleted"]);
    let mut ids: Vec<&str> = got.iter().map(|r| r.header("latchkey-delivery")).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = queued.iter().map(|d| d.id.as_str()).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    // The secret survived the restart (sealed in the store).
    assert!(got.iter().all(|r| signature_ok(r, &secret)));
    receiver.stop().await;
}

#[tokio::test]
async fn deleting_a_webhook_stops_its_deliveries() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Unhooked").await;
    let receiver = Receiver::start(500).await;
    let (webhook, _) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/in"),
        &["key:created"],
    )
    .await;
    app.create_app_key(&owner, &app_id).await;
    let id = only_delivery(&app, &webhook).await.id;
    dispatch_due(state(&app)).await;
    receiver.wait_for(1).await;
    wait_delivery(&app, &id, |d| d.attempts == 1).await;

    let r = app
        .delete(&format!("/v1/apps/{app_id}/webhooks/{webhook}"), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(deliveries(&app, &webhook).await.is_empty());
    // Neither the pending retry nor new events reach the receiver.
    receiver.answer(200);
    app.create_app_key(&owner, &app_id).await;
    app.clock.advance(time::Duration::hours(1));
    assert_eq!(dispatch_due(state(&app)).await, 0);
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn every_trigger_reaches_the_webhooks_subscribed_to_it() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Everything").await;
    let all_events = Receiver::start(200).await;
    let created_only = Receiver::start(200).await;
    let (all, secret) = create_webhook(
        &app,
        &owner,
        &app_id,
        &all_events.url("/all"),
        &[
            "key:created",
            "key:rotated",
            "key:deleted",
            "key:expiring",
            "key:expired",
            "key:rotation-due",
        ],
    )
    .await;
    create_webhook(
        &app,
        &owner,
        &app_id,
        &created_only.url("/created"),
        &["key:created"],
    )
    .await;
    let keys = format!("/v1/apps/{app_id}/keys");

    // created, rotated (no grace: the old key expires at once), deleted.
    let first = app.create_app_key(&owner, &app_id).await;
    let r = app
        .post(
            &format!("{keys}/{}/rotate", first.id),
            &owner,
            json!({"graceSeconds": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let second = r.body["key"]["id"].as_str().expect("new key").to_string();
    let r = app.delete(&format!("{keys}/{second}"), &owner).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // A key expiring in 3 days, in an app whose keys are due for rotation
    // after a day: expiring (7 d), then rotation due and expiring (1 d).
    let expires = app.clock.now() + time::Duration::days(3);
    let r = app
        .post(
            &keys,
            &owner,
            json!({"displayName": "short-lived", "expiresAt": expires
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &owner,
            json!({"settings": {"maxKeyAgeDays": 1}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    latchkey_server::maintenance::run_key_notices(state(&app))
        .await
        .expect("notices");
    app.clock.advance(time::Duration::days(2));
    latchkey_server::maintenance::run_key_notices(state(&app))
        .await
        .expect("notices");

    dispatch_due(state(&app)).await;
    let queued = deliveries(&app, &all).await;
    let got = all_events.wait_for(queued.len()).await;
    let mut seen: Vec<&str> = got.iter().map(|r| r.header("latchkey-event")).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "key:created",
            "key:deleted",
            "key:expired",
            "key:expiring",
            "key:rotated",
            "key:rotation-due"
        ]
    );
    for r in &got {
        assert!(signature_ok(r, &secret));
        assert_eq!(r.json()["type"], r.header("latchkey-event"));
        assert_eq!(r.json()["appId"], app_id.as_str());
    }
    // The other webhook heard only of the two keys created.
    let created = created_only.wait_for(2).await;
    assert!(
        created
            .iter()
            .all(|r| r.header("latchkey-event") == "key:created")
    );
    for d in queued {
        let d = wait_delivery(&app, &d.id, |d| d.status != DeliveryStatus::Pending).await;
        assert_eq!(d.status, DeliveryStatus::Delivered, "{d:?}");
    }
    assert_eq!(created_only.count(), 2);
}

/// Queues a `key:created` notification of `app_id` straight in the store
/// (faster than creating keys, and not limited to 10 live keys per app).
async fn queue_created(app: &TestApp, app_id: &str, n: usize) {
    for i in 0..n {
        let event = AuditEvent {
            id: format!("evt_backlog_{app_id}_{i}"),
            at: app.clock.unix(),
            account_id: Some(app.account_id()),
            app_id: Some(app_id.to_string()),
            action: "key.created".into(),
            actor: Actor::System,
            address: None,
            target_type: "key".into(),
            target_id: None,
            outcome: "success".into(),
            details: serde_json::Map::new(),
            notify: Some(Notification {
                trigger: "key:created",
                payload: json!({"type": "key:created", "n": i}).to_string(),
            }),
            request_id: None,
        };
        state(app).store.record_audit(&event).await.expect("queue");
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_up_other_apps() {
    // The server's own dispatcher does the work here, polling often.
    let app = TestApp::spawn_with(|c| c.webhook_poll_interval = Duration::from_millis(50)).await;
    let owner = app.owner();
    let slow_app = app.create_app(&owner, "Slow").await;
    let healthy_app = app.create_app(&owner, "Healthy").await;
    let silent = Silent::start().await;
    let receiver = Receiver::start(200).await;
    let (slow, _) = create_webhook(
        &app,
        &owner,
        &slow_app,
        &silent.url("/never"),
        &["key:created"],
    )
    .await;
    create_webhook(
        &app,
        &owner,
        &healthy_app,
        &receiver.url("/in"),
        &["key:created"],
    )
    .await;

    // A backlog of 80 for the app whose receiver never answers, older than
    // anything of the other app: every attempt of it lasts 10 s.
    queue_created(&app, &slow_app, 80).await;
    let started = tokio::time::Instant::now();
    // Queued behind the backlog: delivered at once all the same.
    app.create_app_key(&owner, &healthy_app).await;
    receiver.wait_for(1).await;
    // Queued while the slow app's attempts are in flight: the dispatcher
    // does not wait for them before claiming more.
    silent.wait_for(1).await;
    app.create_app_key(&owner, &healthy_app).await;
    let got = receiver.wait_for(2).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < REQUEST_TIMEOUT / 2,
        "the healthy app waited {elapsed:?} behind the silent receiver"
    );
    assert!(
        got.iter()
            .all(|r| r.json()["appId"] == healthy_app.as_str()),
        "{got:?}"
    );

    // Meanwhile the silent receiver holds no more than its share of
    // attempts, and none of them has ended: nothing waited for a timeout.
    assert!(
        silent.accepted() <= PER_WEBHOOK as usize,
        "{} attempts in flight to one webhook",
        silent.accepted()
    );
    let backlog = deliveries(&app, &slow).await;
    assert_eq!(backlog.len(), 80);
    assert!(
        backlog
            .iter()
            .all(|d| d.attempts == 0 && d.status == DeliveryStatus::Pending)
    );
}

// ---------------------------------------------------------------------------
// The deliveries API: GET …/deliveries, GET …/deliveries/{id},
// POST …/deliveries/{id}/redeliver.

/// `GET …/webhooks/{webhook}/deliveries/{id}` as `auth` sees it.
async fn api_delivery(app: &TestApp, auth: &str, app_id: &str, webhook: &str, id: &str) -> Value {
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/webhooks/{webhook}/deliveries/{id}"),
            auth,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["delivery"].clone()
}

#[tokio::test]
async fn a_failed_delivery_is_listed_and_sent_again_over_the_api() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Redelivered").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let mut receiver = Receiver::start(500).await;
    let (webhook, secret) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/in"),
        &["key:created"],
    )
    .await;
    app.create_app_key(&owner, &app_id).await;
    let id = only_delivery(&app, &webhook).await.id;
    let list = format!("/v1/apps/{app_id}/webhooks/{webhook}/deliveries");
    let one = format!("{list}/{id}");
    let again = format!("{one}/redeliver");

    // Attempt 1: the receiver answers 500; retried 30 s later.
    let t0 = app.clock.unix();
    dispatch_due(state(&app)).await;
    receiver.wait_for(1).await;
    wait_delivery(&app, &id, |d| d.attempts == 1).await;
    let r = app.get(&list, &key.basic()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let listed = r.body["deliveries"].as_array().expect("deliveries").clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let d = &listed[0];
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["event"], "key:created");
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["lastStatus"], 500);
    let error = d["lastError"].as_str().expect("lastError");
    assert!(error.contains("500"), "{error}");
    assert!(!error.contains("/in"), "no URL in the error: {error}");
    assert_eq!(
        d["nextAttemptAt"],
        latchkey_server::views::rfc3339(t0 + 30).as_str()
    );
    assert_eq!(d["createdAt"], latchkey_server::views::rfc3339(t0).as_str());
    assert_eq!(d["deliveredAt"], Value::Null);
    // Neither the payload nor the target.
    let keys: Vec<&str> = d
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.len(),
        9,
        "{keys:?}: id, event, status, attempts, lastError, lastStatus, nextAttemptAt, createdAt, deliveredAt"
    );
    assert!(!r.body.to_string().contains(&receiver.url("")));
    // One delivery reads as it is listed.
    assert_eq!(api_delivery(&app, &owner, &app_id, &webhook, &id).await, *d);

    // Pending: a redelivery is a 409 and changes nothing.
    let before = state(&app).store.get_delivery(&id).await.expect("get");
    let r = app.post(&again, &owner, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "conflict");
    assert_eq!(
        state(&app).store.get_delivery(&id).await.expect("get"),
        before
    );
    let audit = format!("/v1/apps/{app_id}/audit?action=webhook.redelivered");
    let r = app.get(&audit, &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["events"], json!([]), "{:?}", r.body);

    // Attempts 2 to 5 fail too: the delivery fails.
    for n in 2..=5u32 {
        let wait = state(&app)
            .store
            .get_delivery(&id)
            .await
            .expect("get")
            .expect("exists")
            .next_attempt_at
            - app.clock.unix();
        app.clock.advance(time::Duration::seconds(wait));
        dispatch_due(state(&app)).await;
        receiver.wait_for(n as usize).await;
        wait_delivery(&app, &id, |d| d.attempts == n).await;
    }
    let d = api_delivery(&app, &owner, &app_id, &webhook, &id).await;
    assert_eq!(d["status"], "failed", "{d:?}");
    assert_eq!(d["attempts"], 5);
    assert_eq!(d["lastStatus"], 500);
    assert_eq!(d["nextAttemptAt"], Value::Null);
    assert_eq!(d["deliveredAt"], Value::Null);

    // Sent again, with app scope: pending, due now, attempts afresh.
    receiver.answer(200);
    let now = app.clock.unix();
    let r = app.post(&again, &key.basic(), json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let d = &r.body["delivery"];
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempts"], 0);
    assert_eq!(d["lastStatus"], Value::Null);
    assert_eq!(d["lastError"], Value::Null);
    assert_eq!(
        d["nextAttemptAt"],
        latchkey_server::views::rfc3339(now).as_str()
    );
    // Recorded once in the audit log, by the app key.
    let r = app.get(&audit, &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let events = r.body["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["target"]["id"], webhook.as_str(), "{events:?}");
    assert_eq!(events[0]["details"]["deliveryId"], id.as_str());
    assert_eq!(events[0]["details"]["previousStatus"], "failed");
    assert_eq!(events[0]["details"]["previousAttempts"], 5);
    assert_eq!(events[0]["actor"]["id"], key.id.as_str(), "{events:?}");

    // And delivered: the same id and body, signed afresh.
    dispatch_due(state(&app)).await;
    let got = receiver.wait_for(6).await;
    wait_delivery(&app, &id, |d| d.status != DeliveryStatus::Pending).await;
    let d = api_delivery(&app, &owner, &app_id, &webhook, &id).await;
    assert_eq!(d["status"], "delivered", "{d:?}");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["lastStatus"], 200);
    assert_eq!(d["lastError"], Value::Null);
    assert_eq!(d["nextAttemptAt"], Value::Null);
    assert_eq!(
        d["deliveredAt"],
        latchkey_server::views::rfc3339(now).as_str()
    );
    let last = got.last().expect("the redelivery");
    assert_eq!(last.header("latchkey-delivery"), id);
    assert_eq!(last.body, got[0].body);
    assert!(signature_ok(last, &secret));
    receiver.stop().await;
}

#[tokio::test]
async fn the_deliveries_list_is_bounded_and_other_tenants_get_404() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Listed").await;
    let receiver = Receiver::down().await;
    let (webhook, _) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/in"),
        &["key:created"],
    )
    .await;
    for _ in 0..3 {
        app.create_app_key(&owner, &app_id).await;
    }
    let stored: Vec<String> = deliveries(&app, &webhook)
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(stored.len(), 3);
    let list = format!("/v1/apps/{app_id}/webhooks/{webhook}/deliveries");
    let ids_of = |body: &Value| -> Vec<String> {
        body["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .map(|d| d["id"].as_str().expect("id").to_string())
            .collect()
    };

    // Newest first; `limit` from 1 to 200.
    for (query, want) in [("", 3), ("?limit=2", 2), ("?limit=1", 1), ("?limit=200", 3)] {
        let r = app.get(&format!("{list}{query}"), &owner).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {:?}", r.body);
        assert_eq!(ids_of(&r.body), stored[..want], "{query}");
    }
    for query in [
        "?limit=0",
        "?limit=201",
        "?limit=-1",
        "?limit=abc",
        "?limit=",
        "?limit=1.5",
        "?limit=99999999999",
        "?after=x",
        "?limit=2&color=red",
    ] {
        let r = app.get(&format!("{list}{query}"), &owner).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {:?}", r.body);
        assert_eq!(r.code(), "bad_request", "{query}");
        assert!(
            r.body["errors"][0]["title"].is_string(),
            "{query}: {:?}",
            r.body
        );
    }

    // Another tenant: 404 on A's app, and on A's webhook or delivery under
    // its own app, exactly as for ids that name nothing.
    let other = app.create_account("deliveries-b@example.com").await;
    let b_app = app.create_app(&other.basic(), "B's").await;
    let (b_webhook, _) = create_webhook(
        &app,
        &other.basic(),
        &b_app,
        "https://hooks.example.com/b",
        &["key:created"],
    )
    .await;
    let a_delivery = &stored[0];
    let missing = "dlv_0Missing0Missing0Missi0Missing0Missing0Missi";
    for (path, method) in [
        (list.clone(), "get"),
        (format!("{list}/{a_delivery}"), "get"),
        (format!("{list}/{a_delivery}/redeliver"), "post"),
        (
            format!("/v1/apps/{b_app}/webhooks/{webhook}/deliveries"),
            "get",
        ),
        (
            format!("/v1/apps/{b_app}/webhooks/{webhook}/deliveries/{a_delivery}"),
            "get",
        ),
        (
            format!("/v1/apps/{b_app}/webhooks/{b_webhook}/deliveries/{a_delivery}"),
            "get",
        ),
        (
            format!("/v1/apps/{b_app}/webhooks/{b_webhook}/deliveries/{a_delivery}/redeliver"),
            "post",
        ),
        (
            format!("/v1/apps/{b_app}/webhooks/{b_webhook}/deliveries/{missing}"),
            "get",
        ),
        (
            format!("/v1/apps/{b_app}/webhooks/{b_webhook}/deliveries/not-an-id"),
            "get",
        ),
    ] {
        let r = if method == "get" {
            app.get(&path, &other.basic()).await
        } else {
            app.post(&path, &other.basic(), json!({})).await
        };
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            r.body
        );
        assert_eq!(r.code(), "not_found");
        assert!(!r.body.to_string().contains(a_delivery.as_str()));
    }
    // A delivery of another webhook of the same app is not this one's.
    let (second, _) = create_webhook(
        &app,
        &owner,
        &app_id,
        "https://hooks.example.com/second",
        &["key:deleted"],
    )
    .await;
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/webhooks/{second}/deliveries/{a_delivery}"),
            &owner,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/webhooks/{second}/deliveries"),
            &owner,
        )
        .await;
    assert_eq!(r.body, json!({"deliveries": []}));
    // A's deliveries are as they were: no refused call touched them.
    let after: Vec<String> = deliveries(&app, &webhook)
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(after, stored);
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/audit?action=webhook.redelivered"),
            &owner,
        )
        .await;
    assert_eq!(r.body["events"], json!([]), "{:?}", r.body);
}

#[tokio::test]
async fn reading_deliveries_and_redelivering_need_their_permissions() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Permitted").await;
    let receiver = Receiver::start(404).await;
    let (webhook, _) = create_webhook(
        &app,
        &owner,
        &app_id,
        &receiver.url("/gone"),
        &["key:created"],
    )
    .await;
    let key_with = |permissions: Value| {
        let app = &app;
        let owner = &owner;
        let app_id = &app_id;
        async move {
            let r = app
                .post(
                    &format!("/v1/apps/{app_id}/keys"),
                    owner,
                    json!({"displayName": "restricted", "permissions": permissions}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            common::Key::from_reply(&r).basic()
        }
    };
    let reader = key_with(json!(["latchkey:webhooks.read"])).await;
    let writer = key_with(json!(["latchkey:webhooks.write"])).await;
    // The first key's delivery fails at once (404 is final).
    let id = deliveries(&app, &webhook)
        .await
        .pop()
        .expect("a delivery")
        .id;
    dispatch_due(state(&app)).await;
    wait_delivery(&app, &id, |d| d.status == DeliveryStatus::Failed).await;
    let list = format!("/v1/apps/{app_id}/webhooks/{webhook}/deliveries");
    let again = format!("{list}/{id}/redeliver");

    for path in [list.clone(), format!("{list}/{id}")] {
        let r = app.get(&path, &reader).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        let r = app.get(&path, &writer).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {:?}", r.body);
        assert_eq!(r.code(), "insufficient_permissions");
    }
    let r = app.post(&again, &reader, json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.code(), "insufficient_permissions");
    let d = state(&app).store.get_delivery(&id).await.expect("get");
    assert_eq!(d.map(|d| d.status), Some(DeliveryStatus::Failed));
    let r = app.post(&again, &writer, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["delivery"]["status"], "pending");
}
