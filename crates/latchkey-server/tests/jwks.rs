//! Tokens Latchkey mints with `"alg": "EdDSA"` (issue 22), verified by
//! anyone with the app's JWKS: `GET /v1/apps/{appId}/jwks.json` fetched
//! over HTTP by PyPI joserfc and npm jose (`tests/common/jose.rs`), with
//! `Cache-Control` and an `ETag`; rotation with overlap; Latchkey verifying
//! the same tokens, also after a restart and in the in-process replica.

mod common;
#[path = "common/jose.rs"]
mod jose;

use common::{StatusCode, TestApp};
use jose::{joserfc_verify, joserfc_verify_for, node_jose_verify, node_jose_verify_for};
use serde_json::{Value, json};

/// Mints an appUser token for `user` with `auth`; its token.
async fn mint(app: &TestApp, auth: &str, app_id: &str, user: &str, body: Value) -> String {
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users/{user}/tokens"),
            auth,
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["token"].as_str().expect("token").to_string()
}

/// The test server's time (its clock is the test's).
fn now(app: &TestApp) -> i64 {
    use latchkey_core::Clock;
    app.clock.now().unix_timestamp()
}

/// The decoded claims of a compact JWS.
fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("claims");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

/// The decoded header of a compact JWS.
fn header_of(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

#[tokio::test]
async fn a_minted_eddsa_token_verifies_with_the_public_jwks_in_python_and_node() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Chat").await;
    let jwks_path = format!("/v1/apps/{app_id}/jwks.json");

    // No key yet: an empty set, public (no credential).
    let r = app.call(reqwest::Method::GET, &jwks_path, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body, json!({"keys": []}));

    let token = mint(
        &app,
        &app.owner(),
        &app_id,
        "alice",
        json!({"alg": "EdDSA"}),
    )
    .await;
    let header = header_of(&token);
    assert_eq!(header["alg"], "EdDSA");
    let kid = header["kid"].as_str().expect("kid").to_string();
    assert!(kid.starts_with("sig_"), "{kid}");

    let r = app.call(reqwest::Method::GET, &jwks_path, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["cache-control"], "public, max-age=300");
    let etag = r.headers["etag"].to_str().expect("etag").to_string();
    let keys = r.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], kid.as_str());
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none(), "never the private key");

    // Cached copies are revalidated with the ETag.
    let r = TestApp::send(
        app.http
            .get(app.url(&jwks_path))
            .header("if-none-match", &etag),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers["etag"].to_str().expect("etag"), etag);

    // Third-party libraries verify it offline from the JWKS.
    let url = app.url(&jwks_path);
    let py = joserfc_verify(&url, &token, now(&app)).await;
    assert_eq!(py["claims"]["scope"], "appUser", "{py}");
    assert_eq!(py["claims"]["userId"], "alice", "{py}");
    // Without --public-url, the issuer is named by the app id.
    assert_eq!(py["claims"]["iss"], format!("latchkey:{app_id}"), "{py}");
    assert!(py["claims"].get("aud").is_none(), "{py}");
    let node = node_jose_verify(&url, &token, now(&app)).await;
    assert_eq!(node["payload"]["userId"], "alice", "{node}");
    assert_eq!(node["header"]["kid"], kid.as_str(), "{node}");
    // A tampered token is refused by both.
    let (input, sig) = token.rsplit_once('.').expect("dot");
    let tampered = format!("{}x.{sig}", &input[..input.len() - 1]);
    assert!(
        joserfc_verify(&url, &tampered, now(&app))
            .await
            .get("error")
            .is_some()
    );
    assert!(
        node_jose_verify(&url, &tampered, now(&app))
            .await
            .get("error")
            .is_some()
    );

    // And Latchkey verifies it too: alice's own record, nothing else.
    let bearer = format!("Bearer {token}");
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/alice"), &bearer)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/bob"), &bearer)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(
            "/v1/verify",
            &app.operator(),
            json!({"authorization": bearer}),
        )
        .await;
    assert_eq!(r.body["valid"], true, "{:?}", r.body);
    assert_eq!(r.body["keyId"], kid.as_str());

    // The mint is in the audit log with its algorithm and key.
    let r = app.get("/v1/audit?action=token.minted", &app.owner()).await;
    assert_eq!(
        r.body["events"][0]["details"]["alg"], "EdDSA",
        "{:?}",
        r.body
    );
    assert_eq!(r.body["events"][0]["details"]["keyId"], kid.as_str());
}

