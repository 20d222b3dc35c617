//! The audit log: the account's (`/v1/audit`) and an app's.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Ops, Robot, Tour, World, id_of};
use crate::common::{Key, StatusCode, TestApp};

/// What `the_account_audit_log` reaches.
pub const ACCOUNT_AUDIT: Ops = &[("get", "/v1/audit")];

/// What `an_app_audit_log` reaches.
pub const APP_AUDIT: Ops = &[("get", "/v1/apps/{app_id}/audit"), ("get", "/v1/audit")];

/// What the audit logs are asked about, made with plain calls first.
struct History {
    world: World,
    robot: Robot,
    /// A second account, created by the operator, and its owner's key.
    account2: String,
    account2_owner: Key,
    /// A token minted for bob, for 600 s.
    bob_token: String,
}

impl History {
    async fn make(app: &TestApp) -> Self {
        let owner = app.owner();
        let world = World::new(app).await;
        let bob = world.with_users(app).await;
        let r = app
            .post(
                &format!("{}/users/{bob}/tokens", world.ap),
                &world.app_basic_auth,
                json!({"ttlSeconds": 600}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let bob_token = format!("Bearer {}", r.body["token"].as_str().expect("token"));
        // A service account granted the app, then no longer.
        let robot = Robot::new(app).await;
        robot.grant(app, &world.app_id).await;
        let r = app
            .delete(&format!("{}/apps/{}", robot.sa, world.app_id), &owner)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
        let r = app
            .post(
                "/v1/accounts",
                &app.operator(),
                json!({"displayName": "Second", "owner": {"email": "second@example.com", "password": "a long enough password"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let account2 = id_of(&r, "account");
        let account2_owner = Key::from_reply(&r);
        // A key rotated twice; the first rotation leaves the old key 60 s
        // of grace, so a day later it has expired (a key notice).
        let r = app
            .post(
                &format!("{}/keys", world.ap),
                &owner,
                json!({"displayName": "expiring", "expiresAt": "2027-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let expiring = Key::from_reply(&r);
        let r = app
            .post(
                &format!("{}/keys/{}/rotate", world.ap, expiring.id),
                &owner,
                json!({"graceSeconds": 60}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let rotated = Key::from_reply(&r);
        let r = app
            .call(
                Method::POST,
                &format!("{}/keys/{}/rotate", world.ap, rotated.id),
                Some(&owner),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        // A request of the owner's refused (an event with outcome failure).
        let r = app
            .post(
                "/v1/apps",
                &owner,
                json!({"displayName": "x", "colour": "red"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        History {
            world,
            robot,
            account2,
            account2_owner,
            bob_token,
        }
    }
}

#[tokio::test]
async fn the_account_audit_log() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());
    let History {
        world,
        robot,
        account2,
        account2_owner,
        bob_token,
    } = History::make(&app).await;
    let World {
        app_id,
        app_basic_auth,
        alice_auth,
        ..
    } = world;
    let app_basic = Some(app_basic_auth.as_str());
    let alice = Some(alice_auth.as_str());
    let Robot {
        sa_id, svc_basic, ..
    } = robot;

    let r = t
        .call(
            "get",
            "/v1/audit",
            "/v1/audit?limit=100",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let events = r.body["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["outcome"] == "failure"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["action"] == "key.rotated"));
    let r = t
        .call(
            "get",
            "/v1/audit",
            "/v1/audit?limit=1&action=key.rotated",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let cursor = r.body["meta"]["afterCursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    t.call(
        "get",
        "/v1/audit",
        &format!("/v1/audit?after={cursor}&action=key.rotated&since=2025-01-01T00:00:00Z&until=2030-01-01T00:00:00%2B01:00"),
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        "/v1/audit",
        "/v1/audit?action=POST%20%2Fv1%2Fapps%2F%7Bapp_id%7D%2Fkeys%2F%7Bkey_id%7D%2Frotate",
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/audit",
            "/v1/audit",
            Some(svc_basic.as_str()),
            None,
            StatusCode::OK,
        )
        .await;
    // A service account sees the events of the apps it reaches, and those
    // about itself and its keys.
    let events = r.body["events"].as_array().expect("events");
    assert!(
        events.iter().all(|e| e["appId"] == app_id.as_str()
            || e["target"]["id"] == sa_id.as_str()
            || e["details"]["owner"] == sa_id.as_str()),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "serviceAccount.created"),
        "{events:?}"
    );
    for q in [
        "since=yesterday",
        "colour=red",
        "limit=0",
        "after=evt_nothing",
    ] {
        t.call(
            "get",
            "/v1/audit",
            &format!("/v1/audit?{q}"),
            owner,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for auth in [app_basic, alice] {
        t.call(
            "get",
            "/v1/audit",
            "/v1/audit",
            auth,
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    // accountId: required of the operator, refused from anyone else.
    let by_operator = format!("/v1/audit?accountId={account2}");
    for (path, auth) in [
        ("/v1/audit", op),
        (by_operator.as_str(), owner),
        (by_operator.as_str(), app_basic),
    ] {
        t.call(
            "get",
            "/v1/audit",
            path,
            auth,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    // The operator sees its own token id and address; customers see only
    // that the operator acted.
    let r = t
        .call("get", "/v1/audit", &by_operator, op, None, StatusCode::OK)
        .await;
    let created = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "account.created")
        .expect("account.created")
        .clone();
    assert_eq!(created["actor"]["type"], "operator");
    assert!(created["actor"]["id"].is_string(), "{created}");
    assert!(created["address"].is_string(), "{created}");
    let account2_auth = account2_owner.basic();
    let r = t
        .call(
            "get",
            "/v1/audit",
            "/v1/audit?action=account.created",
            Some(&account2_auth),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["events"][0]["id"], created["id"]);
    assert_eq!(r.body["events"][0]["actor"]["type"], "operator");
    assert_eq!(r.body["events"][0]["actor"]["id"], Value::Null);
    assert_eq!(r.body["events"][0]["address"], Value::Null);
    let r = t
        .call(
            "get",
            "/v1/audit",
            &format!(
                "/v1/audit?accountId={}&action=token.minted",
                app.account_id()
            ),
            op,
            None,
            StatusCode::OK,
        )
        .await;
    let minted = r.body["events"].as_array().expect("events");
    assert!(
        minted
            .iter()
            .any(|e| e["target"]["id"] == "bob" && e["details"]["ttlSeconds"] == 600),
        "{minted:?}"
    );
    assert!(
        !r.body
            .to_string()
            .contains(bob_token.trim_start_matches("Bearer "))
    );

    t.assert_covered(ACCOUNT_AUDIT);
}

#[tokio::test]
async fn an_app_audit_log() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());
    let History { world, robot, .. } = History::make(&app).await;
    let World {
        ap,
        app_basic_auth,
        alice_auth,
        ..
    } = world;
    let app_basic = Some(app_basic_auth.as_str());
    let alice = Some(alice_auth.as_str());
    let Robot { svc_basic, .. } = robot;

    let app_audit = format!("{ap}/audit");
    for auth in [app_basic, owner] {
        t.call(
            "get",
            "/v1/apps/{app_id}/audit",
            &app_audit,
            auth,
            None,
            StatusCode::OK,
        )
        .await;
    }
    t.call(
        "get",
        "/v1/apps/{app_id}/audit",
        &format!("{app_audit}?accountId={}", app.account_id()),
        owner,
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // The grant was revoked above: the app is out of the service account's reach.
    t.call(
        "get",
        "/v1/apps/{app_id}/audit",
        &app_audit,
        Some(svc_basic.as_str()),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    for auth in [alice, op] {
        t.call(
            "get",
            "/v1/apps/{app_id}/audit",
            &app_audit,
            auth,
            None,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    t.call(
        "get",
        "/v1/apps/{app_id}/audit",
        "/v1/apps/ap_0000000000000000000000/audit",
        owner,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/audit",
            &format!("{app_audit}?until=2020-01-01T00:00:00Z"),
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body,
        json!({"events": [], "meta": {"hasMore": false, "afterCursor": null}})
    );
    // A system event (key notice) in the log.
    app.clock.advance(time::Duration::days(1));
    let state = &app.server.as_ref().expect("running").state;
    let n = latchkey_server::maintenance::run_key_notices(state)
        .await
        .expect("notices");
    assert!(n > 0);
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/audit",
            &app_audit,
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        r.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["actor"]["type"] == "system"),
        "{:?}",
        r.body
    );
    t.call(
        "get",
        "/v1/audit",
        "/v1/audit?limit=100",
        owner,
        None,
        StatusCode::OK,
    )
    .await;

    t.assert_covered(APP_AUDIT);
}
