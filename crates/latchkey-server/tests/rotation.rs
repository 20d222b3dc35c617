//! Zero-downtime rotation, key expiry and the token-lifetime and key-age
//! policies, over real HTTP with the injected clock.

mod common;

use common::{Key, StatusCode, TestApp, iso};
use latchkey_core::Clock;
use serde_json::{Value, json};
use time::Duration;

async fn setup() -> (TestApp, String, Key) {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Rotating").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    (app, app_id, key)
}

async fn works(app: &TestApp, app_id: &str, auth: &str) -> bool {
    app.get(&format!("/v1/apps/{app_id}"), auth).await.status == StatusCode::OK
}

#[tokio::test]
async fn rotation_keeps_the_old_key_for_the_grace_period_then_refuses_it() {
    let (app, app_id, old) = setup().await;
    let owner = app.owner();
    let old_jwt = old.jwt(json!({"scope": "app"}));
    let started = app.clock.now();
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", old.id),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let new = Key::from_reply(&r);
    assert_ne!(new.id, old.id);
    assert_eq!(
        r.body["key"]["displayName"], "test key",
        "keeps the display name"
    );
    assert_eq!(r.body["key"]["rotatedFrom"], old.id.as_str());
    assert_eq!(r.body["previousKey"]["id"], old.id.as_str());
    let grace_end = started + Duration::days(30);
    assert_eq!(r.body["previousKey"]["expiresAt"], iso(grace_end).as_str());

    // Both work now: the new one at once, the old one by Basic and JWT.
    assert!(works(&app, &app_id, &new.basic()).await);
    assert!(works(&app, &app_id, &new.jwt(json!({"scope": "app"}))).await);
    assert!(works(&app, &app_id, &old.basic()).await);
    assert!(works(&app, &app_id, &old_jwt).await);

    let r = app
        .get(&format!("/v1/apps/{app_id}/keys/{}", old.id), &owner)
        .await;
    assert_eq!(r.body["key"]["status"], "expiring");
    assert_eq!(r.body["key"]["replacedBy"], new.id.as_str());
    assert!(
        r.body["key"]["lastUsedAt"].is_string(),
        "the customer can watch it go quiet"
    );

    app.clock.advance(Duration::days(30) - Duration::seconds(1));
    assert!(works(&app, &app_id, &old.basic()).await);
    app.clock.advance(Duration::seconds(1));
    let r = app.get(&format!("/v1/apps/{app_id}"), &old.basic()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    assert!(!works(&app, &app_id, &old_jwt).await);
    assert!(works(&app, &app_id, &new.basic()).await);
    let r = app
        .get(&format!("/v1/apps/{app_id}/keys/{}", old.id), &owner)
        .await;
    assert_eq!(r.body["key"]["status"], "expired");

    // Rotating an expired or already rotated key is a conflict.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", old.id),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn revoking_early_and_grace_bounds() {
    let (app, app_id, old) = setup().await;
    let owner = app.owner();
    let rotate = format!("/v1/apps/{app_id}/keys/{}/rotate", old.id);
    for bad in [
        json!({"graceSeconds": -1}),
        json!({"graceSeconds": 2_592_001}),
        json!({"graceSeconds": "1d"}),
    ] {
        let r = app.post(&rotate, &owner, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Nothing changed: the key is still active and not replaced.
    let r = app.get(&format!("/v1/apps/{app_id}/keys"), &owner).await;
    assert_eq!(r.body["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["keys"][0]["status"], "active");
    assert_eq!(r.body["keys"][0]["replacedBy"], Value::Null);

    let r = app
        .post(&rotate, &owner, json!({"graceSeconds": 3600}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let new = Key::from_reply(&r);
    let r = app.post(&rotate, &owner, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "already rotated");
    // Revoke earlier: DELETE the old key, at once.
    assert!(works(&app, &app_id, &old.basic()).await);
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", old.id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(!works(&app, &app_id, &old.basic()).await);
    assert!(works(&app, &app_id, &new.basic()).await);

    // graceSeconds 0 ends the old key at once; an empty body means the default.
    let r = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/apps/{app_id}/keys/{}/rotate", new.id),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let newer = Key::from_reply(&r);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", newer.id),
            &owner,
            json!({"graceSeconds": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(!works(&app, &app_id, &newer.basic()).await);

    // Unknown key and another tenant's app: 404.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/app_0000000000000000000000/rotate"),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let other = app.create_account("other@example.com").await;
    let r = app.post(&rotate, &other.basic(), json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // An app key may not rotate keys (app scope sees its app, may not manage keys).
    let r = app.post(&rotate, &old.basic(), json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the old key is already revoked"
    );
}

#[tokio::test]
async fn rotation_never_extends_an_expiry_and_works_at_the_key_limit() {
    let (app, app_id, _) = setup().await;
    let owner = app.owner();
    let expires = app.clock.now() + Duration::days(1);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "short", "expiresAt": iso(expires)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["key"]["status"], "expiring");
    let short = Key::from_reply(&r);
    for _ in 0..8 {
        app.create_app_key(&owner, &app_id).await;
    }
    // Ten live keys: a create is refused, a rotation is not.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", short.id),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["previousKey"]["expiresAt"], iso(expires).as_str());

    // Keys created with an expiry stop at it.
    app.clock.advance(Duration::days(1));
    assert!(!works(&app, &app_id, &short.basic()).await);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "past", "expiresAt": iso(app.clock.now())}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "bad", "expiresAt": "tomorrow"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn user_account_and_service_account_keys_rotate() {
    let app = TestApp::spawn().await;
    let owner_key = app.owner_key();
    let r = app.get("/v1/account/keys", &owner_key.basic()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["keys"][0]["id"], owner_key.id.as_str());
    let r = app
        .post(
            &format!("/v1/account/keys/{}/rotate", owner_key.id),
            &owner_key.basic(),
            json!({"graceSeconds": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let new_owner = Key::from_reply(&r);
    assert!(new_owner.id.starts_with("act_"));
    assert_eq!(
        app.get("/v1/account", &owner_key.basic()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/account", &new_owner.basic()).await.status,
        StatusCode::OK
    );

    let owner = new_owner.basic();
    let sa = app.create_service_account(&owner).await;
    let sa_key = app.create_service_account_key(&owner, &sa).await;
    // Only user-account keys use /v1/account/keys.
    let r = app.get("/v1/account/keys", &sa_key.basic()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            &format!("/v1/serviceAccounts/{sa}/keys/{}/rotate", sa_key.id),
            &owner,
            json!({"graceSeconds": 60}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let sa_new = Key::from_reply(&r);
    assert!(sa_new.id.starts_with("svc_"));
    assert_eq!(
        app.get("/v1/apps", &sa_key.basic()).await.status,
        StatusCode::OK
    );
    app.clock.advance(Duration::seconds(60));
    assert_eq!(
        app.get("/v1/apps", &sa_key.basic()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/apps", &sa_new.basic()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn max_token_ttl_is_enforced_on_app_jwts() {
    let (app, app_id, key) = setup().await;
    let owner = app.owner();
    let path = format!("/v1/apps/{app_id}");
    for bad in [json!(0), json!(59), json!("600"), json!(1.5)] {
        let r = app
            .patch(
                &path,
                &owner,
                json!({"settings": {"maxTokenTtlSeconds": bad}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = app
        .patch(
            &path,
            &owner,
            json!({"settings": {"maxTokenTtlSeconds": 600}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let now = app.clock.now().unix_timestamp();
    let no_exp = key.jwt(json!({"scope": "appUser", "userId": "u"}));
    let r = app.get(&format!("{path}/users/u"), &no_exp).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let too_long = key.jwt(json!({"scope": "app", "iat": now, "exp": now + 601}));
    assert!(!works(&app, &app_id, &too_long).await);
    let fine = key.jwt(json!({"scope": "app", "iat": now, "exp": now + 600}));
    assert!(works(&app, &app_id, &fine).await);
    assert!(
        works(&app, &app_id, &key.basic()).await,
        "Basic is not a JWT"
    );
    let r = app
        .patch(
            &path,
            &owner,
            json!({"settings": {"maxTokenTtlSeconds": null}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let unlimited = key.jwt(json!({"scope": "app"}));
    assert!(works(&app, &app_id, &unlimited).await);
}

#[tokio::test]
async fn key_notices_are_recorded_once_and_old_keys_are_due_for_rotation() {
    let (app, app_id, key) = setup().await;
    let owner = app.owner();
    let state = app.server.as_ref().expect("running").state.clone();
    let expires = app.clock.now() + Duration::days(10);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "temp", "expiresAt": iso(expires)}),
        )
        .await;
    let temp = Key::from_reply(&r);
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &owner,
            json!({"settings": {"maxKeyAgeDays": 5}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let actions = |r: &common::Reply| -> Vec<String> {
        r.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["actor"]["type"] == "system")
            .map(|e| {
                format!(
                    "{} {}",
                    e["action"].as_str().unwrap_or(""),
                    e["target"]["id"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(
        latchkey_server::maintenance::run_key_notices(&state)
            .await
            .expect("run"),
        0
    );
    app.clock.advance(Duration::days(3) + Duration::seconds(1));
    assert_eq!(
        latchkey_server::maintenance::run_key_notices(&state)
            .await
            .expect("run"),
        1
    );
    app.clock.advance(Duration::days(2));
    // 5 days old: both keys are due for rotation.
    let r = app
        .get(&format!("/v1/apps/{app_id}/keys/{}", key.id), &owner)
        .await;
    assert_eq!(r.body["key"]["rotationDue"], true);
    assert_eq!(
        latchkey_server::maintenance::run_key_notices(&state)
            .await
            .expect("run"),
        2
    );
    assert_eq!(
        latchkey_server::maintenance::run_key_notices(&state)
            .await
            .expect("run"),
        0,
        "once"
    );
    app.clock.advance(Duration::days(4));
    assert_eq!(
        latchkey_server::maintenance::run_key_notices(&state)
            .await
            .expect("run"),
        1,
        "1 day left"
    );
    app.clock.advance(Duration::days(1));
    let n = latchkey_server::maintenance::run_key_notices(&state)
        .await
        .expect("run");
    if n != 1 {
        // Rare on PostgreSQL under CI load: show who recorded what.
        let audit = app
            .get(&format!("/v1/apps/{app_id}/audit?limit=100"), &owner)
            .await;
        let temp_key = app
            .get(&format!("/v1/apps/{app_id}/keys/{}", temp.id), &owner)
            .await;
        eprintln!("audit: {:#}\ntemp key: {:#}", audit.body, temp_key.body);
    }
    assert_eq!(n, 1, "expired");
    assert!(!works(&app, &app_id, &temp.basic()).await);

    let r = app
        .get(&format!("/v1/apps/{app_id}/audit?limit=100"), &owner)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mut got = actions(&r);
    got.reverse();
    assert_eq!(
        got,
        vec![
            format!("key.expiring {}", temp.id),
            format!("key.rotationDue {}", key.id),
            format!("key.rotationDue {}", temp.id),
            format!("key.expiring {}", temp.id),
            format!("key.expired {}", temp.id),
        ]
    );
}

#[tokio::test]
async fn repeated_rotation_cannot_pile_up_working_keys() {
    let app = TestApp::spawn_with(|c| c.max_keys_per_owner = 2).await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Chain").await;
    let mut key = app.create_app_key(&owner, &app_id).await;
    let mut working = vec![key.clone()];
    // Up to twice the limit may work at once (keys in grace included).
    for _ in 0..3 {
        let r = app
            .post(
                &format!("/v1/apps/{app_id}/keys/{}/rotate", key.id),
                &owner,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        key = Key::from_reply(&r);
        working.push(key.clone());
    }
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", key.id),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    for k in &working {
        assert!(works(&app, &app_id, &k.basic()).await);
    }
    // Revoking an old key makes room again.
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", working[0].id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", key.id),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_expiring_key_hands_its_lifetime_on_and_keeps_its_last_use() {
    let (app, app_id, _) = setup().await;
    let owner = app.owner();
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "weekly", "expiresAt": iso(app.clock.now() + Duration::days(7))}),
        )
        .await;
    let weekly = Key::from_reply(&r);
    app.clock.advance(Duration::days(2));
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", weekly.id),
            &owner,
            json!({"graceSeconds": 3600}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.body["key"]["expiresAt"],
        iso(app.clock.now() + Duration::days(7)).as_str(),
        "the successor gets the same seven days"
    );
    // The old key's last use just before it expires survives its removal
    // from the index.
    app.clock.advance(Duration::minutes(50));
    let used = app.clock.now();
    assert!(works(&app, &app_id, &weekly.basic()).await);
    app.clock.advance(Duration::minutes(11));
    let state = app.server.as_ref().expect("running").state.clone();
    latchkey_server::maintenance::run_key_notices(&state)
        .await
        .expect("notices");
    let r = app
        .get(&format!("/v1/apps/{app_id}/keys/{}", weekly.id), &owner)
        .await;
    assert_eq!(r.body["key"]["status"], "expired");
    assert_eq!(r.body["key"]["lastUsedAt"], iso(used).as_str());
}

/// `expiring` means "stops working soon": within the 7-day notice window,
/// or rotated and in its grace period. A key that merely has a distant
/// `expiresAt` is `active`, and becomes `expiring` as the window opens.
#[tokio::test]
async fn a_key_is_expiring_only_within_the_notice_window_or_when_rotated() {
    let (app, app_id, plain) = setup().await;
    let owner = app.owner();
    let status = |id: String| {
        let app = &app;
        let owner = owner.clone();
        let app_id = app_id.clone();
        async move {
            let r = app
                .get(&format!("/v1/apps/{app_id}/keys/{id}"), &owner)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            r.body["key"]["status"]
                .as_str()
                .expect("status")
                .to_string()
        }
    };
    let create = |days: i64| {
        let app = &app;
        let owner = owner.clone();
        let app_id = app_id.clone();
        async move {
            let expires = app.clock.now() + Duration::days(days);
            let r = app
                .post(
                    &format!("/v1/apps/{app_id}/keys"),
                    &owner,
                    json!({"displayName": format!("in {days} days"), "expiresAt": iso(expires)}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            (
                r.body["key"]["status"]
                    .as_str()
                    .expect("status")
                    .to_string(),
                Key::from_reply(&r),
            )
        }
    };
    let (s30, in30) = create(30).await;
    assert_eq!(s30, "active", "30 days away is outside the notice window");
    let (s3, in3) = create(3).await;
    assert_eq!(s3, "expiring", "3 days away is within the notice window");
    assert_eq!(status(plain.id.clone()).await, "active");

    // Rotated with the default grace (30 days): expiring at once.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", plain.id),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let replacement = Key::from_reply(&r);
    assert_eq!(r.body["key"]["status"], "active");
    assert_eq!(status(plain.id.clone()).await, "expiring");
    assert_eq!(status(replacement.id.clone()).await, "active");

    // 23 days later the 30-day key enters its notice window; the 3-day key
    // has expired.
    app.clock.advance(Duration::days(23));
    assert_eq!(status(in30.id.clone()).await, "expiring");
    assert_eq!(status(in3.id.clone()).await, "expired");
    assert_eq!(status(plain.id.clone()).await, "expiring");
    app.clock.advance(Duration::days(8));
    assert_eq!(status(plain.id.clone()).await, "expired");
    assert_eq!(status(in30.id.clone()).await, "expired");
}
