//! Errors, each a documented response of its operation.

use serde_json::json;

use super::{Ops, Robot, Tour, World, verify};
use crate::common::{StatusCode, TestApp};
use crate::is_no_such_endpoint;
use crate::schema::{assert_valid, request_errors};

/// What `errors_are_documented_responses` answers with a success: nothing.
pub const ERRORS: Ops = &[];

#[tokio::test]
async fn errors_are_documented_responses() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());
    let w = World::new(&app).await;
    w.with_users(&app).await;
    let World {
        ap,
        key,
        app_basic_auth,
        alice_auth,
        ..
    } = w;
    let app_basic = Some(app_basic_auth.as_str());
    let alice = Some(alice_auth.as_str());
    let Robot { svc_basic, .. } = Robot::new(&app).await;
    let expired = key.jwt(json!({"scope": "app", "exp": 1}));

    // Errors, each a documented response of its operation.
    let r = t
        .call(
            "get",
            "/v1/apps",
            "/v1/apps",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(r.code(), "unauthorized");
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}",
            &ap,
            Some(&expired),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(r.code(), "token_expired");
    let unknown_member = json!({"displayName": "x", "colour": "red"});
    assert!(!request_errors(&t.doc, "/v1/apps", "post", &unknown_member).is_empty());
    let r = t
        .call(
            "post",
            "/v1/apps",
            "/v1/apps",
            owner,
            Some(unknown_member),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(r.code(), "bad_request");
    for query in ["limit=0", "limit=101", "colour=red", "after=ap_nothing"] {
        t.call(
            "get",
            "/v1/apps",
            &format!("/v1/apps?{query}"),
            owner,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    t.call(
        "post",
        "/v1/apps",
        "/v1/apps",
        owner,
        Some(json!({"displayName": "x".repeat(70 * 1024)})),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    for (m, template, path, auth) in [
        ("post", "/v1/apps", "/v1/apps".to_string(), alice),
        ("get", "/v1/accounts", "/v1/accounts".to_string(), owner),
        ("get", "/v1/apps/{app_id}", ap.clone(), op),
        (
            "get",
            "/v1/serviceAccounts",
            "/v1/serviceAccounts".to_string(),
            Some(svc_basic.as_str()),
        ),
        (
            "get",
            "/v1/apps/{app_id}/keys",
            format!("{ap}/keys"),
            app_basic,
        ),
        (
            "delete",
            "/v1/apps/{app_id}/users/{user}",
            format!("{ap}/users/alice"),
            alice,
        ),
    ] {
        let body = (m == "post").then(|| json!({"displayName": "x"}));
        let r = t
            .call(m, template, &path, auth, body, StatusCode::FORBIDDEN)
            .await;
        assert_eq!(r.code(), "forbidden");
    }
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            owner,
            Some(verify(&svc_basic, json!({}))),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    for (template, path, auth) in [
        (
            "/v1/apps/{app_id}",
            "/v1/apps/ap_0000000000000000000000".to_string(),
            owner,
        ),
        (
            "/v1/apps/{app_id}/users/{user}",
            format!("{ap}/users/bob"),
            alice,
        ),
        (
            "/v1/apps/{app_id}/users/{user}",
            format!("{ap}/users/carol"),
            app_basic,
        ),
        ("/v1/apps/{app_id}", ap.clone(), Some(svc_basic.as_str())),
    ] {
        let r = t
            .call("get", template, &path, auth, None, StatusCode::NOT_FOUND)
            .await;
        assert_eq!(r.code(), "not_found");
    }
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/users",
            &format!("{ap}/users"),
            app_basic,
            Some(json!({"externalId": "bob"})),
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(r.code(), "conflict");
    // Outside any operation: an unknown path and an undocumented method.
    let r = app.get("/v1/nothing-here", &owner_auth).await;
    assert!(is_no_such_endpoint(&r));
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert_valid(&t.doc, &error, &r.body, "unknown path");
    let r = app.put("/v1/apps", &owner_auth).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_valid(&t.doc, &error, &r.body, "405");

    t.assert_covered(ERRORS);
}
