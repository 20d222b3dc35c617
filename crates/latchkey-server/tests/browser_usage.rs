//! The dashboard's usage pages in a real browser (Debian's headless
//! Chromium through ChromeDriver, as tests/browser.rs): the keys table's
//! counts and sparklines, search and the status filter, a key's chart,
//! the account overview and the audit log's filters, each checked against
//! what the API answers for the same usage.
//!
//! `LATCHKEY_SCREENSHOTS=1 cargo test -p latchkey-server --test browser_usage`
//! also rewrites the screenshots in docs/screenshots/ that it takes.

#[path = "common/browser.rs"]
mod chrome;
mod common;

use std::time::Duration;

use chrome::Browser;
use common::{Key, StatusCode, TestApp};
use serde_json::{Value, json};

async fn text_of(browser: &Browser, selector: &str) -> String {
    browser
        .find(selector)
        .await
        .text()
        .await
        .expect("text")
        .trim()
        .to_string()
}

async fn attr_of(browser: &Browser, selector: &str, name: &str) -> String {
    browser
        .find(selector)
        .await
        .attr(name)
        .await
        .expect("attribute")
        .unwrap_or_default()
}

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
}

async fn verify(app: &TestApp, authorization: &str) -> Value {
    let r = app
        .post(
            "/v1/verify",
            &app.operator(),
            json!({ "authorization": authorization }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// The API's answer for `path` once its totals reach `valid` and
/// `refused` (the flush interval has to pass first, and a flush may fall
/// between two checks).
async fn api_totals(app: &TestApp, path: &str, valid: i64, refused: i64) -> Value {
    for _ in 0..200 {
        let r = app.get(path, &app.owner()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        if r.body["totals"]["valid"] == valid && refused_total(&r.body["totals"]) == refused {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path}: the usage never reached {valid} valid and {refused} refused");
}

fn refused_total(counts: &Value) -> i64 {
    counts["refused"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_i64).sum())
        .unwrap_or(0)
}

#[tokio::test]
async fn usage_in_the_dashboard_matches_the_api() {
    let app = TestApp::spawn_with(|c| c.last_used_flush_interval = Duration::from_millis(50)).await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "Example Shop").await;
    let named = |name: &str| {
        let name = name.to_string();
        let app = &app;
        let owner = owner.clone();
        let app_id = app_id.clone();
        async move {
            let r = app
                .post(
                    &format!("/v1/apps/{app_id}/keys"),
                    &owner,
                    json!({"displayName": name}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            Key::from_reply(&r)
        }
    };
    let backend = named("backend server").await;
    let reports = named("nightly reports").await;
    for _ in 0..5 {
        assert_eq!(verify(&app, &backend.basic()).await["valid"], true);
    }
    for _ in 0..2 {
        let wrong = common::basic(&backend.id, "lksk_not_the_secret");
        assert_eq!(verify(&app, &wrong).await["valid"], false);
    }
    for _ in 0..3 {
        assert_eq!(verify(&app, &reports.basic()).await["valid"], true);
    }
    let of_backend = api_totals(
        &app,
        &format!("/v1/apps/{app_id}/usage?keyId={}", backend.id),
        5,
        2,
    )
    .await;
    assert_eq!(of_backend["keyId"], backend.id.as_str());
    api_totals(
        &app,
        &format!("/v1/apps/{app_id}/usage?keyId={}", reports.id),
        3,
        0,
    )
    .await;

    let browser = Browser::start().await;
    sign_in(&browser, &app).await;

    // The keys table: each key's checks of the last 24 hours.
    browser
        .goto(&app.url(&format!("/dashboard/apps/{app_id}")))
        .await;
    let count = format!("#key-requests-{}", backend.id);
    assert_eq!(text_of(&browser, &count).await, "7");
    assert_eq!(attr_of(&browser, &count, "data-valid").await, "5");
    assert_eq!(attr_of(&browser, &count, "data-refused").await, "2");
    assert_eq!(
        text_of(&browser, &format!("#key-requests-{}", reports.id)).await,
        "3"
    );
    // The sparkline says what it shows to those who cannot see it.
    let spark_title = browser
        .js(
            "return document.getElementById(arguments[0]).textContent;",
            vec![json!(format!("spark-{}-title", backend.id))],
        )
        .await;
    assert!(
        spark_title
            .as_str()
            .unwrap_or_default()
            .contains("5 valid, 2 refused"),
        "{spark_title}"
    );
    // Times are relative, the exact time on hover.
    let created = format!("#key-created-{}", backend.id);
    assert_eq!(text_of(&browser, &created).await, "just now");
    assert!(attr_of(&browser, &created, "title").await.ends_with("UTC"));
    browser.screenshot("app-keys-usage").await;

    // Search by name, then by status.
    browser.fill("#key-search-q", "nightly").await;
    browser.click("#key-search-submit").await;
    browser
        .wait_for_url("the search", |u| u.contains("q=nightly"))
        .await;
    assert!(browser.exists(&format!("#key-{}", reports.id)).await);
    assert!(!browser.exists(&format!("#key-{}", backend.id)).await);
    browser.fill("#key-search-q", "").await;
    browser
        .js(
            "document.getElementById('key-search-status').value = 'expired';",
            vec![],
        )
        .await;
    browser.click("#key-search-submit").await;
    browser
        .wait_for_url("the filter", |u| u.contains("status=expired"))
        .await;
    browser.find("#keys-none-match").await;
    browser.click("#key-search-clear").await;
    browser
        .wait_for_url("all keys again", |u| !u.contains("status="))
        .await;
    browser.find(&format!("#key-{}", backend.id)).await;

    // The key's page: the hour that holds the checks says what the API
    // says of that hour.
    browser.click(&format!("#key-link-{}", backend.id)).await;
    browser.find("#usage-hourly").await;
    let hourly = app
        .get(
            &format!(
                "/v1/apps/{app_id}/usage?keyId={}&granularity=hour",
                backend.id
            ),
            &owner,
        )
        .await;
    let bucket = hourly.body["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .find(|b| b["valid"].as_i64() > Some(0))
        .expect("a bucket with checks")
        .clone();
    let row = browser
        .js(
            "var r = document.querySelector('#usage-hourly-table tr[data-start=\"' + arguments[0] + '\"]'); \
             return r ? [r.getAttribute('data-valid'), r.getAttribute('data-refused')] : null;",
            vec![bucket["start"].clone()],
        )
        .await;
    assert_eq!(
        row,
        json!([
            bucket["valid"].to_string(),
            refused_total(&bucket).to_string()
        ]),
        "the chart's row for {}",
        bucket["start"]
    );
    assert_eq!(text_of(&browser, "#usage-hourly-valid").await, "5");
    assert_eq!(text_of(&browser, "#usage-hourly-refused").await, "2");
    // Its history: the key's creation.
    assert!(
        text_of(&browser, "#key-events")
            .await
            .contains("key.created"),
        "the key's events"
    );
    browser.screenshot("key-usage").await;

    // The account overview: the account's checks over 7 days, as the API
    // counts them (the owner's own reads of this page's data included, so
    // the two are read one after the other and compared on the apps).
    browser.click("#account-link").await;
    browser.find("#account-usage").await;
    let app_count = format!("#app-requests-{app_id}");
    assert_eq!(attr_of(&browser, &app_count, "data-valid").await, "8");
    assert_eq!(attr_of(&browser, &app_count, "data-refused").await, "2");
    let summary = app.get("/v1/usage?granularity=day", &owner).await;
    let of_app = summary.body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["appId"] == app_id.as_str())
        .cloned()
        .expect("the app");
    assert_eq!(of_app["valid"], 8);
    browser.find("#attention-none").await;
    browser.screenshot("account-overview").await;

    // The audit log: filtered by action in the page, names beside ids.
    browser.goto(&app.url("/dashboard/audit")).await;
    browser.fill("#audit-action", "key.created").await;
    browser.click("#audit-filter-submit").await;
    browser
        .wait_for_url("the filtered log", |u| u.contains("action=key.created"))
        .await;
    let actions = browser
        .js(
            "return Array.from(document.querySelectorAll('#audit-list tbody tr td:nth-child(2)')).map(function (c) { return c.textContent.trim(); });",
            vec![],
        )
        .await;
    let actions = actions.as_array().expect("cells");
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions.iter().all(|a| a == "key.created"), "{actions:?}");
    let log = text_of(&browser, "#audit-list").await;
    assert!(log.contains("backend server"), "the key's name: {log}");
    assert!(log.contains("nightly reports"), "the key's name: {log}");
    // A date that is not one is named, and left out.
    browser
        .goto(&app.url("/dashboard/audit?since=yesterday"))
        .await;
    assert!(
        text_of(&browser, "#audit-filter-problem")
            .await
            .contains("YYYY-MM-DD")
    );
    browser.screenshot("audit-log").await;
    browser.close().await;
}
