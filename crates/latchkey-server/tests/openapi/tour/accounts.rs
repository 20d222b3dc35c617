//! Accounts, with the operator token.

use serde_json::json;

use super::{Ops, Tour, id_of};
use crate::common::{StatusCode, TestApp};

/// What `accounts_are_created_paged_read_and_deleted` reaches.
pub const ACCOUNTS: Ops = &[
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts"),
    ("get", "/v1/accounts/{account_id}"),
    ("delete", "/v1/accounts/{account_id}"),
];

#[tokio::test]
async fn accounts_are_created_paged_read_and_deleted() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let op_auth = app.operator();
    let op = Some(op_auth.as_str());

    // Accounts.
    let r = t
        .call(
            "post",
            "/v1/accounts",
            "/v1/accounts",
            op,
            Some(json!({"displayName": " Second ", "owner": {"email": "Second@Example.com", "password": "a long enough password"}})),
            StatusCode::CREATED,
        )
        .await;
    let account2 = id_of(&r, "account");
    assert_eq!(r.body["account"]["displayName"], "Second");
    assert_eq!(r.body["user"]["email"], "second@example.com");
    let r = t
        .call(
            "get",
            "/v1/accounts",
            "/v1/accounts?limit=1",
            op,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["meta"]["hasMore"], true);
    let cursor = r.body["meta"]["afterCursor"].as_str().expect("cursor");
    let r = t
        .call(
            "get",
            "/v1/accounts",
            &format!("/v1/accounts?after={cursor}"),
            op,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        r.body["meta"],
        json!({"hasMore": false, "afterCursor": null})
    );
    t.call(
        "get",
        "/v1/accounts/{account_id}",
        &format!("/v1/accounts/{account2}"),
        op,
        None,
        StatusCode::OK,
    )
    .await;

    // Deletion.
    t.call(
        "delete",
        "/v1/accounts/{account_id}",
        &format!("/v1/accounts/{account2}"),
        op,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(ACCOUNTS);
}
