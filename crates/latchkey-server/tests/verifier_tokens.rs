//! Verifier tokens over real HTTP: the operator creates, lists, reads and
//! deletes them; a token is shown once; it may call `/v1/verify` and
//! `/v1/introspect` and gets 403 everywhere else; a deleted token is
//! refused by the very next request; creations and deletions are audited
//! without the token; tokens survive a restart.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Reply, StatusCode, TestApp, token_of};
use latchkey_store::{Actor, AuditFilter, Page};
use reqwest::Method;
use serde_json::{Value, json};

/// A verification of the owner's key, asked with `caller`.
async fn verify_owner(app: &TestApp, caller: &str) -> Reply {
    app.post("/v1/verify", caller, json!({"authorization": app.owner()}))
        .await
}

#[tokio::test]
async fn creating_a_verifier_token_shows_it_once() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/v1/verifierTokens",
            &app.operator(),
            json!({"displayName": "  orders API  "}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let created = &r.body["verifierToken"];
    let id = created["id"].as_str().expect("id");
    let token = created["token"].as_str().expect("token");
    assert!(id.starts_with("vt_"), "{id}");
    assert!(token.starts_with("lkvf_"), "{token}");
    assert_eq!(
        latchkey_core::secret::check_format("lkvf_", token),
        Ok(()),
        "the checksum format of every secret"
    );
    assert_eq!(created["displayName"], "orders API");
    assert!(created["createdAt"].is_string());

    let listed = app.get("/v1/verifierTokens", &app.operator()).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let items = listed.body["verifierTokens"].as_array().expect("list");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id);
    assert_eq!(items[0]["displayName"], "orders API");
    assert!(items[0].get("token").is_none(), "{}", items[0]);
    assert_eq!(listed.body["meta"]["hasMore"], false);

    let one = app
        .get(&format!("/v1/verifierTokens/{id}"), &app.operator())
        .await;
    assert_eq!(one.status, StatusCode::OK, "{:?}", one.body);
    assert_eq!(one.body["verifierToken"]["id"], id);
    assert!(one.body["verifierToken"].get("token").is_none());
    for body in [&listed.body, &one.body] {
        assert!(!body.to_string().contains(&token[5..]), "{body}");
    }
}

