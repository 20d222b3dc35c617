//! Signed requests (issue 22): RFC 9421 HTTP Message Signatures with
//! hmac-sha256 made by libraries nobody here wrote (PyPI
//! requests-http-signature and http-message-signatures, through
//! `tests/clients/signed_requests.py`), sent over real HTTP to Latchkey's
//! own API: the key's secret never goes on the wire, and a captured request
//! cannot be used for another method, path, query, host or body, nor late,
//! nor twice with its nonce.

mod common;
#[path = "common/jose.rs"]
mod jose;
#[path = "common/proxies.rs"]
mod proxies;

use std::process::Command;

use common::{Key, StatusCode, TestApp};
use serde_json::{Value, json};

const LIBS: [&str; 2] = ["requests-http-signature", "http-message-signatures"];

/// Sends a signed request with the Python client; its answers (one per
/// repeat). On a blocking thread: the client calls this test's server.
async fn send(request: Value) -> Vec<Value> {
    tokio::task::spawn_blocking(move || {
        let answer = jose::python_client("signed_requests.py", request);
        answer["responses"].as_array().expect("responses").clone()
    })
    .await
    .expect("client thread")
}

fn now(app: &TestApp) -> i64 {
    use latchkey_core::Clock;
    app.clock.now().unix_timestamp()
}

/// A signed request of `key` by `lib`, with `extra` members.
fn request(app: &TestApp, lib: &str, key: &Key, method: &str, path: &str, extra: Value) -> Value {
    let mut req = json!({"lib": lib, "method": method, "url": app.url(path),
        "key_id": key.id, "secret": key.secret, "now": now(app), "body": null});
    if let (Some(req), Value::Object(extra)) = (req.as_object_mut(), extra) {
        req.extend(extra);
    }
    req
}

#[tokio::test]
async fn requests_signed_by_client_libraries_authenticate_as_their_key() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Signed").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let owner = app.owner_key();
    for lib in LIBS {
        // app scope: read the app; a body: create a user.
        let r = send(request(
            &app,
            lib,
            &key,
            "GET",
            &format!("/v1/apps/{app_id}"),
            json!({}),
        ))
        .await;
        assert_eq!(r[0]["status"], 200, "{lib}: {}", r[0]);
        assert_eq!(r[0]["body"]["app"]["id"], app_id.as_str());
        let input = r[0]["signature_input"].as_str().expect("signed");
        assert!(
            input.contains("\"@method\"") && input.contains("hmac-sha256"),
            "{input}"
        );
        let user = format!("{}-user", lib.split('-').next().unwrap_or("x"));
        let r = send(request(
            &app,
            lib,
            &key,
            "POST",
            &format!("/v1/apps/{app_id}/users"),
            json!({"body": json!({"externalId": user}).to_string()}),
        ))
        .await;
        assert_eq!(r[0]["status"], 201, "{lib}: {}", r[0]);
        assert_eq!(r[0]["body"]["user"]["externalId"], user.as_str());
        // account scope: the owner's user-account key lists apps.
        let r = send(request(
            &app,
            lib,
            &owner,
            "GET",
            "/v1/apps?limit=5",
            json!({}),
        ))
        .await;
        assert_eq!(r[0]["status"], 200, "{lib}: {}", r[0]);
        // The path and query covered by @path and @query instead of
        // @target-uri.
        let r = send(request(
            &app,
            lib,
            &owner,
            "GET",
            "/v1/apps?limit=5",
            json!({"components": ["@method", "@authority", "@path", "@query"]}),
        ))
        .await;
        assert_eq!(r[0]["status"], 200, "{lib}: {}", r[0]);
    }
    // The audit log names the key as the actor, as for Basic.
    let r = app.get("/v1/audit?action=user.created", &app.owner()).await;
    assert_eq!(
        r.body["events"][0]["actor"]["id"],
        key.id.as_str(),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn a_captured_signed_request_cannot_be_changed_delayed_or_replayed() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Signed").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let users = format!("/v1/apps/{app_id}/users");
    let body = json!({"externalId": "alice"}).to_string();
    let other_path = format!("path:/v1/apps/{app_id}/keys");
    for lib in LIBS {
        for tamper in ["method", other_path.as_str(), "query", "host"] {
            let r = send(request(
                &app,
                lib,
                &key,
                "GET",
                &users,
                json!({"tamper": tamper}),
            ))
            .await;
            assert_eq!(r[0]["status"], 401, "{lib} {tamper}: {}", r[0]);
        }
        let r = send(request(
            &app,
            lib,
            &key,
            "POST",
            &users,
            json!({"body": body, "tamper": "body"}),
        ))
        .await;
        assert_eq!(r[0]["status"], 401, "{lib} body: {}", r[0]);
        // Late, or from the future.
        for (offset, what) in [(-301, "old"), (60, "ahead")] {
            let r = send(request(
                &app,
                lib,
                &key,
                "GET",
                &users,
                json!({"created_offset": offset}),
            ))
            .await;
            assert_eq!(r[0]["status"], 401, "{lib} {what}: {}", r[0]);
            let title = r[0]["body"]["errors"][0]["title"]
                .as_str()
                .unwrap_or_default();
            assert!(title.contains("created"), "{title}");
        }
        assert_eq!(
            send(request(
                &app,
                lib,
                &key,
                "GET",
                &users,
                json!({"created_offset": -290})
            ))
            .await[0]["status"],
            200,
            "{lib}: within the window"
        );
        // Twice with its nonce: the second is refused.
        let r = send(request(
            &app,
            lib,
            &key,
            "GET",
            &users,
            json!({"nonce": true, "repeat": 2}),
        ))
        .await;
        assert_eq!(r[0]["status"], 200, "{lib}: {}", r[0]);
        assert_eq!(r[1]["status"], 401, "{lib}: {}", r[1]);
        assert!(
            r[1]["body"]["errors"][0]["title"]
                .as_str()
                .unwrap_or_default()
                .contains("nonce")
        );
    }
    // The tampered body created nobody.
    let r = app.get(&users, &app.owner()).await;
    assert_eq!(r.body["users"], json!([]), "{:?}", r.body);
}

