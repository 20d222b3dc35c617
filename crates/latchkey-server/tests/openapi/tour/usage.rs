//! Usage analytics: an app's (`/v1/apps/{app_id}/usage`) and the
//! account's (`/v1/usage`), with counts in them.

use std::time::Duration;

use serde_json::json;

use super::{Ops, Robot, Tour, World};
use crate::common::{StatusCode, TestApp};

/// What `usage_of_an_app_and_of_the_account` reaches.
pub const USAGE: Ops = &[("get", "/v1/apps/{app_id}/usage"), ("get", "/v1/usage")];

#[tokio::test]
async fn usage_of_an_app_and_of_the_account() {
    let app = TestApp::spawn_with(|c| c.last_used_flush_interval = Duration::from_millis(50)).await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let world = World::new(&app).await;
    let robot = Robot::new(&app).await;
    robot.grant(&app, &world.app_id).await;
    // Something to count: the app key accepted twice and refused once.
    for authorization in [
        world.app_basic_auth.clone(),
        world.alice_auth.clone(),
        crate::common::basic(&world.key.id, "lksk_wrong"),
    ] {
        let r = app
            .post(
                "/v1/verify",
                &app.operator(),
                json!({ "authorization": authorization }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let template = "/v1/apps/{app_id}/usage";
    let path = format!("{}/usage", world.ap);
    let mut seen = 0;
    for _ in 0..100 {
        let r = t
            .call("get", template, &path, owner, None, StatusCode::OK)
            .await;
        seen = r.body["totals"]["valid"].as_i64().expect("valid");
        // A flush may fall between the checks: wait for the refusal too.
        let refused = r.body["totals"]["refused"].as_object().map(|m| m.len());
        if seen == 2 && refused == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 2);
    let app_key = Some(world.app_basic_auth.as_str());
    t.call(
        "get",
        template,
        &format!("{path}?keyId={}&granularity=minute", world.key.id),
        app_key,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        template,
        &format!(
            "{path}?granularity=day&since=2025-12-01T00:00:00Z&until=2026-01-02T00:00:00%2B01:00"
        ),
        Some(robot.svc_basic.as_str()),
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        template,
        &format!("{path}?granularity=second"),
        owner,
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.call(
        "get",
        template,
        &path,
        Some(world.alice_auth.as_str()),
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    t.call(
        "get",
        template,
        "/v1/apps/app_nothere/usage",
        owner,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;

    let r = t
        .call(
            "get",
            "/v1/usage",
            "/v1/usage?granularity=hour",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let apps = r.body["apps"].as_array().expect("apps");
    assert!(
        apps.iter()
            .any(|a| a["appId"] == world.app_id.as_str() && a["valid"].as_i64() >= Some(2)),
        "{apps:?}"
    );
    t.call(
        "get",
        "/v1/usage",
        "/v1/usage",
        Some(robot.svc_basic.as_str()),
        None,
        StatusCode::OK,
    )
    .await;
    let op = app.operator();
    t.call(
        "get",
        "/v1/usage",
        &format!("/v1/usage?accountId={}", app.account_id()),
        Some(op.as_str()),
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "get",
        "/v1/usage",
        "/v1/usage",
        Some(op.as_str()),
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.call(
        "get",
        "/v1/usage",
        "/v1/usage",
        app_key,
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    t.call(
        "get",
        "/v1/usage",
        "/v1/usage",
        None,
        None,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    t.assert_covered(USAGE);
}
