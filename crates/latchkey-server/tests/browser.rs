//! End-to-end tests in a real browser: Debian's headless Chromium, driven
//! through ChromeDriver, against the real server. They fail (not skip) when
//! `chromium` or `chromedriver` is missing.
//!
//! - CORS by scope, seen from a page of another origin: the page can read
//!   what an appUser JWT fetches, and cannot read what an app key fetches.
//! - The dashboard: sign in, apps, keys (create, rotate, delete), sign out.
//!
//! `LATCHKEY_SCREENSHOTS=1 cargo test -p latchkey-server --test browser`
//! also rewrites the screenshots in docs/screenshots/.

#[path = "common/browser.rs"]
mod chrome;
mod common;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use chrome::Browser;
use common::{Key, StatusCode, TestApp, iso};
use latchkey_core::Clock;
use serde_json::{Value, json};

/// A page that calls the Latchkey API with `fetch()` and records, for each
/// probe, what the page itself could see: the status and JSON body, or the
/// error that `fetch` threw.
const PROBE_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Latchkey CORS probe</title></head>
<body>
<h1>A customer's web page</h1>
<ul id="results"></ul>
<script>
window.results = {};
window.probe = async function (name, method, url, authorization, body) {
  const init = { method, headers: { "Authorization": authorization }, cache: "no-store" };
  if (body !== null) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let result;
  try {
    const response = await fetch(url, init);
    let json = null;
    try { json = await response.json(); } catch (e) { json = null; }
    result = { outcome: "response", status: response.status, body: json };
  } catch (e) {
    result = { outcome: "error", error: e.name, message: String(e.message) };
  }
  window.results[name] = result;
  const li = document.createElement("li");
  li.id = "result-" + name;
  li.textContent = name + ": " + JSON.stringify(result);
  document.getElementById("results").appendChild(li);
};
window.probeReady = true;
</script>
</body>
</html>
"#;

