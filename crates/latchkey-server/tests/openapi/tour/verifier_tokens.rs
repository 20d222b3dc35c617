//! Verifier tokens, and introspection with one.

use latchkey_core::Clock;
use serde_json::json;

use super::{Ops, Robot, Tour, World, id_of};
use crate::common::{StatusCode, TestApp};

/// What `verifier_tokens_and_introspection` reaches.
pub const VERIFIER_TOKENS: Ops = &[
    ("post", "/v1/verifierTokens"),
    ("get", "/v1/verifierTokens"),
    ("get", "/v1/verifierTokens/{token_id}"),
    ("post", "/v1/verify"),
    ("post", "/v1/introspect"),
    ("delete", "/v1/verifierTokens/{token_id}"),
];

#[tokio::test]
async fn verifier_tokens_and_introspection() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());
    let World { key, .. } = World::new(&app).await;
    let Robot { svc_basic, .. } = Robot::new(&app).await;

    // Verifier tokens, and introspection with one.
    let r = t
        .call(
            "post",
            "/v1/verifierTokens",
            "/v1/verifierTokens",
            op,
            Some(json!({"displayName": "gateway"})),
            StatusCode::CREATED,
        )
        .await;
    let vt = id_of(&r, "verifierToken");
    let vt_auth = format!(
        "Bearer {}",
        r.body["verifierToken"]["token"].as_str().expect("token")
    );
    let verifier = Some(vt_auth.as_str());
    t.call(
        "get",
        "/v1/verifierTokens",
        "/v1/verifierTokens?limit=1",
        op,
        None,
        StatusCode::OK,
    )
    .await;
    let vt_path = format!("/v1/verifierTokens/{vt}");
    t.call(
        "get",
        "/v1/verifierTokens/{token_id}",
        &vt_path,
        op,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            verifier,
            Some(json!({"authorization": svc_basic})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["valid"], true);
    let now = app.clock.unix();
    let alice_timed =
        key.jwt(json!({"scope": "appUser", "userId": "alice", "iat": now, "exp": now + 60}));
    for (token, active) in [
        (alice_timed.trim_start_matches("Bearer "), true),
        (format!("{}:{}", key.id, key.secret).as_str(), true),
        ("not a token", false),
    ] {
        let r = t
            .call_form(
                "/v1/introspect",
                verifier,
                &[("token", token), ("token_type_hint", "access_token")],
                StatusCode::OK,
            )
            .await;
        assert_eq!(r.body["active"], active, "{:?}", r.body);
    }
    t.call_form("/v1/introspect", op, &[("token", "x")], StatusCode::OK)
        .await;
    t.call_form(
        "/v1/introspect",
        verifier,
        &[("token_type_hint", "access_token")],
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.call_form(
        "/v1/introspect",
        owner,
        &[("token", "x")],
        StatusCode::FORBIDDEN,
    )
    .await;
    t.call_form(
        "/v1/introspect",
        None,
        &[("token", "x")],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    for (m, template, path, body) in [
        ("get", "/v1/accounts", "/v1/accounts".to_string(), None),
        (
            "post",
            "/v1/verifierTokens",
            "/v1/verifierTokens".to_string(),
            Some(json!({"displayName": "x"})),
        ),
        (
            "get",
            "/v1/verifierTokens/{token_id}",
            vt_path.clone(),
            None,
        ),
    ] {
        let r = t
            .call(m, template, &path, verifier, body, StatusCode::FORBIDDEN)
            .await;
        assert_eq!(r.code(), "forbidden");
    }
    t.call(
        "delete",
        "/v1/verifierTokens/{token_id}",
        &vt_path,
        op,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    t.call(
        "get",
        "/v1/verifierTokens/{token_id}",
        &vt_path,
        op,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    t.call_form(
        "/v1/introspect",
        verifier,
        &[("token", "x")],
        StatusCode::UNAUTHORIZED,
    )
    .await;

    t.assert_covered(VERIFIER_TOKENS);
}
