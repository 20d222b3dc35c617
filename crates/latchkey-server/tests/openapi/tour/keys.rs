//! App keys, key expiry and rotation (app and service-account keys), and
//! the caller's own account keys.

use serde_json::json;

use super::{Ops, Robot, Tour, World, id_of, unix};
use crate::common::{Key, StatusCode, TestApp};
use crate::schema::request_errors;

/// What `app_keys_are_created_listed_read_and_deleted` reaches.
pub const APP_KEYS: Ops = &[
    ("post", "/v1/apps/{app_id}/keys"),
    ("get", "/v1/apps/{app_id}/keys"),
    ("get", "/v1/apps/{app_id}/keys/{key_id}"),
    ("delete", "/v1/apps/{app_id}/keys/{key_id}"),
];

/// What `keys_expire_and_rotate` reaches.
pub const EXPIRY_AND_ROTATION: Ops = &[
    ("post", "/v1/apps/{app_id}/keys"),
    ("post", "/v1/apps/{app_id}/keys/{key_id}/rotate"),
    ("get", "/v1/apps/{app_id}/keys/{key_id}"),
    ("get", "/v1/apps/{app_id}/keys"),
    ("post", "/v1/serviceAccounts/{sa_id}/keys"),
    ("post", "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate"),
    ("post", "/v1/serviceAccounts"),
    ("delete", "/v1/serviceAccounts/{sa_id}"),
];

/// What `account_keys_are_listed_and_rotated` reaches.
pub const ACCOUNT_KEYS: Ops = &[
    ("get", "/v1/account/keys"),
    ("post", "/v1/account/keys/{key_id}/rotate"),
];

/// What `public_keys_are_created_read_and_rotated` reaches.
pub const PUBLIC_KEYS: Ops = &[
    ("post", "/v1/apps/{app_id}/keys"),
    ("get", "/v1/apps/{app_id}/keys/{key_id}"),
    ("get", "/v1/apps/{app_id}/keys"),
    ("post", "/v1/apps/{app_id}/keys/{key_id}/rotate"),
    ("post", "/v1/serviceAccounts"),
    ("post", "/v1/serviceAccounts/{sa_id}/keys"),
];

