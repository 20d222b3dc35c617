//! `/metrics` scraped and read by a real Prometheus parser (PyPI
//! `prometheus-client`'s `text_string_to_metric_families`, run with
//! python3), and `X-Request-Id` on every way in.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{StatusCode, TestApp};
use latchkey_server::config::GatewayConfig;
use serde_json::{Value, json};

/// One sample: name, labels, value.
type Sample = (String, serde_json::Map<String, Value>, f64);

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// `text` parsed by prometheus-client's parser (which raises on anything
/// that is not the text format).
fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, serde_json::Map<String, Value>, f64)> =
        serde_json::from_slice(&out.stdout).expect("json");
    samples
}

async fn scrape(http: &reqwest::Client, url: &str) -> Vec<Sample> {
    let resp = http.get(url).send().await.expect("scrape");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&resp.text().await.expect("text"))
}

/// The value of the sample `name` with exactly these labels (0 if absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map_or(0.0, |s| s.2)
}

async fn verify(app: &TestApp, authorization: &str, request_id: Option<&str>) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/v1/verify"))
        .header("authorization", app.operator())
        .json(&json!({ "authorization": authorization }));
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    req.send().await.expect("verify")
}

#[tokio::test]
async fn counters_move_with_traffic_and_hold_no_ids() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "metrics").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let before = scrape(&app.http, &app.url("/metrics")).await;
    for _ in 0..3 {
        let r = verify(&app, &key.basic(), None).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let wrong = common::basic(&key.id, "lksk_not_the_secret");
    for _ in 0..2 {
        verify(&app, &wrong, None).await;
    }
    let got = app.get(&format!("/v1/apps/{app_id}"), &owner).await;
    assert_eq!(got.status, StatusCode::OK);
    let after = scrape(&app.http, &app.url("/metrics")).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let v = "latchkey_verifications_total";
    assert_eq!(
        delta(
            v,
            &[("outcome", "valid"), ("scope", "app"), ("path", "verify")]
        ),
        3.0
    );
    assert_eq!(
        delta(
            v,
            &[
                ("outcome", "unauthorized"),
                ("scope", "none"),
                ("path", "verify")
            ]
        ),
        2.0
    );
    // The owner's key on the management API.
    assert!(
        delta(
            v,
            &[("outcome", "valid"), ("scope", "account"), ("path", "api")]
        ) >= 1.0
    );
    let h = "latchkey_http_requests_total";
    assert_eq!(delta(h, &[("route", "/v1/verify"), ("status", "200")]), 5.0);
    assert_eq!(
        delta(h, &[("route", "/v1/apps/{app_id}"), ("status", "200")]),
        1.0
    );
    let latency = "latchkey_verification_duration_seconds_count";
    assert_eq!(delta(latency, &[("path", "verify")]), 5.0);
    assert!(value(&after, "latchkey_index_keys", &[]) >= 2.0);
    assert!(value(&after, "latchkey_index_key_table_bytes", &[]) > 0.0);
    // No label value is an id.
    let ids = [
        app_id.as_str(),
        key.id.as_str(),
        &app.account_id(),
        &app.owner_key().id,
    ];
    for (name, labels, _) in &after {
        for value in labels.values() {
            let value = value.as_str().unwrap_or_default();
            assert!(
                !ids.contains(&value),
                "{name} has an id as a label: {value}"
            );
            let looks_like_id = value
                .split_once('_')
                .is_some_and(|(prefix, rest)| prefix.len() <= 4 && rest.len() >= 16);
            assert!(!looks_like_id, "{name} has an id-like label: {value}");
        }
    }
}

