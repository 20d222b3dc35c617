//! Teams over real HTTP: the role x operation matrix with each role's own
//! act_ key (and its account-scope JWT), invites (accept, expiry, reuse,
//! revocation), member removal (keys refused on the next request, sessions
//! ended), role changes taking effect at once, the last owner, another
//! account's members and invites, and a person's own password.

mod common;
#[path = "common/team.rs"]
mod team;

use std::fmt::Write as _;

use common::{StatusCode, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use team::{Forms, Member, PASSWORD, add_member, invite};

const ROLES: [&str; 4] = ["owner", "admin", "developer", "viewer"];

/// Which roles an operation allows: the weakest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    Viewer = 0,
    Developer = 1,
    Admin = 2,
    Owner = 3,
}

fn rank(role: &str) -> u8 {
    ROLES.len() as u8 - 1 - ROLES.iter().position(|r| *r == role).expect("role") as u8
}

struct Fixture {
    app_id: String,
    sa_id: String,
    user: String,
}

/// One operation of the matrix: what it needs and how to call it (with a
/// fresh target for destructive ones).
struct Op {
    name: &'static str,
    needs: Needs,
    success: StatusCode,
}

async fn run(app: &TestApp, fx: &Fixture, op: &str, auth: &str) -> (StatusCode, Value) {
    let a = &fx.app_id;
    let (method, path, body): (Method, String, Option<Value>) = match op {
        "read account" => (Method::GET, "/v1/account".into(), None),
        "list apps" => (Method::GET, "/v1/apps".into(), None),
        "read app" => (Method::GET, format!("/v1/apps/{a}"), None),
        "create app" => (
            Method::POST,
            "/v1/apps".into(),
            Some(json!({"displayName": "m"})),
        ),
        "change app" => (
            Method::PATCH,
            format!("/v1/apps/{a}"),
            Some(json!({"displayName": "renamed"})),
        ),
        "delete app" => {
            let id = app.create_app(&app.owner(), "throwaway").await;
            (Method::DELETE, format!("/v1/apps/{id}"), None)
        }
        "list app keys" => (Method::GET, format!("/v1/apps/{a}/keys"), None),
        "create app key" => (
            Method::POST,
            format!("/v1/apps/{a}/keys"),
            Some(json!({"displayName": "m"})),
        ),
        "delete app key" => {
            let k = app.create_app_key(&app.owner(), a).await;
            (Method::DELETE, format!("/v1/apps/{a}/keys/{}", k.id), None)
        }
        "list users" => (Method::GET, format!("/v1/apps/{a}/users"), None),
        "create user" => (
            Method::POST,
            format!("/v1/apps/{a}/users"),
            Some(json!({"externalId": format!("u{}", rand_suffix())})),
        ),
        "mint token" => (
            Method::POST,
            format!("/v1/apps/{a}/users/{}/tokens", fx.user),
            Some(json!({})),
        ),
        "list webhooks" => (Method::GET, format!("/v1/apps/{a}/webhooks"), None),
        "create webhook" => (
            Method::POST,
            format!("/v1/apps/{a}/webhooks"),
            Some(json!({"target": "https://example.com/hook", "triggers": ["key:created"]})),
        ),
        "read audit" => (Method::GET, "/v1/audit".into(), None),
        "read usage" => (Method::GET, "/v1/usage".into(), None),
        "list service accounts" => (Method::GET, "/v1/serviceAccounts".into(), None),
        "create service account" => (
            Method::POST,
            "/v1/serviceAccounts".into(),
            Some(json!({"displayName": "robot"})),
        ),
        "list service account keys" => (
            Method::GET,
            format!("/v1/serviceAccounts/{}/keys", fx.sa_id),
            None,
        ),
        "create service account key" => (
            Method::POST,
            format!("/v1/serviceAccounts/{}/keys", fx.sa_id),
            Some(json!({"displayName": "robot key"})),
        ),
        "grant app" => (
            Method::PUT,
            format!("/v1/serviceAccounts/{}/apps/{a}", fx.sa_id),
            None,
        ),
        "list members" => (Method::GET, "/v1/account/members".into(), None),
        "list invites" => (Method::GET, "/v1/account/invites".into(), None),
        "invite" => (
            Method::POST,
            "/v1/account/invites".into(),
            Some(json!({"email": format!("x{}@example.com", rand_suffix()), "role": "viewer"})),
        ),
        "revoke invite" => {
            let body = invite(
                app,
                &app.owner(),
                &format!("r{}@example.com", rand_suffix()),
                "viewer",
            )
            .await;
            let id = body["invite"]["id"].as_str().expect("id").to_string();
            (Method::DELETE, format!("/v1/account/invites/{id}"), None)
        }
        "change role" | "remove member" => {
            let m = add_member(app, &format!("t{}@example.com", rand_suffix()), "viewer").await;
            if op == "change role" {
                (
                    Method::PATCH,
                    format!("/v1/account/members/{}", m.id),
                    Some(json!({"role": "developer"})),
                )
            } else {
                (
                    Method::DELETE,
                    format!("/v1/account/members/{}", m.id),
                    None,
                )
            }
        }
        "list own keys" => (Method::GET, "/v1/account/keys".into(), None),
        other => panic!("no such operation {other}"),
    };
    let r = app.call(method, &path, Some(auth), body).await;
    (r.status, r.body)
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

const OPS: &[Op] = &[
    op("read account", Needs::Viewer, StatusCode::OK),
    op("list apps", Needs::Viewer, StatusCode::OK),
    op("read app", Needs::Viewer, StatusCode::OK),
    op("list app keys", Needs::Viewer, StatusCode::OK),
    op("list users", Needs::Viewer, StatusCode::OK),
    op("list webhooks", Needs::Viewer, StatusCode::OK),
    op("read audit", Needs::Viewer, StatusCode::OK),
    op("read usage", Needs::Viewer, StatusCode::OK),
    op("list service accounts", Needs::Viewer, StatusCode::OK),
    op("list service account keys", Needs::Viewer, StatusCode::OK),
    op("list members", Needs::Viewer, StatusCode::OK),
    op("list invites", Needs::Viewer, StatusCode::OK),
    op("list own keys", Needs::Viewer, StatusCode::OK),
    op("create app", Needs::Developer, StatusCode::CREATED),
    op("change app", Needs::Developer, StatusCode::OK),
    op("delete app", Needs::Developer, StatusCode::NO_CONTENT),
    op("create app key", Needs::Developer, StatusCode::CREATED),
    op("delete app key", Needs::Developer, StatusCode::NO_CONTENT),
    op("create user", Needs::Developer, StatusCode::CREATED),
    op("mint token", Needs::Developer, StatusCode::CREATED),
    op("create webhook", Needs::Developer, StatusCode::CREATED),
    op("create service account", Needs::Admin, StatusCode::CREATED),
    op(
        "create service account key",
        Needs::Admin,
        StatusCode::CREATED,
    ),
    op("grant app", Needs::Admin, StatusCode::NO_CONTENT),
    op("invite", Needs::Owner, StatusCode::CREATED),
    op("revoke invite", Needs::Owner, StatusCode::NO_CONTENT),
    op("change role", Needs::Owner, StatusCode::OK),
    op("remove member", Needs::Owner, StatusCode::NO_CONTENT),
];

const fn op(name: &'static str, needs: Needs, success: StatusCode) -> Op {
    Op {
        name,
        needs,
        success,
    }
}

async fn fixture(app: &TestApp) -> Fixture {
    let owner = app.owner();
    let app_id = app.create_app(&owner, "main").await;
    let sa_id = app.create_service_account(&owner).await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/users"),
            &owner,
            json!({"externalId": "alice"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    Fixture {
        app_id,
        sa_id,
        user: "alice".into(),
    }
}

/// Every role against every operation, with the member's own act_ key by
/// Basic and as an account-scope JWT: allowed operations succeed, the rest
/// are 403 `forbidden` naming the role needed. Mismatches are collected
/// and reported together.
#[tokio::test]
async fn the_role_matrix_through_the_api() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut creds: Vec<(&str, String)> = vec![("owner", app.owner())];
    for role in ["admin", "developer", "viewer"] {
        let m = add_member(&app, &format!("{role}@example.com"), role).await;
        creds.push((role, m.key.basic()));
        creds.push((role, m.key.jwt(json!({"scope": "account"}))));
    }
    let mut wrong = String::new();
    for op in OPS {
        for (role, auth) in &creds {
            let allowed = rank(role) >= op.needs as u8;
            let (status, body) = run(&app, &fx, op.name, auth).await;
            let ok = if allowed {
                status == op.success
            } else {
                status == StatusCode::FORBIDDEN
                    && body["errors"][0]["code"] == "forbidden"
                    && body["errors"][0]["title"]
                        .as_str()
                        .is_some_and(|t| t.contains("role or higher"))
            };
            if !ok {
                let _ = writeln!(wrong, "{:<28} {role:<10} got {status} {body}", op.name);
            }
        }
    }
    assert!(wrong.is_empty(), "cells that differ:\n{wrong}");
}

#[tokio::test]
async fn an_invite_is_accepted_once_and_signs_the_person_in() {
    let app = TestApp::spawn().await;
    let body = invite(&app, &app.owner(), " New@Example.com ", "developer").await;
    assert_eq!(body["invite"]["email"], "new@example.com");
    assert_eq!(body["invite"]["status"], "pending");
    let token = body["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("lkin_"));
    assert_eq!(
        body["acceptPath"],
        format!("/dashboard/invite?token={token}")
    );
    // The token is never listed or stored in the clear.
    let list = app.get("/v1/account/invites", &app.owner()).await;
    assert!(!list.body.to_string().contains(&token));
    let audit = app.get("/v1/audit", &app.owner()).await;
    assert!(!audit.body.to_string().contains(&token));

    let mut forms = Forms::new(&app);
    let page = forms.get(&format!("/dashboard/invite?token={token}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.text_of("invite-email").as_deref(),
        Some("new@example.com")
    );
    assert_eq!(page.text_of("invite-role").as_deref(), Some("developer"));
    // A short password is explained and changes nothing.
    let csrf = page.csrf();
    let bad = forms
        .post(
            "/dashboard/invite",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("password", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.has_id("accept-error"));
    let page = forms.accept(&token, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let home = forms.get("/dashboard").await;
    assert_eq!(home.status, StatusCode::OK);
    assert_eq!(home.text_of("user-role").as_deref(), Some("developer"));

    // Used: the link no longer works, for anyone.
    let again = Forms::new(&app).accept(&token, PASSWORD).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    let list = app.get("/v1/account/invites", &app.owner()).await;
    assert_eq!(list.body["invites"], json!([]));
    // The new member signs in with the chosen password.
    let mut other = Forms::new(&app);
    let page = other.sign_in("new@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    // An email that has a user account cannot be invited again.
    let r = app
        .post(
            "/v1/account/invites",
            &app.owner(),
            json!({"email": "new@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Audited.
    let audit = app.get("/v1/audit", &app.owner()).await;
    let actions: Vec<&str> = audit.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"invite.created"), "{actions:?}");
    assert!(actions.contains(&"invite.accepted"), "{actions:?}");
}

#[tokio::test]
async fn invites_expire_are_revoked_and_bad_tokens_change_nothing() {
    let app = TestApp::spawn().await;
    let expiring = invite(&app, &app.owner(), "late@example.com", "viewer").await;
    let revoked = invite(&app, &app.owner(), "gone@example.com", "viewer").await;
    let revoked_id = revoked["invite"]["id"].as_str().expect("id");
    let r = app
        .delete(&format!("/v1/account/invites/{revoked_id}"), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .delete(&format!("/v1/account/invites/{revoked_id}"), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let page = Forms::new(&app)
        .accept(revoked["token"].as_str().expect("token"), PASSWORD)
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);

    app.clock
        .advance(time::Duration::seconds(7 * 24 * 3600 + 1));
    let list = app.get("/v1/account/invites", &app.owner()).await;
    assert_eq!(list.body["invites"][0]["status"], "expired");
    let page = Forms::new(&app)
        .accept(expiring["token"].as_str().expect("token"), PASSWORD)
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);

    // Malformed and made-up tokens: the same 404, nothing created.
    for token in [
        "",
        "lkin_short",
        "lksk_0000000000000000000000000000000000000000000000000",
    ] {
        let page = Forms::new(&app).accept(token, PASSWORD).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{token}");
    }
    let members = app.get("/v1/account/members", &app.owner()).await;
    assert_eq!(members.body["members"].as_array().map(Vec::len), Some(1));
    // Bad input to the API: 400, nothing made.
    for body in [
        json!({"email": "a@example.com", "role": "king"}),
        json!({"email": "not an email", "role": "viewer"}),
        json!({"email": "a@example.com"}),
        json!({"email": "a@example.com", "role": "viewer", "extra": 1}),
    ] {
        let r = app
            .post("/v1/account/invites", &app.owner(), body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.body["errors"][0]["title"].is_string());
    }
    let list = app.get("/v1/account/invites", &app.owner()).await;
    assert_eq!(list.body["invites"].as_array().map(Vec::len), Some(1));
}

/// An owner removed or demoted cannot come back through an invite it made
/// before: its open invites are revoked with the change.
#[tokio::test]
async fn a_removed_or_demoted_owners_invites_stop_working() {
    let app = TestApp::spawn().await;
    let second = add_member(&app, "second@example.com", "owner").await;
    let comeback = invite(&app, &second.key.basic(), "comeback@example.com", "owner").await;
    let third = add_member(&app, "third@example.com", "owner").await;
    let later = invite(&app, &third.key.basic(), "later@example.com", "owner").await;
    // Another owner's invite is not touched by these changes.
    let kept = invite(&app, &app.owner(), "kept@example.com", "viewer").await;
    let r = app
        .delete(&format!("/v1/account/members/{}", second.id), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = app
        .patch(
            &format!("/v1/account/members/{}", third.id),
            &app.owner(),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    for (what, reply) in [("removed", &comeback), ("demoted", &later)] {
        let page = Forms::new(&app)
            .accept(reply["token"].as_str().expect("token"), PASSWORD)
            .await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{what} owner's invite");
    }
    let list = app.get("/v1/account/invites", &app.owner()).await;
    let status_of = |id: &serde_json::Value| {
        list.body["invites"]
            .as_array()
            .expect("invites")
            .iter()
            .find(|i| i["id"] == *id)
            .map(|i| i["status"].clone())
    };
    // The list holds open invites only: the revoked ones are gone from it.
    assert_eq!(status_of(&later["invite"]["id"]), None);
    assert_eq!(status_of(&comeback["invite"]["id"]), None);
    assert_eq!(status_of(&kept["invite"]["id"]), Some(json!("pending")));
    let page = Forms::new(&app)
        .accept(kept["token"].as_str().expect("token"), PASSWORD)
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

/// Whether an email belongs to someone of another account is not told to
/// an inviting owner; only the invitee learns it, on accepting.
#[tokio::test]
async fn an_invite_does_not_reveal_another_accounts_email() {
    let app = TestApp::spawn().await;
    app.create_account("elsewhere@example.com").await;
    let body = invite(&app, &app.owner(), "elsewhere@example.com", "viewer").await;
    let page = Forms::new(&app)
        .accept(body["token"].as_str().expect("token"), PASSWORD)
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    // A member of this very account is refused at once.
    let r = app
        .post(
            "/v1/account/invites",
            &app.owner(),
            json!({"email": app.init.user.email, "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
}

async fn member_session<'a>(app: &'a TestApp, m: &Member) -> Forms<'a> {
    let mut forms = Forms::new(app);
    let page = forms.sign_in(&m.email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    forms
}

#[tokio::test]
async fn a_removed_members_keys_and_sessions_end_on_the_next_request() {
    let app = TestApp::spawn().await;
    let m = add_member(&app, "leaver@example.com", "admin").await;
    let jwt = m.key.jwt(json!({"scope": "account"}));
    let mut session = member_session(&app, &m).await;
    assert_eq!(session.get("/dashboard").await.status, StatusCode::OK);
    assert_eq!(
        app.get("/v1/apps", &m.key.basic()).await.status,
        StatusCode::OK
    );

    let r = app
        .delete(&format!("/v1/account/members/{}", m.id), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/apps", &m.key.basic()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/apps", &jwt).await.status,
        StatusCode::UNAUTHORIZED
    );
    let page = session.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location, "/dashboard/signin");
    let again = Forms::new(&app).sign_in(&m.email, PASSWORD).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    // Gone for good: after a restart too, and a second removal is a 404.
    let r = app
        .delete(&format!("/v1/account/members/{}", m.id), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let audit = app.get("/v1/audit", &app.owner()).await;
    assert!(audit.body.to_string().contains("member.removed"));
}

#[tokio::test]
async fn a_role_change_applies_on_the_next_request_and_survives_a_restart() {
    let mut app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let m = add_member(&app, "grower@example.com", "viewer").await;
    let create = |auth: String| {
        let path = format!("/v1/apps/{}/keys", fx.app_id);
        let app = &app;
        async move {
            app.post(&path, &auth, json!({"displayName": "k"}))
                .await
                .status
        }
    };
    assert_eq!(create(m.key.basic()).await, StatusCode::FORBIDDEN);
    let r = app
        .patch(
            &format!("/v1/account/members/{}", m.id),
            &app.owner(),
            json!({"role": "developer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["member"]["role"], "developer");
    assert_eq!(create(m.key.basic()).await, StatusCode::CREATED);
    let who = app.get("/v1/account", &m.key.basic()).await;
    assert_eq!(who.body["user"]["role"], "developer");
    app.restart().await;
    let path = format!("/v1/apps/{}/keys", fx.app_id);
    let r = app
        .post(&path, &m.key.basic(), json!({"displayName": "k"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Back to viewer: refused at once.
    let r = app
        .patch(
            &format!("/v1/account/members/{}", m.id),
            &app.owner(),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post(&path, &m.key.basic(), json!({"displayName": "k"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Bad roles: 400, unchanged.
    for body in [json!({"role": "boss"}), json!({}), json!({"role": 1})] {
        let r = app
            .patch(
                &format!("/v1/account/members/{}", m.id),
                &app.owner(),
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let who = app.get("/v1/account", &m.key.basic()).await;
    assert_eq!(who.body["user"]["role"], "viewer");
}

#[tokio::test]
async fn the_last_owner_stays_an_owner() {
    let app = TestApp::spawn().await;
    let owner_id = app.init.user.id.clone();
    let me = format!("/v1/account/members/{owner_id}");
    let r = app.patch(&me, &app.owner(), json!({"role": "admin"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(
        r.body["errors"][0]["title"]
            .as_str()
            .is_some_and(|t| t.contains("owner"))
    );
    let r = app.delete(&me, &app.owner()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // With a second owner, the first may step down, and the second may
    // not then leave the account ownerless.
    let second = add_member(&app, "second@example.com", "owner").await;
    let r = app
        .patch(&me, &second.key.basic(), json!({"role": "viewer"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .delete(
            &format!("/v1/account/members/{}", second.id),
            &second.key.basic(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // The first is a viewer now: refused management of members.
    let r = app.patch(&me, &app.owner(), json!({"role": "owner"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn another_accounts_members_and_invites_are_not_found() {
    let app = TestApp::spawn().await;
    let other = app.create_account("b-owner@example.com").await;
    let theirs = invite(&app, &other.basic(), "b-guest@example.com", "viewer").await;
    let their_invite = theirs["invite"]["id"].as_str().expect("id");
    let who = app.get("/v1/account", &other.basic()).await;
    let their_owner = who.body["userAccountId"].as_str().expect("id").to_string();
    let r = app
        .delete(&format!("/v1/account/invites/{their_invite}"), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .patch(
            &format!("/v1/account/members/{their_owner}"),
            &app.owner(),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .delete(&format!("/v1/account/members/{their_owner}"), &app.owner())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let list = app.get("/v1/account/members", &app.owner()).await;
    assert!(!list.body.to_string().contains(&their_owner));
    let list = app.get("/v1/account/invites", &app.owner()).await;
    assert!(!list.body.to_string().contains(their_invite));
    // Keys that are not people's are refused.
    let app_id = app.create_app(&app.owner(), "x").await;
    let app_key = app.create_app_key(&app.owner(), &app_id).await;
    let sa = app.create_service_account(&app.owner()).await;
    let svc = app.create_service_account_key(&app.owner(), &sa).await;
    for auth in [app_key.basic(), svc.basic(), app.operator()] {
        let r = app.get("/v1/account/members", &auth).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{auth}");
    }
}

#[tokio::test]
async fn a_person_changes_their_own_password() {
    let app = TestApp::spawn().await;
    let m = add_member(&app, "pw@example.com", "viewer").await;
    let mut here = member_session(&app, &m).await;
    let mut elsewhere = member_session(&app, &m).await;
    let new = "another long password";
    // Wrong current password: explained, nothing changes.
    let page = here
        .submit(
            "/dashboard/password",
            "/dashboard/password",
            &[
                ("current", "not it at all!"),
                ("new", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.has_id("error"));
    let page = here
        .submit(
            "/dashboard/password",
            "/dashboard/password",
            &[
                ("current", PASSWORD),
                ("new", new),
                ("confirm", "different one!!"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        Forms::new(&app).sign_in(&m.email, PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let page = here
        .submit(
            "/dashboard/password",
            "/dashboard/password",
            &[("current", PASSWORD), ("new", new), ("confirm", new)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location, "/dashboard?done=password-changed");
    // This session stays, the other one ended; keys keep working.
    assert_eq!(here.get("/dashboard").await.status, StatusCode::OK);
    assert_eq!(
        elsewhere.get("/dashboard").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        app.get("/v1/account", &m.key.basic()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        Forms::new(&app).sign_in(&m.email, PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        Forms::new(&app).sign_in(&m.email, new).await.status,
        StatusCode::SEE_OTHER
    );
    let audit = app.get("/v1/audit", &app.owner()).await;
    assert!(
        audit
            .body
            .to_string()
            .contains("userAccount.passwordChanged")
    );
    assert!(!audit.body.to_string().contains(new));
}

/// A stolen session cannot guess the current password at leisure: wrong
/// guesses count against the email's sign-in throttle.
#[tokio::test]
async fn guessing_the_current_password_is_throttled() {
    let app = TestApp::spawn().await;
    let m = add_member(&app, "guessed@example.com", "viewer").await;
    let mut here = member_session(&app, &m).await;
    let new = "another long password";
    let change = |current: &'static str| [("current", current), ("new", new), ("confirm", new)];
    for _ in 0..5 {
        let page = here
            .submit(
                "/dashboard/password",
                "/dashboard/password",
                &change("a wrong guess!"),
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    }
    let page = here
        .submit(
            "/dashboard/password",
            "/dashboard/password",
            &change(PASSWORD),
        )
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    // Nothing changed: once the window has passed, the old password is
    // still the one.
    app.clock.advance(time::Duration::minutes(16));
    assert_eq!(
        Forms::new(&app).sign_in(&m.email, PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn the_dashboard_follows_roles() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let viewer = add_member(&app, "look@example.com", "viewer").await;
    let mut v = member_session(&app, &viewer).await;
    let home = v.get("/dashboard").await;
    assert!(
        !home.has_id("create-app-form"),
        "a viewer sees no create form"
    );
    assert!(!home.has_id("create-sa-form"));
    // Their own keys remain theirs.
    assert!(home.has_id("create-key-form"));
    let keys = v.get(&format!("/dashboard/apps/{}", fx.app_id)).await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(!keys.has_id("create-key-form"));
    let members = v.get("/dashboard/members").await;
    assert_eq!(members.status, StatusCode::OK);
    assert!(!members.has_id("invite-form"));
    assert_eq!(members.text_of("your-role").as_deref(), Some("viewer"));
    // The server refuses the forms anyway, and nothing is made.
    let page = v
        .submit(
            "/dashboard",
            "/dashboard/apps",
            &[("display_name", "sneaky")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    let page = v
        .submit(
            "/dashboard/members",
            "/dashboard/invites",
            &[("email", "friend@example.com"), ("role", "owner")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let apps = app.get("/v1/apps", &app.owner()).await;
    assert_eq!(apps.body["apps"].as_array().map(Vec::len), Some(1));
    let invites = app.get("/v1/account/invites", &app.owner()).await;
    assert_eq!(invites.body["invites"], json!([]));

    // The owner invites from the members page; the link is shown once.
    let mut o = Forms::new(&app);
    o.sign_in(&app.init.user.email, app.init.user.password.expose())
        .await;
    let page = o
        .submit(
            "/dashboard/members",
            "/dashboard/invites",
            &[("email", "friend@example.com"), ("role", "developer")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = page.text_of("invite-link").expect("the link");
    assert!(link.contains("/dashboard/invite?token=lkin_"), "{link}");
    let again = o.get("/dashboard/members").await;
    assert!(!again.has_id("invite-link"));
    // And changes a role, then removes the member, from the page.
    let page = o
        .submit(
            "/dashboard/members",
            &format!("/dashboard/members/{}/role", viewer.id),
            &[("role", "admin")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let home = v.get("/dashboard").await;
    assert!(home.has_id("create-sa-form"), "now an admin");
    let page = o
        .submit(
            &format!("/dashboard/members/{}/remove", viewer.id),
            &format!("/dashboard/members/{}/remove", viewer.id),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(v.get("/dashboard").await.status, StatusCode::SEE_OTHER);
}
