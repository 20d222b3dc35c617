//! An app's webhooks.

use std::time::Duration;

use serde_json::json;

use super::{Ops, Tour, World, id_of};
use crate::common::{StatusCode, TestApp};
use crate::schema::request_errors;

/// What `webhooks_are_created_listed_read_updated_and_deleted` reaches.
pub const WEBHOOKS: Ops = &[
    ("post", "/v1/apps/{app_id}/webhooks"),
    ("get", "/v1/apps/{app_id}/webhooks"),
    ("patch", "/v1/apps/{app_id}/webhooks/{webhook_id}"),
    ("get", "/v1/apps/{app_id}/webhooks/{webhook_id}"),
    ("delete", "/v1/apps/{app_id}/webhooks/{webhook_id}"),
];

/// What `deliveries_are_listed_read_and_sent_again` reaches.
pub const DELIVERIES: Ops = &[
    ("get", "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries"),
    (
        "get",
        "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries/{delivery_id}",
    ),
    (
        "post",
        "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    ),
];

/// A receiver on 127.0.0.1 that answers every request 204; stops when
/// dropped.
struct Accepting(tokio::task::JoinHandle<()>, String);

impl Accepting {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/in", listener.local_addr().expect("addr"));
        let router = axum::Router::new().fallback(|| async { axum::http::StatusCode::NO_CONTENT });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Accepting(task, url)
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn deliveries_are_listed_read_and_sent_again() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let World {
        ap, app_basic_auth, ..
    } = World::new(&app).await;
    let app_basic = Some(app_basic_auth.as_str());
    let receiver = Accepting::start().await;
    let r = app
        .post(
            &format!("{ap}/webhooks"),
            &owner_auth,
            json!({"target": receiver.1, "triggers": ["key:created"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let hook = format!("{ap}/webhooks/{}", id_of(&r, "webhook"));
    let r = app
        .post(
            &format!("{ap}/keys"),
            &owner_auth,
            json!({"displayName": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    const LIST: &str = "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries";
    const ONE: &str = "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries/{delivery_id}";
    const AGAIN: &str =
        "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver";
    let r = t
        .call(
            "get",
            LIST,
            &format!("{hook}/deliveries"),
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let deliveries = r.body["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{:?}", r.body);
    let one = format!(
        "{hook}/deliveries/{}",
        deliveries[0]["id"].as_str().expect("id")
    );
    t.call(
        "get",
        LIST,
        &format!("{hook}/deliveries?limit=0"),
        owner,
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Sent by a dispatcher pass (the server's own polls every second too).
    latchkey_server::webhooks::dispatch_due(&app.server.as_ref().expect("running").state).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = t
            .call("get", ONE, &one, app_basic, None, StatusCode::OK)
            .await;
        if r.body["delivery"]["status"] == "delivered" {
            assert!(
                r.body["delivery"]["deliveredAt"].is_string(),
                "{:?}",
                r.body
            );
            break;
        }
        assert_eq!(r.body["delivery"]["status"], "pending", "{:?}", r.body);
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = format!("{one}/redeliver");
    let r = t
        .call("post", AGAIN, &again, app_basic, None, StatusCode::ACCEPTED)
        .await;
    assert_eq!(r.body["delivery"]["status"], "pending");
    assert_eq!(r.body["delivery"]["attempts"], 0);
    // Pending again: a second redelivery is refused (unless the dispatcher
    // has already sent it again).
    let r = app.call(reqwest::Method::POST, &again, owner, None).await;
    assert!(
        r.status == StatusCode::CONFLICT || r.status == StatusCode::ACCEPTED,
        "{:?}",
        r.body
    );
    crate::schema::check_reply(&t.doc, AGAIN, "post", &r);

    t.assert_covered(DELIVERIES);
}

#[tokio::test]
async fn webhooks_are_created_listed_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());
    let World {
        ap, app_basic_auth, ..
    } = World::new(&app).await;
    let app_basic = Some(app_basic_auth.as_str());

    // Webhooks: the secret only in the create response.
    let hooks = format!("{ap}/webhooks");
    let r = t
        .call(
            "post",
            "/v1/apps/{app_id}/webhooks",
            &hooks,
            app_basic,
            Some(json!({"target": "https://hooks.example.com/latchkey", "triggers": ["key:rotated", "key:created"]})),
            StatusCode::CREATED,
        )
        .await;
    let hook = format!("{hooks}/{}", id_of(&r, "webhook"));
    let hook_secret = r.body["webhook"]["secret"]
        .as_str()
        .expect("the create response carries the secret")
        .to_string();
    t.call(
        "get",
        "/v1/apps/{app_id}/webhooks",
        &hooks,
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/webhooks/{webhook_id}",
            &hook,
            owner,
            Some(json!({"triggers": ["key:deleted", "key:expiring"]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["webhook"]["triggers"],
        json!(["key:deleted", "key:expiring"])
    );
    // Every trigger at once: the response still matches its schema.
    let every = json!([
        "key:created",
        "key:rotated",
        "key:updated",
        "key:deleted",
        "key:expiring",
        "key:expired",
        "key:rotation-due",
        "key:rate-limited",
        "key:credits-low",
        "credential:exposed"
    ]);
    let r = t
        .call(
            "patch",
            "/v1/apps/{app_id}/webhooks/{webhook_id}",
            &hook,
            owner,
            Some(json!({ "triggers": every })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["webhook"]["triggers"], every);
    let r = t
        .call(
            "get",
            "/v1/apps/{app_id}/webhooks/{webhook_id}",
            &hook,
            app_basic,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(!r.body.to_string().contains(&hook_secret));
    let bad_target = json!({"target": "ftp://example.com/", "triggers": ["key:created"]});
    assert!(request_errors(&t.doc, "/v1/apps/{app_id}/webhooks", "post", &bad_target).is_empty());
    t.call(
        "post",
        "/v1/apps/{app_id}/webhooks",
        &hooks,
        owner,
        Some(bad_target),
        StatusCode::BAD_REQUEST,
    )
    .await;
    t.call(
        "delete",
        "/v1/apps/{app_id}/webhooks/{webhook_id}",
        &hook,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(WEBHOOKS);
}
