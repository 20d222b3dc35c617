//! Health, readiness, the document itself, and who a credential is.

use serde_json::json;

use super::{Ops, Tour, World};
use crate::common::{self, StatusCode, TestApp};

/// What `health_readiness_and_the_document` reaches.
pub const META: Ops = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v1/openapi.json"),
];

/// What `who_a_credential_is` reaches.
pub const IDENTITY: Ops = &[("get", "/v1/account")];

#[tokio::test]
async fn health_readiness_and_the_document() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);

    // Meta and identity.
    t.call("get", "/healthz", "/healthz", None, None, StatusCode::OK)
        .await;
    let ready = t
        .call("get", "/readyz", "/readyz", None, None, StatusCode::OK)
        .await;
    let backend = if common::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(ready.body["backend"], backend, "{:?}", ready.body);
    assert_eq!(ready.body["status"], "ready", "{:?}", ready.body);
    t.call(
        "get",
        "/v1/openapi.json",
        "/v1/openapi.json",
        None,
        None,
        StatusCode::OK,
    )
    .await;

    t.assert_covered(META);
}

#[tokio::test]
async fn who_a_credential_is() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());
    let World { key, .. } = World::new(&app).await;

    // Identity.
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["scope"], "account");
    assert!(r.body["userAccountId"].is_string());
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            op,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body, json!({"scope": "operator"}));

    // App and appUser credentials.
    let app_basic_auth = key.basic();
    let app_basic = Some(app_basic_auth.as_str());
    let alice_auth = key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    let alice = Some(alice_auth.as_str());
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["scope"], "app");
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            alice,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["scope"], "appUser");
    assert_eq!(r.body["userId"], "alice");

    t.assert_covered(IDENTITY);
}
