//! The throttle on failed credentials (issue 16, defect 7), over real HTTP:
//! per client address, per key id across addresses, the window's end, the
//! warning, and what it must never refuse. Other addresses are other
//! loopback addresses (127.0.0.2, …: Linux answers the whole of 127/8).

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use common::{Key, Reply, StatusCode, TestApp, basic, client_builder};
use latchkey_server::throttle::ThrottleConfig;
use serde_json::json;

const WINDOW: u32 = 10;

async fn spawn(per_address: u32, per_key: u32) -> TestApp {
    TestApp::spawn_with(|c| {
        c.auth_throttle = ThrottleConfig {
            window_seconds: WINDOW,
            per_address,
            per_key,
        };
    })
    .await
}

/// A client whose connections come from `ip`.
fn client_from(ip: &str) -> reqwest::Client {
    client_builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

async fn get_app(app: &TestApp, client: &reqwest::Client, app_id: &str, auth: &str) -> Reply {
    TestApp::send(
        client
            .get(app.url(&format!("/v1/apps/{app_id}")))
            .header("authorization", auth),
    )
    .await
}

async fn app_and_key(app: &TestApp) -> (String, Key) {
    let app_id = app.create_app(&app.owner(), "throttled").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    (app_id, key)
}

fn wrong(key: &Key) -> String {
    basic(&key.id, "lksk_this_is_not_the_secret")
}

fn assert_throttled(r: &Reply, retry_after: u64) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert_eq!(r.code(), "too_many_requests", "{:?}", r.body);
    assert!(
        r.body["errors"][0]["title"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(
        r.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
        Some(retry_after),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn an_address_that_fails_too_often_gets_429_until_its_window_ends() {
    let app = spawn(5, 1000).await;
    let (app_id, key) = app_and_key(&app).await;
    let here = client_from("127.0.0.1");

    for i in 0..5 {
        let r = get_app(&app, &here, &app_id, &wrong(&key)).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "failure {i}: {:?}",
            r.body
        );
    }
    let r = get_app(&app, &here, &app_id, &wrong(&key)).await;
    assert_throttled(&r, u64::from(WINDOW));

    // While throttled, the right secret from this address is refused too:
    // a 200 among the 429s would tell a guesser which guess was right.
    app.clock.advance(time::Duration::seconds(3));
    let r = get_app(&app, &here, &app_id, &key.basic()).await;
    assert_throttled(&r, u64::from(WINDOW) - 3);

    // Every other address keeps working with the same key.
    let elsewhere = client_from("127.0.0.2");
    let r = get_app(&app, &elsewhere, &app_id, &key.basic()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // When the window ends, the address is heard again.
    app.clock
        .advance(time::Duration::seconds(i64::from(WINDOW) - 3));
    let r = get_app(&app, &here, &app_id, &key.basic()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = get_app(&app, &here, &app_id, &wrong(&key)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
}

#[tokio::test]
async fn requests_without_a_credential_and_valid_ones_are_not_counted() {
    let app = spawn(3, 1000).await;
    let (app_id, key) = app_and_key(&app).await;
    let here = client_from("127.0.0.1");
    for _ in 0..10 {
        let r = TestApp::send(here.get(app.url(&format!("/v1/apps/{app_id}")))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = get_app(&app, &here, &app_id, &key.basic()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
}

#[tokio::test]
async fn a_key_id_failing_from_many_addresses_is_refused_only_to_addresses_that_failed() {
    let app = spawn(1000, 3).await;
    let (app_id, key) = app_and_key(&app).await;
    let attackers = ["127.0.0.3", "127.0.0.4", "127.0.0.5"].map(client_from);
    for attacker in &attackers {
        let r = get_app(&app, attacker, &app_id, &wrong(&key)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    }
    // The key id has reached its bound: an address that failed is refused
    // for it, the right secret included...
    for attacker in &attackers {
        let r = get_app(&app, attacker, &app_id, &wrong(&key)).await;
        assert_throttled(&r, u64::from(WINDOW));
        let r = get_app(&app, attacker, &app_id, &key.basic()).await;
        assert_throttled(&r, u64::from(WINDOW));
    }
    // ...and a JWT naming the key is the same key id.
    let jwt = key.jwt(json!({"scope": "app"}));
    let r = get_app(&app, &attackers[0], &app_id, &jwt).await;
    assert_throttled(&r, u64::from(WINDOW));

    // The key's owner, whose servers never failed, is never locked out.
    let owner = client_from("127.0.0.2");
    for _ in 0..5 {
        let r = get_app(&app, &owner, &app_id, &key.basic()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let r = get_app(&app, &owner, &app_id, &jwt).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    // A new address gets its one failure, then is refused for this key.
    let newcomer = client_from("127.0.0.6");
    let r = get_app(&app, &newcomer, &app_id, &wrong(&key)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    let r = get_app(&app, &newcomer, &app_id, &wrong(&key)).await;
    assert_throttled(&r, u64::from(WINDOW));
    // Other keys are not concerned: the owner's key from an attacker's
    // address still verifies.
    let r = TestApp::send(
        attackers[0]
            .get(app.url("/v1/account"))
            .header("authorization", app.owner()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    app.clock
        .advance(time::Duration::seconds(i64::from(WINDOW)));
    let r = get_app(&app, &attackers[0], &app_id, &key.basic()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

async fn verify(app: &TestApp, client: &reqwest::Client, caller: &str, credential: &str) -> Reply {
    TestApp::send(
        client
            .post(app.url("/v1/verify"))
            .header("authorization", caller)
            .json(&json!({"authorization": credential})),
    )
    .await
}

#[tokio::test]
async fn verify_counts_its_failing_callers_not_the_credentials_it_is_asked_about() {
    let app = spawn(3, 3).await;
    let (_, key) = app_and_key(&app).await;
    let (_, verifier) = app.create_verifier_token("orders API").await;
    let here = client_from("127.0.0.1");

    // An operator's API asking about bad credentials is not an attack.
    for _ in 0..10 {
        let r = verify(&app, &here, &verifier, &wrong(&key)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["valid"], false);
    }
    let r = verify(&app, &here, &verifier, &key.basic()).await;
    assert_eq!(r.body["valid"], true, "{:?}", r.body);

    // A caller with a wrong verifier token is counted, then refused, and
    // so is the right token from that address (the direct path included).
    let bad = "Bearer lkvf_0000000000000000000000000000000000000000000000";
    for _ in 0..3 {
        let r = verify(&app, &here, bad, &key.basic()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    }
    let r = verify(&app, &here, bad, &key.basic()).await;
    assert_throttled(&r, u64::from(WINDOW));
    let r = verify(&app, &here, &verifier, &key.basic()).await;
    assert_throttled(&r, u64::from(WINDOW));
    let r = verify(&app, &here, &app.operator(), &key.basic()).await;
    assert_throttled(&r, u64::from(WINDOW));

    let elsewhere = client_from("127.0.0.2");
    let r = verify(&app, &elsewhere, &app.operator(), &key.basic()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["valid"], true, "{:?}", r.body);

    app.clock
        .advance(time::Duration::seconds(i64::from(WINDOW)));
    let r = verify(&app, &here, &verifier, &key.basic()).await;
    assert_eq!(r.body["valid"], true, "{:?}", r.body);
}

/// Collects what the server logs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

// A current-thread runtime: the server's tasks run on this thread, under
// the subscriber set here.
#[tokio::test(flavor = "current_thread")]
async fn one_warning_per_window_and_never_the_secret() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn(3, 4).await;
    let (app_id, key) = app_and_key(&app).await;
    let here = client_from("127.0.0.1");
    let warnings = |needle: &str| log.text().lines().filter(|l| l.contains(needle)).count();
    let by_address = "failed credentials from this address reached the limit";
    let by_key = "failed credentials for this key id reached the limit";

    for _ in 0..3 {
        get_app(&app, &here, &app_id, &wrong(&key)).await;
    }
    assert_eq!(warnings(by_address), 1, "{}", log.text());
    for _ in 0..20 {
        let r = get_app(&app, &here, &app_id, &wrong(&key)).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(warnings(by_address), 1, "{}", log.text());
    let second = client_from("127.0.0.2");
    get_app(&app, &second, &app_id, &wrong(&key)).await;
    assert_eq!(warnings(by_key), 1, "{}", log.text());
    for _ in 0..5 {
        get_app(&app, &second, &app_id, &wrong(&key)).await;
    }
    // An address that had not failed is still heard, and its failure
    // counted, without a second warning in this window.
    let third = client_from("127.0.0.3");
    let r = get_app(&app, &third, &app_id, &wrong(&key)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(warnings(by_key), 1, "{}", log.text());

    app.clock
        .advance(time::Duration::seconds(i64::from(WINDOW)));
    for _ in 0..6 {
        get_app(&app, &here, &app_id, &wrong(&key)).await;
    }
    assert_eq!(warnings(by_address), 2, "{}", log.text());
    let text = log.text();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(text.contains(&key.id), "{text}");
    assert!(!text.contains("lksk_"), "{text}");
}
