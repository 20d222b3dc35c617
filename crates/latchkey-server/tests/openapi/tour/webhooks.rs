//! An app's webhooks.

use serde_json::json;

use super::{Ops, Tour, World, id_of};
use crate::common::{StatusCode, TestApp};
use crate::schema::request_errors;

/// What `webhooks_are_created_listed_read_updated_and_deleted` reaches.
pub const WEBHOOKS: Ops = &[
    ("post", "/v1/apps/{app_id}/webhooks"),
    ("get", "/v1/apps/{app_id}/webhooks"),
    ("patch", "/v1/apps/{app_id}/webhooks/{webhook_id}"),
    ("get", "/v1/apps/{app_id}/webhooks/{webhook_id}"),
    ("delete", "/v1/apps/{app_id}/webhooks/{webhook_id}"),
];

#[tokio::test]
async fn webhooks_are_created_listed_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let World {
        ap, app_basic_auth, ..
    } = World::new(&app).await;
    let app_basic = Some(app_basic_auth.as_str());

    // Webhooks: the secret only in the create response.
    let hooks = format!("{ap}/webhooks");
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/webhooks",
            &hooks,
            app_basic,
            Some(json!({"target": "https://hooks.example.com/latchkey", "triggers": ["key:rotated", "key:created"]})),
            StatusCode::CREATED,
        )
        .await;
    let hook = format!("{hooks}/{}", id_of(&r, "webhook"));
    let hook_secret = r.body["webhook"]["secret"]
        .as_str()
        .expect("the create response carries the secret")
        .to_string();
    t.call(
        "get",
        "/v1/apps/{app_id}/webhooks",
        &hooks,
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/webhooks/{webhook_id}",
            &hook,
            owner,
            Some(json!({"triggers": ["key:deleted", "key:expiring"]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["webhook"]["triggers"],
        json!(["key:deleted", "key:expiring"])
    );
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/webhooks/{webhook_id}",
            &hook,
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(!r.body.to_string().contains(&hook_secret));
    let bad_target = json!({"target": "ftp://example.com/", "triggers": ["key:created"]});
    assert!(request_errors(&t.doc, "/v1/apps/{app_id}/webhooks", "post", &bad_target).is_empty());
    t.call(
        "post",
        "/v1/apps/{app_id}/webhooks",
        &hooks,
        owner,
        Some(bad_target),
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.call(
        "delete",
        "/v1/apps/{app_id}/webhooks/{webhook_id}",
        &hook,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(WEBHOOKS);
}