#[tokio::test]
async fn only_a_live_key_with_a_secret_signs_requests() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Signed").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let path = format!("/v1/apps/{app_id}");
    let lib = LIBS[0];
    // A wrong secret, another key's id.
    let wrong = Key {
        id: key.id.clone(),
        secret: app.owner_key().secret,
    };
    let r = send(request(&app, lib, &wrong, "GET", &path, json!({}))).await;
    assert_eq!(r[0]["status"], 401, "{}", r[0]);
    // A public-key key (no secret): the HMAC under anything is refused.
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &app.owner(),
            json!({"displayName": "pk", "publicKey": {"kty": "OKP", "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let public = Key {
        id: r.body["key"]["id"].as_str().expect("id").to_string(),
        secret: String::new(),
    };
    let r = send(request(&app, lib, &public, "GET", &path, json!({}))).await;
    assert_eq!(r[0]["status"], 401, "{}", r[0]);
    // Deleted: refused on the next request.
    assert_eq!(
        send(request(&app, lib, &key, "GET", &path, json!({}))).await[0]["status"],
        200
    );
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", key.id), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = send(request(&app, lib, &key, "GET", &path, json!({}))).await;
    assert_eq!(r[0]["status"], 401, "{}", r[0]);
    // Signature-Input without Signature says what to send.
    let r = TestApp::send(app.http.get(app.url(&path)).header(
        "signature-input",
        "sig1=(\"@method\");created=1;keyid=\"x\"",
    ))
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.title().contains("together"), "{:?}", r.body);
}

/// The README's Node example (`tests/clients/signed_fetch.mjs`, Node's own
/// crypto and fetch) signs requests Latchkey accepts, with a body too.
#[tokio::test]
async fn the_readmes_node_example_signs_requests_latchkey_accepts() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Signed").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let run = |path: String, body: Option<String>| {
        let (url, key, created) = (app.url(&path), key.clone(), now(&app));
        async move {
            tokio::task::spawn_blocking(move || {
                let script = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/clients/signed_fetch.mjs"
                );
                let mut cmd = Command::new("node");
                cmd.arg(script)
                    .arg(url)
                    .arg(&key.id)
                    .arg(&key.secret)
                    .arg(created.to_string());
                if let Some(body) = body {
                    cmd.arg(body);
                }
                let out = cmd.output().expect("node");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice::<Value>(&out.stdout).expect("json")
            })
            .await
            .expect("node thread")
        }
    };
    let r = run(format!("/v1/apps/{app_id}/users?limit=5"), None).await;
    assert_eq!(r["status"], 200, "{r}");
    let r = run(
        format!("/v1/apps/{app_id}/users"),
        Some(json!({"externalId": "node-user"}).to_string()),
    )
    .await;
    assert_eq!(r["status"], 201, "{r}");
    assert_eq!(r["body"]["user"]["externalId"], "node-user");
}

