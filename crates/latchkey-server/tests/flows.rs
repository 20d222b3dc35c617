//! The main flows over real HTTP: accounts, apps, keys, users, service
//! accounts, verification and deletion taking effect at once.

mod common;

use common::{StatusCode, TestApp, basic};
use serde_json::json;

#[tokio::test]
async fn from_owner_key_to_app_user_jwt() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let who = app.get("/v1/account", &owner).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.body["scope"], "account");
    assert_eq!(who.body["accountId"], app.account_id());

    let app_id = app.create_app(&owner, "Chat").await;
    let key = app.create_app_key(&owner, &app_id).await;
    assert!(key.secret.starts_with("lksk_"));

    // Basic with the app key: app scope on its app.
    let r = app.get(&format!("/v1/apps/{app_id}"), &key.basic()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["app"]["displayName"], "Chat");

    // An appUser JWT creates its user on first use and reads only itself.
    let alice = key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/alice"), &alice)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["user"]["externalId"], "alice");
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}/users/alice"),
            &alice,
            json!({"profile": {"givenName": "Alice"}, "metadata": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["user"]["profile"]["givenName"], "Alice");
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/bob"), &alice)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The secret never appears again.
    let r = app
        .get(&format!("/v1/apps/{app_id}/keys/{}", key.id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["key"].get("secret").is_none());
    assert!(!r.body.to_string().contains(&key.secret));
    let r = app.get(&format!("/v1/apps/{app_id}/keys"), &owner).await;
    assert!(!r.body.to_string().contains(&key.secret));
    assert_eq!(r.body["keys"].as_array().map(Vec::len), Some(1));

    // Verification service.
    let r = app
        .post(
            "/v1/verify",
            &app.operator(),
            json!({"authorization": alice, "appId": app_id, "userId": "alice"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"valid": true, "scope": "appUser", "accountId": app.account_id(),
               "appId": app_id, "userId": "alice", "keyId": key.id})
    );

    // Deleting the key stops Basic and its JWTs on the very next request.
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", key.id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get(&format!("/v1/apps/{app_id}"), &key.basic()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    assert!(r.headers.get("www-authenticate").is_some());
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/alice"), &alice)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post(
            "/v1/verify",
            &app.operator(),
            json!({"authorization": alice}),
        )
        .await;
    assert_eq!(r.body["valid"], false);
    assert_eq!(r.body["code"], "unauthorized");
}

#[tokio::test]
async fn errors_use_the_documented_format() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let r = app.get("/v1/apps", "Basic nonsense").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    let r = app.call(reqwest::Method::GET, "/v1/apps", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post("/v1/apps", &owner, json!({"displayName": 5}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "bad_request");
    let r = app
        .post(
            "/v1/apps",
            &owner,
            json!({"displayName": "x", "colour": "red"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let big = "x".repeat(70 * 1024);
    let r = app
        .post("/v1/apps", &owner, json!({"displayName": big}))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "payload_too_large");
    let r = app.get("/v1/nothing-here", &owner).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    let r = app.put("/v1/apps", &owner).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = app.get("/v1/apps?limit=0", &owner).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.get("/v1/apps?after=ap_doesnotexist", &owner).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Nothing was created by any of the above.
    let r = app.get("/v1/apps", &owner).await;
    assert_eq!(r.body["apps"], json!([]));
    let _ = basic("a", "b");
}

#[tokio::test]
async fn the_eleventh_key_is_a_conflict_and_paging_walks_all() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Keys").await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(app.create_app_key(&owner, &app_id).await.id);
    }
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "eleventh"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "conflict");

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/apps/{app_id}/keys?limit=3&after={a}"),
            None => format!("/v1/apps/{app_id}/keys?limit=3"),
        };
        let r = app.get(&path, &owner).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        for k in r.body["keys"].as_array().expect("keys") {
            seen.push(k["id"].as_str().expect("id").to_string());
        }
        if r.body["meta"]["hasMore"] == false {
            break;
        }
        after = r.body["meta"]["afterCursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, ids);

    // Deleting one frees a slot.
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", ids[0]), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.create_app_key(&owner, &app_id).await;
}
