//! Service accounts, their keys and their grants of apps.

use serde_json::json;

use super::{Ops, Tour, World, id_of};
use crate::common::{Key, StatusCode, TestApp};

/// What `service_accounts_their_keys_and_grants` reaches.
pub const SERVICE_ACCOUNTS: Ops = &[
    ("post", "/v1/serviceAccounts"),
    ("get", "/v1/serviceAccounts"),
    ("get", "/v1/serviceAccounts/{sa_id}"),
    ("post", "/v1/serviceAccounts/{sa_id}/keys"),
    ("get", "/v1/serviceAccounts/{sa_id}/keys"),
    ("get", "/v1/serviceAccounts/{sa_id}/keys/{key_id}"),
    ("get", "/v1/account"),
    ("put", "/v1/serviceAccounts/{sa_id}/apps/{app_id}"),
    ("delete", "/v1/serviceAccounts/{sa_id}/keys/{key_id}"),
    ("delete", "/v1/serviceAccounts/{sa_id}"),
];

#[tokio::test]
async fn service_accounts_their_keys_and_grants() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let World { app_id, .. } = World::new(&app).await;

    // Service accounts, their keys and grants.
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts",
            "/v1/serviceAccounts",
            owner,
            Some(json!({"displayName": "robot"})),
            StatusCode::CREATED,
        )
        .await;
    let sa_id = id_of(&r, "serviceAccount");
    let sa = format!("/v1/serviceAccounts/{sa_id}");
    t.call(
        "get",
        "/v1/serviceAccounts",
        "/v1/serviceAccounts",
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        "/v1/serviceAccounts/{sa_id}",
        &sa,
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts/{sa_id}/keys",
            &format!("{sa}/keys"),
            owner,
            Some(json!({"displayName": "robot key"})),
            StatusCode::CREATED,
        )
        .await;
    let svc = Key::from_reply(&r);
    t.call(
        "get",
        "/v1/serviceAccounts/{sa_id}/keys",
        &format!("{sa}/keys"),
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/serviceAccounts/{sa_id}/keys/{key_id}",
            &format!("{sa}/keys/{}", svc.id),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(r.body["key"].get("secret").is_none());
    let svc_basic = svc.basic();
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            Some(&svc_basic),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(r.body["serviceAccountId"].is_string());
    let grant = format!("{sa}/apps/{app_id}");
    for _ in 0..2 {
        t.call(
            "put",
            "/v1/serviceAccounts/{sa_id}/apps/{app_id}",
            &grant,
            owner,
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    }

    // Deletions.
    t.call(
        "delete",
        "/v1/serviceAccounts/{sa_id}/keys/{key_id}",
        &format!("{sa}/keys/{}", svc.id),
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    t.call(
        "delete",
        "/v1/serviceAccounts/{sa_id}",
        &sa,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(SERVICE_ACCOUNTS);
}