/// In front of an API with no code: the gateway and forward-auth behind
/// real nginx, Traefik and Caddy (their shipped configurations) take a
/// signed request and refuse it changed.
#[tokio::test]
async fn the_gateway_and_forward_auth_take_signed_requests() {
    use proxies::{Rig, Via};
    for via in [Via::Gateway, Via::Nginx, Via::Traefik, Via::Caddy] {
        let rig = Rig::start(via).await;
        let path = rig.app_path();
        let mut req = request(&rig.app, LIBS[0], &rig.key, "GET", &path, json!({}));
        req["url"] = json!(format!("{}{path}", rig.base));
        let before = rig.upstream.hits();
        let r = send(req.clone()).await;
        assert_eq!(r[0]["status"], 200, "{via:?}: {}", r[0]);
        let seen = rig.upstream.only_since(before);
        assert_eq!(
            seen.header("x-latchkey-key-id"),
            Some(rig.key.id.as_str()),
            "{via:?}"
        );
        assert_eq!(seen.header("x-latchkey-scope"), Some("app"), "{via:?}");
        if via == Via::Gateway {
            // The credential stays with the gateway, as Authorization does.
            assert_eq!(seen.header("signature"), None);
            assert_eq!(seen.header("signature-input"), None);
        }
        let mut post = req.clone();
        post["method"] = json!("POST");
        post["body"] = json!(json!({"order": 1}).to_string());
        if via == Via::Gateway {
            // The gateway reads a signed body and holds it to its
            // Content-Digest: no nonce is needed, the body reaches the
            // upstream whole, and another body is refused.
            let before = rig.upstream.hits();
            let r = send(post.clone()).await;
            assert_eq!(r[0]["status"], 200, "POST through the gateway: {}", r[0]);
            let seen = rig.upstream.only_since(before);
            assert_eq!(seen.method, "POST");
            assert_eq!(seen.body, json!({"order": 1}).to_string());
            assert!(seen.header("content-digest").is_some());
            let mut changed = post.clone();
            changed["tamper"] = json!("body");
            let before = rig.upstream.hits();
            let r = send(changed).await;
            assert_eq!(r[0]["status"], 401, "another body: {}", r[0]);
            assert!(
                r[0]["body"]["errors"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("Content-Digest")),
                "{}",
                r[0]
            );
            assert_eq!(rig.upstream.hits(), before, "another body: not forwarded");
        } else {
            // Behind forward-auth a method that may carry a body needs a
            // nonce (Latchkey does not see the body); with one, it passes
            // once.
            let r = send(post.clone()).await;
            assert_eq!(
                r[0]["status"], 401,
                "{via:?} POST without a nonce: {}",
                r[0]
            );
        }
        post["nonce"] = json!(true);
        post["repeat"] = json!(2);
        let r = send(post).await;
        assert_eq!(r[0]["status"], 200, "{via:?} POST with a nonce: {}", r[0]);
        assert_eq!(r[1]["status"], 401, "{via:?} POST replayed: {}", r[1]);
        for tamper in ["path", "method"] {
            let mut changed = req.clone();
            changed["tamper"] = json!(tamper);
            let before = rig.upstream.hits();
            let r = send(changed).await;
            assert_eq!(r[0]["status"], 401, "{via:?} {tamper}: {}", r[0]);
            assert_eq!(
                rig.upstream.hits(),
                before,
                "{via:?} {tamper}: not forwarded"
            );
        }
    }
}

