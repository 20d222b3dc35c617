//! Public-key keys (issue 22) over real HTTP: a customer makes an Ed25519
//! or P-256 key pair with third-party libraries (PyPI PyJWT and joserfc,
//! run with python3: `tests/clients/jose_py.py`), registers the public JWK
//! as a key, and signs its JWTs with the private key, which Latchkey never
//! sees. The key takes part in scopes, rotation, deletion, permissions,
//! audit and restarts as a key with a secret does; Basic, HS256 and
//! minting with it are refused.

mod common;
#[path = "common/jose.rs"]
mod jose;

use common::{StatusCode, TestApp, basic, bearer_jwt};
use jose::{keypair, signed};
use serde_json::{Value, json};

/// Registers `public` as a key of the app; the key's id.
async fn public_key_of_app(app: &TestApp, app_id: &str, public: &Value) -> String {
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &app.owner(),
            json!({"displayName": "signed by the customer", "publicKey": public}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["key"]["id"].as_str().expect("id").to_string()
}

/// The three kinds of key pair and signer this suite plays: (key kind,
/// signing library, JWS alg).
const SIGNERS: [(&str, &str, &str); 4] = [
    ("ed25519", "pyjwt", "EdDSA"),
    ("ed25519", "joserfc", "Ed25519"),
    ("p256", "pyjwt", "ES256"),
    ("p256", "joserfc", "ES256"),
];

#[tokio::test]
async fn a_public_key_made_by_a_client_library_verifies_the_jwts_its_private_key_signs() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Public").await;
    for (kind, lib, alg) in SIGNERS {
        let (private, public) = keypair(kind);
        let r = app
            .post(
                &format!("/v1/apps/{app_id}/keys"),
                &app.owner(),
                json!({"displayName": "customer's key", "publicKey": public}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let key = &r.body["key"];
        // No secret: the customer keeps the private key.
        assert!(key.get("secret").is_none(), "{key}");
        let want_alg = if kind == "ed25519" {
            "Ed25519"
        } else {
            "ES256"
        };
        assert_eq!(key["algorithm"], want_alg);
        assert_eq!(key["publicKey"], public, "the JWK as given, nothing added");
        assert_eq!(
            key["publicKeyThumbprint"].as_str().map(str::len),
            Some(43),
            "{key}"
        );
        assert!(
            !r.body
                .to_string()
                .contains(private["d"].as_str().expect("d"))
        );
        let kid = key["id"].as_str().expect("id");

        // app scope: the app's settings; appUser: one user's records.
        let app_jwt = signed(lib, alg, kid, &private, json!({"scope": "app"}));
        let r = app.get(&format!("/v1/apps/{app_id}"), &app_jwt).await;
        assert_eq!(r.status, StatusCode::OK, "{lib} {alg}: {:?}", r.body);
        let alice = signed(
            lib,
            alg,
            kid,
            &private,
            json!({"scope": "appUser", "userId": "alice"}),
        );
        let r = app
            .get(&format!("/v1/apps/{app_id}/users/alice"), &alice)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{lib} {alg}: {:?}", r.body);
        let r = app
            .get(&format!("/v1/apps/{app_id}/users/bob"), &alice)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        // The verification service says the same.
        let r = app
            .post(
                "/v1/verify",
                &app.operator(),
                json!({"authorization": alice, "appId": app_id, "userId": "alice"}),
            )
            .await;
        assert_eq!(
            r.body,
            json!({"valid": true, "scope": "appUser", "accountId": app.account_id(),
                   "appId": app_id, "userId": "alice", "keyId": kid}),
            "{lib} {alg}"
        );

        // Listing and reading the key show the public key, never more.
        let r = app
            .get(&format!("/v1/apps/{app_id}/keys/{kid}"), &app.owner())
            .await;
        assert_eq!(r.body["key"]["publicKey"], public);
        assert_eq!(r.body["key"]["algorithm"], want_alg);
    }
}

#[tokio::test]
async fn a_public_key_authenticates_nothing_but_its_own_signatures() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Public").await;
    let (private, public) = keypair("ed25519");
    let kid = public_key_of_app(&app, &app_id, &public).await;
    let (es_private, es_public) = keypair("p256");
    let es_kid = public_key_of_app(&app, &app_id, &es_public).await;
    let (stranger, _) = keypair("ed25519");
    let claims = json!({"scope": "app"});
    let path = format!("/v1/apps/{app_id}");
    let good = signed("pyjwt", "EdDSA", &kid, &private, claims.clone());
    assert_eq!(app.get(&path, &good).await.status, StatusCode::OK);

    let refused = [
        (
            "Basic with the key id and a well-formed secret",
            basic(&kid, &app.owner_key().secret),
        ),
        (
            "HS256 keyed with the public JWK's text (key confusion)",
            bearer_jwt(&kid, &public.to_string(), &claims),
        ),
        (
            "HS256 keyed with the public key's x",
            bearer_jwt(&kid, public["x"].as_str().expect("x"), &claims),
        ),
        (
            "another key pair's signature under this kid",
            signed("pyjwt", "EdDSA", &kid, &stranger, claims.clone()),
        ),
        (
            "ES256 under the Ed25519 key's kid",
            signed("pyjwt", "ES256", &kid, &es_private, claims.clone()),
        ),
        (
            "EdDSA under the P-256 key's kid",
            signed("pyjwt", "EdDSA", &es_kid, &private, claims.clone()),
        ),
        ("the Ed25519 signature of other claims", {
            let other = signed(
                "pyjwt",
                "EdDSA",
                &kid,
                &private,
                json!({"scope": "app", "x": 1}),
            );
            let (input, _) = good.rsplit_once('.').expect("dot");
            let (_, sig) = other.rsplit_once('.').expect("dot");
            format!("{input}.{sig}")
        }),
    ];
    for (what, auth) in refused {
        let r = app.get(&path, &auth).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", r.body);
        let r = app
            .post(
                "/v1/verify",
                &app.operator(),
                json!({"authorization": auth}),
            )
            .await;
        assert_eq!(r.body["valid"], false, "{what}: {:?}", r.body);
    }

    // Nor can it mint HS256 tokens: it has no secret.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users/alice/tokens"),
            &good,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(r.title().contains("public key"), "{:?}", r.body);
    // An account-scope caller finds no key with a secret to mint with.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users/alice/tokens"),
            &app.owner(),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
}

#[tokio::test]
async fn a_jwk_that_is_not_a_usable_public_key_is_refused_and_nothing_is_made() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Public").await;
    let (private, public) = keypair("ed25519");
    let (_, es_public) = keypair("p256");
    let mut off_curve = es_public.clone();
    off_curve["y"] = keypair("p256").1["y"].clone();
    let cases = [
        (private.clone(), "private key"),
        (json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}), "kty"),
        (json!({"kty": "oct", "k": "c2VjcmV0"}), "kty"),
        (
            json!({"kty": "OKP", "crv": "X25519", "x": public["x"]}),
            "crv",
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
            "x must be",
        ),
        (off_curve, "not a point of the curve"),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            "small order",
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": es_public["x"], "y": es_public["y"], "alg": "EdDSA"}),
            "alg",
        ),
        (json!("a PEM, perhaps"), "JWK"),
    ];
    for (jwk, says) in cases {
        let r = app
            .post(
                &format!("/v1/apps/{app_id}/keys"),
                &app.owner(),
                json!({"displayName": "k", "publicKey": jwk}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{jwk}: {:?}", r.body);
        assert!(r.title().contains(says), "{jwk}: {:?}", r.body);
        // The private part is never echoed.
        assert!(
            !r.body
                .to_string()
                .contains(private["d"].as_str().expect("d"))
        );
    }
    let r = app
        .get(&format!("/v1/apps/{app_id}/keys"), &app.owner())
        .await;
    assert_eq!(r.body["keys"], json!([]), "nothing was made");
}

#[tokio::test]
async fn a_public_key_rotates_to_another_with_grace_and_dies_when_deleted() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Public").await;
    let (old_private, old_public) = keypair("p256");
    let old = public_key_of_app(&app, &app_id, &old_public).await;
    let path = format!("/v1/apps/{app_id}");
    let rotate = format!("/v1/apps/{app_id}/keys/{old}/rotate");

    // The successor of a public key is a public key the caller gives.
    let r = app.post(&rotate, &app.owner(), json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.title().contains("publicKey"), "{:?}", r.body);
    let (new_private, new_public) = keypair("ed25519");
    let r = app
        .post(
            &rotate,
            &app.owner(),
            json!({"graceSeconds": 3600, "publicKey": new_public}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body["key"].get("secret").is_none());
    assert_eq!(r.body["key"]["publicKey"], new_public);
    assert_eq!(r.body["key"]["rotatedFrom"], old.as_str());
    let new = r.body["key"]["id"].as_str().expect("id").to_string();

    // Both work during the grace period, each with its own algorithm.
    let old_jwt = signed(
        "pyjwt",
        "ES256",
        &old,
        &old_private,
        json!({"scope": "app"}),
    );
    let new_jwt = signed(
        "joserfc",
        "Ed25519",
        &new,
        &new_private,
        json!({"scope": "app"}),
    );
    assert_eq!(app.get(&path, &old_jwt).await.status, StatusCode::OK);
    assert_eq!(app.get(&path, &new_jwt).await.status, StatusCode::OK);
    app.clock.advance(time::Duration::seconds(3601));
    assert_eq!(
        app.get(&path, &old_jwt).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get(&path, &new_jwt).await.status, StatusCode::OK);

    // A key with a secret may turn into a public key by rotation.
    let secret_key = app.create_app_key(&app.owner(), &app_id).await;
    let (_, turned) = keypair("ed25519");
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys/{}/rotate", secret_key.id),
            &app.owner(),
            json!({"publicKey": turned}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["key"]["algorithm"], "Ed25519");
    assert!(r.body["key"].get("secret").is_none());

    // Deleted: refused on the next request.
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{new}"), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&path, &new_jwt).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Each step is in the audit log, naming the keys.
    let r = app.get("/v1/audit?limit=100", &app.owner()).await;
    let actions: Vec<(String, String)> = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["target"]["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        ("key.created".to_string(), old.clone()),
        ("key.rotated".to_string(), old.clone()),
        ("key.deleted".to_string(), new.clone()),
    ] {
        assert!(actions.contains(&want), "{want:?} in {actions:?}");
    }
}

#[tokio::test]
async fn a_service_account_signs_account_jwts_with_its_public_key_and_keys_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let sa = app.create_service_account(&app.owner()).await;
    let (private, public) = keypair("ed25519");
    let r = app
        .post(
            &format!("/v1/serviceAccounts/{sa}/keys"),
            &app.owner(),
            json!({"displayName": "provisioning", "publicKey": public}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body["key"].get("secret").is_none());
    let kid = r.body["key"]["id"].as_str().expect("id").to_string();
    let account_jwt = signed(
        "pyjwt",
        "EdDSA",
        &kid,
        &private,
        json!({"scope": "account"}),
    );
    let r = app
        .post(
            "/v1/apps",
            &account_jwt,
            json!({"displayName": "made by the robot"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let app_id = r.body["app"]["id"].as_str().expect("app").to_string();
    // An app key with permissions, signed by a P-256 key.
    let (es_private, es_public) = keypair("p256");
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &account_jwt,
            json!({"displayName": "users only", "publicKey": es_public,
                   "permissions": ["latchkey:users.read"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let es_kid = r.body["key"]["id"].as_str().expect("id").to_string();
    let es_jwt = signed(
        "pyjwt",
        "ES256",
        &es_kid,
        &es_private,
        json!({"scope": "app"}),
    );
    let users = format!("/v1/apps/{app_id}/users");
    assert_eq!(app.get(&users, &es_jwt).await.status, StatusCode::OK);
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &es_jwt,
            json!({"displayName": "more"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);

    // The index is rebuilt from the store: the public keys come back.
    app.restart().await;
    assert_eq!(
        app.get("/v1/apps", &account_jwt).await.status,
        StatusCode::OK
    );
    assert_eq!(app.get(&users, &es_jwt).await.status, StatusCode::OK);
    let r = app
        .get(&format!("/v1/apps/{app_id}/keys/{es_kid}"), &app.owner())
        .await;
    assert_eq!(r.body["key"]["publicKey"], es_public);
    assert_eq!(r.body["key"]["permissions"], json!(["latchkey:users.read"]));
}

/// The in-process replica (`latchkey-replica`) verifies public-key keys
/// too: one in the snapshot it loads, one that reaches it by the change
/// stream, and a deletion that follows.
#[tokio::test]
async fn public_keys_reach_the_in_process_replica_by_snapshot_and_by_change() {
    use latchkey_replica::Target;
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Replicated").await;
    let (ed_private, ed_public) = keypair("ed25519");
    let before = public_key_of_app(&app, &app_id, &ed_public).await;
    let replica = app.replica().await;
    let target = Target::app(&app_id);
    let ed_jwt = signed(
        "pyjwt",
        "EdDSA",
        &before,
        &ed_private,
        json!({"scope": "app"}),
    );
    let verified = replica
        .verify(Some(&ed_jwt), &target)
        .expect("from the snapshot");
    assert_eq!(verified.app_id(), Some(app_id.as_str()));

    let (es_private, es_public) = keypair("p256");
    let after = public_key_of_app(&app, &app_id, &es_public).await;
    let es_jwt = signed(
        "pyjwt",
        "ES256",
        &after,
        &es_private,
        json!({"scope": "appUser", "userId": "alice"}),
    );
    let user = Target::user(&app_id, "alice");
    let started = std::time::Instant::now();
    while replica.verify(Some(&es_jwt), &user).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "the new key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Basic with a public-key key is refused there as here.
    let basic = basic(&after, &app.owner_key().secret);
    assert!(replica.verify(Some(&basic), &target).is_err());

    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{before}"), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let started = std::time::Instant::now();
    while replica.verify(Some(&ed_jwt), &target).is_ok() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "the deletion"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
