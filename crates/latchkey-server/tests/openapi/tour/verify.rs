//! Verification (`/v1/verify`), valid and not, and forward-auth.

use serde_json::json;

use super::{Ops, Robot, Tour, World, verify};
use crate::common::{StatusCode, TestApp};

/// What `verification_valid_and_not` reaches.
pub const VERIFICATION: Ops = &[
    ("post", "/v1/verify"),
    ("delete", "/v1/serviceAccounts/{sa_id}/apps/{app_id}"),
];

/// What `forward_auth_answers_every_method_alike` reaches.
pub const FORWARD_AUTH: Ops = &[
    ("get", "/v1/forward-auth"),
    ("post", "/v1/forward-auth"),
    ("put", "/v1/forward-auth"),
    ("patch", "/v1/forward-auth"),
    ("delete", "/v1/forward-auth"),
    ("options", "/v1/forward-auth"),
    ("head", "/v1/forward-auth"),
    ("trace", "/v1/forward-auth"),
];

#[tokio::test]
async fn verification_valid_and_not() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());
    let World {
        app_id,
        key,
        app_basic_auth,
        alice_auth,
        ..
    } = World::new(&app).await;
    let robot = Robot::new(&app).await;
    robot.grant(&app, &app_id).await;
    let Robot { sa, svc_basic, .. } = robot;
    let grant = format!("{sa}/apps/{app_id}");

    // Verification, valid and not.
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            op,
            Some(verify(&svc_basic, json!({"appId": app_id}))),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["valid"], true);
    assert_eq!(r.body["scope"], "account");
    t.call(
        "delete",
        "/v1/serviceAccounts/{sa_id}/apps/{app_id}",
        &grant,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let expired = key.jwt(json!({"scope": "app", "exp": 1}));
    let cases = [
        (
            verify(
                &alice_auth,
                json!({"appId": app_id, "userId": "alice", "origin": "https://example.com"}),
            ),
            json!(true),
        ),
        (
            verify(&svc_basic, json!({"appId": app_id})),
            json!("not_found"),
        ),
        (verify("Basic nonsense", json!({})), json!("unauthorized")),
        (verify(&expired, json!({})), json!("token_expired")),
        (
            verify(&app_basic_auth, json!({"origin": "https://example.com"})),
            json!("forbidden"),
        ),
        (
            verify(&alice_auth, json!({"userId": "bob"})),
            json!("not_found"),
        ),
    ];
    for (body, want) in cases {
        let r = t
            .call(
                "post",
                "/v1/verify",
                "/v1/verify",
                op,
                Some(body),
                StatusCode::OK,
            )
            .await;
        if want == true {
            assert_eq!(r.body["valid"], true, "{:?}", r.body);
        } else {
            assert_eq!(r.body["valid"], false, "{:?}", r.body);
            assert_eq!(r.body["code"], want, "{:?}", r.body);
        }
    }

    t.assert_covered(VERIFICATION);
}

#[tokio::test]
async fn forward_auth_answers_every_method_alike() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let World { app_basic_auth, .. } = World::new(&app).await;
    let app_basic = Some(app_basic_auth.as_str());

    // Forward-auth: a proxy asks with the original request's credential;
    // every method is answered alike (no route is configured here, so the
    // credential alone is checked).
    for m in [
        "get", "post", "put", "patch", "delete", "options", "head", "trace",
    ] {
        t.call(
            m,
            "/v1/forward-auth",
            "/v1/forward-auth?from=proxy",
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    }

    t.assert_covered(FORWARD_AUTH);
}