#[tokio::test]
async fn a_verifier_token_verifies_and_introspects() {
    let app = TestApp::spawn().await;
    let (_, verifier) = app.create_verifier_token("api").await;
    let r = verify_owner(&app, &verifier).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["valid"], true, "{:?}", r.body);
    assert_eq!(r.body["keyId"], app.owner_key().id);
    // The same through the router (a content type the direct path leaves
    // to it).
    let routed = TestApp::send(
        app.http
            .post(app.url("/v1/verify"))
            .header("authorization", &verifier)
            .header("content-type", "application/json; charset=utf-8")
            .body(json!({"authorization": app.owner()}).to_string()),
    )
    .await;
    assert_eq!(routed.status, StatusCode::OK, "{:?}", routed.body);
    assert_eq!(routed.body, r.body);
    // Basic with any user name and the token as password, as OAuth
    // clients send it.
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("gateway:{}", token_of(&verifier)))
    );
    let r = verify_owner(&app, &basic).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["valid"], true);
    let pair = app.owner_key();
    let r = app
        .post_form(
            "/v1/introspect",
            &verifier,
            &[("token", &format!("{}:{}", pair.id, pair.secret))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["active"], true);
    // A verifier token is not a credential of the operator's API.
    let r = app
        .post("/v1/verify", &verifier, json!({"authorization": verifier}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["valid"], false, "{:?}", r.body);
}

#[tokio::test]
async fn the_operator_token_still_verifies() {
    let app = TestApp::spawn().await;
    app.create_verifier_token("api").await;
    let r = verify_owner(&app, &app.operator()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["valid"], true);
}

#[tokio::test]
async fn a_verifier_token_is_refused_everywhere_else() {
    let app = TestApp::spawn().await;
    let (id, verifier) = app.create_verifier_token("api").await;
    let app_id = app.create_app(&app.owner(), "A").await;
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/accounts".into(), None),
        (
            Method::POST,
            "/v1/accounts".into(),
            Some(
                json!({"displayName": "X", "owner": {"email": "x@example.com", "password": "a long enough password"}}),
            ),
        ),
        (Method::GET, "/v1/verifierTokens".into(), None),
        (
            Method::POST,
            "/v1/verifierTokens".into(),
            Some(json!({"displayName": "another"})),
        ),
        (Method::GET, format!("/v1/verifierTokens/{id}"), None),
        (Method::DELETE, format!("/v1/verifierTokens/{id}"), None),
        (Method::GET, "/v1/account".into(), None),
        (Method::GET, "/v1/apps".into(), None),
        (Method::GET, format!("/v1/apps/{app_id}"), None),
        (Method::DELETE, format!("/v1/apps/{app_id}"), None),
        (Method::GET, "/v1/audit".into(), None),
        (Method::GET, "/v1/usage".into(), None),
        (Method::GET, format!("/v1/apps/{app_id}/usage"), None),
        (Method::GET, "/v1/serviceAccounts".into(), None),
    ];
    for (method, path, body) in calls {
        let r = app.call(method.clone(), &path, Some(&verifier), body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            r.body
        );
        assert_eq!(r.code(), "forbidden", "{method} {path}");
        let title = r.body["errors"][0]["title"].as_str().expect("title");
        assert!(
            title.contains("/v1/verify") && title.contains("/v1/introspect"),
            "{method} {path}: {title}"
        );
    }
    // Nothing happened: the app and the token are still there.
    assert_eq!(
        app.get(&format!("/v1/apps/{app_id}"), &app.owner())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(verify_owner(&app, &verifier).await.status, StatusCode::OK);
    // From a browser it is refused like every server credential.
    let r = TestApp::send(
        app.http
            .post(app.url("/v1/verify"))
            .header("authorization", &verifier)
            .header("origin", "https://example.com")
            .json(&json!({"authorization": app.owner()})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
}

#[tokio::test]
async fn only_the_operator_manages_verifier_tokens() {
    let app = TestApp::spawn().await;
    let (id, _) = app.create_verifier_token("api").await;
    let owner = app.owner();
    let name = json!({"displayName": "mine"});
    let r = app.post("/v1/verifierTokens", &owner, name.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    for path in [
        "/v1/verifierTokens".to_string(),
        format!("/v1/verifierTokens/{id}"),
    ] {
        let r = app.get(&path, &owner).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    let r = app
        .delete(&format!("/v1/verifierTokens/{id}"), &owner)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .call(Method::GET, "/v1/verifierTokens", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get("www-authenticate").is_some());
    // Still there.
    let r = app
        .get(&format!("/v1/verifierTokens/{id}"), &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn deleting_a_verifier_token_refuses_it_on_the_next_request() {
    let app = TestApp::spawn().await;
    let (id, verifier) = app.create_verifier_token("api").await;
    let (_, other) = app.create_verifier_token("other").await;
    assert_eq!(verify_owner(&app, &verifier).await.status, StatusCode::OK);
    let r = app
        .delete(&format!("/v1/verifierTokens/{id}"), &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    // The direct path, the router, introspection and Basic all refuse it.
    let r = verify_owner(&app, &verifier).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(r.headers.get("www-authenticate").is_some());
    let r = app
        .post_form("/v1/introspect", &verifier, &[("token", "x")])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!(":{}", token_of(&verifier)))
    );
    assert_eq!(
        verify_owner(&app, &basic).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The other token still works.
    assert_eq!(verify_owner(&app, &other).await.status, StatusCode::OK);
    let r = app
        .get(&format!("/v1/verifierTokens/{id}"), &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    let r = app
        .delete(&format!("/v1/verifierTokens/{id}"), &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_is_refused_in_the_documented_format() {
    let app = TestApp::spawn().await;
    let op = app.operator();
    for body in [
        json!({}),
        json!({"displayName": ""}),
        json!({"displayName": "   "}),
        json!({"displayName": "x".repeat(101)}),
        json!({"displayName": "a\u{7}b"}),
        json!({"displayName": 5}),
        json!({"displayName": "ok", "token": "lkvf_mine"}),
        json!("displayName"),
    ] {
        let r = app.post("/v1/verifierTokens", &op, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.code(), "bad_request", "{body}");
        assert!(r.body["errors"][0]["title"].is_string(), "{body}");
    }
    let r = TestApp::send(
        app.http
            .post(app.url("/v1/verifierTokens"))
            .header("authorization", &op)
            .header("content-type", "text/plain")
            .body("displayName=x"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?after=vt_nope",
        "?color=red",
    ] {
        let r = app.get(&format!("/v1/verifierTokens{query}"), &op).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {:?}", r.body);
        assert_eq!(r.code(), "bad_request", "{query}");
    }
    let r = app.get("/v1/verifierTokens/vt_nope", &op).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.delete("/v1/verifierTokens/vt_nope", &op).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Nothing was created.
    let r = app.get("/v1/verifierTokens", &op).await;
    assert_eq!(r.body["verifierTokens"], json!([]));
}

#[tokio::test]
async fn the_list_pages_in_creation_order() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.create_verifier_token(&format!("api {i}")).await.0);
    }
    let op = app.operator();
    let first = app.get("/v1/verifierTokens?limit=2", &op).await;
    let page: Vec<&str> = first.body["verifierTokens"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(page, [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(first.body["meta"]["hasMore"], true);
    assert_eq!(first.body["meta"]["afterCursor"], ids[1]);
    let rest = app
        .get(&format!("/v1/verifierTokens?limit=2&after={}", ids[1]), &op)
        .await;
    assert_eq!(rest.body["verifierTokens"][0]["id"], ids[2]);
    assert_eq!(rest.body["meta"]["hasMore"], false);
    assert_eq!(rest.body["meta"]["afterCursor"], Value::Null);
}

#[tokio::test]
async fn creations_and_deletions_are_audited_without_the_token() {
    let app = TestApp::spawn().await;
    let (id, verifier) = app.create_verifier_token("audited").await;
    // A refused call of the verifier token is recorded too.
    let r = app
        .post("/v1/verifierTokens", &verifier, json!({"displayName": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .delete(&format!("/v1/verifierTokens/{id}"), &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let store = &app.server.as_ref().expect("running").state.store;
    let events = store
        .list_audit(
            &AuditFilter::default(),
            &Page {
                limit: 100,
                after: None,
            },
        )
        .await
        .expect("audit")
        .items;
    let find = |action: &str| {
        events
            .iter()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no {action} event in {events:?}"))
    };
    for action in ["verifierToken.created", "verifierToken.deleted"] {
        let e = find(action);
        assert!(matches!(e.actor, Actor::Operator { .. }), "{e:?}");
        assert_eq!(e.target_type, "verifierToken");
        assert_eq!(e.target_id.as_deref(), Some(id.as_str()));
        assert_eq!(e.outcome, "success");
        assert_eq!(e.account_id, None);
    }
    assert_eq!(
        find("verifierToken.created").details["displayName"],
        "audited"
    );
    let refused = find("POST /v1/verifierTokens");
    assert_eq!(
        refused.actor,
        Actor::VerifierToken {
            token_id: id.clone()
        }
    );
    assert_eq!(refused.outcome, "failure");
    let everything = format!("{events:?}");
    assert!(!everything.contains(&token_of(&verifier)[5..]));
}

#[tokio::test]
async fn verifier_tokens_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let (_, kept) = app.create_verifier_token("kept").await;
    let (gone_id, gone) = app.create_verifier_token("gone").await;
    let r = app
        .delete(&format!("/v1/verifierTokens/{gone_id}"), &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.restart().await;
    let r = verify_owner(&app, &kept).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["valid"], true);
    assert_eq!(
        verify_owner(&app, &gone).await.status,
        StatusCode::UNAUTHORIZED
    );
}
