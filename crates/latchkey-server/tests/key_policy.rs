//! Least-privilege keys (issue 18) over real HTTP: permissions on
//! Latchkey's own endpoints and in `/v1/verify`, address and origin
//! restrictions, rate limits, credits, metadata, rotation carrying all of
//! it, and the rules that keep a restricted key from making itself a
//! stronger one.

mod common;

use common::{Key, Reply, StatusCode, TestApp};
use serde_json::{Value, json};

/// A service account of the owner's account, granted nothing, and a key
/// of it made with `policy` (merged into the create body).
async fn sa_key(app: &TestApp, policy: Value) -> (String, Key) {
    let owner = app.owner();
    let sa = app.create_service_account(&owner).await;
    let mut body = json!({"displayName": "restricted"});
    body.as_object_mut()
        .expect("object")
        .extend(policy.as_object().expect("policy object").clone());
    let r = app
        .post(&format!("/v1/serviceAccounts/{sa}/keys"), &owner, body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (sa, Key::from_reply(&r))
}

/// An app key made with `policy`.
async fn app_key(app: &TestApp, app_id: &str, policy: Value) -> (Reply, Key) {
    let mut body = json!({"displayName": "with policy"});
    body.as_object_mut()
        .expect("object")
        .extend(policy.as_object().expect("policy object").clone());
    let r = app
        .post(&format!("/v1/apps/{app_id}/keys"), &app.owner(), body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = Key::from_reply(&r);
    (r, key)
}

async fn verify(app: &TestApp, body: Value) -> Value {
    let r = app.post("/v1/verify", &app.operator(), body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn a_key_with_only_operator_permissions_calls_none_of_latchkeys_endpoints() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let plain = app.create_app_key(&owner, &app_id).await;
    // An account-scope key that reaches the app (its service account
    // created it) but carries only a name of the operator's own API.
    let (sa, key) = sa_key(&app, json!({"permissions": ["messages:write"]})).await;
    let r = app
        .put(&format!("/v1/serviceAccounts/{sa}/apps/{app_id}"), &owner)
        .await;
    assert!(r.status.is_success(), "grant: {:?}", r.body);
    let auth = key.basic();
    let a = format!("/v1/apps/{app_id}");
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/account".into(), None),
        ("GET", "/v1/apps".into(), None),
        ("POST", "/v1/apps".into(), Some(json!({"displayName": "x"}))),
        ("GET", a.clone(), None),
        ("PATCH", a.clone(), Some(json!({"displayName": "y"}))),
        ("GET", format!("{a}/keys"), None),
        (
            "POST",
            format!("{a}/keys"),
            Some(json!({"displayName": "k", "permissions": ["messages:write"]})),
        ),
        ("GET", format!("{a}/keys/{}", plain.id), None),
        (
            "PATCH",
            format!("{a}/keys/{}", plain.id),
            Some(json!({"displayName": "k2"})),
        ),
        (
            "POST",
            format!("{a}/keys/{}/rotate", plain.id),
            Some(json!({})),
        ),
        ("DELETE", format!("{a}/keys/{}", plain.id), None),
        ("GET", format!("{a}/users"), None),
        (
            "POST",
            format!("{a}/users"),
            Some(json!({"externalId": "u1"})),
        ),
        ("GET", format!("{a}/users/u1"), None),
        ("POST", format!("{a}/users/u1/tokens"), Some(json!({}))),
        ("GET", format!("{a}/webhooks"), None),
        (
            "POST",
            format!("{a}/webhooks"),
            Some(json!({"target": "https://example.com/h", "triggers": ["key:created"]})),
        ),
        ("GET", format!("{a}/audit"), None),
        ("GET", "/v1/audit".into(), None),
        ("GET", format!("{a}/usage"), None),
        ("GET", "/v1/usage".into(), None),
        ("GET", "/v1/serviceAccounts".into(), None),
        ("GET", format!("/v1/serviceAccounts/{sa}"), None),
        (
            "POST",
            "/v1/serviceAccounts".into(),
            Some(json!({"displayName": "z"})),
        ),
        ("DELETE", a.clone(), None),
    ];
    for (method, path, body) in calls {
        let r = app
            .call(method.parse().expect("method"), &path, Some(&auth), body)
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            r.body
        );
        assert_eq!(r.code(), "insufficient_permissions", "{method} {path}");
        let title = r.body["errors"][0]["title"].as_str().unwrap_or("");
        assert!(
            title.contains("latchkey:"),
            "{method} {path}: the title names the permission: {title}"
        );
    }
    // Nothing was changed: the plain key still works, the app is there.
    let r = app.get(&format!("{a}/keys/{}", plain.id), &owner).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["key"]["displayName"], "test key");
}