#[tokio::test]
async fn public_keys_are_created_read_and_rotated() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let app_id = app.create_app(&owner_auth, "Chat").await;
    let ap = format!("/v1/apps/{app_id}");
    let jwk = super::public_jwk(false);
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys",
            &format!("{ap}/keys"),
            owner,
            Some(json!({"displayName": "signed elsewhere", "publicKey": jwk})),
            StatusCode::CREATED,
        )
        .await;
    assert!(r.body["key"].get("secret").is_none(), "{:?}", r.body);
    let key_id = id_of(&r, "key");
    t.call(
        "post",
        "/v1/apps/{app_id}/keys",
        &format!("{ap}/keys"),
        owner,
        Some(json!({"displayName": "private", "publicKey": {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"], "d": jwk["x"]}})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/keys/{key_id}",
            &format!("{ap}/keys/{key_id}"),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["key"]["publicKey"], jwk);
    t.call(
        "post",
        "/v1/apps/{app_id}/keys/{key_id}/rotate",
        &format!("{ap}/keys/{key_id}/rotate"),
        owner,
        Some(json!({})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            &format!("{ap}/keys/{key_id}/rotate"),
            owner,
            Some(json!({"graceSeconds": 60, "publicKey": super::public_jwk(true)})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["key"]["algorithm"], "ES256");
    t.call(
        "get",
        "/v1/apps/{app_id}/keys",
        &format!("{ap}/keys"),
        owner,
        None,
        StatusCode::OK,
    )
    .await;
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
    let sa = id_of(&r, "serviceAccount");
    t.call(
        "post",
        "/v1/serviceAccounts/{sa_id}/keys",
        &format!("/v1/serviceAccounts/{sa}/keys"),
        owner,
        Some(json!({"displayName": "robot", "publicKey": super::public_jwk(true)})),
        StatusCode::CREATED,
    )
    .await;
    t.assert_covered(PUBLIC_KEYS);
}

/// What `signing_keys_and_the_jwks` reaches.
pub const SIGNING_KEYS: Ops = &[
    ("post", "/v1/apps/{app_id}/users/{user}/tokens"),
    ("get", "/v1/apps/{app_id}/signingKeys"),
    ("post", "/v1/apps/{app_id}/signingKeys/rotate"),
    ("get", "/v1/apps/{app_id}/jwks.json"),
];

#[tokio::test]
async fn signing_keys_and_the_jwks() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let app_id = app.create_app(&owner_auth, "Chat").await;
    let ap = format!("/v1/apps/{app_id}");
    t.call(
        "get",
        "/v1/apps/{app_id}/jwks.json",
        &format!("{ap}/jwks.json"),
        None,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "post",
        "/v1/apps/{app_id}/users/{user}/tokens",
        &format!("{ap}/users/alice/tokens"),
        owner,
        Some(json!({"alg": "EdDSA", "ttlSeconds": 600})),
        StatusCode::CREATED,
    )
    .await;
    t.call(
        "post",
        "/v1/apps/{app_id}/users/{user}/tokens",
        &format!("{ap}/users/alice/tokens"),
        owner,
        Some(json!({"alg": "none"})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.call(
        "get",
        "/v1/apps/{app_id}/signingKeys",
        &format!("{ap}/signingKeys"),
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/signingKeys/rotate",
            &format!("{ap}/signingKeys/rotate"),
            owner,
            None,
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["signingKeys"][1]["status"], "previous");
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/jwks.json",
            &format!("{ap}/jwks.json"),
            None,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["keys"].as_array().map(Vec::len), Some(2));
    t.call(
        "get",
        "/v1/apps/{app_id}/jwks.json",
        "/v1/apps/ap_0000000000000000000000/jwks.json",
        None,
        None,
        StatusCode::OK,
    )
    .await;
    t.assert_covered(SIGNING_KEYS);
}

/// What `key_policies_are_set_changed_and_verified` reaches.
pub const KEY_POLICIES: Ops = &[
    ("post", "/v1/apps/{app_id}/keys"),
    ("patch", "/v1/apps/{app_id}/keys/{key_id}"),
    ("post", "/v1/serviceAccounts"),
    ("post", "/v1/serviceAccounts/{sa_id}/keys"),
    ("patch", "/v1/serviceAccounts/{sa_id}/keys/{key_id}"),
    ("post", "/v1/verify"),
];

#[tokio::test]
async fn key_policies_are_set_changed_and_verified() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let operator_auth = app.operator();
    let operator = Some(operator_auth.as_str());
    let app_id = app.create_app(&owner_auth, "Chat").await;
    let ap = format!("/v1/apps/{app_id}");
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys",
            &format!("{ap}/keys"),
            owner,
            Some(json!({
                "displayName": "limited",
                "permissions": ["messages:read"],
                "restrictions": {"allowedIps": ["127.0.0.1"], "allowedOrigins": ["https://a.example"]},
                "ratelimit": {"limit": 2, "windowSeconds": 60},
                "credits": {"remaining": 10, "refill": {"amount": 10, "interval": "month"}},
                "meta": {"plan": "pro"}
            })),
            StatusCode::CREATED,
        )
        .await;
    let key = Key::from_reply(&r);
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/keys/{key_id}",
            &format!("{ap}/keys/{}", key.id),
            owner,
            Some(json!({"displayName": "renamed", "restrictions": {"allowedOrigins": null}, "credits": {"remaining": 3}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["key"]["credits"]["remaining"], 3);
    // A key with only operator names calls none of Latchkey's endpoints.
    t.call(
        "get",
        "/v1/apps/{app_id}/users",
        &format!("{ap}/users"),
        Some(&key.basic()),
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    let asked = json!({"authorization": key.basic(), "permissions": "messages:read", "ip": "127.0.0.1", "cost": 1});
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            operator,
            Some(asked.clone()),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["valid"], true, "{:?}", r.body);
    assert_eq!(r.body["meta"], json!({"plan": "pro"}));
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            operator,
            Some(asked),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["code"], "rate_limited", "{:?}", r.body);
    let r = t
        .call(
            "post",
            "/v1/verify",
            "/v1/verify",
            operator,
            Some(json!({"authorization": key.basic(), "permissions": ["messages:write"], "ip": "127.0.0.1"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["code"], "insufficient_permissions");
    // Service-account keys take the same members.
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
    let sa = id_of(&r, "serviceAccount");
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts/{sa_id}/keys",
            &format!("/v1/serviceAccounts/{sa}/keys"),
            owner,
            Some(json!({"displayName": "robot key", "permissions": ["latchkey:apps.read"]})),
            StatusCode::CREATED,
        )
        .await;
    let svc = Key::from_reply(&r);
    t.call(
        "patch",
        "/v1/serviceAccounts/{sa_id}/keys/{key_id}",
        &format!("/v1/serviceAccounts/{sa}/keys/{}", svc.id),
        owner,
        Some(json!({"permissions": null, "ratelimit": {"limit": 100, "windowSeconds": 1}})),
        StatusCode::OK,
    )
    .await;
    t.assert_covered(KEY_POLICIES);
}

#[tokio::test]
async fn app_keys_are_created_listed_read_and_deleted() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let app_id = app.create_app(&owner_auth, "Chat").await;
    let ap = format!("/v1/apps/{app_id}");

    // App keys: the secret only in the create response.
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys",
            &format!("{ap}/keys"),
            owner,
            Some(json!({"displayName": "server"})),
            StatusCode::CREATED,
        )
        .await;
    let key = Key::from_reply(&r);
    assert!(key.secret.starts_with("lksk_"));
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/keys",
            &format!("{ap}/keys"),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(!r.body.to_string().contains(&key.secret));
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/keys/{key_id}",
            &format!("{ap}/keys/{}", key.id),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(r.body["key"].get("secret").is_none());

    // Deletion.
    t.call(
        "delete",
        "/v1/apps/{app_id}/keys/{key_id}",
        &format!("{ap}/keys/{}", key.id),
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(APP_KEYS);
}

#[tokio::test]
async fn keys_expire_and_rotate() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let World { ap, .. } = World::new(&app).await;
    let Robot { sa, svc_basic, .. } = Robot::new(&app).await;

    // Key expiry.
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys",
            &format!("{ap}/keys"),
            owner,
            Some(json!({"displayName": "expiring", "expiresAt": "2027-01-01T00:00:00Z"})),
            StatusCode::CREATED,
        )
        .await;
    // A year away: not within the 7-day notice window.
    assert_eq!(r.body["key"]["status"], "active");
    let lifetime = unix(&r.body["key"]["expiresAt"]) - unix(&r.body["key"]["createdAt"]);
    let expiring = Key::from_reply(&r);
    t.call(
        "post",
        "/v1/apps/{app_id}/keys",
        &format!("{ap}/keys"),
        owner,
        Some(json!({"displayName": "past", "expiresAt": "2020-01-01T00:00:00Z"})),
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Rotation.
    let rotate = format!("{ap}/keys/{}/rotate", expiring.id);
    let bad = json!({"graceSeconds": 2_592_001});
    assert!(
        !request_errors(
            &t.doc,
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            "post",
            &bad
        )
        .is_empty()
    );
    t.call(
        "post",
        "/v1/apps/{app_id}/keys/{key_id}/rotate",
        &rotate,
        owner,
        Some(bad),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            &rotate,
            owner,
            Some(json!({"graceSeconds": 60})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["key"]["rotatedFrom"], expiring.id.as_str());
    // The new key inherits the old key's lifetime.
    assert_eq!(r.body["key"]["status"], "active");
    assert_eq!(
        unix(&r.body["key"]["expiresAt"]) - unix(&r.body["key"]["createdAt"]),
        lifetime
    );
    let rotated = Key::from_reply(&r);
    t.call(
        "post",
        "/v1/apps/{app_id}/keys/{key_id}/rotate",
        &rotate,
        owner,
        None,
        StatusCode::CONFLICT,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            &format!("{ap}/keys/{}/rotate", rotated.id),
            owner,
            None,
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["key"]["status"], "active");
    assert_eq!(
        unix(&r.body["key"]["expiresAt"]) - unix(&r.body["key"]["createdAt"]),
        lifetime
    );
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/keys/{key_id}",
            &format!("{ap}/keys/{}", expiring.id),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["key"]["replacedBy"], rotated.id.as_str());
    t.call(
        "get",
        "/v1/apps/{app_id}/keys",
        &format!("{ap}/keys"),
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
            Some(json!({"displayName": "robot 2", "expiresAt": "2026-06-01T00:00:00+02:00"})),
            StatusCode::CREATED,
        )
        .await;
    let svc2 = Key::from_reply(&r);
    t.call(
        "post",
        "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
        &format!("{sa}/keys/{}/rotate", svc2.id),
        owner,
        Some(json!({})),
        StatusCode::CREATED,
    )
    .await;
    t.call(
        "post",
        "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
        &format!("{sa}/keys/{}/rotate", svc2.id),
        Some(svc_basic.as_str()),
        Some(json!({})),
        StatusCode::FORBIDDEN,
    )
    .await;
    // Rotation cannot pile up working keys: at most twice the live-key
    // limit (10 by default), keys in their grace period included.
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts",
            "/v1/serviceAccounts",
            owner,
            Some(json!({"displayName": "rotor"})),
            StatusCode::CREATED,
        )
        .await;
    let rotor = format!("/v1/serviceAccounts/{}", id_of(&r, "serviceAccount"));
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts/{sa_id}/keys",
            &format!("{rotor}/keys"),
            owner,
            Some(json!({"displayName": "spinning"})),
            StatusCode::CREATED,
        )
        .await;
    let mut current = Key::from_reply(&r).id;
    for _ in 1..20 {
        let r = t
            .call(
                "post",
                "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
                &format!("{rotor}/keys/{current}/rotate"),
                owner,
                None,
                StatusCode::CREATED,
            )
            .await;
        current = Key::from_reply(&r).id;
    }
    let r = t
        .call(
            "post",
            "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
            &format!("{rotor}/keys/{current}/rotate"),
            owner,
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert!(
        r.body["errors"][0]["title"]
            .as_str()
            .is_some_and(|t| t.contains("20 working keys")),
        "{:?}",
        r.body
    );

    // Deletion.
    t.call(
        "delete",
        "/v1/serviceAccounts/{sa_id}",
        &rotor,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(EXPIRY_AND_ROTATION);
}

#[tokio::test]
async fn account_keys_are_listed_and_rotated() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());
    let World {
        app_basic_auth,
        alice_auth,
        ..
    } = World::new(&app).await;
    let app_basic = Some(app_basic_auth.as_str());
    let alice = Some(alice_auth.as_str());
    let Robot { svc_basic, .. } = Robot::new(&app).await;

    let r = t
        .call(
            "get",
            "/v1/account/keys",
            "/v1/account/keys",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let own = r.body["keys"][0]["id"]
        .as_str()
        .expect("own key")
        .to_string();
    for auth in [app_basic, Some(svc_basic.as_str()), op, alice] {
        t.call(
            "get",
            "/v1/account/keys",
            "/v1/account/keys",
            auth,
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    t.call(
        "get",
        "/v1/account/keys",
        "/v1/account/keys?colour=red",
        owner,
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let r = t
        .call(
            "post",
            "/v1/account/keys/{key_id}/rotate",
            &format!("/v1/account/keys/{own}/rotate"),
            owner,
            Some(json!({"graceSeconds": 2_592_000})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(r.body["previousKey"]["id"], own.as_str());
    t.call(
        "post",
        "/v1/account/keys/{key_id}/rotate",
        &format!("/v1/account/keys/{own}/rotate"),
        Some(svc_basic.as_str()),
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    t.call(
        "post",
        "/v1/account/keys/{key_id}/rotate",
        "/v1/account/keys/act_0000000000000000000000/rotate",
        owner,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    t.call(
        "get",
        "/v1/account/keys",
        "/v1/account/keys",
        owner,
        None,
        StatusCode::OK,
    )
    .await;

    t.assert_covered(ACCOUNT_KEYS);
}