/// `/v1/verify` takes a signed request as the operator's server saw it:
/// its method, absolute URI and headers.
#[tokio::test]
async fn v1_verify_answers_for_a_described_signed_request() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Signed").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let (_, verifier) = app.create_verifier_token("orders API").await;
    for lib in LIBS {
        let mut req = request(
            &app,
            lib,
            &key,
            "GET",
            "/v2/orders?limit=5",
            json!({"describe": true, "nonce": true}),
        );
        req["url"] = json!("https://api.example.com/v2/orders?limit=5");
        let described =
            tokio::task::spawn_blocking(move || jose::python_client("signed_requests.py", req))
                .await
                .expect("client thread");
        let ask = |signed: Value| {
            app.post(
                "/v1/verify",
                &verifier,
                json!({"signedRequest": signed, "appId": app_id}),
            )
        };
        // A fresh copy: the first answer records the nonce.
        let r = ask(described.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["valid"], true, "{lib}: {:?}", r.body);
        assert_eq!(r.body["keyId"], key.id.as_str());
        assert_eq!(r.body["scope"], "app");
        // The same again: its nonce was used.
        let r = ask(described.clone()).await;
        assert_eq!(r.body["valid"], false, "{lib}: {:?}", r.body);
        assert!(
            r.body["title"]
                .as_str()
                .unwrap_or_default()
                .contains("nonce"),
            "{:?}",
            r.body
        );
        // Another URI or method: refused.
        let mut other = described.clone();
        other["uri"] = json!("https://api.example.com/v2/orders?limit=500");
        assert_eq!(ask(other).await.body["valid"], false, "{lib}");
        let mut other = described.clone();
        other["method"] = json!("DELETE");
        assert_eq!(ask(other).await.body["valid"], false, "{lib}");
    }
    // Neither, or both: 400.
    for body in [
        json!({"appId": app_id}),
        json!({"authorization": key.basic(), "signedRequest": {"method": "GET", "uri": "https://h/"}}),
    ] {
        let r = app.post("/v1/verify", &verifier, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    }
    // A relative URI says what to send.
    let r = app
        .post(
            "/v1/verify",
            &verifier,
            json!({"signedRequest": {"method": "GET", "uri": "/v2/orders", "headers": {}}}),
        )
        .await;
    assert_eq!(r.body["valid"], false);
    assert!(
        r.body["title"]
            .as_str()
            .unwrap_or_default()
            .contains("absolute"),
        "{:?}",
        r.body
    );
}

/// A method that may carry a body must cover content-digest, even without
/// one: a proxy or HTTP/2 may hide the body from Latchkey.
#[tokio::test]
async fn a_bodiless_post_must_still_cover_content_digest() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Signed").await;
    let path = format!("/v1/apps/{app_id}/signingKeys/rotate");
    // http-message-signatures covers content-digest only with a body.
    let r = send(request(
        &app,
        LIBS[1],
        &app.owner_key(),
        "POST",
        &path,
        json!({}),
    ))
    .await;
    assert_eq!(r[0]["status"], 401, "{}", r[0]);
    let title = r[0]["body"]["errors"][0]["title"]
        .as_str()
        .unwrap_or_default();
    assert!(title.contains("content-digest"), "{title}");
    // requests-http-signature covers it always (the empty body's digest).
    let r = send(request(
        &app,
        LIBS[0],
        &app.owner_key(),
        "POST",
        &path,
        json!({}),
    ))
    .await;
    assert_eq!(r[0]["status"], 201, "{}", r[0]);
}

/// The gateway reads a signed body to check it, so it bounds it
/// (`--gateway-max-signed-body-bytes`): a larger one is refused with 413
/// before it reaches the upstream; an unsigned one is streamed whatever
/// its size.
#[tokio::test]
async fn the_gateway_bounds_the_signed_body_it_reads() {
    use proxies::{Rig, Via};
    let rig = Rig::start_with(Via::Gateway, |g| g.max_signed_body_bytes = 64).await;
    let path = rig.app_path();
    let mut post = request(&rig.app, LIBS[0], &rig.key, "POST", &path, json!({}));
    post["url"] = json!(format!("{}{path}", rig.base));
    post["body"] = json!("x".repeat(65));
    let before = rig.upstream.hits();
    let r = send(post.clone()).await;
    assert_eq!(r[0]["status"], 413, "{}", r[0]);
    assert_eq!(
        r[0]["body"]["errors"][0]["code"], "payload_too_large",
        "{}",
        r[0]
    );
    assert!(
        r[0]["body"]["errors"][0]["title"]
            .as_str()
            .is_some_and(|t| t.contains("--gateway-max-signed-body-bytes")),
        "{}",
        r[0]
    );
    assert_eq!(rig.upstream.hits(), before, "not forwarded");
    post["body"] = json!("x".repeat(64));
    let r = send(post.clone()).await;
    assert_eq!(r[0]["status"], 200, "at the limit: {}", r[0]);
    // Sent chunked (no Content-Length): read and checked all the same,
    // and framed for the upstream by its length.
    post["chunked"] = json!(true);
    let before = rig.upstream.hits();
    let r = send(post.clone()).await;
    assert_eq!(r[0]["status"], 200, "chunked: {}", r[0]);
    let seen = rig.upstream.only_since(before);
    assert_eq!(seen.body, "x".repeat(64));
    assert_eq!(seen.header("content-length"), Some("64"));
    assert_eq!(seen.header("transfer-encoding"), None);
    post["body"] = json!("x".repeat(32));
    post["tamper"] = json!("body");
    let before = rig.upstream.hits();
    let r = send(post.clone()).await;
    assert_eq!(r[0]["status"], 401, "chunked, another body: {}", r[0]);
    assert_eq!(rig.upstream.hits(), before);
    post["tamper"] = json!(null);
    post["body"] = json!("x".repeat(65));
    let r = send(post).await;
    assert_eq!(r[0]["status"], 413, "chunked, over the limit: {}", r[0]);
    assert_eq!(rig.upstream.hits(), before);
    // Basic with a larger body: streamed, not read.
    let before = rig.upstream.hits();
    let response = reqwest::Client::new()
        .post(format!("{}{path}", rig.base))
        .header("authorization", rig.key.basic())
        .body("y".repeat(10_000))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(rig.upstream.only_since(before).body.len(), 10_000);
}

