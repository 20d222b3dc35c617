//! `POST /v1/introspect` (RFC 7662) over real HTTP: which tokens are
//! active and what is said about them, that nothing is said about the
//! others, how the caller authenticates, and bad requests.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Key, Reply, StatusCode, TestApp, token_of};
use latchkey_core::Clock;
use serde_json::{Value, json};

/// An app with a key, and the verifier token that asks about it.
struct World {
    app: TestApp,
    app_id: String,
    key: Key,
    verifier: String,
}

impl World {
    async fn build() -> Self {
        let app = TestApp::spawn().await;
        let app_id = app.create_app(&app.owner(), "Shop").await;
        let key = app.create_app_key(&app.owner(), &app_id).await;
        let (_, verifier) = app.create_verifier_token("gateway").await;
        Self {
            app,
            app_id,
            key,
            verifier,
        }
    }

    async fn introspect(&self, token: &str) -> Reply {
        let r = self
            .app
            .post_form("/v1/introspect", &self.verifier, &[("token", token)])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{token}: {:?}", r.body);
        r
    }

    fn pair(&self) -> String {
        format!("{}:{}", self.key.id, self.key.secret)
    }
}

#[tokio::test]
async fn an_app_key_pair_is_active_as_it_is_or_base64_encoded() {
    let w = World::build().await;
    let expected = json!({
        "active": true,
        "scope": "app",
        "client_id": w.key.id,
        "token_type": "Basic",
        "accountId": w.app.account_id(),
        "appId": w.app_id,
    });
    let r = w.introspect(&w.pair()).await;
    assert_eq!(r.body, expected);
    assert_eq!(
        r.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let r = w.introspect(&STANDARD.encode(w.pair())).await;
    assert_eq!(r.body, expected);
}

#[tokio::test]
async fn an_app_user_jwt_is_active_with_its_user_and_times() {
    let w = World::build().await;
    let now = w.app.clock.unix();
    let jwt = w.key.jwt(json!({
        "scope": "appUser", "userId": "alice", "iat": now - 10, "exp": now + 300,
    }));
    let r = w.introspect(token_of(&jwt)).await;
    assert_eq!(
        r.body,
        json!({
            "active": true,
            "scope": "appUser",
            "client_id": w.key.id,
            "sub": "alice",
            "exp": now + 300,
            "iat": now - 10,
            "token_type": "Bearer",
            "accountId": w.app.account_id(),
            "appId": w.app_id,
        })
    );
    // An app-scope JWT without times says none.
    let r = w
        .introspect(token_of(&w.key.jwt(json!({"scope": "app"}))))
        .await;
    assert_eq!(r.body["scope"], "app");
    assert_eq!(r.body["active"], true);
    for absent in ["sub", "exp", "iat"] {
        assert!(r.body.get(absent).is_none(), "{absent}: {}", r.body);
    }
}

#[tokio::test]
async fn an_account_key_is_active_without_an_app() {
    let w = World::build().await;
    let owner = w.app.owner_key();
    let r = w
        .introspect(&format!("{}:{}", owner.id, owner.secret))
        .await;
    assert_eq!(
        r.body,
        json!({
            "active": true,
            "scope": "account",
            "client_id": owner.id,
            "token_type": "Basic",
            "accountId": w.app.account_id(),
        })
    );
    let r = w
        .introspect(token_of(&owner.jwt(json!({"scope": "account"}))))
        .await;
    assert_eq!(r.body["scope"], "account");
    assert_eq!(r.body["token_type"], "Bearer");
}

#[tokio::test]
async fn a_key_that_will_expire_says_when() {
    let w = World::build().await;
    // Rotation leaves the old key an hour of grace.
    let r = w
        .app
        .post(
            &format!("/v1/apps/{}/keys/{}/rotate", w.app_id, w.key.id),
            &w.app.owner(),
            json!({"graceSeconds": 3600}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = w.introspect(&w.pair()).await;
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["exp"], json!(w.app.clock.unix() + 3600));
}

#[tokio::test]
async fn anything_that_does_not_verify_is_inactive_and_nothing_more() {
    let w = World::build().await;
    let inactive = json!({"active": false});
    let now = w.app.clock.unix();
    let mut wrong_secret = w.key.secret.clone().into_bytes();
    wrong_secret[10] = if wrong_secret[10] == b'a' { b'b' } else { b'a' };
    let wrong_secret = format!(
        "{}:{}",
        w.key.id,
        String::from_utf8(wrong_secret).expect("ascii")
    );
    let other_key = w.app.create_app_key(&w.app.owner(), &w.app_id).await;
    let other_secret = format!("{}:{}", w.key.id, other_key.secret);
    let expired = w.key.jwt(json!({"scope": "app", "exp": now - 3600}));
    let not_yet = w.key.jwt(json!({"scope": "app", "nbf": now + 3600}));
    let forged = Key {
        id: w.key.id.clone(),
        secret: other_key.secret.clone(),
    }
    .jwt(json!({"scope": "app"}));
    let cases: Vec<(&str, String)> = vec![
        ("wrong secret", wrong_secret),
        ("another key's secret", other_secret),
        ("expired JWT", token_of(&expired).to_string()),
        ("JWT not valid yet", token_of(&not_yet).to_string()),
        (
            "JWT signed with another secret",
            token_of(&forged).to_string(),
        ),
        ("garbage", "not a token at all".into()),
        ("garbage base64", "bm9wZQ==".into()),
        ("a JWT-like string", "a.b.c".into()),
        ("colon only", ":".into()),
        ("huge", "x".repeat(20_000)),
        (
            "the operator token",
            token_of(&w.app.operator()).to_string(),
        ),
        ("the verifier token", token_of(&w.verifier).to_string()),
        ("the operator token as a Bearer header", w.app.operator()),
    ];
    for (what, token) in &cases {
        let r = w.introspect(token).await;
        assert_eq!(r.body, inactive, "{what}");
    }

    // Deleted, and rotated out with no grace: inactive at once.
    let jwt = w.key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    assert_eq!(w.introspect(token_of(&jwt)).await.body["active"], true);
    let r = w
        .app
        .post(
            &format!("/v1/apps/{}/keys/{}/rotate", w.app_id, w.key.id),
            &w.app.owner(),
            json!({"graceSeconds": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(w.introspect(&w.pair()).await.body, inactive, "rotated out");
    assert_eq!(
        w.introspect(token_of(&jwt)).await.body,
        inactive,
        "rotated out"
    );
    let pair = format!("{}:{}", other_key.id, other_key.secret);
    assert_eq!(w.introspect(&pair).await.body["active"], true);
    let r = w
        .app
        .delete(
            &format!("/v1/apps/{}/keys/{}", w.app_id, other_key.id),
            &w.app.owner(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(w.introspect(&pair).await.body, inactive, "deleted");
}

#[tokio::test]
async fn the_caller_is_a_verifier_or_the_operator_by_bearer_or_basic() {
    let w = World::build().await;
    let basic_with = |user: &str, bearer: &str| {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{}", token_of(bearer)))
        )
    };
    let callers = [
        w.verifier.clone(),
        w.app.operator(),
        basic_with("kong", &w.verifier),
        basic_with("", &w.verifier),
        basic_with("anyone", &w.app.operator()),
    ];
    for caller in &callers {
        let r = w
            .app
            .post_form("/v1/introspect", caller, &[("token", &w.pair())])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{caller}: {:?}", r.body);
        assert_eq!(r.body["active"], true, "{caller}");
    }
    // No credential, a bad one, or the token with the wrong prefix: 401.
    let bad_token = format!("Bearer lkvf_{}", &token_of(&w.verifier)[5..20]);
    for caller in [
        None,
        Some("Bearer nope".to_string()),
        Some(bad_token.clone()),
        Some(basic_with("kong", &bad_token)),
        Some("Basic !!!".to_string()),
    ] {
        let mut req = w
            .app
            .http
            .post(w.app.url("/v1/introspect"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", w.pair()));
        if let Some(c) = &caller {
            req = req.header("authorization", c);
        }
        let r = TestApp::send(req).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{caller:?}: {:?}",
            r.body
        );
        assert!(r.headers.get("www-authenticate").is_some(), "{caller:?}");
        assert!(r.body["errors"][0]["code"].is_string(), "{caller:?}");
    }
    // Key credentials may not introspect (the key itself, or the owner's).
    for caller in [w.key.basic(), w.app.owner()] {
        let r = w
            .app
            .post_form("/v1/introspect", &caller, &[("token", &w.pair())])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
        assert_eq!(r.code(), "forbidden");
    }
}

#[tokio::test]
async fn bad_requests_are_400_in_the_documented_format() {
    let w = World::build().await;
    let send = |content_type: Option<&str>, body: String| {
        let mut req = w
            .app
            .http
            .post(w.app.url("/v1/introspect"))
            .header("authorization", &w.verifier)
            .body(body);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        TestApp::send(req)
    };
    let form = "application/x-www-form-urlencoded";
    let cases = [
        (
            Some("application/json"),
            json!({"token": w.pair()}).to_string(),
        ),
        (None, format!("token={}", w.pair())),
        (Some("text/plain"), format!("token={}", w.pair())),
        (Some(form), String::new()),
        (Some(form), "token_type_hint=access_token".to_string()),
        (Some(form), "token=a&token=b".to_string()),
    ];
    for (content_type, body) in cases {
        let r = send(content_type, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{content_type:?} {body}: {:?}",
            r.body
        );
        assert_eq!(r.code(), "bad_request");
        let title = r.body["errors"][0]["title"].as_str().expect("title");
        assert!(!title.contains(&w.key.secret), "{title}");
    }
    // A hint, a charset and parameters the server does not know are fine.
    let body = serde_urlencoded::to_string([
        ("token", w.pair().as_str()),
        ("token_type_hint", "access_token"),
        ("client_id", "gateway"),
    ])
    .expect("form");
    let r = send(
        Some("application/x-www-form-urlencoded; charset=UTF-8"),
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["active"], true);
    // Too large a body: 413.
    let huge = format!("token={}", "x".repeat(2 * 1024 * 1024));
    let r = send(Some(form), huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);
    assert_eq!(
        r.body["errors"][0]["code"],
        Value::from("payload_too_large")
    );
}

#[tokio::test]
async fn a_keys_policy_decides_whether_it_is_active() {
    let w = World::build().await;
    let owner = w.app.owner();
    let keys = format!("/v1/apps/{}/keys", w.app_id);
    let mut made = Vec::new();
    for policy in [
        json!({"credits": {"remaining": 1}}),
        json!({"ratelimit": {"limit": 1, "windowSeconds": 60}}),
        json!({"restrictions": {"allowedIps": ["10.0.0.0/8"]}}),
    ] {
        let mut body = json!({"displayName": "limited"});
        body.as_object_mut()
            .expect("object")
            .extend(policy.as_object().expect("object").clone());
        let r = w.app.post(&keys, &owner, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let k = Key::from_reply(&r);
        made.push(format!("{}:{}", k.id, k.secret));
    }
    // One credit, one request per window: active once, then not.
    for pair in &made[..2] {
        assert_eq!(w.introspect(pair).await.body["active"], true, "{pair}");
        assert_eq!(w.introspect(pair).await.body, json!({"active": false}));
    }
    // Introspection carries no client address: a key held to some never
    // is active here.
    assert_eq!(w.introspect(&made[2]).await.body, json!({"active": false}));
}
