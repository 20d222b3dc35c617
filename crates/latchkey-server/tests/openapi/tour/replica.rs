//! Replica tokens and the replication feed.

use std::time::Duration;

use serde_json::json;

use super::{Ops, Tour, World, id_of};
use crate::common::{StatusCode, TestApp};

/// What `replica_tokens_and_the_feed` reaches.
pub const REPLICA: Ops = &[
    ("post", "/v1/replicaTokens"),
    ("get", "/v1/replicaTokens"),
    ("get", "/v1/replicaTokens/{token_id}"),
    ("get", "/v1/replica/snapshot"),
    ("get", "/v1/replica/changes"),
    ("delete", "/v1/replicaTokens/{token_id}"),
];

#[tokio::test]
async fn replica_tokens_and_the_feed() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());
    // Keys, apps, a service account with a grant, members: every kind of
    // line the feed sends.
    let World { .. } = World::new(&app).await;
    let super::Robot { .. } = super::Robot::new(&app).await;
    // And a public-key key, which the feed sends with its JWK.
    let public_app = app.create_app(&app.owner(), "public").await;
    let made = app
        .post(
            &format!("/v1/apps/{public_app}/keys"),
            &app.owner(),
            json!({"displayName": "public", "publicKey": super::public_jwk(false)}),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    // And an app with a signing key (an EdDSA token minted).
    let minted = app
        .post(
            &format!("/v1/apps/{public_app}/users/alice/tokens"),
            &app.owner(),
            json!({"alg": "EdDSA"}),
        )
        .await;
    assert_eq!(minted.status, StatusCode::CREATED, "{:?}", minted.body);

    let r = t
        .call(
            "post",
            "/v1/replicaTokens",
            "/v1/replicaTokens",
            op,
            Some(json!({"displayName": "edge"})),
            StatusCode::CREATED,
        )
        .await;
    let rt = id_of(&r, "replicaToken");
    let rt_auth = format!(
        "Bearer {}",
        r.body["replicaToken"]["token"].as_str().expect("token")
    );
    t.call(
        "get",
        "/v1/replicaTokens",
        "/v1/replicaTokens?limit=1",
        op,
        None,
        StatusCode::OK,
    )
    .await;
    let rt_path = format!("/v1/replicaTokens/{rt}");
    t.call(
        "get",
        "/v1/replicaTokens/{token_id}",
        &rt_path,
        op,
        None,
        StatusCode::OK,
    )
    .await;
    let snapshot = t
        .stream(
            "/v1/replica/snapshot",
            "/v1/replica/snapshot",
            &rt_auth,
            Duration::from_secs(10),
            StatusCode::OK,
        )
        .await;
    let text = snapshot.body.as_str().expect("lines");
    let head: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("head")).expect("json");
    let seq = head["head"]["seq"].as_i64().expect("seq");
    assert!(
        text.lines().any(|l| l.contains("\"publicKey\"")),
        "the public-key key is in the snapshot"
    );
    assert!(
        text.lines().any(|l| l.contains("\"signers\"")),
        "the app's signing key is in the snapshot"
    );
    // Every kind of change after the snapshot: an app, a key, an app
    // user's key deleted, a service account granted.
    let owner = app.owner();
    let ap = app.create_app(&owner, "after").await;
    let key = app.create_app_key(&owner, &ap).await;
    let r = app
        .delete(&format!("/v1/apps/{ap}/keys/{}", key.id), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let sa = app.create_service_account(&owner).await;
    let r = app
        .put(&format!("/v1/serviceAccounts/{sa}/apps/{ap}"), &owner)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let changes = t
        .stream(
            "/v1/replica/changes",
            &format!("/v1/replica/changes?after={seq}"),
            &rt_auth,
            Duration::from_millis(1200),
            StatusCode::OK,
        )
        .await;
    let text = changes.body.as_str().expect("lines");
    for kind in [
        "\"hello\"",
        "\"app\"",
        "\"key\"",
        "\"serviceAccount\"",
        "\"heartbeat\"",
    ] {
        assert!(text.contains(kind), "no {kind} line in {text}");
    }
    t.stream(
        "/v1/replica/changes",
        "/v1/replica/changes?after=x",
        &rt_auth,
        Duration::from_secs(5),
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.stream(
        "/v1/replica/snapshot",
        "/v1/replica/snapshot",
        &op_auth,
        Duration::from_secs(5),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    t.call(
        "delete",
        "/v1/replicaTokens/{token_id}",
        &rt_path,
        op,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    t.assert_covered(REPLICA);
}
