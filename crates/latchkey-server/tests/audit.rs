//! The audit log over real HTTP: what is recorded, who may read it, and
//! that no secret ever appears in it.

mod common;

use common::{StatusCode, TestApp};
use serde_json::{Value, json};

fn events(r: &common::Reply) -> Vec<Value> {
    r.body["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn management_actions_are_recorded_newest_first_without_secrets() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let owner_key = app.owner_key();
    let app_id = app.create_app(&owner, "Audited").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", key.id),
            &owner,
            json!({}),
        )
        .await;
    let new_secret = r.body["key"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let sa = app.create_service_account(&owner).await;
    assert_eq!(
        app.put(&format!("/v1/serviceAccounts/{sa}/apps/{app_id}"), &owner)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &key.basic(),
            json!({"settings": {"theme": "dark"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", key.id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let r = app.get("/v1/audit?limit=100", &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let all = events(&r);
    let actions: Vec<&str> = all.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "key.deleted",
            "app.updated",
            "grant.created",
            "serviceAccount.created",
            "key.rotated",
            "key.created",
            "app.created",
        ]
    );
    let deleted = &all[0];
    assert_eq!(deleted["outcome"], "success");
    assert_eq!(deleted["actor"], json!({"type": "key", "id": owner_key.id}));
    assert_eq!(deleted["address"], "127.0.0.1");
    assert_eq!(deleted["target"], json!({"type": "key", "id": key.id}));
    assert_eq!(deleted["appId"], app_id.as_str());
    assert_eq!(
        all[1]["actor"]["id"],
        key.id.as_str(),
        "the app key changed its settings"
    );
    assert_eq!(all[1]["details"]["changed"], json!(["theme"]));
    let text = r.body.to_string();
    for secret in [&key.secret, &new_secret, &owner_key.secret] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret leaked into the audit log"
        );
    }

    // Filters and paging.
    let r = app.get("/v1/audit?action=key.created", &owner).await;
    assert_eq!(events(&r).len(), 1);
    let r = app.get("/v1/audit?limit=3", &owner).await;
    assert_eq!(events(&r).len(), 3);
    assert_eq!(r.body["meta"]["hasMore"], true);
    let cursor = r.body["meta"]["afterCursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    let r = app
        .get(&format!("/v1/audit?limit=100&after={cursor}"), &owner)
        .await;
    let rest = events(&r);
    let rest: Vec<&str> = rest.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(rest, actions[3..].to_vec());
    let future = "2100-01-01T00:00:00Z";
    let r = app.get(&format!("/v1/audit?since={future}"), &owner).await;
    assert!(events(&r).is_empty());
    let r = app.get("/v1/audit?since=yesterday", &owner).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.get("/v1/audit?colour=red", &owner).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn refused_writes_are_recorded_as_failures() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Guarded").await;
    let key = app.create_app_key(&owner, &app_id).await;
    // An app key may not manage keys: 403, recorded.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &key.basic(),
            json!({"displayName": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.get(&format!("/v1/apps/{app_id}/audit"), &owner).await;
    let first = &events(&r)[0];
    assert_eq!(first["outcome"], "failure");
    assert_eq!(first["action"], "POST /v1/apps/{app_id}/keys");
    assert_eq!(first["actor"]["id"], key.id.as_str());
    assert_eq!(first["details"]["status"], 403);
}

#[tokio::test]
async fn who_may_read_which_log() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_a = app.create_app(&owner, "A").await;
    let app_b = app.create_app(&owner, "B").await;
    let key_a = app.create_app_key(&owner, &app_a).await;
    app.create_app_key(&owner, &app_b).await;
    let sa = app.create_service_account(&owner).await;
    let sa_key = app.create_service_account_key(&owner, &sa).await;
    app.put(&format!("/v1/serviceAccounts/{sa}/apps/{app_a}"), &owner)
        .await;

    // App scope reads its own app's log only.
    let r = app
        .get(&format!("/v1/apps/{app_a}/audit"), &key_a.basic())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(events(&r).iter().all(|e| e["appId"] == app_a.as_str()));
    assert!(!events(&r).is_empty());
    let r = app
        .get(&format!("/v1/apps/{app_b}/audit"), &key_a.basic())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/v1/audit", &key_a.basic()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let user = key_a.jwt(json!({"scope": "appUser", "userId": "u"}));
    let r = app.get(&format!("/v1/apps/{app_a}/audit"), &user).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A service account sees the events of the apps it reaches.
    let r = app.get("/v1/audit?limit=100", &sa_key.basic()).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = events(&r);
    assert!(!seen.is_empty());
    // Those of the apps it reaches, and those about itself and its keys;
    // nothing of app B.
    assert!(
        seen.iter().all(|e| e["appId"] == app_a.as_str()
            || e["target"]["id"] == sa.as_str()
            || e["details"]["owner"] == sa.as_str()),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| e["target"]["id"] == sa_key.id.as_str()));
    assert!(seen.iter().all(|e| e["appId"] != app_b.as_str()));

    // Another account sees nothing of this one.
    let other = app.create_account("o@example.com").await;
    let r = app.get("/v1/audit?limit=100", &other.basic()).await;
    let theirs = events(&r);
    assert!(
        theirs
            .iter()
            .all(|e| e["accountId"] != app.account_id().as_str()),
        "{theirs:?}"
    );
    assert!(theirs.iter().all(|e| e["appId"].is_null()));
    let r = app
        .get(&format!("/v1/apps/{app_a}/audit"), &other.basic())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A cursor from another account's log is refused.
    let r = app.get("/v1/audit", &owner).await;
    let id = events(&r)[0]["id"].as_str().expect("id").to_string();
    let r = app
        .get(&format!("/v1/audit?after={id}"), &other.basic())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // The operator's account operations are in the account's log.
    let r = app
        .get("/v1/audit?action=account.created", &other.basic())
        .await;
    assert_eq!(events(&r).len(), 1);
    assert_eq!(events(&r)[0]["actor"]["type"], "operator");
    // Customers do not see the operator's token id or address.
    assert_eq!(events(&r)[0]["actor"]["id"], Value::Null);
    assert_eq!(events(&r)[0]["address"], Value::Null);
    // The operator reads any account's log by naming it, and sees itself.
    let r = app
        .get(
            &format!("/v1/audit?accountId={}", app.account_id()),
            &app.operator(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!events(&r).is_empty());
    assert_eq!(
        app.get("/v1/audit", &app.operator()).await.status,
        StatusCode::BAD_REQUEST
    );
    let r = app
        .get(&format!("/v1/audit?accountId={}", app.account_id()), &owner)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
