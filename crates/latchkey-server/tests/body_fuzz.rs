//! Property tests of the JSON body parsers over real HTTP: whatever the
//! body, the answer is a documented 4xx (or a 2xx for a valid body), never a
//! 5xx, and the server keeps serving.

mod common;

use common::{StatusCode, TestApp};
use proptest::prelude::*;
use serde_json::Value;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("displayName"),
            Just("externalId"),
            Just("settings"),
            Just("profile"),
            Just("authorization")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("displayName".to_string()),
                    Just("externalId".to_string()),
                    Just("settings".to_string()),
                    Just("profile".to_string()),
                    Just("metadata".to_string()),
                    Just("owner".to_string()),
                    Just("authorization".to_string()),
                    "[a-zA-Z]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

struct World {
    rt: tokio::runtime::Runtime,
    app: TestApp,
    app_id: String,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (app, app_id) = rt.block_on(async {
        let app = TestApp::spawn().await;
        let app_id = app.create_app(&app.owner(), "Fuzz").await;
        (app, app_id)
    });
    World { rt, app, app_id }
}

fn endpoints(w: &World) -> Vec<(reqwest::Method, String, String)> {
    let owner = w.app.owner();
    let op = w.app.operator();
    let a = &w.app_id;
    vec![
        (reqwest::Method::POST, "/v1/apps".into(), owner.clone()),
        (
            reqwest::Method::PATCH,
            format!("/v1/apps/{a}"),
            owner.clone(),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/apps/{a}/users"),
            owner.clone(),
        ),
        (
            reqwest::Method::PATCH,
            format!("/v1/apps/{a}/users/fuzz-user"),
            owner.clone(),
        ),
        (
            reqwest::Method::POST,
            "/v1/serviceAccounts".into(),
            owner.clone(),
        ),
        (reqwest::Method::POST, "/v1/verify".into(), op.clone()),
        (reqwest::Method::POST, "/v1/accounts".into(), op),
    ]
}

fn acceptable(status: StatusCode) -> bool {
    status.is_success() || (status.is_client_error() && status != StatusCode::METHOD_NOT_ALLOWED)
}

#[test]
fn arbitrary_json_bodies_get_documented_answers() {
    let w = world();
    let eps = endpoints(&w);
    proptest!(ProptestConfig::with_cases(96), |(body in arb_json(), which in 0usize..7)| {
        let (method, path, auth) = &eps[which];
        let r = w.rt.block_on(async {
            let req = w.app.http.request(method.clone(), w.app.url(path))
                .header("authorization", auth)
                .json(&body);
            let resp = req.send().await.expect("send");
            let status = resp.status();
            let text = resp.text().await.expect("text");
            (status, text)
        });
        prop_assert!(acceptable(r.0), "{method} {path} {body} -> {} {}", r.0, r.1);
        if r.0.is_client_error() {
            let parsed: Value = serde_json::from_str(&r.1).expect("error body is JSON");
            prop_assert!(parsed["errors"][0]["code"].is_string(), "{}", r.1);
        }
    });
    let health = w.rt.block_on(async {
        w.app
            .http
            .get(w.app.url("/healthz"))
            .send()
            .await
            .expect("send")
            .status()
    });
    assert_eq!(health, StatusCode::OK);
}

#[test]
fn arbitrary_bytes_are_bad_requests() {
    let w = world();
    let eps = endpoints(&w);
    proptest!(ProptestConfig::with_cases(64), |(bytes in prop::collection::vec(any::<u8>(), 0..300), which in 0usize..7)| {
        let (method, path, auth) = &eps[which];
        let status = w.rt.block_on(async {
            w.app.http.request(method.clone(), w.app.url(path))
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(bytes.clone())
                .send().await.expect("send").status()
        });
        prop_assert!(status.is_client_error(), "{method} {path} -> {status}");
    });
}