/// Serves `PROBE_PAGE` on its own port of 127.0.0.1: another origin than
/// the API's. Returns the origin; the server ends with the test's runtime.
async fn serve_probe_page() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the page server");
    let origin = format!(
        "http://{}",
        listener.local_addr().expect("page server address")
    );
    let router = Router::new().route("/", get(|| async { Html(PROBE_PAGE) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    origin
}

/// Runs one probe in the page and waits for what the page saw.
async fn probe(
    browser: &Browser,
    name: &str,
    method: &str,
    url: &str,
    authorization: &str,
    body: Option<Value>,
) -> Value {
    browser
        .js(
            "window.probe(arguments[0], arguments[1], arguments[2], arguments[3], arguments[4]); \
             return true;",
            vec![
                json!(name),
                json!(method),
                json!(url),
                json!(authorization),
                body.unwrap_or(Value::Null),
            ],
        )
        .await;
    let result = browser
        .wait_for_js(
            &format!("the page's result of probe `{name}`"),
            "return window.results[arguments[0]] || null;",
            vec![json!(name)],
        )
        .await;
    // What the page wrote into its DOM is the same.
    let shown = browser
        .find(&format!("#result-{name}"))
        .await
        .text()
        .await
        .expect("result text");
    assert!(shown.starts_with(&format!("{name}: ")), "{shown}");
    result
}

/// The page could read an answer with this status.
fn assert_read(result: &Value, status: u16) {
    assert_eq!(result["outcome"], "response", "{result}");
    assert_eq!(result["status"], status, "{result}");
}

/// The page's fetch failed as browsers fail a CORS refusal: a TypeError,
/// with no status and no body.
fn assert_cors_refused(result: &Value) {
    assert_eq!(
        result["outcome"], "error",
        "the page must not read it: {result}"
    );
    assert_eq!(result["error"], "TypeError", "{result}");
    assert!(result.get("status").is_none() && result.get("body").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_reads_app_user_answers_only() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Shop").await;
    let key: Key = app.create_app_key(&app.owner(), &app_id).await;
    let page_origin = serve_probe_page().await;
    assert_ne!(page_origin, app.base, "the page is of another origin");

    let browser = Browser::start().await;
    browser.goto(&format!("{page_origin}/")).await;
    browser
        .wait_for_js(
            "the probe page's script",
            "return window.probeReady || null;",
            vec![],
        )
        .await;
    let alice_url = app.url(&format!("/v1/apps/{app_id}/users/alice"));
    let alice = key.jwt(json!({"scope": "appUser", "userId": "alice"}));

    // (a) An appUser JWT: the page reads the answer (a GET with an
    // Authorization header is preflighted, and the preflight is allowed).
    let r = probe(&browser, "user-get", "GET", &alice_url, &alice, None).await;
    assert_read(&r, 200);
    assert_eq!(r["body"]["user"]["externalId"], "alice", "{r}");
    assert_eq!(r["body"]["user"]["appId"], app_id.as_str(), "{r}");

    // (b) The app key by Basic: refused, and the page cannot even read the
    // refusal (no CORS headers on a server credential's answer).
    let r = probe(&browser, "app-key", "GET", &alice_url, &key.basic(), None).await;
    assert_cors_refused(&r);
    // The server saw the app key come from the page's origin and recorded
    // it, without the secret.
    let audit = app
        .get(
            &format!("/v1/apps/{app_id}/audit?action=credential.exposed"),
            &app.owner(),
        )
        .await;
    assert_eq!(audit.status, StatusCode::OK, "{:?}", audit.body);
    let events = audit.body["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{:?}", audit.body);
    assert_eq!(events[0]["target"]["id"], key.id.as_str());
    assert_eq!(events[0]["details"]["origin"], page_origin.as_str());
    assert_eq!(events[0]["details"]["refused"], true);
    assert!(!audit.body.to_string().contains(&key.secret));

    // (c) A PATCH with a JSON body (preflighted for the method and both
    // headers) with the appUser JWT works, and the page reads the result.
    let r = probe(
        &browser,
        "user-patch",
        "PATCH",
        &alice_url,
        &alice,
        Some(json!({"profile": {"givenName": "Alice"}})),
    )
    .await;
    assert_read(&r, 200);
    assert_eq!(r["body"]["user"]["profile"]["givenName"], "Alice", "{r}");
    let stored = app
        .get(&format!("/v1/apps/{app_id}/users/alice"), &key.basic())
        .await;
    assert_eq!(stored.body["user"]["profile"]["givenName"], "Alice");

    // With browser-secret blocking off, the server answers the app key,
    // but the browser still keeps the answer from the page.
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &app.owner(),
            json!({"settings": {"blockBrowserSecrets": false}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = probe(
        &browser,
        "app-key-unblocked",
        "GET",
        &alice_url,
        &key.basic(),
        None,
    )
    .await;
    assert_cors_refused(&r);

    // (d) Another origin allowed only: the appUser JWT fails too, for a
    // user never fetched before (the preflight is refused, so the request
    // is never sent: bob is not created) and for alice.
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &app.owner(),
            json!({"settings": {"allowedOrigins": ["https://elsewhere.example"]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let bob = key.jwt(json!({"scope": "appUser", "userId": "bob"}));
    let bob_url = app.url(&format!("/v1/apps/{app_id}/users/bob"));
    let r = probe(&browser, "other-origin-bob", "GET", &bob_url, &bob, None).await;
    assert_cors_refused(&r);
    let r = app
        .get(&format!("/v1/apps/{app_id}/users/bob"), &key.basic())
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no request reached the server"
    );
    let r = probe(
        &browser,
        "other-origin-alice",
        "GET",
        &alice_url,
        &alice,
        None,
    )
    .await;
    assert_cors_refused(&r);

    // Allowing the page's origin (exactly) lets it read again.
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &app.owner(),
            json!({"settings": {"allowedOrigins": ["https://elsewhere.example", page_origin]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = probe(&browser, "allowed-again", "GET", &bob_url, &bob, None).await;
    assert_read(&r, 200);
    assert_eq!(r["body"]["user"]["externalId"], "bob", "{r}");

    browser.close().await;
}

// ---------------------------------------------------------------------------
// The dashboard.

/// A client that does not follow redirects, to see where the dashboard
/// sends a request.
fn no_redirects() -> reqwest::Client {
    common::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// As the dashboard shows times.
fn shown(t: time::OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute] UTC"
    ))
    .expect("format")
}

async fn text_of(browser: &Browser, selector: &str) -> String {
    browser
        .find(selector)
        .await
        .text()
        .await
        .unwrap_or_else(|e| panic!("text of `{selector}`: {e}"))
}

/// The dashboard's session cookie in the browser, if any.
async fn session_cookie(browser: &Browser) -> Option<fantoccini::cookies::Cookie<'static>> {
    browser
        .client
        .get_all_cookies()
        .await
        .expect("cookies")
        .into_iter()
        .find(|c| c.name() == "latchkey_session")
}

/// Signs in through the form and waits for the account page.
async fn sign_in(browser: &Browser, app: &TestApp) {
    browser.goto(&app.url("/dashboard/signin")).await;
    browser.fill("#email", &app.init.user.email).await;
    browser
        .fill("#password", app.init.user.password.expose())
        .await;
    browser.click("#signin-submit").await;
    let dashboard = app.url("/dashboard");
    browser
        .wait_for_url("the account page after sign-in", |u| u == dashboard)
        .await;
    browser.find("#create-app-form").await;
}

/// The status of `GET /v1/apps/{app_id}` with this key by Basic, as a
/// customer's server would call it.
async fn key_status(app: &TestApp, app_id: &str, key: &Key) -> StatusCode {
    app.get(&format!("/v1/apps/{app_id}"), &key.basic())
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sign_in_create_rotate_delete_key_and_sign_out() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;

    // Signed out, the dashboard sends the browser to the sign-in page.
    browser.goto(&app.url("/dashboard")).await;
    let signin = app.url("/dashboard/signin");
    browser
        .wait_for_url("the redirect to sign-in", |u| u == signin)
        .await;
    browser.find("#signin-form").await;
    assert!(session_cookie(&browser).await.is_none());
    browser.screenshot("signin").await;

    sign_in(&browser, &app).await;
    assert_eq!(
        text_of(&browser, "#user-email").await,
        app.init.user.email.as_str()
    );
    let cookie = session_cookie(&browser).await.expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    let from_script = browser.js("return document.cookie;", vec![]).await;
    assert!(
        !from_script
            .as_str()
            .unwrap_or_default()
            .contains("latchkey_session"),
        "the page's script cannot read the session: {from_script}"
    );
    assert!(browser.exists("#apps-empty").await, "no apps yet");

    // Create an app.
    browser.fill("#new-app-name", "Example Shop (demo)").await;
    browser.click("#create-app").await;
    let app_page = browser
        .wait_for_url("the new app's page", |u| u.contains("/dashboard/apps/ap_"))
        .await;
    let app_id = text_of(&browser, "#app-id").await;
    assert!(app_page.contains(&app_id), "{app_page}");
    assert_eq!(text_of(&browser, "#app-name").await, "Example Shop (demo)");
    let r = app.get(&format!("/v1/apps/{app_id}"), &app.owner()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["app"]["displayName"], "Example Shop (demo)");
    assert!(browser.exists("#keys-empty").await, "no keys yet");

    // Create a key; its secret is on the page, once.
    browser
        .fill("#new-key-name", "demo-backend (example)")
        .await;
    browser.click("#create-key").await;
    let secret = text_of(&browser, "#new-key-secret").await;
    let first = Key {
        id: text_of(&browser, "#new-key-id").await,
        secret,
    };
    assert!(first.id.starts_with("app_"), "{}", first.id);
    assert!(first.secret.starts_with("lksk_"), "{}", first.secret);
    browser.screenshot("new-key-secret").await;
    // The copy button is there (shown by the page's script) and answers.
    let copy = browser.find("#copy-secret").await;
    assert!(copy.is_displayed().await.expect("displayed"));
    copy.click().await.expect("click copy");
    browser
        .wait_for_js(
            "the copy button to answer",
            "var t = document.getElementById('copy-secret').textContent; \
             return t === 'Copy' ? null : t;",
            vec![],
        )
        .await;
    // The secret works against the API, by Basic.
    assert_eq!(key_status(&app, &app_id, &first).await, StatusCode::OK);
    // Shown once: the app page lists the key without its secret.
    browser.click("#done-link").await;
    browser.find(&format!("#key-{}", first.id)).await;
    assert!(!browser.body_text().await.contains(&first.secret));
    let source = browser.client.source().await.expect("source");
    assert!(!source.contains(&first.secret));

    // Rotate it with a one-hour grace period.
    browser
        .find(&format!("#rotate-grace-{}", first.id))
        .await
        .select_by_value("3600")
        .await
        .expect("choose the grace period");
    browser.click(&format!("#rotate-submit-{}", first.id)).await;
    assert_eq!(text_of(&browser, "#previous-key-id").await, first.id);
    let grace_end = app.clock.now() + time::Duration::hours(1);
    assert_eq!(
        text_of(&browser, "#previous-key-expires").await,
        shown(grace_end)
    );
    let second = Key {
        id: text_of(&browser, "#new-key-id").await,
        secret: text_of(&browser, "#new-key-secret").await,
    };
    assert_ne!(second.id, first.id);
    assert_eq!(key_status(&app, &app_id, &second).await, StatusCode::OK);
    assert_eq!(
        key_status(&app, &app_id, &first).await,
        StatusCode::OK,
        "the old key works during the grace period"
    );
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/keys/{}", first.id),
            &app.owner(),
        )
        .await;
    assert_eq!(r.body["key"]["status"], "expiring", "{:?}", r.body);
    assert_eq!(r.body["key"]["replacedBy"], second.id.as_str());
    assert_eq!(r.body["key"]["expiresAt"], iso(grace_end).as_str());
    browser.click("#done-link").await;
    browser.find(&format!("#key-{}", second.id)).await;
    assert_eq!(
        text_of(&browser, &format!("#key-status-{}", first.id)).await,
        "rotated, retiring in 1 hour"
    );
    browser.screenshot("app-keys").await;

    // The key's page: give it a permission list and a rate limit.
    browser.click(&format!("#open-{}", second.id)).await;
    assert_eq!(
        text_of(&browser, "#key-permissions").await,
        "all permissions of its scope"
    );
    browser.click("#all-permissions").await;
    // It keeps latchkey:apps.read, which the checks below call.
    browser
        .fill("#permissions", "messages:read\nlatchkey:apps.read")
        .await;
    browser.fill("#ratelimit-limit", "600").await;
    browser.fill("#ratelimit-window", "60").await;
    browser
        .fill("#meta", r#"{"plan": "pro", "customer": "cus_123"}"#)
        .await;
    browser.click("#save-key").await;
    browser
        .wait_for_url("the key's page after saving", |u| {
            u.contains(&second.id) && u.contains("done=key-saved")
        })
        .await;
    assert_eq!(
        text_of(&browser, "#key-permissions").await,
        "latchkey:apps.read, messages:read"
    );
    assert_eq!(
        text_of(&browser, "#key-ratelimit").await,
        "600 requests per 60 seconds"
    );
    let r = app
        .get(
            &format!("/v1/apps/{app_id}/keys/{}", second.id),
            &app.owner(),
        )
        .await;
    assert_eq!(
        r.body["key"]["permissions"],
        json!(["latchkey:apps.read", "messages:read"])
    );
    assert_eq!(r.body["key"]["meta"]["plan"], "pro");
    browser.screenshot("key-page").await;
    browser.click("#back-link").await;
    browser.find(&format!("#key-{}", second.id)).await;

    // Delete the new key: a confirmation page first, which changes nothing.
    browser.click(&format!("#delete-{}", second.id)).await;
    browser.find("#confirm-delete").await;
    assert!(
        text_of(&browser, "#confirm-message")
            .await
            .contains(&second.id),
        "the confirmation names the key"
    );
    assert_eq!(key_status(&app, &app_id, &second).await, StatusCode::OK);
    browser.click("#confirm-delete").await;
    browser
        .wait_for_url("the app page after the deletion", |u| {
            u.contains(&format!("/dashboard/apps/{app_id}")) && u.contains("done=key-deleted")
        })
        .await;
    // Refused at once.
    assert_eq!(
        key_status(&app, &app_id, &second).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!browser.exists(&format!("#key-{}", second.id)).await);
    browser.find(&format!("#key-{}", first.id)).await;

    // The account page lists the app.
    browser.click("#account-link").await;
    browser.find(&format!("#app-{app_id}")).await;
    browser.screenshot("account").await;

    // Sign out: back to sign-in, and the old session is over on the server
    // too (replaying its cookie is sent to sign-in).
    let old_session = session_cookie(&browser)
        .await
        .expect("session cookie")
        .value()
        .to_string();
    browser.click("#signout").await;
    browser
        .wait_for_url("the sign-in page after sign-out", |u| {
            u.starts_with(&signin)
        })
        .await;
    browser.find("#signin-form").await;
    assert!(session_cookie(&browser).await.is_none());
    browser.goto(&app.url("/dashboard")).await;
    browser
        .wait_for_url("the redirect to sign-in", |u| u == signin)
        .await;
    let r = no_redirects()
        .get(app.url("/dashboard"))
        .header("cookie", format!("latchkey_session={old_session}"))
        .send()
        .await
        .expect("request");
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(
        r.headers().get("location").and_then(|l| l.to_str().ok()),
        Some("/dashboard/signin")
    );

    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_failed_sign_in_shows_an_error_and_no_session() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    let signin = app.url("/dashboard/signin");

    let mut messages = Vec::new();
    for (email, password) in [
        (app.init.user.email.as_str(), "not the right password"),
        ("nobody@example.com", "not the right password"),
    ] {
        browser.goto(&signin).await;
        browser.fill("#email", email).await;
        browser.fill("#password", password).await;
        browser.click("#signin-submit").await;
        let error = text_of(&browser, "#signin-error").await;
        assert!(!error.is_empty());
        messages.push(error);
        assert!(browser.current_url().await.starts_with(&signin));
        assert!(
            session_cookie(&browser).await.is_none(),
            "no session after a failed sign-in"
        );
        // The password is not sent back into the form.
        let typed = browser
            .find("#password")
            .await
            .prop("value")
            .await
            .expect("value");
        assert_eq!(typed.as_deref(), Some(""));
    }
    assert_eq!(
        messages[0], messages[1],
        "a wrong password and an unknown email read the same"
    );
    // Still signed out.
    browser.goto(&app.url("/dashboard")).await;
    browser
        .wait_for_url("the redirect to sign-in", |u| u == signin)
        .await;
    assert!(!browser.exists("#signout").await);

    // The right password still works afterwards.
    sign_in(&browser, &app).await;
    assert!(session_cookie(&browser).await.is_some());

    browser.close().await;
}