#[tokio::test]
async fn builtin_permissions_allow_exactly_their_operations() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    // The seeds' Auth key: users and tokens, nothing else.
    let (r, minter) = app_key(
        &app,
        &app_id,
        json!({"permissions": ["latchkey:tokens.mint", "latchkey:users.write", "latchkey:users.read"]}),
    )
    .await;
    assert_eq!(
        r.body["key"]["permissions"],
        json!([
            "latchkey:tokens.mint",
            "latchkey:users.read",
            "latchkey:users.write"
        ])
    );
    let auth = minter.basic();
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users"),
            &auth,
            json!({"externalId": "alice"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/alice"), &auth)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users/alice/tokens"),
            &auth,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &auth,
            json!({"settings": {"x": 1}}),
        )
        .await;
    assert_eq!(r.code(), "insufficient_permissions");
    // A read-only key reads but does not write.
    let (_, reader) = app_key(
        &app,
        &app_id,
        json!({"permissions": ["latchkey:users.read"]}),
    )
    .await;
    let r = app
        .get(&format!("/v1/apps/{app_id}/users"), &reader.basic())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .delete(&format!("/v1/apps/{app_id}/users/alice"), &reader.basic())
        .await;
    assert_eq!(r.code(), "insufficient_permissions");
    // The appUser JWTs of a key can do at most what the key can.
    let jwt = reader.jwt(json!({"scope": "appUser", "userId": "alice"}));
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/alice"), &jwt)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (_, nothing) = app_key(&app, &app_id, json!({"permissions": []})).await;
    let jwt = nothing.jwt(json!({"scope": "appUser", "userId": "alice"}));
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/alice"), &jwt)
        .await;
    assert_eq!(r.code(), "insufficient_permissions");
}