#[tokio::test]
async fn the_signing_key_rotates_with_overlap_and_the_one_before_goes() {
    let mut app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Chat").await;
    let jwks_path = format!("/v1/apps/{app_id}/jwks.json");
    let eddsa = json!({"alg": "EdDSA"});
    let first = mint(&app, &app.owner(), &app_id, "alice", eddsa.clone()).await;
    let etag_before = app
        .call(reqwest::Method::GET, &jwks_path, None, None)
        .await
        .headers["etag"]
        .clone();

    let rotate = format!("/v1/apps/{app_id}/signingKeys/rotate");
    let r = app.post(&rotate, &app.owner(), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let listed = r.body["signingKeys"].as_array().expect("keys").clone();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["status"], "current");
    assert_eq!(listed[1]["status"], "previous");
    assert_eq!(listed[1]["id"], header_of(&first)["kid"]);

    // Both are published, current first; the ETag moved.
    let r = app.call(reqwest::Method::GET, &jwks_path, None, None).await;
    assert_ne!(r.headers["etag"], etag_before);
    let kids: Vec<&str> = r.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(
        kids,
        vec![
            listed[0]["id"].as_str().expect("id"),
            listed[1]["id"].as_str().expect("id")
        ]
    );

    // New tokens use the new key; the old token still verifies everywhere.
    let second = mint(&app, &app.owner(), &app_id, "alice", eddsa.clone()).await;
    assert_eq!(header_of(&second)["kid"], listed[0]["id"]);
    let url = app.url(&jwks_path);
    for token in [&first, &second] {
        assert_eq!(
            joserfc_verify(&url, token, now(&app)).await["claims"]["userId"],
            "alice"
        );
        let r = app
            .get(
                &format!("/v1/apps/{app_id}/users/alice"),
                &format!("Bearer {token}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    // They survive a restart (the index is rebuilt from the store).
    app.restart().await;
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/users/alice"),
            &format!("Bearer {first}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let url = app.url(&jwks_path);
    // A second rotation retires the first key for good.
    let r = app.post(&rotate, &app.owner(), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/users/alice"),
            &format!("Bearer {first}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(
        joserfc_verify(&url, &first, now(&app))
            .await
            .get("error")
            .is_some()
    );
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/users/alice"),
            &format!("Bearer {second}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "the previous key still verifies");
    let r = app
        .get(&format!("/v1/apps/{app_id}/signingKeys"), &app.owner())
        .await;
    assert_eq!(r.body["signingKeys"].as_array().map(Vec::len), Some(2));

    // A key that leaked: a rotation that revokes removes every other key
    // at once, and what they signed is refused from then on, by Latchkey
    // and by anyone who fetches the JWKS again.
    let r = app
        .post(&rotate, &app.owner(), json!({"revokeOldKeys": "yes"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = app
        .post(&rotate, &app.owner(), json!({"revokeOldKeys": true}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let listed = r.body["signingKeys"].as_array().expect("keys").clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "current");
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/users/alice"),
            &format!("Bearer {second}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    let r = app.call(reqwest::Method::GET, &jwks_path, None, None).await;
    assert_eq!(
        r.body["keys"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["keys"][0]["kid"], listed[0]["id"]);
    assert!(
        joserfc_verify(&url, &second, now(&app))
            .await
            .get("error")
            .is_some()
    );
    let third = mint(&app, &app.owner(), &app_id, "alice", eddsa).await;
    assert_eq!(header_of(&third)["kid"], listed[0]["id"]);
    let r = app
        .get("/v1/audit?action=signingKey.replaced", &app.owner())
        .await;
    assert_eq!(
        r.body["events"][0]["target"]["id"], listed[0]["id"],
        "{:?}",
        r.body
    );
}

/// RFC 8725 §3.10-3.11: a minted EdDSA token names its issuer (the app,
/// under `--public-url`) and, when asked, its audience, so that a service
/// that trusts the JWKS of one app and is one audience takes only the
/// tokens meant for it.
#[tokio::test]
async fn minted_eddsa_tokens_name_their_issuer_and_audience() {
    let app = TestApp::spawn_with(|c| c.public_url = Some("https://auth.example.com".into())).await;
    let app_id = app.create_app(&app.owner(), "Orders").await;
    let other_id = app.create_app(&app.owner(), "Billing").await;
    let issuer = format!("https://auth.example.com/v1/apps/{app_id}");
    let token = mint(
        &app,
        &app.owner(),
        &app_id,
        "alice",
        json!({"alg": "EdDSA", "aud": "orders-api"}),
    )
    .await;
    let url = app.url(&format!("/v1/apps/{app_id}/jwks.json"));
    let now = now(&app);
    let py = joserfc_verify_for(&url, &token, now, Some(&issuer), Some("orders-api")).await;
    assert_eq!(py["claims"]["iss"], issuer.as_str(), "{py}");
    assert_eq!(py["claims"]["aud"], "orders-api", "{py}");
    let node = node_jose_verify_for(&url, &token, now, Some(&issuer), Some("orders-api")).await;
    assert_eq!(node["payload"]["userId"], "alice", "{node}");
    // Another audience, or another app's issuer: refused by both.
    let other_issuer = format!("https://auth.example.com/v1/apps/{other_id}");
    for (iss, aud) in [(&issuer, "billing-api"), (&other_issuer, "orders-api")] {
        let py = joserfc_verify_for(&url, &token, now, Some(iss), Some(aud)).await;
        assert!(py.get("error").is_some(), "joserfc took {iss} {aud}: {py}");
        let node = node_jose_verify_for(&url, &token, now, Some(iss), Some(aud)).await;
        assert!(node.get("error").is_some(), "jose took {iss} {aud}: {node}");
    }
    // A list of audiences: each of them takes it.
    let token = mint(
        &app,
        &app.owner(),
        &app_id,
        "alice",
        json!({"alg": "EdDSA", "aud": ["orders-api", "search-api"]}),
    )
    .await;
    let node = node_jose_verify_for(&url, &token, now, Some(&issuer), Some("search-api")).await;
    assert_eq!(
        node["payload"]["aud"],
        json!(["orders-api", "search-api"]),
        "{node}"
    );
    // Latchkey itself takes the token whatever its audience (it is the
    // issuer's own authority).
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/users/alice"),
            &format!("Bearer {token}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The signing keys' listing names the issuer to configure.
    let r = app
        .get(&format!("/v1/apps/{app_id}/signingKeys"), &app.owner())
        .await;
    assert_eq!(r.body["issuer"], issuer.as_str(), "{:?}", r.body);
    // The largest audience a mint takes still makes a token Latchkey
    // reads (at most 8 KiB).
    let widest: Vec<String> = (0..10)
        .map(|i| format!("{i}{}", "\u{1F511}".repeat(63)))
        .collect();
    let token = mint(
        &app,
        &app.owner(),
        &app_id,
        "alice",
        json!({"alg": "EdDSA", "aud": widest}),
    )
    .await;
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/users/alice"),
            &format!("Bearer {token}"),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{} bytes: {:?}",
        token.len(),
        r.body
    );
    // An HS256 token (signed with an app key's secret) carries the
    // audience too, and no issuer.
    app.create_app_key(&app.owner(), &app_id).await;
    let token = mint(
        &app,
        &app.owner(),
        &app_id,
        "alice",
        json!({"aud": "orders-api"}),
    )
    .await;
    let claims = claims_of(&token);
    assert_eq!(claims["aud"], "orders-api");
    assert!(claims.get("iss").is_none(), "{claims}");
    // Audiences that are not strings, empty, too long or too many: 400,
    // and nothing minted.
    for aud in [
        json!(""),
        json!(7),
        json!([]),
        json!(["ok", 1]),
        json!("x".repeat(257)),
        json!(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]),
        json!("tab\there"),
        // 65 four-byte characters: 260 bytes.
        json!("\u{1F511}".repeat(65)),
    ] {
        let r = app
            .post(
                &format!("/v1/apps/{app_id}/users/alice/tokens"),
                &app.owner(),
                json!({"alg": "EdDSA", "aud": aud}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{aud}: {:?}", r.body);
        assert!(
            r.body["errors"][0]["title"]
                .as_str()
                .is_some_and(|t| t.contains("aud"))
        );
    }
}

#[tokio::test]
async fn minting_eddsa_is_refused_where_it_would_give_more_than_the_caller_has() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Chat").await;
    let path = format!("/v1/apps/{app_id}/users/alice/tokens");
    // An unknown algorithm.
    let r = app.post(&path, &app.owner(), json!({"alg": "RS256"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.code(), "bad_request");
    // A key with a permission list: its HS256 tokens carry its list, an
    // EdDSA token would carry none.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &app.owner(),
            json!({"displayName": "minter", "permissions": ["latchkey:tokens.mint"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let minter = common::Key::from_reply(&r);
    let r = app
        .post(&path, &minter.basic(), json!({"alg": "EdDSA"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.code(), "insufficient_permissions");
    mint(&app, &minter.basic(), &app_id, "alice", json!({})).await;
    // Any policy, not only a permission list: a rate limit, too.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &app.owner(),
            json!({"displayName": "limited", "ratelimit": {"limit": 100, "windowSeconds": 60}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let limited = common::Key::from_reply(&r);
    let r = app
        .post(&path, &limited.basic(), json!({"alg": "EdDSA"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    // Nothing was made: the app still has no signing key.
    let r = app
        .get(&format!("/v1/apps/{app_id}/signingKeys"), &app.owner())
        .await;
    assert_eq!(r.body["signingKeys"], json!([]), "{:?}", r.body);

    // An EdDSA token never outlives the key that had it minted.
    let soon =
        common::iso(time::OffsetDateTime::from_unix_timestamp(now(&app) + 600).expect("time"));
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &app.owner(),
            json!({"displayName": "short-lived", "expiresAt": soon}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let short = common::Key::from_reply(&r);
    let r = app
        .post(
            &path,
            &short.basic(),
            json!({"alg": "EdDSA", "ttlSeconds": 3600}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["expiresAt"], soon.as_str(), "{:?}", r.body);

    // An app's signing key signs appUser tokens only: even the owner of a
    // leaked signing key could not get app scope from Latchkey. (Checked
    // with a token of app scope under the signing key's kid, signed by
    // another key: refused as any bad signature is.)
    let token = mint(
        &app,
        &app.owner(),
        &app_id,
        "alice",
        json!({"alg": "EdDSA"}),
    )
    .await;
    let kid = header_of(&token)["kid"].as_str().expect("kid").to_string();
    let (private, _) = jose::keypair("ed25519");
    let forged = jose::signed("pyjwt", "EdDSA", &kid, &private, json!({"scope": "app"}));
    let r = app.get(&format!("/v1/apps/{app_id}"), &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);

    // A JWKS of an app that does not exist: the empty set, as for an app
    // without signing keys (it tells nobody which app ids exist).
    let r = app
        .call(
            reqwest::Method::GET,
            "/v1/apps/ap_0000000000000000000000/jwks.json",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"keys": []}));
}

/// The in-process replica verifies minted EdDSA tokens too, its signing
/// keys following the app's rotations.
#[tokio::test]
async fn the_replica_verifies_minted_eddsa_tokens_and_follows_rotation() {
    use latchkey_replica::Target;
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Chat").await;
    let first = mint(
        &app,
        &app.owner(),
        &app_id,
        "alice",
        json!({"alg": "EdDSA"}),
    )
    .await;
    let replica = app.replica().await;
    let alice = Target::user(&app_id, "alice");
    let first_bearer = format!("Bearer {first}");
    replica
        .verify(Some(&first_bearer), &alice)
        .expect("a token of the snapshot's signing key");

    let rotate = format!("/v1/apps/{app_id}/signingKeys/rotate");
    for _ in 0..2 {
        let r = app.post(&rotate, &app.owner(), json!({})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let second = format!(
        "Bearer {}",
        mint(
            &app,
            &app.owner(),
            &app_id,
            "alice",
            json!({"alg": "EdDSA"})
        )
        .await
    );
    let started = std::time::Instant::now();
    while replica.verify(Some(&second), &alice).is_err()
        || replica.verify(Some(&first_bearer), &alice).is_ok()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "the rotations reach the replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// On PostgreSQL: a token minted on node A verifies on node B, whose JWKS
/// publishes A's key; B follows A's rotations. On SQLite there is one
/// node: nothing to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_verifies_and_publishes_what_the_first_minted() {
    if !common::on_postgres() {
        eprintln!("one node on SQLite: this runs with LATCHKEY_TEST_BACKEND=postgres");
        return;
    }
    let app = TestApp::spawn().await;
    let b = app.second_node().await;
    let app_id = app.create_app(&app.owner(), "Chat").await;
    let first = format!(
        "Bearer {}",
        mint(
            &app,
            &app.owner(),
            &app_id,
            "alice",
            json!({"alg": "EdDSA"})
        )
        .await
    );
    let on_b = |path: &str| format!("{}{path}", b.base_url());
    let alice = on_b(&format!("/v1/apps/{app_id}/users/alice"));
    let status = |url: String, auth: Option<String>| {
        let http = app.http.clone();
        async move {
            let mut req = http.get(url);
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            req.send().await.expect("send").status()
        }
    };
    let started = std::time::Instant::now();
    while status(alice.clone(), Some(first.clone())).await != reqwest::StatusCode::OK {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "B verifies A's token"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let jwks: Value = app
        .http
        .get(on_b(&format!("/v1/apps/{app_id}/jwks.json")))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");

    let rotate = format!("/v1/apps/{app_id}/signingKeys/rotate");
    for _ in 0..2 {
        let r = app.post(&rotate, &app.owner(), json!({})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let started = std::time::Instant::now();
    while status(alice.clone(), Some(first.clone())).await != reqwest::StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "B drops the retired key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
