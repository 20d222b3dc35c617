//! Browsers: CORS by scope, and server credentials refused from a page.

use serde_json::json;

use super::{Ops, Tour, World, allowed_origin};
use crate::common::{StatusCode, TestApp};
use crate::schema::request_errors;

/// What `cors_by_scope_and_server_credentials_refused_from_a_page` reaches.
pub const BROWSERS: Ops = &[
    ("patch", "/v1/apps/{app_id}"),
    ("get", "/v1/apps/{app_id}/users/{user}"),
    ("get", "/v1/apps/{app_id}"),
    ("get", "/v1/apps/{app_id}/audit"),
];

#[tokio::test]
async fn cors_by_scope_and_server_credentials_refused_from_a_page() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
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

    // Browsers: CORS by scope, and server credentials refused from a page.
    let page = "https://shop.example";
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(json!({"settings": {"allowedOrigins": [page]}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["app"]["settings"]["allowedOrigins"], json!([page]));
    for bad in [
        json!({"settings": {"blockBrowserSecrets": "no"}}),
        json!({"settings": {"allowedOrigins": page}}),
    ] {
        assert!(!request_errors(&t.doc, "/v1/apps/{app_id}", "patch", &bad).is_empty());
        t.call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(bad),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    // Not an exact origin (a trailing slash): the server refuses it.
    t.call(
        "patch",
        "/v1/apps/{app_id}",
        &ap,
        owner,
        Some(json!({"settings": {"allowedOrigins": ["https://shop.example/"]}})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let alice_path = format!("{ap}/users/alice");
    let r = t
        .call_from(
            "get",
            "/v1/apps/{app_id}/users/{user}",
            &alice_path,
            alice,
            None,
            Some(page),
            StatusCode::OK,
        )
        .await;
    assert_eq!(allowed_origin(&r), Some(page));
    let r = t
        .call_from(
            "get",
            "/v1/apps/{app_id}/users/{user}",
            &alice_path,
            alice,
            None,
            Some("https://elsewhere.example"),
            StatusCode::OK,
        )
        .await;
    assert_eq!(allowed_origin(&r), None);
    let r = t
        .call_from(
            "get",
            "/v1/apps/{app_id}",
            &ap,
            app_basic,
            None,
            Some(page),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    assert_eq!(allowed_origin(&r), None);
    let r = t
        .call_from(
            "get",
            "/v1/account",
            "/v1/account",
            owner,
            None,
            Some(page),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    t.call(
        "patch",
        "/v1/apps/{app_id}",
        &ap,
        owner,
        Some(json!({"settings": {"blockBrowserSecrets": false}})),
        StatusCode::OK,
    )
    .await;
    let r = t
        .call_from(
            "get",
            "/v1/apps/{app_id}",
            &ap,
            app_basic,
            None,
            Some(page),
            StatusCode::OK,
        )
        .await;
    assert_eq!(allowed_origin(&r), None, "never CORS for an app key");
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(json!({"settings": {"blockBrowserSecrets": true, "allowedOrigins": null}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["app"]["settings"]["blockBrowserSecrets"], true);
    assert!(r.body["app"]["settings"].get("allowedOrigins").is_none());
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/audit",
            &format!("{ap}/audit?action=credential.exposed"),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let exposed = r.body["events"].as_array().expect("events");
    assert_eq!(exposed.len(), 1, "once per key per window: {exposed:?}");
    assert_eq!(exposed[0]["target"]["id"], key.id.as_str());
    assert_eq!(exposed[0]["outcome"], "failure");
    assert_eq!(exposed[0]["details"]["refused"], true);

    t.assert_covered(BROWSERS);
}
