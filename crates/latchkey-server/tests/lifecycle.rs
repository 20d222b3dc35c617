//! Deletion reaching every credential at once, service-account grants,
//! expiry by the injected clock, lastUsedAt, restarts and /v1/verify.

mod common;

use common::{StatusCode, TestApp};
use latchkey_core::Clock;
use serde_json::json;

#[tokio::test]
async fn deleting_an_app_stops_its_keys_and_jwts() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Doomed").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let user_jwt = key.jwt(json!({"scope": "appUser", "userId": "u1"}));
    let app_jwt = key.jwt(json!({"scope": "app"}));
    assert_eq!(
        app.get(&format!("/v1/apps/{app_id}"), &app_jwt)
            .await
            .status,
        StatusCode::OK
    );
    let r = app.delete(&format!("/v1/apps/{app_id}"), &owner).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    for cred in [key.basic(), user_jwt, app_jwt] {
        let r = app.get("/v1/account", &cred).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{cred}");
    }
    let r = app.get(&format!("/v1/apps/{app_id}"), &owner).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.delete(&format!("/v1/apps/{app_id}"), &owner).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn service_accounts_reach_only_created_or_granted_apps() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let other_app = app.create_app(&owner, "Owner's app").await;
    let sa = app.create_service_account(&owner).await;
    let sa_key = app.create_service_account_key(&owner, &sa).await;
    let svc = sa_key.basic();

    // Creates its own app and reaches it; does not see the other one.
    let own_app = app.create_app(&svc, "Provisioned").await;
    let r = app.get("/v1/apps", &svc).await;
    let ids: Vec<&str> = r.body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, vec![own_app.as_str()]);
    let r = app.get(&format!("/v1/apps/{other_app}"), &svc).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Only user-account keys manage service accounts.
    let r = app.get("/v1/serviceAccounts", &svc).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "forbidden");

    // Grant, use, revoke.
    let grant = format!("/v1/serviceAccounts/{sa}/apps/{other_app}");
    assert_eq!(app.put(&grant, &owner).await.status, StatusCode::NO_CONTENT);
    let r = app.get(&format!("/v1/apps/{other_app}"), &svc).await;
    assert_eq!(r.status, StatusCode::OK);
    let account_jwt = sa_key.jwt(json!({"scope": "account"}));
    let key = app.create_app_key(&account_jwt, &other_app).await;
    assert!(key.id.starts_with("app_"));
    assert_eq!(
        app.delete(&grant, &owner).await.status,
        StatusCode::NO_CONTENT
    );
    let r = app.get(&format!("/v1/apps/{other_app}"), &svc).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.delete(&grant, &owner).await.status,
        StatusCode::NOT_FOUND
    );

    // Deleting the service account stops its keys at once.
    let r = app
        .delete(&format!("/v1/serviceAccounts/{sa}"), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/account", &svc).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/account", &account_jwt).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn deleting_an_account_stops_everything_under_it() {
    let app = TestApp::spawn().await;
    let other = app.create_account("b@example.com").await;
    let other_basic = other.basic();
    let app_id = app.create_app(&other_basic, "B's app").await;
    let key = app.create_app_key(&other_basic, &app_id).await;
    // Account A cannot see B's app.
    let r = app.get(&format!("/v1/apps/{app_id}"), &app.owner()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/v1/account", &other_basic).await;
    let account_id = r.body["accountId"].as_str().expect("account").to_string();
    // Duplicate owner email is a conflict.
    let r = app
        .post(
            "/v1/accounts",
            &app.operator(),
            json!({"displayName": "Dup", "owner": {"email": "B@example.com", "password": "a long enough password"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);

    let r = app
        .delete(&format!("/v1/accounts/{account_id}"), &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/account", &other_basic).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/account", &key.basic()).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The first account is untouched.
    assert_eq!(
        app.get("/v1/account", &app.owner()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn jwt_expiry_follows_the_injected_clock() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Clock").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let now = app.clock.now().unix_timestamp();
    let jwt = key.jwt(json!({"scope": "app", "exp": now + 3600}));
    let path = format!("/v1/apps/{app_id}");
    assert_eq!(app.get(&path, &jwt).await.status, StatusCode::OK);
    app.clock.advance(time::Duration::seconds(3600 + 29));
    assert_eq!(
        app.get(&path, &jwt).await.status,
        StatusCode::OK,
        "inside the leeway"
    );
    app.clock.advance(time::Duration::seconds(2));
    let r = app.get(&path, &jwt).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "token_expired");
    // Basic with the same key is unaffected: JWTs expire only by time.
    assert_eq!(app.get(&path, &key.basic()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn last_used_at_is_tracked_without_a_write_per_request_and_survives_restart() {
    let mut app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Usage").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let key_path = format!("/v1/apps/{app_id}/keys/{}", key.id);
    let r = app.get(&key_path, &owner).await;
    assert_eq!(r.body["key"]["lastUsedAt"], serde_json::Value::Null);

    app.clock.advance(time::Duration::minutes(5));
    let used_at = app.clock.now();
    assert_eq!(
        app.get(&format!("/v1/apps/{app_id}"), &key.basic())
            .await
            .status,
        StatusCode::OK
    );
    let expected = used_at
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let r = app.get(&key_path, &owner).await;
    assert_eq!(r.body["key"]["lastUsedAt"], expected.as_str());

    // A graceful restart flushes it; the rebuilt index still verifies the key.
    app.restart().await;
    assert_eq!(
        app.get(&format!("/v1/apps/{app_id}"), &key.basic())
            .await
            .status,
        StatusCode::OK
    );
    let r = app.get(&key_path, &owner).await;
    assert_eq!(r.body["key"]["lastUsedAt"], expected.as_str());
}

#[tokio::test]
async fn verify_answers_for_the_operator_only() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Verify").await;
    let other_app = app.create_app(&owner, "Other").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let sa = app.create_service_account(&owner).await;
    let sa_key = app.create_service_account_key(&owner, &sa).await;
    let op = app.operator();

    let r = app
        .post("/v1/verify", &owner, json!({"authorization": key.basic()}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = app
        .post(
            "/v1/verify",
            &op,
            json!({"authorization": key.basic(), "appId": app_id}),
        )
        .await;
    assert_eq!(r.body["valid"], true, "{:?}", r.body);
    assert_eq!(r.body["scope"], "app");

    let r = app
        .post(
            "/v1/verify",
            &op,
            json!({"authorization": key.basic(), "appId": other_app}),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"valid": false, "code": "not_found", "title": r.body["title"]})
    );

    // An app secret seen with an Origin header came from a browser.
    let r = app
        .post(
            "/v1/verify",
            &op,
            json!({"authorization": key.basic(), "origin": "https://shop.example"}),
        )
        .await;
    assert_eq!(r.body["valid"], false);
    assert_eq!(r.body["code"], "forbidden");
    let user_jwt = key.jwt(json!({"scope": "appUser", "userId": "carol"}));
    let r = app
        .post(
            "/v1/verify",
            &op,
            json!({"authorization": user_jwt, "origin": "https://shop.example", "userId": "dave"}),
        )
        .await;
    assert_eq!(r.body["code"], "not_found");
    let r = app
        .post(
            "/v1/verify",
            &op,
            json!({"authorization": user_jwt, "origin": "https://shop.example"}),
        )
        .await;
    assert_eq!(r.body["valid"], true);
    assert_eq!(r.body["userId"], "carol");

    // A service account without a grant does not reach the app.
    let r = app
        .post(
            "/v1/verify",
            &op,
            json!({"authorization": sa_key.basic(), "appId": app_id}),
        )
        .await;
    assert_eq!(r.body["code"], "not_found");
    let r = app
        .post("/v1/verify", &op, json!({"authorization": sa_key.basic()}))
        .await;
    assert_eq!(r.body["valid"], true);
    assert_eq!(r.body["scope"], "account");

    let r = app.post("/v1/verify", &op, json!({"appId": app_id})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .post(
            "/v1/verify",
            &op,
            json!({"authorization": "Basic Zm9vOmJhcg=="}),
        )
        .await;
    assert_eq!(r.body["valid"], false);
    assert_eq!(r.body["code"], "unauthorized");
}

#[tokio::test]
async fn user_account_keys_cannot_be_deleted_through_the_api() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let owner_key = app.owner_key();
    let app_id = app.create_app(&owner, "X").await;
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", owner_key.id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let sa = app.create_service_account(&owner).await;
    let r = app
        .delete(
            &format!("/v1/serviceAccounts/{sa}/keys/{}", owner_key.id),
            &owner,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/account", &owner).await.status, StatusCode::OK);
}

#[tokio::test]
async fn app_settings_merge_and_users_conflict() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Settings").await;
    let path = format!("/v1/apps/{app_id}");
    let r = app
        .patch(
            &path,
            &owner,
            json!({"settings": {"a": 1, "nested": {"x": 1, "y": 2}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .patch(
            &path,
            &owner,
            json!({"displayName": "Renamed", "settings": {"a": null, "nested": {"y": 3}}}),
        )
        .await;
    assert_eq!(
        r.body["app"]["settings"],
        json!({"blockBrowserSecrets": true, "nested": {"x": 1, "y": 3}})
    );
    assert_eq!(r.body["app"]["displayName"], "Renamed");
    let r = app.patch(&path, &owner, json!({"displayName": ""})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.get(&path, &owner).await;
    assert_eq!(
        r.body["app"]["displayName"], "Renamed",
        "a refused PATCH changes nothing"
    );

    let users = format!("/v1/apps/{app_id}/users");
    let body =
        json!({"externalId": "ext-1", "profile": {"givenName": "Ann"}, "metadata": {"k": "v"}});
    let r = app.post(&users, &owner, body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let user_id = r.body["user"]["id"].as_str().expect("id").to_string();
    assert!(user_id.starts_with("usr_"));
    let r = app.post(&users, &owner, body).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // PATCH merges: an absent field stays, null clears.
    let r = app
        .patch(
            &format!("{users}/ext-1"),
            &owner,
            json!({"profile": {"surname": "Smith"}}),
        )
        .await;
    assert_eq!(r.body["user"]["profile"]["givenName"], "Ann");
    assert_eq!(r.body["user"]["profile"]["surname"], "Smith");
    let r = app
        .patch(
            &format!("{users}/ext-1"),
            &owner,
            json!({"profile": {"givenName": null}, "metadata": {"k": null, "n": 1}}),
        )
        .await;
    assert_eq!(
        r.body["user"]["profile"]["givenName"],
        serde_json::Value::Null
    );
    assert_eq!(r.body["user"]["profile"]["surname"], "Smith");
    assert_eq!(r.body["user"]["metadata"], json!({"n": 1}));
    // Found by id and by externalId.
    assert_eq!(
        app.get(&format!("{users}/{user_id}"), &owner).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("{users}/ext-1"), &owner).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.delete(&format!("{users}/ext-1"), &owner).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("{users}/{user_id}"), &owner).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn server_credentials_from_a_browser_are_refused() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Shop").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let send = |auth: String, path: String| {
        let req = app
            .http
            .get(app.url(&path))
            .header("authorization", auth)
            .header("origin", "https://shop.example");
        async move { req.send().await.expect("send") }
    };
    for auth in [key.basic(), key.jwt(json!({"scope": "app"})), owner.clone()] {
        let r = send(auth, format!("/v1/apps/{app_id}")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["errors"][0]["code"], "forbidden");
    }
    // Refused before it had any effect: a delete from a browser deletes nothing.
    let r = app
        .http
        .delete(app.url(&format!("/v1/apps/{app_id}/keys/{}", key.id)))
        .header("authorization", owner.clone())
        .header("origin", "https://shop.example")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/v1/account", &key.basic()).await.status,
        StatusCode::OK
    );
    // The appUser JWT is the browser's credential.
    let user = key.jwt(json!({"scope": "appUser", "userId": "web-user"}));
    let r = send(user, format!("/v1/apps/{app_id}/users/web-user")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn external_ids_shaped_like_user_ids_are_refused() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Ids").await;
    let users = format!("/v1/apps/{app_id}/users");
    let r = app
        .post(
            &users,
            &owner,
            json!({"externalId": "usr_0123456789abcdefghijkl"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = app
        .post(&users, &owner, json!({"externalId": "a\nb"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let key = app.create_app_key(&owner, &app_id).await;
    let jwt = key.jwt(json!({"scope": "appUser", "userId": "usr_0123456789abcdefghijkl"}));
    let r = app
        .get(&format!("{users}/usr_0123456789abcdefghijkl"), &jwt)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app.get(&users, &owner).await;
    assert_eq!(r.body["users"], json!([]), "nothing was created");
}