#[tokio::test]
async fn a_separate_metrics_listener_takes_metrics_off_the_main_one() {
    let app =
        TestApp::spawn_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr")))
            .await;
    let main = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("main");
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
    let addr = app
        .server
        .as_ref()
        .and_then(|s| s.metrics_addr)
        .expect("metrics listener");
    verify(&app, &app.owner(), None).await;
    let samples = scrape(&app.http, &format!("http://{addr}/metrics")).await;
    assert_eq!(
        value(
            &samples,
            "latchkey_verifications_total",
            &[
                ("outcome", "valid"),
                ("scope", "account"),
                ("path", "verify")
            ]
        ),
        1.0
    );
    let other = app
        .http
        .get(format!("http://{addr}/v1/apps"))
        .send()
        .await
        .expect("other");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

fn id_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .expect("ascii")
        .to_string()
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn request_ids_are_echoed_replaced_or_generated() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    // Kept when well-formed, on the direct path and through the router.
    let r = verify(&app, &owner, Some("client-req.42:a_b")).await;
    assert_eq!(id_of(&r), "client-req.42:a_b");
    let r = app
        .http
        .get(app.url("/v1/apps"))
        .header("authorization", &owner)
        .header("x-request-id", "mgmt-1")
        .send()
        .await
        .expect("get");
    assert_eq!(id_of(&r), "mgmt-1");
    // Replaced when not.
    for bad in ["has space", "quote\"", &"a".repeat(129)] {
        let r = verify(&app, &owner, Some(bad)).await;
        let id = id_of(&r);
        assert_ne!(id, bad);
        assert!(is_generated(&id), "{id}");
    }
    // Generated otherwise, and different each time; also on a 404.
    let a = id_of(&verify(&app, &owner, None).await);
    let b = id_of(&app.http.get(app.url("/nowhere")).send().await.expect("404"));
    assert!(is_generated(&a) && is_generated(&b) && a != b, "{a} {b}");
    // Forward-auth returns it to the proxy.
    let r = app
        .http
        .get(app.url("/v1/forward-auth"))
        .header("authorization", &owner)
        .header("x-request-id", "proxy-7")
        .send()
        .await
        .expect("forward-auth");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(id_of(&r), "proxy-7");
    let r = app
        .http
        .get(app.url("/v1/forward-auth"))
        .send()
        .await
        .expect("forward-auth");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(is_generated(&id_of(&r)));
    // In the audit event of a write.
    let created = app
        .http
        .post(app.url("/v1/apps"))
        .header("authorization", &owner)
        .header("x-request-id", "create-app-1")
        .json(&json!({ "displayName": "audited" }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);
    let audit = app.get("/v1/audit", &owner).await;
    let events = audit.body["events"].as_array().expect("events");
    let event = events
        .iter()
        .find(|e| e["action"] == "app.created")
        .expect("app.created");
    assert_eq!(event["requestId"], "create-app-1", "{event}");
}

/// An upstream that answers with the request id it received.
async fn upstream() -> SocketAddr {
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
        let seen = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        axum::Json(json!({ "seen": seen }))
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn the_gateway_forwards_the_request_id_and_answers_with_it() {
    let up = upstream().await;
    let gateway = GatewayConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        &format!("http://{up}"),
    );
    let app = TestApp::spawn_with(|c| c.gateway = Some(gateway)).await;
    let addr = app
        .server
        .as_ref()
        .and_then(|s| s.gateway_addr)
        .expect("gateway");
    let owner = app.owner();
    let r = app
        .http
        .get(format!("http://{addr}/anything"))
        .header("authorization", &owner)
        .header("x-request-id", "gw-1")
        .send()
        .await
        .expect("gateway");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(id_of(&r), "gw-1");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["seen"], "gw-1");
    let r = app
        .http
        .get(format!("http://{addr}/anything"))
        .header("authorization", &owner)
        .send()
        .await
        .expect("gateway");
    let id = id_of(&r);
    assert!(is_generated(&id));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["seen"], id.as_str());
    // Counted as gateway verifications.
    let samples = scrape(&app.http, &app.url("/metrics")).await;
    assert_eq!(
        value(
            &samples,
            "latchkey_verifications_total",
            &[
                ("outcome", "valid"),
                ("scope", "account"),
                ("path", "gateway")
            ]
        ),
        2.0
    );
    // And as the gateway's requests, by status.
    assert_eq!(
        value(
            &samples,
            "latchkey_http_requests_total",
            &[("route", "gateway"), ("status", "200")]
        ),
        2.0
    );
}
