//! Apps, and an app's policy settings.

use latchkey_core::Clock;
use serde_json::json;

use super::{Ops, Tour, World, id_of, unix};
use crate::common::{StatusCode, TestApp};
use crate::schema::request_errors;

/// What `apps_are_created_listed_read_updated_and_deleted` reaches.
pub const APPS: Ops = &[
    ("post", "/v1/apps"),
    ("get", "/v1/apps"),
    ("get", "/v1/apps/{app_id}"),
    ("patch", "/v1/apps/{app_id}"),
    ("delete", "/v1/apps/{app_id}"),
];

/// What `policy_settings` reaches.
pub const POLICY: Ops = &[
    ("patch", "/v1/apps/{app_id}"),
    ("post", "/v1/apps/{app_id}/users/{user}/tokens"),
    ("get", "/v1/apps/{app_id}/users/{user}"),
];

#[tokio::test]
async fn apps_are_created_listed_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());

    // Apps.
    let r = t
        .call(
            "post",
            "/v1/apps",
            "/v1/apps",
            owner,
            Some(json!({"displayName": "Chat", "settings": {"theme": {"colour": "blue"}, "drop": null}})),
            StatusCode::CREATED,
        )
        .await;
    let app_id = id_of(&r, "app");
    // New apps refuse their keys from a browser unless told otherwise.
    assert_eq!(
        r.body["app"]["settings"],
        json!({"blockBrowserSecrets": true, "theme": {"colour": "blue"}})
    );
    let ap = format!("/v1/apps/{app_id}");
    t.call("get", "/v1/apps", "/v1/apps", owner, None, StatusCode::OK)
        .await;
    t.call("get", "/v1/apps/{app_id}", &ap, owner, None, StatusCode::OK)
        .await;
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(json!({"displayName": "Chat 2", "settings": {"theme": {"colour": null}, "beta": true}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["app"]["settings"],
        json!({"blockBrowserSecrets": true, "theme": {}, "beta": true})
    );

    // Deletion.
    t.call(
        "delete",
        "/v1/apps/{app_id}",
        &ap,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(APPS);
}

#[tokio::test]
async fn policy_settings() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let World { ap, key, .. } = World::new(&app).await;
    let mint = "/v1/apps/{app_id}/users/{user}/tokens";

    // App policy settings.
    let policy = json!({"settings": {"maxKeyAgeDays": 30, "maxTokenTtlSeconds": 3600}});
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}",
            &ap,
            owner,
            Some(policy),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["app"]["settings"]["maxKeyAgeDays"], 30);
    // A minted token's lifetime is capped by maxTokenTtlSeconds.
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/dana/tokens"),
            owner,
            Some(json!({"ttlSeconds": 86_400})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        unix(&r.body["expiresAt"]),
        app.clock.now().unix_timestamp() + 3600
    );
    let capped = format!("Bearer {}", r.body["token"].as_str().expect("token"));
    t.call(
        "get",
        "/v1/apps/{app_id}/users/{user}",
        &format!("{ap}/users/dana"),
        Some(&capped),
        None,
        StatusCode::OK,
    )
    .await;
    let bad = json!({"settings": {"maxKeyAgeDays": 0}});
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
    let bad = json!({"displayName": "x", "settings": {"maxTokenTtlSeconds": 59}});
    assert!(!request_errors(&t.doc, "/v1/apps", "post", &bad).is_empty());
    t.call(
        "post",
        "/v1/apps",
        "/v1/apps",
        owner,
        Some(bad),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}",
            &ap,
            Some(&key.jwt(json!({"scope": "app"}))),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(r.code(), "unauthorized");
    t.call(
        "patch",
        "/v1/apps/{app_id}",
        &ap,
        owner,
        Some(json!({"settings": {"maxKeyAgeDays": null, "maxTokenTtlSeconds": null}})),
        StatusCode::OK,
    )
    .await;

    t.assert_covered(POLICY);
}
