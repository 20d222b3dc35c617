//! Teams: the account's members and invites.

use serde_json::json;

use super::{Ops, Tour, id_of};
use crate::common::{StatusCode, TestApp};
use crate::team::{Forms, PASSWORD};

/// What `members_and_invites` reaches.
pub const MEMBERS: Ops = &[
    ("post", "/v1/account/invites"),
    ("get", "/v1/account/invites"),
    ("delete", "/v1/account/invites/{invite_id}"),
    ("get", "/v1/account/members"),
    ("patch", "/v1/account/members/{user_id}"),
    ("delete", "/v1/account/members/{user_id}"),
];

#[tokio::test]
async fn members_and_invites() {
    let app = TestApp::spawn().await;
    let mut t = Tour::new(&app);
    let owner_auth = app.owner();
    let owner = Some(owner_auth.as_str());

    let r = t
        .call(
            "post",
            "/v1/account/invites",
            "/v1/account/invites",
            owner,
            Some(json!({"email": "dev@example.com", "role": "developer"})),
            StatusCode::CREATED,
        )
        .await;
    let token = r.body["token"].as_str().expect("token").to_string();
    let r = t
        .call(
            "post",
            "/v1/account/invites",
            "/v1/account/invites",
            owner,
            Some(json!({"email": "later@example.com", "role": "viewer"})),
            StatusCode::CREATED,
        )
        .await;
    let revoked = id_of(&r, "invite");
    t.call(
        "get",
        "/v1/account/invites",
        "/v1/account/invites",
        owner,
        None,
        StatusCode::OK,
    )
    .await;
    t.call(
        "delete",
        "/v1/account/invites/{invite_id}",
        &format!("/v1/account/invites/{revoked}"),
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    // The developer accepts in the dashboard.
    let page = Forms::new(&app).accept(&token, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);

    let r = t
        .call(
            "get",
            "/v1/account/members",
            "/v1/account/members",
            owner,
            None,
            StatusCode::OK,
        )
        .await;
    let members = r.body["members"].as_array().expect("members");
    assert_eq!(members.len(), 2);
    let dev = members
        .iter()
        .find(|m| m["email"] == "dev@example.com")
        .expect("the new member");
    assert_eq!(dev["role"], "developer");
    let dev_id = dev["id"].as_str().expect("id").to_string();
    let member = format!("/v1/account/members/{dev_id}");
    let r = t
        .call(
            "patch",
            "/v1/account/members/{user_id}",
            &member,
            owner,
            Some(json!({"role": "admin"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r.body["member"]["role"], "admin");
    t.call(
        "delete",
        "/v1/account/members/{user_id}",
        &member,
        owner,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;

    t.assert_covered(MEMBERS);
}