#[tokio::test]
async fn a_restricted_key_cannot_make_itself_stronger() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (sa, admin) = sa_key(
        &app,
        json!({"permissions": ["latchkey:keys.write", "latchkey:keys.read", "messages:read"]}),
    )
    .await;
    let r = app
        .put(&format!("/v1/serviceAccounts/{sa}/apps/{app_id}"), &owner)
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let auth = admin.basic();
    let keys = format!("/v1/apps/{app_id}/keys");
    // Without a list the new key would have every permission.
    let r = app.post(&keys, &auth, json!({"displayName": "full"})).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "insufficient_permissions")
    );
    let r = app
        .post(
            &keys,
            &auth,
            json!({"displayName": "more", "permissions": ["messages:write"]}),
        )
        .await;
    assert_eq!(r.code(), "insufficient_permissions", "{:?}", r.body);
    let r = app
        .post(
            &keys,
            &auth,
            json!({"displayName": "less", "permissions": ["messages:read"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let less = Key::from_reply(&r);
    let r = app
        .patch(
            &format!("{keys}/{}", less.id),
            &auth,
            json!({"permissions": null}),
        )
        .await;
    assert_eq!(r.code(), "insufficient_permissions");
    // Rotating an unrestricted key would hand over its successor's secret.
    let full = app.create_app_key(&owner, &app_id).await;
    let r = app
        .post(&format!("{keys}/{}/rotate", full.id), &auth, json!({}))
        .await;
    assert_eq!(r.code(), "insufficient_permissions");
    // Nor can it change itself.
    let r = app
        .patch(
            &format!("/v1/serviceAccounts/{sa}/keys/{}", admin.id),
            &auth,
            json!({"permissions": ["latchkey:keys.write"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = app
        .get(
            &format!("/v1/serviceAccounts/{sa}/keys/{}", admin.id),
            &owner,
        )
        .await;
    assert_eq!(
        r.body["key"]["permissions"],
        json!(["latchkey:keys.read", "latchkey:keys.write", "messages:read"])
    );
}

#[tokio::test]
async fn verify_checks_permissions_addresses_and_origins_and_returns_meta() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (r, key) = app_key(
        &app,
        &app_id,
        json!({
            "permissions": ["messages:read", "messages:write"],
            "restrictions": {"allowedIps": ["203.0.113.7/24", "2001:db8::/32"],
                             "allowedOrigins": ["https://app.example.com"]},
            "meta": {"plan": "pro", "limits": {"seats": 5}}
        }),
    )
    .await;
    assert_eq!(
        r.body["key"]["restrictions"]["allowedIps"],
        json!(["2001:db8::/32", "203.0.113.0/24"])
    );
    let jwt = key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    let ok = verify(
        &app,
        json!({"authorization": key.basic(), "appId": app_id, "permissions": "messages:read", "ip": "203.0.113.99"}),
    )
    .await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["meta"], json!({"plan": "pro", "limits": {"seats": 5}}));
    assert_eq!(
        ok["permissions"],
        json!(["messages:read", "messages:write"])
    );
    let ok = verify(
        &app,
        json!({"authorization": jwt, "permissions": ["messages:read", "messages:write"],
               "ip": "2001:db8:5::1", "origin": "https://app.example.com"}),
    )
    .await;
    assert_eq!(ok["valid"], true, "{ok}");
    for (body, code) in [
        (
            json!({"authorization": key.basic(), "permissions": ["messages:read", "admin"], "ip": "203.0.113.1"}),
            "insufficient_permissions",
        ),
        (
            json!({"authorization": key.basic(), "ip": "198.51.100.1"}),
            "ip_not_allowed",
        ),
        (json!({"authorization": key.basic()}), "ip_not_allowed"),
        (
            json!({"authorization": jwt, "ip": "203.0.113.1", "origin": "https://evil.example"}),
            "origin_not_allowed",
        ),
    ] {
        let out = verify(&app, body.clone()).await;
        assert_eq!(
            (out["valid"].clone(), out["code"].as_str()),
            (json!(false), Some(code)),
            "{body}: {out}"
        );
    }
    // A key without a policy carries every permission, as before.
    let plain = app.create_app_key(&owner, &app_id).await;
    let out = verify(
        &app,
        json!({"authorization": plain.basic(), "permissions": "anything"}),
    )
    .await;
    assert_eq!(out["valid"], true);
    assert!(
        out.get("permissions").is_none() && out.get("meta").is_none(),
        "{out}"
    );
}

#[tokio::test]
async fn own_api_checks_the_peer_address_and_the_origin() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (_, elsewhere) = app_key(
        &app,
        &app_id,
        json!({"restrictions": {"allowedIps": ["10.0.0.0/8"]}}),
    )
    .await;
    let r = app
        .get(&format!("/v1/apps/{app_id}/users"), &elsewhere.basic())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "ip_not_allowed"),
        "{:?}",
        r.body
    );
    let (_, here) = app_key(
        &app,
        &app_id,
        json!({"restrictions": {"allowedIps": ["127.0.0.1", "::1"]}}),
    )
    .await;
    let r = app
        .get(&format!("/v1/apps/{app_id}/users"), &here.basic())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (_, origins) = app_key(
        &app,
        &app_id,
        json!({"restrictions": {"allowedOrigins": ["https://a.example"]}}),
    )
    .await;
    let jwt = origins.jwt(json!({"scope": "appUser", "userId": "bob"}));
    let from = |origin: &'static str| {
        app.http
            .get(app.url(&format!("/v1/apps/{app_id}/users/bob")))
            .header("authorization", jwt.clone())
            .header("origin", origin)
    };
    let r = TestApp::send(from("https://b.example")).await;
    assert_eq!(r.code(), "origin_not_allowed", "{:?}", r.body);
    let r = TestApp::send(from("https://a.example")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn rate_limits_refuse_with_429_and_headers_and_count_app_users_apart() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (_, key) = app_key(
        &app,
        &app_id,
        json!({"ratelimit": {"limit": 3, "windowSeconds": 60}}),
    )
    .await;
    let users = format!("/v1/apps/{app_id}/users");
    // Verifications and the key's own API calls share one count.
    let v = verify(&app, json!({"authorization": key.basic()})).await;
    assert_eq!(v["ratelimit"]["limit"], 3);
    assert_eq!(v["ratelimit"]["remaining"], 2);
    assert!(
        v["ratelimit"]["resetAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    for _ in 0..2 {
        let r = app.get(&users, &key.basic()).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = app.get(&users, &key.basic()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let retry: i64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers["ratelimit-policy"], "\"key\";q=3;w=60");
    assert_eq!(
        r.headers["ratelimit"].to_str().expect("ascii"),
        format!("\"key\";r=0;t={retry}")
    );
    let v = verify(&app, json!({"authorization": key.basic()})).await;
    assert_eq!(v["code"], "rate_limited", "{v}");
    assert_eq!(v["retryAfterSeconds"], retry);
    // appUser JWTs are counted per user: alice is not stopped by the
    // key's own count, nor by bob's.
    let alice = key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    let bob = key.jwt(json!({"scope": "appUser", "userId": "bob"}));
    for _ in 0..3 {
        assert_eq!(
            verify(&app, json!({"authorization": alice})).await["valid"],
            true
        );
    }
    assert_eq!(
        verify(&app, json!({"authorization": alice})).await["code"],
        "rate_limited"
    );
    assert_eq!(
        verify(&app, json!({"authorization": bob})).await["valid"],
        true
    );
    // The next window admits again.
    app.clock.advance(time::Duration::seconds(60));
    let r = app.get(&users, &key.basic()).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_apps_default_limit_applies_to_keys_without_their_own() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let key = app.create_app_key(&owner, &app_id).await;
    let (_, own) = app_key(
        &app,
        &app_id,
        json!({"ratelimit": {"limit": 5, "windowSeconds": 60}}),
    )
    .await;
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &owner,
            json!({"settings": {"defaultKeyRatelimit": {"limit": 1, "windowSeconds": 3600.0}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["app"]["settings"]["defaultKeyRatelimit"],
        json!({"limit": 1, "windowSeconds": 3600})
    );
    assert_eq!(
        verify(&app, json!({"authorization": key.basic()})).await["valid"],
        true
    );
    assert_eq!(
        verify(&app, json!({"authorization": key.basic()})).await["code"],
        "rate_limited"
    );
    for _ in 0..2 {
        assert_eq!(
            verify(&app, json!({"authorization": own.basic()})).await["valid"],
            true
        );
    }
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &owner,
            json!({"settings": {"defaultKeyRatelimit": {"limit": 0, "windowSeconds": 60}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &owner,
            json!({"settings": {"defaultKeyRatelimit": null}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        verify(&app, json!({"authorization": key.basic()})).await["valid"],
        true
    );
}

#[tokio::test]
async fn credits_are_spent_refused_at_zero_set_through_the_api_and_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (r, key) = app_key(&app, &app_id, json!({"credits": {"remaining": 5}})).await;
    assert_eq!(r.body["key"]["credits"], json!({"remaining": 5}));
    let v = verify(&app, json!({"authorization": key.basic(), "cost": 3})).await;
    assert_eq!(v["credits"], json!({"remaining": 2}), "{v}");
    let v = verify(&app, json!({"authorization": key.basic(), "cost": 3})).await;
    assert_eq!(v["code"], "usage_exceeded", "{v}");
    let v = verify(&app, json!({"authorization": key.basic(), "cost": 0})).await;
    assert_eq!(
        v["credits"],
        json!({"remaining": 2}),
        "cost 0 checks without spending: {v}"
    );
    let v = verify(&app, json!({"authorization": key.basic(), "cost": 2.0})).await;
    assert_eq!(v["credits"], json!({"remaining": 0}), "{v}");
    let v = verify(&app, json!({"authorization": key.basic(), "cost": 0})).await;
    assert_eq!(
        v["code"], "usage_exceeded",
        "an empty balance refuses even a free check: {v}"
    );
    let path = format!("/v1/apps/{app_id}/keys/{}", key.id);
    assert_eq!(
        app.get(&path, &owner).await.body["key"]["credits"]["remaining"],
        0
    );
    // Set through the API: audited with the balance.
    let r = app
        .patch(&path, &owner, json!({"credits": {"remaining": 10}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["key"]["credits"]["remaining"], 10);
    let audit = app.get(&format!("/v1/apps/{app_id}/audit"), &owner).await;
    let updated = audit.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "key.updated")
        .cloned()
        .expect("a key.updated event");
    assert_eq!(updated["details"]["creditsRemaining"], 10, "{updated}");
    let v = verify(&app, json!({"authorization": key.basic()})).await;
    assert_eq!(v["credits"]["remaining"], 9);
    // Spending is written to the store at shutdown (and every second).
    app.restart().await;
    assert_eq!(
        app.get(&path, &owner).await.body["key"]["credits"]["remaining"],
        9
    );
    let v = verify(&app, json!({"authorization": key.basic()})).await;
    assert_eq!(v["credits"]["remaining"], 8, "{v}");
    // A refill resets the balance at the start of each day.
    let r = app
        .patch(
            &path,
            &owner,
            json!({"credits": {"refill": {"amount": 100, "interval": "day"}}}),
        )
        .await;
    assert_eq!(
        r.body["key"]["credits"],
        json!({"remaining": 8, "refill": {"amount": 100, "interval": "day"}})
    );
    app.clock.advance(time::Duration::days(1));
    let v = verify(&app, json!({"authorization": key.basic()})).await;
    assert_eq!(v["credits"]["remaining"], 99, "{v}");
}

#[tokio::test]
async fn a_refused_check_spends_neither_credits_nor_rate_limit() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (_, key) = app_key(
        &app,
        &app_id,
        json!({"ratelimit": {"limit": 2, "windowSeconds": 60}, "credits": {"remaining": 1},
               "permissions": ["messages:read"]}),
    )
    .await;
    for _ in 0..5 {
        let v = verify(
            &app,
            json!({"authorization": key.basic(), "permissions": "messages:write"}),
        )
        .await;
        assert_eq!(v["code"], "insufficient_permissions");
    }
    let v = verify(&app, json!({"authorization": key.basic()})).await;
    assert_eq!(
        (
            v["ratelimit"]["remaining"].clone(),
            v["credits"]["remaining"].clone()
        ),
        (json!(1), json!(0)),
        "{v}"
    );
    // Out of credits: refused, and the rate-limit count is given back.
    for _ in 0..3 {
        assert_eq!(
            verify(&app, json!({"authorization": key.basic()})).await["code"],
            "usage_exceeded"
        );
    }
    let path = format!("/v1/apps/{app_id}/keys/{}", key.id);
    let r = app
        .patch(&path, &owner, json!({"credits": {"remaining": 5}}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = verify(&app, json!({"authorization": key.basic()})).await;
    assert_eq!(v["ratelimit"]["remaining"], 0, "{v}");
}

#[tokio::test]
async fn rotation_carries_the_policy_and_the_balance_to_the_successor() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (_, key) = app_key(
        &app,
        &app_id,
        json!({"permissions": ["messages:read"], "restrictions": {"allowedOrigins": ["https://a.example"]},
               "ratelimit": {"limit": 9, "windowSeconds": 10}, "credits": {"remaining": 7},
               "meta": {"tier": 2}}),
    )
    .await;
    verify(&app, json!({"authorization": key.basic(), "cost": 2})).await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", key.id),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let new = &r.body["key"];
    assert_eq!(new["permissions"], json!(["messages:read"]));
    assert_eq!(
        new["restrictions"],
        json!({"allowedOrigins": ["https://a.example"]})
    );
    assert_eq!(new["ratelimit"], json!({"limit": 9, "windowSeconds": 10}));
    assert_eq!(new["credits"], json!({"remaining": 5}));
    assert_eq!(new["meta"], json!({"tier": 2}));
    let successor = Key::from_reply(&r);
    let v = verify(
        &app,
        json!({"authorization": successor.basic(), "permissions": "messages:write"}),
    )
    .await;
    assert_eq!(v["code"], "insufficient_permissions");
    let v = verify(&app, json!({"authorization": successor.basic()})).await;
    assert_eq!(
        (v["credits"]["remaining"].clone(), v["meta"].clone()),
        (json!(4), json!({"tier": 2}))
    );
}

#[tokio::test]
async fn bad_policies_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let keys = format!("/v1/apps/{app_id}/keys");
    for bad in [
        json!({"permissions": "messages:write"}),
        json!({"permissions": ["Messages"]}),
        json!({"permissions": ["latchkey:everything"]}),
        json!({"permissions": vec!["a"; 101]}),
        json!({"restrictions": {"allowedIps": ["10.0.0.0/33"]}}),
        json!({"restrictions": {"allowedIps": []}}),
        json!({"restrictions": {"allowedOrigins": ["https://a.example/"]}}),
        json!({"restrictions": {"other": []}}),
        json!({"ratelimit": {"limit": 0, "windowSeconds": 60}}),
        json!({"ratelimit": {"limit": 1, "windowSeconds": 86401}}),
        json!({"ratelimit": {"limit": 1}}),
        json!({"credits": {"remaining": -1}}),
        json!({"credits": {"refill": {"amount": 5, "interval": "day"}}}),
        json!({"credits": {"remaining": 1, "refill": {"amount": 5, "interval": "week"}}}),
        json!({"meta": [1]}),
        json!({"meta": {"x": "y".repeat(5000)}}),
    ] {
        let mut body = json!({"displayName": "bad"});
        body.as_object_mut()
            .expect("object")
            .extend(bad.as_object().expect("object").clone());
        let r = app.post(&keys, &owner, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert_eq!(r.code(), "bad_request");
    }
    assert_eq!(app.get(&keys, &owner).await.body["keys"], json!([]));
    let (_, key) = app_key(&app, &app_id, json!({"meta": {"a": 1}})).await;
    let path = format!("{keys}/{}", key.id);
    for bad in [
        json!({}),
        json!({"permissions": 5}),
        json!({"unknown": 1}),
        json!({"displayName": ""}),
    ] {
        let r = app.patch(&path, &owner, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
    }
    let r = app.get(&path, &owner).await;
    assert_eq!(r.body["key"]["meta"], json!({"a": 1}));
    assert_eq!(r.body["key"]["displayName"], "with policy");
    // A removed member is gone from the key and from verification.
    let r = app
        .patch(
            &path,
            &owner,
            json!({"meta": null, "displayName": "renamed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["key"].get("meta").is_none(), "{:?}", r.body);
    assert_eq!(r.body["key"]["displayName"], "renamed");
    let v = verify(&app, json!({"authorization": key.basic()})).await;
    assert!(v.get("meta").is_none(), "{v}");
}

/// The app's audit events with `action`, waiting up to 5 s for `count` of
/// them (notices are recorded off the verification path).
async fn events(app: &TestApp, app_id: &str, action: &str, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = app
            .get(&format!("/v1/apps/{app_id}/audit?limit=100"), &app.owner())
            .await;
        let found: Vec<Value> = r.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect();
        if found.len() >= count || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rate_limited_and_credits_low_are_noticed_once() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/webhooks"),
            &owner,
            json!({"target": "https://example.com/hook",
                   "triggers": ["key:rate-limited", "key:credits-low"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let (_, key) = app_key(
        &app,
        &app_id,
        json!({"ratelimit": {"limit": 1, "windowSeconds": 60}, "credits": {"remaining": 20}}),
    )
    .await;
    // Three refusals in one window: one notice.
    assert_eq!(
        verify(&app, json!({"authorization": key.basic()})).await["valid"],
        true
    );
    for _ in 0..3 {
        assert_eq!(
            verify(&app, json!({"authorization": key.basic()})).await["code"],
            "rate_limited"
        );
    }
    let limited = events(&app, &app_id, "key.rateLimited", 1).await;
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0]["details"]["keyId"], key.id.as_str());
    assert_eq!(limited[0]["details"]["limit"], 1);
    // The next window's first refusal is noticed again.
    app.clock.advance(time::Duration::seconds(60));
    assert_eq!(
        verify(&app, json!({"authorization": key.basic(), "cost": 17})).await["credits"]["remaining"],
        2
    );
    assert_eq!(
        verify(&app, json!({"authorization": key.basic()})).await["code"],
        "rate_limited"
    );
    assert_eq!(events(&app, &app_id, "key.rateLimited", 2).await.len(), 2);
    // 20 → 2 crossed 10 %; 2 → 0 reaches zero: two notices, no more.
    let low = events(&app, &app_id, "key.creditsLow", 1).await;
    assert_eq!(low.len(), 1, "{low:?}");
    assert_eq!(
        (
            low[0]["details"]["remaining"].clone(),
            low[0]["details"]["full"].clone()
        ),
        (json!(2), json!(20))
    );
    app.clock.advance(time::Duration::seconds(60));
    assert_eq!(
        verify(&app, json!({"authorization": key.basic(), "cost": 2})).await["credits"]["remaining"],
        0
    );
    let low = events(&app, &app_id, "key.creditsLow", 2).await;
    assert_eq!(low.len(), 2, "{low:?}");
    assert_eq!(low[0]["details"]["remaining"], 0, "newest first");
}

#[tokio::test]
async fn a_minted_token_carries_the_minting_keys_policy() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    // An unrestricted key exists and is newer than the minter.
    let (_, minter) = app_key(
        &app,
        &app_id,
        json!({"permissions": ["latchkey:tokens.mint", "messages:read"], "credits": {"remaining": 3}}),
    )
    .await;
    let admin = app.create_app_key(&owner, &app_id).await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users/alice/tokens"),
            &minter.basic(),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = format!("Bearer {}", r.body["token"].as_str().expect("token"));
    let v = verify(
        &app,
        json!({"authorization": token, "permissions": "messages:write"}),
    )
    .await;
    assert_eq!(
        v["code"], "insufficient_permissions",
        "signed by the minter, not by {}: {v}",
        admin.id
    );
    let v = verify(&app, json!({"authorization": token})).await;
    assert_eq!(
        (v["keyId"].clone(), v["credits"]["remaining"].clone()),
        (json!(minter.id), json!(2)),
        "{v}"
    );
    // An account-scope caller with a permission list gets a token of a
    // key it could have made.
    let (sa, robot) = sa_key(
        &app,
        json!({"permissions": ["latchkey:tokens.mint", "messages:read"]}),
    )
    .await;
    let r = app
        .put(&format!("/v1/serviceAccounts/{sa}/apps/{app_id}"), &owner)
        .await;
    assert!(r.status.is_success());
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users/bob/tokens"),
            &robot.basic(),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = format!("Bearer {}", r.body["token"].as_str().expect("token"));
    let v = verify(&app, json!({"authorization": token})).await;
    assert_eq!(v["keyId"], minter.id.as_str(), "{v}");
}

#[tokio::test]
async fn a_rotated_key_spends_its_successors_balance() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (_, old) = app_key(&app, &app_id, json!({"credits": {"remaining": 5}})).await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", old.id),
            &owner,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let new = Key::from_reply(&r);
    assert_eq!(
        verify(&app, json!({"authorization": old.basic(), "cost": 2})).await["credits"]["remaining"],
        3
    );
    assert_eq!(
        verify(&app, json!({"authorization": new.basic(), "cost": 3})).await["credits"]["remaining"],
        0
    );
    assert_eq!(
        verify(&app, json!({"authorization": old.basic()})).await["code"],
        "usage_exceeded"
    );
    let keys = format!("/v1/apps/{app_id}/keys");
    assert_eq!(
        app.get(&format!("{keys}/{}", old.id), &owner).await.body["key"]["credits"]["remaining"],
        0
    );
    let r = app
        .patch(
            &format!("{keys}/{}", old.id),
            &owner,
            json!({"credits": {"remaining": 9}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = app
        .patch(
            &format!("{keys}/{}", new.id),
            &owner,
            json!({"credits": {"remaining": 9}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        verify(&app, json!({"authorization": old.basic()})).await["credits"]["remaining"],
        8
    );
}

#[tokio::test]
async fn a_restricted_key_cannot_weaken_delete_or_unlimit_stronger_keys() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "A").await;
    let (sa, admin) = sa_key(
        &app,
        json!({"permissions": ["latchkey:keys.write", "latchkey:settings.write"]}),
    )
    .await;
    let r = app
        .put(&format!("/v1/serviceAccounts/{sa}/apps/{app_id}"), &owner)
        .await;
    assert!(r.status.is_success());
    let strong = app.create_app_key(&owner, &app_id).await;
    let path = format!("/v1/apps/{app_id}/keys/{}", strong.id);
    let r = app
        .patch(&path, &admin.basic(), json!({"permissions": []}))
        .await;
    assert_eq!(r.code(), "insufficient_permissions", "{:?}", r.body);
    let r = app.delete(&path, &admin.basic()).await;
    assert_eq!(r.code(), "insufficient_permissions", "{:?}", r.body);
    assert_eq!(app.get(&path, &owner).await.status, StatusCode::OK);
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &admin.basic(),
            json!({"settings": {"defaultKeyRatelimit": {"limit": 1000000, "windowSeconds": 1}}}),
        )
        .await;
    assert_eq!(r.code(), "insufficient_permissions", "{:?}", r.body);
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &admin.basic(),
            json!({"settings": {"theme": "dark"}}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "other settings stay open to it: {:?}",
        r.body
    );
}
