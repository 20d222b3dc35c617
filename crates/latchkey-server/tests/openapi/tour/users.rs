//! An app's users, and appUser tokens minted for them.

use latchkey_core::Clock;
use serde_json::json;

use super::{Ops, Tour, World, id_of, unix};
use crate::common::{StatusCode, TestApp};
use crate::schema::request_errors;

/// What `app_users_are_created_listed_read_updated_and_deleted` reaches.
pub const USERS: Ops = &[
    ("post", "/v1/apps/{app_id}/users"),
    ("get", "/v1/apps/{app_id}/users"),
    ("get", "/v1/apps/{app_id}/users/{user}"),
    ("patch", "/v1/apps/{app_id}/users/{user}"),
    ("delete", "/v1/apps/{app_id}/users/{user}"),
];

/// What `app_user_tokens_are_minted` reaches.
pub const MINTED_TOKENS: Ops = &[
    ("post", "/v1/apps/{app_id}/users/{user}/tokens"),
    ("get", "/v1/apps/{app_id}/users/{user}"),
    ("get", "/v1/account"),
    ("post", "/v1/apps"),
];

#[tokio::test]
async fn app_users_are_created_listed_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let World {
        ap,
        app_basic_auth,
        alice_auth,
        ..
    } = World::new(&app).await;
    let app_basic = Some(app_basic_auth.as_str());
    let alice = Some(alice_auth.as_str());

    // App users.
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/users",
            &format!("{ap}/users"),
            app_basic,
            Some(json!({"externalId": "bob", "profile": {"givenName": "Bob", "email": null}, "metadata": {"plan": "free"}})),
            StatusCode::CREATED,
        )
        .await;
    let bob = id_of(&r, "user");
    t.call(
        "get",
        "/v1/apps/{app_id}/users",
        &format!("{ap}/users"),
        app_basic,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        "/v1/apps/{app_id}/users/{user}",
        &format!("{ap}/users/{bob}"),
        app_basic,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/users/{user}",
            &format!("{ap}/users/alice"),
            alice,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["user"]["externalId"], "alice");
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/users/{user}",
            &format!("{ap}/users/alice"),
            alice,
            Some(json!({"profile": {"surname": "Smith"}, "metadata": {"plan": "pro"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["user"]["profile"]["surname"], "Smith");
    // Per profile field: null clears, absent leaves as it is.
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/users/{user}",
            &format!("{ap}/users/{bob}"),
            app_basic,
            Some(json!({"profile": {"email": "bob@example.com", "givenName": null}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["user"]["profile"],
        json!({"givenName": null, "surname": null, "email": "bob@example.com"})
    );

    // Deletion.
    t.call(
        "delete",
        "/v1/apps/{app_id}/users/{user}",
        &format!("{ap}/users/bob"),
        app_basic,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(USERS);
}

#[tokio::test]
async fn app_user_tokens_are_minted() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let w = World::new(&app).await;
    let bob = w.with_users(&app).await;
    let World {
        ap,
        app_basic_auth,
        alice_auth,
        ..
    } = w;
    let app_basic = Some(app_basic_auth.as_str());
    let alice = Some(alice_auth.as_str());

    // Minted appUser tokens: named by usr_ id or by an external id not
    // created yet (its first use creates it).
    let mint = "/v1/apps/{app_id}/users/{user}/tokens";
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/{bob}/tokens"),
            app_basic,
            Some(json!({"ttlSeconds": 600})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        unix(&r.body["expiresAt"]),
        app.clock.now().unix_timestamp() + 600
    );
    let bob_token = format!("Bearer {}", r.body["token"].as_str().expect("token"));
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/users/{user}",
            &format!("{ap}/users/{bob}"),
            Some(&bob_token),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["user"]["externalId"], "bob");
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/dana/tokens"),
            owner,
            None,
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        unix(&r.body["expiresAt"]),
        app.clock.now().unix_timestamp() + 3600
    );
    let dana_token = format!("Bearer {}", r.body["token"].as_str().expect("token"));
    let r = t
        .call(
            "get",
            "/v1/account",
            "/v1/account",
            Some(&dana_token),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["scope"], "appUser");
    assert_eq!(r.body["userId"], "dana");
    for bad in [json!({"ttlSeconds": 59}), json!({"ttlSeconds": 86_401})] {
        assert!(!request_errors(&t.doc, mint, "post", &bad).is_empty());
        t.call(
            "post",
            mint,
            &format!("{ap}/users/dana/tokens"),
            owner,
            Some(bad),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/alice/tokens"),
            alice,
            Some(json!({})),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    let r = t
        .call(
            "post",
            mint,
            &format!("{ap}/users/usr_0000000000000000000000/tokens"),
            app_basic,
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(r.code(), "not_found");
    t.call(
        "post",
        mint,
        "/v1/apps/ap_0000000000000000000000/users/dana/tokens",
        owner,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/apps",
            "/v1/apps",
            owner,
            Some(json!({"displayName": "Keyless"})),
            StatusCode::CREATED,
        )
        .await;
    let r = t
        .call(
            "post",
            mint,
            &format!("/v1/apps/{}/users/dana/tokens", id_of(&r, "app")),
            owner,
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(r.code(), "conflict");

    t.assert_covered(MINTED_TOKENS);
}