/// In-process: a replica verifies a signed request from memory, holding
/// the body it is given to `Content-Digest`, and asking a request whose
/// body it is not given for a nonce, as the server does.
#[tokio::test]
async fn a_replica_verifies_signed_requests_from_memory() {
    use latchkey_replica::{SignedRequest, Target};
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Signed").await;
    let other_app = app.create_app(&app.owner(), "Other").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let replica = app.replica().await;
    let url = format!("https://api.example.com/v2/apps/{app_id}?view=full");
    let body = json!({"order": 1}).to_string();
    let describe = |lib: &str, method: &str, nonce: bool| {
        let mut req = request(
            &app,
            lib,
            &key,
            method,
            "/",
            json!({"describe": true, "nonce": nonce}),
        );
        req["url"] = json!(url);
        if method == "POST" {
            req["body"] = json!(body);
        }
        async move {
            let described =
                tokio::task::spawn_blocking(move || jose::python_client("signed_requests.py", req))
                    .await
                    .expect("client thread");
            let mut headers = axum::http::HeaderMap::new();
            for (name, value) in described["headers"].as_object().expect("headers") {
                headers.append(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    value.as_str().expect("text").parse().expect("value"),
                );
            }
            (
                described["method"].as_str().expect("method").to_string(),
                described["uri"].as_str().expect("uri").to_string(),
                headers,
            )
        }
    };
    let target = Target::app(&app_id);
    let title = |r: Result<latchkey_replica::Verification, latchkey_replica::Refusal>| {
        let refusal = r.expect_err("refused");
        assert_eq!(refusal.status, 401, "{refusal:?}");
        refusal.title
    };
    for lib in LIBS {
        // A POST with its body: verified, and again (the body binds it).
        let (method, uri, headers) = describe(lib, "POST", false).await;
        let signed = |body: Option<&'static [u8]>| SignedRequest {
            method: &method,
            url: &uri,
            headers: &headers,
            body,
        };
        let body: &'static [u8] = Box::leak(body.clone().into_bytes().into_boxed_slice());
        for _ in 0..2 {
            let v = replica
                .verify_signed_request(&signed(Some(body)), &target)
                .unwrap_or_else(|r| panic!("{lib}: {r:?}"));
            assert_eq!(v.principal.key_id(), Some(key.id.as_str()));
            assert_eq!(v.app_id(), Some(app_id.as_str()));
        }
        // Another body, or none without a nonce: refused, saying why.
        let t = title(replica.verify_signed_request(&signed(Some(b"{\"order\":2}")), &target));
        assert!(t.contains("Content-Digest"), "{lib}: {t}");
        let t = title(replica.verify_signed_request(&signed(None), &target));
        assert!(t.contains("nonce"), "{lib}: {t}");
        // Another app than the key's: not found, as the server answers.
        let r = replica.verify_signed_request(&signed(Some(body)), &Target::app(&other_app));
        assert_eq!(r.expect_err("another app").status, 404);
        // Another URL: refused.
        let moved = uri.replace("view=full", "view=all");
        let r = replica.verify_signed_request(
            &SignedRequest {
                url: &moved,
                ..signed(Some(body))
            },
            &target,
        );
        let t = title(r);
        assert!(t.contains("does not match"), "{lib}: {t}");
        // With a nonce and no body: once.
        let (method, uri, headers) = describe(lib, "POST", true).await;
        let once = SignedRequest {
            method: &method,
            url: &uri,
            headers: &headers,
            body: None,
        };
        replica
            .verify_signed_request(&once, &target)
            .unwrap_or_else(|r| panic!("{lib} with a nonce: {r:?}"));
        let t = title(replica.verify_signed_request(&once, &target));
        assert!(t.contains("already used"), "{lib}: {t}");
        // A GET needs neither body nor nonce.
        let (method, uri, headers) = describe(lib, "GET", false).await;
        let get = SignedRequest {
            method: &method,
            url: &uri,
            headers: &headers,
            body: None,
        };
        replica
            .verify_signed_request(&get, &target)
            .unwrap_or_else(|r| panic!("{lib} GET: {r:?}"));
    }
    // The key deleted: refused once the replica has the change.
    let (method, uri, headers) = describe(LIBS[0], "GET", false).await;
    let get = SignedRequest {
        method: &method,
        url: &uri,
        headers: &headers,
        body: None,
    };
    let r = app
        .delete(&format!("/v1/apps/{app_id}/keys/{}", key.id), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let started = std::time::Instant::now();
    while replica.verify_signed_request(&get, &target).is_ok() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "the deleted key still signs at the replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The signed bodies the gateway holds at once are bounded too (64 MiB,
/// or four at the limit): past it a signed request with a body is answered
/// 503 with Retry-After instead of read, and is served again once the
/// bodies held are gone.
#[tokio::test]
async fn the_gateway_bounds_the_signed_bodies_it_holds_at_once() {
    use proxies::{Rig, Via};
    use tokio::io::AsyncWriteExt;
    let limit = 16 * 1024 * 1024;
    let rig = Rig::start_with(Via::Gateway, |g| g.max_signed_body_bytes = limit).await;
    assert_eq!(
        latchkey_server::front::gateway::signed_body_budget(limit),
        4 * limit
    );
    let path = rig.app_path();
    let mut post = request(&rig.app, LIBS[0], &rig.key, "POST", &path, json!({}));
    post["url"] = json!(format!("{}{path}", rig.base));
    post["body"] = json!("{}");
    // Four signed requests that declare a body at the limit and send none:
    // each takes its declared share while the gateway waits for it.
    let mut describe = post.clone();
    describe["describe"] = json!(true);
    let described =
        tokio::task::spawn_blocking(move || jose::python_client("signed_requests.py", describe))
            .await
            .expect("client thread");
    let authority = rig.base.trim_start_matches("http://").to_string();
    let mut head =
        format!("POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-length: {limit}\r\n");
    for (name, value) in described["headers"].as_object().expect("headers") {
        if !["host", "content-length"].contains(&name.to_ascii_lowercase().as_str()) {
            head.push_str(&format!("{name}: {}\r\n", value.as_str().expect("text")));
        }
    }
    head.push_str("\r\n");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(&authority)
            .await
            .expect("connect to the gateway");
        stream
            .write_all(head.as_bytes())
            .await
            .expect("send the head");
        held.push(stream);
    }
    // A small signed body is refused once they are all held.
    let started = std::time::Instant::now();
    loop {
        let r = send(post.clone()).await;
        if r[0]["status"] == 503 {
            assert_eq!(r[0]["body"]["errors"][0]["code"], "unavailable", "{}", r[0]);
            break;
        }
        assert_eq!(r[0]["status"], 200, "{}", r[0]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the budget never filled"
        );
    }
    // Unsigned bodies are streamed, whatever the budget.
    let response = reqwest::Client::new()
        .post(format!("{}{path}", rig.base))
        .header("authorization", rig.key.basic())
        .body("unsigned")
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), StatusCode::OK);
    // The held requests gone, their shares come back.
    drop(held);
    let started = std::time::Instant::now();
    loop {
        let r = send(post.clone()).await;
        if r[0]["status"] == 200 {
            break;
        }
        assert_eq!(r[0]["status"], 503, "{}", r[0]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the budget was not given back"
        );
    }
}
