//! Teams in a real browser (headless Chromium through ChromeDriver, as in
//! `browser.rs`; they fail, not skip, when either is missing):
//!
//! - an owner invites a colleague from the Members page, the link is shown
//!   once; the colleague opens it, chooses a password, is signed in with
//!   the invited role, and later signs in again with that password;
//! - a viewer sees no create, change or delete controls, and a form posted
//!   from their page anyway is refused and changes nothing.
//!
//! `LATCHKEY_SCREENSHOTS=1` also rewrites docs/screenshots/members.png and
//! invite-accept.png.

#[path = "common/browser.rs"]
mod chrome;
mod common;
#[path = "common/team.rs"]
mod team;

use chrome::Browser;
use common::{StatusCode, TestApp};

async fn text_of(browser: &Browser, selector: &str) -> String {
    browser
        .find(selector)
        .await
        .text()
        .await
        .unwrap_or_else(|e| panic!("text of `{selector}`: {e}"))
}

/// Signs in through the form and waits for the account page.
async fn sign_in(browser: &Browser, app: &TestApp, email: &str, password: &str) {
    browser.goto(&app.url("/dashboard/signin")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click("#signin-submit").await;
    let dashboard = app.url("/dashboard");
    browser
        .wait_for_url("the account page after sign-in", |u| u == dashboard)
        .await;
    browser.find("#own-keys").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_invites_and_the_colleague_accepts_and_signs_in() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    sign_in(
        &browser,
        &app,
        &app.init.user.email,
        app.init.user.password.expose(),
    )
    .await;
    assert_eq!(text_of(&browser, "#user-role").await, "owner");

    browser.click("#members-link").await;
    let members = app.url("/dashboard/members");
    browser
        .wait_for_url("the members page", |u| u == members)
        .await;
    assert_eq!(text_of(&browser, "#your-role").await, "owner");
    browser.fill("#invite-email", "colleague@example.com").await;
    browser
        .find("#invite-role")
        .await
        .select_by_value("developer")
        .await
        .expect("choose a role");
    browser.click("#invite-submit").await;
    let link = text_of(&browser, "#invite-link").await;
    assert!(
        link.starts_with(&app.url("/dashboard/invite?token=lkin_")),
        "{link}"
    );
    assert!(browser.body_text().await.contains("colleague@example.com"));
    browser.screenshot("members").await;
    // Shown once: the members page lists the invite without its link.
    browser.goto(&members).await;
    browser.find("#invites-list").await;
    assert!(!browser.exists("#invite-link").await);
    let source = browser.client.source().await.expect("source");
    let token = link.split("token=").nth(1).expect("token");
    assert!(!source.contains(token));

    // The colleague, in a browser of their own.
    browser.click("#signout").await;
    browser.find("#signin-form").await;
    let colleague = Browser::start().await;
    colleague.goto(&link).await;
    assert_eq!(
        text_of(&colleague, "#invite-email").await,
        "colleague@example.com"
    );
    assert_eq!(text_of(&colleague, "#invite-role").await, "developer");
    colleague.screenshot("invite-accept").await;
    // A mistyped confirmation is explained.
    colleague.fill("#password", "colleague password 1").await;
    colleague.fill("#confirm", "colleague password 2").await;
    colleague.click("#accept-submit").await;
    colleague.find("#accept-error").await;
    colleague.fill("#password", "colleague password 1").await;
    colleague.fill("#confirm", "colleague password 1").await;
    colleague.click("#accept-submit").await;
    let dashboard = app.url("/dashboard");
    colleague
        .wait_for_url("the account page after accepting", |u| u == dashboard)
        .await;
    assert_eq!(
        text_of(&colleague, "#user-email").await,
        "colleague@example.com"
    );
    assert_eq!(text_of(&colleague, "#user-role").await, "developer");
    // A developer creates apps.
    colleague.find("#create-app-form").await;
    assert!(!colleague.exists("#create-sa-form").await);

    // The link works once.
    colleague.click("#signout").await;
    colleague.find("#signin-form").await;
    colleague.goto(&link).await;
    colleague.find("main").await;
    assert!(!colleague.exists("#accept-form").await);
    assert!(
        colleague
            .body_text()
            .await
            .contains("this invite link is not valid")
            || colleague
                .body_text()
                .await
                .contains("This invite link is not valid"),
        "{}",
        colleague.body_text().await
    );
    // And the chosen password signs them in again.
    sign_in(
        &colleague,
        &app,
        "colleague@example.com",
        "colleague password 1",
    )
    .await;
    let r = app.get("/v1/account/members", &app.owner()).await;
    let roles: Vec<(String, String)> = r.body["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap_or_default().to_string(),
                m["role"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        roles.contains(&("colleague@example.com".into(), "developer".into())),
        "{roles:?}"
    );
    colleague.close().await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_write_controls_and_cannot_use_them() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    app.create_app_key(&app.owner(), &app_id).await;
    let sa = app.create_service_account(&app.owner()).await;
    team::add_member(&app, "viewer@example.com", "viewer").await;

    let browser = Browser::start().await;
    sign_in(&browser, &app, "viewer@example.com", team::PASSWORD).await;
    assert_eq!(text_of(&browser, "#user-role").await, "viewer");
    assert!(!browser.exists("#create-app-form").await);
    assert!(!browser.exists("#create-sa-form").await);
    // Their own keys stay theirs.
    assert!(browser.exists("#create-key-form").await);

    browser
        .goto(&app.url(&format!("/dashboard/apps/{app_id}")))
        .await;
    browser.find("#app-name").await;
    assert!(!browser.exists("#create-key-form").await);
    assert!(!browser.exists("[id^='rotate-']").await);
    assert!(!browser.exists("[id^='delete-']").await);
    browser
        .goto(&app.url(&format!("/dashboard/apps/{app_id}/settings")))
        .await;
    browser.find("#app-name").await;
    assert!(!browser.exists("#settings-form").await);
    browser
        .goto(&app.url(&format!("/dashboard/service-accounts/{sa}")))
        .await;
    browser.find("main").await;
    assert!(!browser.exists("#create-key-form").await);
    assert!(!browser.exists("#delete-sa").await);
    browser.goto(&app.url("/dashboard/members")).await;
    assert_eq!(text_of(&browser, "#your-role").await, "viewer");
    assert!(!browser.exists("#invite-form").await);
    assert!(!browser.exists("[id^='role-form-']").await);
    assert!(!browser.exists("[id^='remove-']").await);

    // A form sent from the viewer's own page anyway (same origin, the
    // session's CSRF token) is refused, and nothing changes.
    browser.goto(&app.url("/dashboard")).await;
    browser
        .js(
            "var csrf = document.querySelector('input[name=csrf]').value; \
             var f = document.createElement('form'); \
             f.method = 'post'; f.action = '/dashboard/apps'; \
             [['csrf', csrf], ['display_name', 'sneaky']].forEach(function (p) { \
               var i = document.createElement('input'); i.type = 'hidden'; \
               i.name = p[0]; i.value = p[1]; f.appendChild(i); }); \
             document.body.appendChild(f); f.submit(); return true;",
            vec![],
        )
        .await;
    let error = text_of(&browser, "#error").await;
    assert!(error.contains("developer role or higher"), "{error}");
    let apps = app.get("/v1/apps", &app.owner()).await;
    assert_eq!(apps.status, StatusCode::OK);
    assert_eq!(apps.body["apps"].as_array().map(Vec::len), Some(1));
    browser.close().await;
}
