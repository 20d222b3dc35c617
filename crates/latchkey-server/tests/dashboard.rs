//! The dashboard over real HTTP, as a browser without JavaScript would use
//! it: sign-in (cookie attributes, one message for unknown email and wrong
//! password, throttling), CSRF and cross-site refusals, the key life cycle
//! with the secret shown once and checked against the API, the person's
//! own keys, service accounts, settings, webhooks, tenant isolation,
//! sign-out and escaping.

mod common;

use std::collections::BTreeMap;

use common::{Key, StatusCode, TestApp};
use latchkey_core::Clock;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

/// One dashboard response.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `value` of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        attr_after(&self.body, r#"name="csrf" value=""#).expect("a csrf field")
    }

    /// The text of the element with this id (up to the next tag).
    fn text_of(&self, id: &str) -> Option<String> {
        let start = self.body.find(&format!(r#"id="{id}""#))?;
        let rest = &self.body[start..];
        let open_end = rest.find('>')?;
        let rest = &rest[open_end + 1..];
        Some(rest[..rest.find('<')?].to_string())
    }

    /// The `href` of the link with this id.
    fn href_of(&self, id: &str) -> Option<String> {
        let at = self.body.find(&format!(r#"id="{id}""#))?;
        let before = &self.body[..at];
        let start = before.rfind("href=\"")? + 6;
        Some(before[start..].split('"').next()?.to_string())
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

/// Text with the character references askama writes (`&#34;`) and the
/// common named ones decoded.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').expect("end of a character reference");
        let c = match &rest[1..end] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            n => n
                .strip_prefix('#')
                .and_then(|d| d.parse::<u32>().ok())
                .and_then(char::from_u32)
                .expect("a numeric character reference"),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// What a browser would send for the form with this id as the page
/// fills it in: inputs (checkboxes and radios only when checked),
/// textareas, and the selected option of each select.
fn form_fields(page: &Page, form_id: &str) -> Vec<(String, String)> {
    let start = page
        .body
        .find(&format!(r#"id="{form_id}""#))
        .expect("the form");
    let form = &page.body[start..];
    let form = &form[..form.find("</form>").expect("the form's end")];
    let mut out = Vec::new();
    let mut rest = form;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        let tag = &rest[..rest.find('>').expect("tag end")];
        let attr =
            |tag: &str, name: &str| attr_after(tag, &format!(r#" {name}=""#)).map(|v| unescape(&v));
        let Some(name) = attr(tag, "name") else {
            continue;
        };
        let content = &rest[tag.len() + 1..];
        if tag.starts_with("input") {
            let kind = attr(tag, "type").unwrap_or_default();
            if matches!(kind.as_str(), "checkbox" | "radio") && !tag.contains(" checked") {
                continue;
            }
            out.push((name, attr(tag, "value").unwrap_or_default()));
        } else if tag.starts_with("textarea") {
            let text = &content[..content.find("</textarea>").expect("textarea end")];
            out.push((name, unescape(text)));
        } else if tag.starts_with("select") {
            let options = &content[..content.find("</select>").expect("select end")];
            let tags: Vec<&str> = options
                .split("<option")
                .skip(1)
                .map(|o| &o[..o.find('>').expect("option end")])
                .collect();
            let chosen = tags
                .iter()
                .find(|t| t.contains(" selected"))
                .or(tags.first())
                .expect("an option");
            out.push((name, attr(chosen, "value").unwrap_or_default()));
        }
    }
    out
}

/// The text between `prefix` and the next `"`.
fn attr_after(body: &str, prefix: &str) -> Option<String> {
    let start = body.find(prefix)? + prefix.len();
    let rest = &body[start..];
    Some(rest[..rest.find('"')?].to_string())
}

/// A cookie-keeping client that does not follow redirects.
struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        let http = common::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Browser {
            app,
            http,
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header(COOKIE, self.cookie_header())
        };
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.expect("body");
        let page = Page {
            status,
            headers,
            body,
        };
        for c in page.set_cookies() {
            let first = c.split(';').next().unwrap_or("");
            let (name, value) = first.split_once('=').expect("name=value");
            if c.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(self.app.url(path));
        self.send(req).await
    }

    /// Posts a form as the dashboard's pages do.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[]).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let body = serde_urlencoded::to_string(fields).expect("form");
        let mut req = self
            .http
            .post(self.app.url(path))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.send(req).await
    }

    async fn post_fields(&mut self, path: &str, fields: &[(String, String)]) -> Page {
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.post(path, &pairs).await
    }

    /// Posts a form with the CSRF token of the page at `from`.
    async fn submit(&mut self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }

    async fn try_sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/dashboard/signin").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf();
        self.post(
            "/dashboard/signin",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }

    /// Signs in as the first account's owner.
    async fn sign_in(&mut self) -> Page {
        let email = self.app.init.user.email.clone();
        let password = self.app.init.user.password.expose().to_string();
        let page = self.try_sign_in(&email, &password).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location(), "/dashboard");
        page
    }

    async fn signed_in(app: &'a TestApp) -> Self {
        let mut b = Browser::new(app);
        b.sign_in().await;
        b
    }
}

/// Creates an app from the account page; returns its id.
async fn create_app(b: &mut Browser<'_>, name: &str) -> String {
    let page = b
        .submit("/dashboard", "/dashboard/apps", &[("display_name", name)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let location = page.location().to_string();
    let id = location
        .strip_prefix("/dashboard/apps/")
        .and_then(|r| r.split('?').next())
        .expect("app page")
        .to_string();
    assert!(id.starts_with("ap_"), "{location}");
    id
}

/// The key shown once on a "key created" or "key rotated" page.
fn shown_key(page: &Page) -> Key {
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    Key {
        id: page.text_of("new-key-id").expect("key id"),
        secret: page.text_of("new-key-secret").expect("secret"),
    }
}

async fn app_status(app: &TestApp, app_id: &str, auth: &str) -> StatusCode {
    app.get(&format!("/v1/apps/{app_id}"), auth).await.status
}

async fn app_count(app: &TestApp) -> usize {
    let r = app.get("/v1/apps", &app.owner()).await;
    r.body["apps"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_session_cookie() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);

    // Not signed in: every page sends you to the sign-in form.
    let page = b.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/signin");

    let form = b.get("/dashboard/signin").await;
    assert_eq!(form.status, StatusCode::OK);
    for id in ["signin-form", "email", "password", "signin-submit"] {
        assert!(form.body.contains(&format!(r#"id="{id}""#)), "{id}");
    }
    let signin_cookie = form.set_cookie("latchkey_signin").expect("sign-in cookie");
    assert!(signin_cookie.contains("HttpOnly"), "{signin_cookie}");
    assert!(signin_cookie.contains("SameSite=Strict"), "{signin_cookie}");

    let page = b.sign_in().await;
    let cookie = page.set_cookie("latchkey_session").expect("session cookie");
    let attrs: Vec<&str> = cookie.split("; ").collect();
    let value = attrs[0].strip_prefix("latchkey_session=").expect("value");
    assert_eq!(value.len(), 43, "256 bits, base64url: {cookie}");
    for a in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(attrs.contains(&a), "{a} missing from {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    // The sign-in cookie has done its job.
    assert!(
        page.set_cookie("latchkey_signin")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );

    let home = b.get("/dashboard").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert_eq!(
        home.text_of("user-email").as_deref(),
        Some(app.init.user.email.as_str())
    );
    assert!(
        home.body
            .contains("No apps yet. Create one to get an app key.")
    );
    // Security headers on every page.
    let h = &home.headers;
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h[CACHE_CONTROL], "no-store");
    assert!(!home.body.contains("<script>"), "no inline script");
    // Signed in, the sign-in form sends you home.
    assert_eq!(b.get("/dashboard/signin").await.location(), "/dashboard");

    // The session id is not in the database, only its hash (checked by
    // reading the SQLite file byte by byte; on PostgreSQL there is no file
    // to read, and the same store code writes the same columns).
    let db = if common::on_postgres() {
        Vec::new()
    } else {
        std::fs::read(app.dir.path().join("data/latchkey.db")).expect("db")
    };
    let wal = std::fs::read(app.dir.path().join("data/latchkey.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "the session id was stored"
        );
    }
}

#[tokio::test]
async fn the_session_cookie_is_secure_over_tls() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let app = TestApp::spawn_with(|c| {
        c.tls = Some(latchkey_server::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let port = app.server.as_ref().expect("server").local_addr.port();
    let http = common::client_builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("cert"),
        ])
        .resolve(
            "localhost",
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("https://localhost:{port}");
    let form = http
        .get(format!("{base}/dashboard/signin"))
        .send()
        .await
        .expect("form");
    let signin = form.headers()[SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(signin.contains("; Secure"), "{signin}");
    let body = form.text().await.expect("body");
    let csrf = attr_after(&body, r#"name="csrf" value=""#).expect("csrf");
    let resp = http
        .post(format!("{base}/dashboard/signin"))
        .header(COOKIE, signin.split(';').next().expect("pair"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("csrf", csrf.as_str()),
                ("email", app.init.user.email.as_str()),
                ("password", app.init.user.password.expose()),
            ])
            .expect("form"),
        )
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("latchkey_session="))
        .expect("session cookie")
        .to_string();
    assert!(session.contains("; Secure"), "{session}");
    assert!(session.contains("HttpOnly"), "{session}");
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_page() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    let email = app.init.user.email.clone();
    let wrong = b.try_sign_in(&email, "not the right password").await;
    let unknown = b
        .try_sign_in("nobody@example.com", "not the right password")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, wrong.status);
    assert!(wrong.set_cookie("latchkey_session").is_none());
    assert!(unknown.set_cookie("latchkey_session").is_none());
    let message = wrong.text_of("signin-error").expect("error");
    assert_eq!(message, "The email or password is not right.");
    assert_eq!(unknown.text_of("signin-error"), Some(message));
    // Byte for byte the same page, but for the email typed in.
    assert_eq!(
        wrong.body.replace(&email, "EMAIL"),
        unknown.body.replace("nobody@example.com", "EMAIL")
    );
    // A malformed email too.
    let malformed = b.try_sign_in("not an email", "whatever password").await;
    assert_eq!(malformed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        malformed.text_of("signin-error"),
        wrong.text_of("signin-error")
    );
    // The password is never echoed.
    assert!(!wrong.body.contains("not the right password"));
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_email_then_released() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    let email = app.init.user.email.clone();
    let password = app.init.user.password.expose().to_string();
    for _ in 0..5 {
        let page = b.try_sign_in(&email, "wrong password, again").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password is refused, without being checked.
    let page = b.try_sign_in(&email, &password).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    let message = page.text_of("message").expect("message");
    assert!(
        message.contains("Too many failed sign-in attempts. Try again in 15 minutes."),
        "{message}"
    );
    assert_eq!(page.headers["retry-after"], "900");
    assert!(page.set_cookie("latchkey_session").is_none());
    // The same page for an unknown email that has failed as often.
    for _ in 0..5 {
        b.try_sign_in("ghost@example.com", "wrong password, again")
            .await;
    }
    let ghost = b.try_sign_in("ghost@example.com", "whatever").await;
    assert_eq!(ghost.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ghost.text_of("message"), Some(message));

    app.clock.advance(time::Duration::minutes(10));
    let page = b.try_sign_in(&email, &password).await;
    let message = page.text_of("message").expect("message");
    assert!(message.contains("Try again in 5 minutes."), "{message}");

    app.clock.advance(time::Duration::minutes(5));
    b.sign_in().await;
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_address() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    for i in 0..20 {
        let page = b
            .try_sign_in(&format!("guess{i}@example.com"), "wrong password")
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let email = app.init.user.email.clone();
    let password = app.init.user.password.expose().to_string();
    let page = b.try_sign_in(&email, &password).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn forms_without_the_right_token_or_from_another_site_change_nothing() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let csrf = b.get("/dashboard").await.csrf();

    let none = b
        .post("/dashboard/apps", &[("display_name", "no token")])
        .await;
    assert_eq!(none.status, StatusCode::FORBIDDEN, "{}", none.body);
    assert!(
        none.text_of("message")
            .expect("message")
            .contains("nothing changed")
    );
    let wrong = b
        .post(
            "/dashboard/apps",
            &[
                ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("display_name", "bad token"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    // Another session's token does not do either.
    let mut other = Browser::signed_in(&app).await;
    let other_csrf = other.get("/dashboard").await.csrf();
    assert_ne!(other_csrf, csrf);
    let foreign = b
        .post(
            "/dashboard/apps",
            &[("csrf", &other_csrf), ("display_name", "their token")],
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    // The right token, sent from another site.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let page = b
            .post_with(
                "/dashboard/apps",
                &[("csrf", &csrf), ("display_name", "cross site")],
                &[(name, value)],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{name}: {value}");
    }
    // Nothing was created; the own key still exists (sign-out refused too).
    assert_eq!(app_count(&app).await, 0);
    let page = b.post("/dashboard/signout", &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get("/dashboard").await.status, StatusCode::OK);

    // Same origin, right token: works.
    let origin = app.base.clone();
    let page = b
        .post_with(
            "/dashboard/apps",
            &[("csrf", &csrf), ("display_name", "same site")],
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(app_count(&app).await, 1);

    // The sign-in form needs its own cookie and token (no login CSRF).
    let mut fresh = Browser::new(&app);
    let email = app.init.user.email.clone();
    let password = app.init.user.password.expose().to_string();
    let page = fresh
        .post(
            "/dashboard/signin",
            &[("email", &email), ("password", &password)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.set_cookie("latchkey_session").is_none());
    let form = fresh.get("/dashboard/signin").await;
    let page = fresh
        .post_with(
            "/dashboard/signin",
            &[
                ("csrf", &form.csrf()),
                ("email", &email),
                ("password", &password),
            ],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.set_cookie("latchkey_session").is_none());
}

#[tokio::test]
async fn an_app_key_is_created_shown_once_rotated_and_deleted() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let app_id = create_app(&mut b, "Chat").await;
    let page = b
        .get(&format!("/dashboard/apps/{app_id}?done=app-created"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.text_of("app-name").as_deref(), Some("Chat"));
    assert!(page.body.contains("No keys yet. Create one"));
    assert!(page.text_of("notice").is_some());

    let keys_url = format!("/dashboard/apps/{app_id}/keys");
    let created = b
        .submit(
            &format!("/dashboard/apps/{app_id}"),
            &keys_url,
            &[("display_name", "backend"), ("expires_in_days", "0")],
        )
        .await;
    let key = shown_key(&created);
    assert!(key.id.starts_with("app_"), "{}", key.id);
    assert!(key.secret.starts_with("lksk_"), "{}", key.secret);
    assert!(created.body.contains(r#"id="copy-secret""#));
    assert!(
        created
            .body
            .contains(r#"data-copy-target="new-key-secret""#)
    );
    assert_eq!(created.headers[CACHE_CONTROL], "no-store");

    // A second view lists the key, never its secret.
    let again = b.get(&format!("/dashboard/apps/{app_id}")).await;
    assert!(again.body.contains(&format!(r#"id="key-{}""#, key.id)));
    assert!(!again.body.contains(&key.secret));
    assert!(again.text_of("new-key-secret").is_none());

    // The key works against the API.
    assert_eq!(
        app_status(&app, &app_id, &key.basic()).await,
        StatusCode::OK
    );
    assert_eq!(
        again.text_of(&format!("key-status-{}", key.id)).as_deref(),
        Some("active")
    );
    // The rotation form offers the API's default grace, 30 days, first.
    let select = again
        .body
        .split(&format!(r#"id="rotate-grace-{}""#, key.id))
        .nth(1)
        .and_then(|rest| rest.split("</select>").next())
        .expect("the rotation form's grace choices");
    assert!(
        select.contains(r#"<option value="2592000" selected>30 days</option>"#),
        "{select}"
    );
    assert_eq!(select.matches(" selected").count(), 1, "{select}");

    // Rotate with a one-hour grace: both work, the old one until then.
    let rotated = b
        .submit(
            &format!("/dashboard/apps/{app_id}"),
            &format!("{keys_url}/{}/rotate", key.id),
            &[("grace_seconds", "3600")],
        )
        .await;
    let new = shown_key(&rotated);
    assert_ne!(new.id, key.id);
    assert_eq!(
        rotated.text_of("previous-key-id").as_deref(),
        Some(key.id.as_str())
    );
    assert!(rotated.text_of("previous-key-expires").is_some());
    assert_eq!(
        app_status(&app, &app_id, &new.basic()).await,
        StatusCode::OK
    );
    assert_eq!(
        app_status(&app, &app_id, &key.basic()).await,
        StatusCode::OK
    );
    // A rotated key offers no second rotation, and its badge says that it
    // is retiring (not merely expiring).
    let listed = b.get(&format!("/dashboard/apps/{app_id}")).await;
    assert_eq!(
        listed.text_of(&format!("key-status-{}", key.id)).as_deref(),
        Some("rotated, retiring in 1 hour")
    );
    assert!(listed.body.contains("status status-retiring"));
    assert_eq!(
        listed.text_of(&format!("key-status-{}", new.id)).as_deref(),
        Some("active")
    );
    assert!(!listed.body.contains(&format!(r#"id="rotate-{}""#, key.id)));
    assert!(listed.body.contains(&format!(r#"id="rotate-{}""#, new.id)));
    // Rotating it anyway is refused in the page.
    let twice = b
        .submit(
            &format!("/dashboard/apps/{app_id}"),
            &format!("{keys_url}/{}/rotate", key.id),
            &[("grace_seconds", "0")],
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert!(
        twice
            .text_of("error")
            .expect("error")
            .contains("already been rotated")
    );

    // Delete the new key: a confirmation first, which changes nothing.
    let confirm_url = format!("{keys_url}/{}/delete", new.id);
    let confirm = b.get(&confirm_url).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains(r#"id="confirm-delete""#));
    assert!(
        confirm
            .text_of("confirm-message")
            .expect("message")
            .contains(&new.id)
    );
    assert_eq!(
        app_status(&app, &app_id, &new.basic()).await,
        StatusCode::OK
    );
    let deleted = b.post(&confirm_url, &[("csrf", &confirm.csrf())]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert_eq!(
        deleted.location(),
        format!("/dashboard/apps/{app_id}?done=key-deleted")
    );
    // Refused by the API at once, by Basic and by JWT.
    assert_eq!(
        app_status(&app, &app_id, &new.basic()).await,
        StatusCode::UNAUTHORIZED
    );
    let jwt = new
        .jwt(json!({"scope": "app", "exp": latchkey_core::Clock::unix(app.clock.as_ref()) + 600}));
    assert_eq!(
        app_status(&app, &app_id, &jwt).await,
        StatusCode::UNAUTHORIZED
    );
    // The old key is still in its grace period.
    assert_eq!(
        app_status(&app, &app_id, &key.basic()).await,
        StatusCode::OK
    );
    let after = b
        .get(&format!("/dashboard/apps/{app_id}?done=key-deleted"))
        .await;
    assert!(!after.body.contains(&format!(r#"id="key-{}""#, new.id)));
    assert!(after.text_of("notice").expect("notice").contains("deleted"));
    // Deleting it again is a 404 in the page.
    let gone = b.get(&confirm_url).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // The audit log says who did it: the signed-in user account.
    let audit = app.get("/v1/audit", &app.owner()).await;
    let deleted = audit.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "key.deleted")
        .expect("key.deleted")
        .clone();
    assert_eq!(deleted["actor"]["type"], "userAccount");
    assert_eq!(deleted["actor"]["id"], app.init.user.id.as_str());
    assert_eq!(deleted["target"]["id"], new.id.as_str());
    let page = b.get("/dashboard/audit").await;
    assert!(page.body.contains("key.deleted"));
    assert!(page.body.contains("dashboard.signedIn"));
}

#[tokio::test]
async fn mistakes_are_shown_in_the_page() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let page = b
        .submit("/dashboard", "/dashboard/apps", &[("display_name", "   ")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.text_of("error")
            .expect("error")
            .contains("The name must be 1 to 100 characters.")
    );
    assert!(page.body.contains(r#"id="create-app-form""#));

    let app_id = create_app(&mut b, "Chat").await;
    let keys_url = format!("/dashboard/apps/{app_id}/keys");
    for i in 0..10 {
        let name = format!("k{i}");
        shown_key(
            &b.submit(
                &keys_url.replace("/keys", ""),
                &keys_url,
                &[("display_name", &name)],
            )
            .await,
        );
    }
    let page = b
        .submit(
            &keys_url.replace("/keys", ""),
            &keys_url,
            &[("display_name", "one too many")],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(
        page.text_of("error")
            .expect("error")
            .contains("delete one first")
    );

    let page = b
        .submit(
            &keys_url.replace("/keys", ""),
            &format!("{keys_url}/app_nonexistent/rotate"),
            &[("grace_seconds", "0")],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);

    let page = b.get("/dashboard/no/such/page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(
        page.headers[CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn own_user_account_keys_are_created_and_deleted_here() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let page = b
        .submit(
            "/dashboard",
            "/dashboard/account/keys",
            &[("display_name", "laptop script")],
        )
        .await;
    let key = shown_key(&page);
    assert!(key.id.starts_with("act_"), "{}", key.id);
    let who = app.get("/v1/account", &key.basic()).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.body["userAccountId"], app.init.user.id.as_str());

    // The API cannot delete it.
    let r = app
        .delete(&format!("/v1/account/keys/{}", key.id), &key.basic())
        .await;
    assert!(r.status.is_client_error(), "{:?}", r.status);
    assert_eq!(
        app.get("/v1/account", &key.basic()).await.status,
        StatusCode::OK
    );

    // The dashboard can, this one or the key init printed.
    let home = b.get("/dashboard").await;
    assert!(home.body.contains(&format!(r#"id="key-{}""#, key.id)));
    assert!(
        home.body
            .contains(&format!(r#"id="key-{}""#, app.init.key.id))
    );
    for id in [&key.id, &app.init.key.id] {
        let url = format!("/dashboard/account/keys/{id}/delete");
        let confirm = b.get(&url).await;
        assert_eq!(confirm.status, StatusCode::OK);
        let page = b.post(&url, &[("csrf", &confirm.csrf())]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location(), "/dashboard?done=key-deleted");
    }
    assert_eq!(
        app.get("/v1/account", &key.basic()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/account", &app.owner()).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The session does not need a key.
    let home = b.get("/dashboard").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("You have no user-account keys."));
}

#[tokio::test]
async fn service_accounts_their_keys_and_grants() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let app_id = create_app(&mut b, "Chat").await;
    let page = b
        .submit(
            "/dashboard",
            "/dashboard/service-accounts",
            &[("display_name", "provisioning")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let sa_url = page.location().split('?').next().expect("url").to_string();
    let sa_id = sa_url
        .strip_prefix("/dashboard/service-accounts/")
        .expect("sa page")
        .to_string();
    let sa_page = b.get(&sa_url).await;
    assert_eq!(sa_page.text_of("sa-name").as_deref(), Some("provisioning"));
    assert!(sa_page.body.contains("It reaches no app yet."));

    let key = shown_key(
        &b.submit(
            &sa_url,
            &format!("{sa_url}/keys"),
            &[("display_name", "robot")],
        )
        .await,
    );
    assert!(key.id.starts_with("svc_"));
    assert_eq!(
        app_status(&app, &app_id, &key.basic()).await,
        StatusCode::NOT_FOUND
    );
    let page = b
        .submit(&sa_url, &format!("{sa_url}/grants"), &[("app_id", &app_id)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        app_status(&app, &app_id, &key.basic()).await,
        StatusCode::OK
    );
    let page = b
        .submit(&sa_url, &format!("{sa_url}/grants/{app_id}/revoke"), &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        app_status(&app, &app_id, &key.basic()).await,
        StatusCode::NOT_FOUND
    );

    // Rotate its key with no grace: the old one stops at once.
    let new = shown_key(
        &b.submit(
            &sa_url,
            &format!("{sa_url}/keys/{}/rotate", key.id),
            &[("grace_seconds", "0")],
        )
        .await,
    );
    assert_eq!(
        app.get("/v1/apps", &new.basic()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/apps", &key.basic()).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Delete the service account after confirming.
    let confirm = b.get(&format!("{sa_url}/delete")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let page = b
        .post(&format!("{sa_url}/delete"), &[("csrf", &confirm.csrf())])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard?done=service-account-deleted");
    assert_eq!(
        app.get("/v1/apps", &new.basic()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(b.get(&sa_url).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/v1/serviceAccounts/{sa_id}"), &app.owner())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn settings_are_saved_through_the_api_rules() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let app_id = create_app(&mut b, "Chat").await;
    let url = format!("/dashboard/apps/{app_id}/settings");
    let page = b.get(&url).await;
    assert_eq!(page.status, StatusCode::OK);
    // New apps block browser secrets.
    assert!(
        page.body
            .contains(r#"name="block_browser_secrets" value="on" checked"#)
    );

    let page = b
        .submit(
            &url,
            &url,
            &[
                (
                    "allowed_origins",
                    "https://app.example.com\r\nhttp://localhost:3000",
                ),
                ("max_key_age_days", "90"),
                ("max_token_ttl_seconds", ""),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), format!("{url}?done=settings-saved"));
    let settings = app
        .get(&format!("/v1/apps/{app_id}"), &app.owner())
        .await
        .body["app"]["settings"]
        .clone();
    assert_eq!(
        settings,
        json!({
            "allowedOrigins": ["https://app.example.com", "http://localhost:3000"],
            "blockBrowserSecrets": false,
            "maxKeyAgeDays": 90,
        })
    );
    let page = b.get(&url).await;
    assert!(
        page.body
            .contains("https://app.example.com\nhttp://localhost:3000</textarea>")
    );

    // A bad origin is explained, and changes nothing.
    let page = b
        .submit(
            &url,
            &url,
            &[
                ("allowed_origins", "https://app.example.com/path"),
                ("block_browser_secrets", "on"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.text_of("error")
            .expect("error")
            .contains("is not an exact origin")
    );
    // What was entered is kept in the form.
    assert!(
        page.body
            .contains("https://app.example.com/path</textarea>")
    );
    // A value the API refuses, too.
    let page = b.submit(&url, &url, &[("max_key_age_days", "99999")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.text_of("error")
            .expect("error")
            .contains("maxKeyAgeDays")
    );
    let after = app
        .get(&format!("/v1/apps/{app_id}"), &app.owner())
        .await
        .body["app"]["settings"]
        .clone();
    assert_eq!(after, settings);

    // Emptying the list allows any origin again; blocking back on.
    let page = b
        .submit(
            &url,
            &url,
            &[
                ("allowed_origins", ""),
                ("block_browser_secrets", "on"),
                ("max_key_age_days", "90"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let settings = app
        .get(&format!("/v1/apps/{app_id}"), &app.owner())
        .await
        .body["app"]["settings"]
        .clone();
    assert_eq!(
        settings,
        json!({"blockBrowserSecrets": true, "maxKeyAgeDays": 90})
    );
}

#[tokio::test]
async fn webhooks_are_listed_created_with_a_secret_shown_once_and_deleted() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let app_id = create_app(&mut b, "Chat").await;
    let url = format!("/dashboard/apps/{app_id}/webhooks");
    let page = b.get(&url).await;
    assert!(page.body.contains("No webhooks yet."));
    let page = b
        .submit(
            &url,
            &url,
            &[
                ("target", "https://hooks.example.com/latchkey"),
                ("triggers", "key:created"),
                ("triggers", "key:deleted"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let id = page.text_of("new-webhook-id").expect("id");
    let secret = page.text_of("new-webhook-secret").expect("secret");
    assert!(secret.starts_with("lkwh_"));
    let listed = app
        .get(&format!("/v1/apps/{app_id}/webhooks"), &app.owner())
        .await;
    assert_eq!(listed.body["webhooks"][0]["id"], id.as_str());
    assert_eq!(
        listed.body["webhooks"][0]["triggers"],
        json!(["key:created", "key:deleted"])
    );
    let page = b.get(&url).await;
    assert!(page.body.contains(&format!(r#"id="webhook-{id}""#)));
    assert!(!page.body.contains(&secret));
    assert!(
        page.body
            .contains(&format!(r#"id="deliveries-empty-{id}""#))
    );

    // A key created: its delivery is listed under the webhook, with its
    // status and attempts.
    app.create_app_key(&app.owner(), &app_id).await;
    let page = b.get(&url).await;
    assert!(
        page.body.contains(&format!(r#"id="deliveries-{id}""#)),
        "{}",
        page.body
    );
    let row = page
        .body
        .split(r#"<tr id="delivery-dlv_"#)
        .nth(1)
        .expect("a delivery row");
    assert!(row.contains("<code>key:created</code>"), "{row}");
    assert!(
        ["pending", "failed"]
            .iter()
            .any(|s| row.contains(&format!(r#"class="status status-{s}""#))),
        "{row}"
    );

    // A user name or password in the target: explained, nothing created.
    let page = b
        .submit(
            &url,
            &url,
            &[
                ("target", "https://user:s3cr3t-passw0rd@hooks.example.com/x"),
                ("triggers", "key:created"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(
        page.text_of("error")
            .expect("error")
            .contains("user name or password"),
        "{}",
        page.body
    );
    let listed = app
        .get(&format!("/v1/apps/{app_id}/webhooks"), &app.owner())
        .await;
    assert_eq!(listed.body["webhooks"].as_array().map(Vec::len), Some(1));

    // No trigger chosen: explained, target kept.
    let page = b
        .submit(&url, &url, &[("target", "https://other.example.com/x")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.text_of("error")
            .expect("error")
            .contains("Triggers must list at least one of")
    );
    assert!(page.body.contains(r#"value="https://other.example.com/x""#));

    let del = format!("{url}/{id}/delete");
    let confirm = b.get(&del).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let page = b.post(&del, &[("csrf", &confirm.csrf())]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let listed = app
        .get(&format!("/v1/apps/{app_id}/webhooks"), &app.owner())
        .await;
    assert_eq!(listed.body["webhooks"], json!([]));
}

#[tokio::test]
async fn app_users_are_listed_a_page_at_a_time() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let app_id = create_app(&mut b, "Chat").await;
    let url = format!("/dashboard/apps/{app_id}/users");
    assert!(b.get(&url).await.body.contains("No users yet."));
    for i in 0..27 {
        let r = app
            .post(
                &format!("/v1/apps/{app_id}/users"),
                &app.owner(),
                json!({"externalId": format!("user{i:02}"), "profile": {"givenName": "Ann"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let first = b.get(&url).await;
    assert!(first.body.contains(">user00<"));
    assert!(first.body.contains(">user24<"));
    assert!(!first.body.contains(">user25<"));
    let next = first.href_of("users-next").expect("next page link");
    let second = b.get(&next.replace("&amp;", "&")).await;
    assert_eq!(second.status, StatusCode::OK, "{next}");
    assert!(second.body.contains(">user25<"));
    assert!(second.body.contains(">user26<"));
    assert!(!second.body.contains(r#"id="users-next""#));
}

#[tokio::test]
async fn another_accounts_app_is_a_404_page() {
    let app = TestApp::spawn().await;
    let other_key = app.create_account("other@example.com").await;
    let theirs = app.create_app(&other_key.basic(), "Theirs").await;
    let their_key = app.create_app_key(&other_key.basic(), &theirs).await;
    let mut b = Browser::signed_in(&app).await;
    for path in [
        format!("/dashboard/apps/{theirs}"),
        format!("/dashboard/apps/{theirs}/settings"),
        format!("/dashboard/apps/{theirs}/webhooks"),
        format!("/dashboard/apps/{theirs}/users"),
        format!("/dashboard/apps/{theirs}/keys/{}/delete", their_key.id),
        "/dashboard/apps/ap_doesnotexist".to_string(),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!page.body.contains("Theirs"), "{path}");
    }
    // Nor can its keys be deleted or created from here.
    let csrf = b.get("/dashboard").await.csrf();
    let page = b
        .post(
            &format!("/dashboard/apps/{theirs}/keys/{}/delete", their_key.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = b
        .post(
            &format!("/dashboard/apps/{theirs}/keys"),
            &[("csrf", &csrf), ("display_name", "mine now")],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app_status(&app, &theirs, &their_key.basic()).await,
        StatusCode::OK
    );
    let keys = app
        .get(&format!("/v1/apps/{theirs}/keys"), &other_key.basic())
        .await;
    assert_eq!(keys.body["keys"].as_array().map(Vec::len), Some(1));
    // Their service accounts neither.
    let their_sa = app.create_service_account(&other_key.basic()).await;
    assert_eq!(
        b.get(&format!("/dashboard/service-accounts/{their_sa}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn sign_out_ends_the_session_everywhere() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let stolen = b.cookie_header();
    let csrf = b.get("/dashboard").await.csrf();
    let page = b.post("/dashboard/signout", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/signin?done=signed-out");
    assert!(
        page.set_cookie("latchkey_session")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    let signin = b.get(page.location()).await;
    assert_eq!(
        signin.text_of("notice").as_deref(),
        Some("You have signed out.")
    );

    // The old cookie, replayed, no longer works for pages or forms.
    let http = common::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = http
        .get(app.url("/dashboard"))
        .header(COOKIE, &stolen)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = http
        .post(app.url("/dashboard/apps"))
        .header(COOKIE, &stolen)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([("csrf", csrf.as_str()), ("display_name", "x")])
                .expect("form"),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app_count(&app).await, 0);

    let audit = app
        .get("/v1/audit?action=dashboard.signedOut", &app.owner())
        .await;
    assert_eq!(audit.body["events"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn sessions_expire_after_twelve_hours() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    app.clock
        .advance(time::Duration::hours(12) - time::Duration::seconds(1));
    assert_eq!(b.get("/dashboard").await.status, StatusCode::OK);
    app.clock.advance(time::Duration::seconds(1));
    let page = b.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/signin");
}

#[tokio::test]
async fn the_overview_names_what_needs_attention() {
    let app = TestApp::spawn_with(|c| {
        c.webhook_poll_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let owner = app.owner();
    let app_id = app.create_app(&owner, "attention").await;
    let r = app
        .patch(
            &format!("/v1/apps/{app_id}"),
            &owner,
            json!({"settings": {"maxKeyAgeDays": 30}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let old = app.create_app_key(&owner, &app_id).await;
    let used = app.create_app_key(&owner, &app_id).await;
    app.clock.advance(time::Duration::days(31));
    // Used lately: not a candidate to delete, though due for rotation too.
    let r = app.get(&format!("/v1/apps/{app_id}"), &used.basic()).await;
    assert_eq!(r.status, StatusCode::OK);
    let expiring_at = common::iso(app.clock.now() + time::Duration::days(3));
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &owner,
            json!({"displayName": "short-lived", "expiresAt": expiring_at}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let expiring = Key::from_reply(&r);
    // A webhook nobody answers (a port nothing listens on).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let target = format!("http://127.0.0.1:{closed}/hook");
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/webhooks"),
            &owner,
            json!({"target": target, "triggers": ["key:created"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let webhook_id = r.body["webhook"]["id"].as_str().expect("id").to_string();
    app.create_app_key(&owner, &app_id).await;

    let mut b = Browser::signed_in(&app).await;
    let mut page = b.get("/dashboard").await;
    for _ in 0..100 {
        if page
            .body
            .contains(&format!(r#"id="webhook-alert-{webhook_id}""#))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        page = b.get("/dashboard").await;
    }
    assert_eq!(page.status, StatusCode::OK);
    let section = |id: &str| -> String {
        let start = page
            .body
            .find(&format!(r#"id="{id}""#))
            .unwrap_or_else(|| panic!("{id} in {}", page.body));
        let rest = &page.body[start..];
        rest[..rest.find("</ul>").expect("end of list")].to_string()
    };
    let soon = section("attention-expiring");
    assert!(soon.contains(&expiring.id), "{soon}");
    assert!(soon.contains("expires in 3 days"), "{soon}");
    assert!(!soon.contains(&old.id), "{soon}");
    let due = section("attention-rotation");
    assert!(due.contains(&old.id) && due.contains(&used.id), "{due}");
    assert!(!due.contains(&expiring.id), "{due}");
    let unused = section("attention-unused");
    assert!(unused.contains(&old.id), "{unused}");
    assert!(unused.contains("never used"), "{unused}");
    assert!(!unused.contains(&used.id), "used 0 days ago: {unused}");
    let failing = section("attention-webhooks");
    assert!(
        failing.contains(&format!("127.0.0.1:{closed}")),
        "{failing}"
    );
    assert!(!page.body.contains(r#"id="attention-none""#));
}

#[tokio::test]
async fn deleting_the_account_ends_its_sessions() {
    let app = TestApp::spawn().await;
    let other = app.create_account("second@example.com").await;
    let r = app.get("/v1/account", &other.basic()).await;
    let account_id = r.body["accountId"].as_str().expect("account").to_string();
    let mut b = Browser::new(&app);
    let page = b
        .try_sign_in("second@example.com", "a long enough password")
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(b.get("/dashboard").await.status, StatusCode::OK);
    let r = app
        .delete(&format!("/v1/accounts/{account_id}"), &app.operator())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(b.get("/dashboard").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn hostile_names_are_escaped() {
    let app = TestApp::spawn().await;
    let hostile = r#"<script>alert("x")</script><img src=x onerror=alert(1)>"#;
    let app_id = app.create_app(&app.owner(), hostile).await;
    let key = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &app.owner(),
            json!({"displayName": hostile, "meta": {"note": format!("</textarea></pre>{hostile}")}}),
        )
        .await;
    let key = Key::from_reply(&key);
    app.post(
        &format!("/v1/apps/{app_id}/users"),
        &app.owner(),
        json!({"externalId": "\"><b>x", "profile": {"givenName": hostile}}),
    )
    .await;
    let mut b = Browser::signed_in(&app).await;
    for path in [
        "/dashboard".to_string(),
        format!("/dashboard/apps/{app_id}"),
        format!("/dashboard/apps/{app_id}/users"),
        format!("/dashboard/apps/{app_id}/keys/{}/delete", key.id),
        format!("/dashboard/apps/{app_id}/keys/{}", key.id),
        "/dashboard/audit".to_string(),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains("<script>alert"), "{path}");
        assert!(!page.body.contains("<img src=x"), "{path}");
        assert!(!page.body.contains("\"><b>"), "{path}");
        assert!(!page.body.contains("</textarea></pre>"), "{path}");
        // Shown, escaped (askama writes numeric character references).
        assert!(
            path.ends_with("/audit") || page.body.contains("&#60;script&#62;alert("),
            "{path}"
        );
    }
    // And an email typed into the sign-in form.
    let mut c = Browser::new(&app);
    let page = c
        .try_sign_in(r#""><script>alert(1)</script>@x.example"#, "wrong password")
        .await;
    assert!(!page.body.contains("<script>alert"));
    // Basic auth with a dashboard-created key still works: escaping is
    // only in the page.
    assert_eq!(
        app_status(&app, &app_id, &key.basic()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn static_assets_are_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    let css = b.get("/dashboard/static/dashboard.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers[CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/css")
    );
    assert!(css.body.contains("@media"));
    let js = b.get("/dashboard/static/dashboard.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.body.contains("data-copy-target"));
}

#[tokio::test]
async fn unknown_dashboard_paths_and_methods_answer_html_pages() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let page = b.get("/dashboard/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard");
    for (method, path, status) in [
        (
            reqwest::Method::GET,
            "/dashboard/nothing/here",
            StatusCode::NOT_FOUND,
        ),
        (
            reqwest::Method::GET,
            "/dashboard/signin/",
            StatusCode::NOT_FOUND,
        ),
        (
            reqwest::Method::GET,
            "/dashboard/apps",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            reqwest::Method::DELETE,
            "/dashboard/apps",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let r = b
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), status, "{method} {path}");
        let html = r.headers()[CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/html");
        assert!(html, "{method} {path}");
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{method} {path}");
    }
    // The API keeps its JSON answers.
    let r = app.get("/v1/nothing", &app.owner()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
}

// --- a key's page: its policy, shown and edited -------------------------

async fn verify(app: &TestApp, body: serde_json::Value) -> serde_json::Value {
    let r = app.post("/v1/verify", &app.operator(), body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// The key as the API shows it to the account's owner.
async fn key_json(app: &TestApp, api_path: &str) -> serde_json::Value {
    let r = app.get(api_path, &app.owner()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["key"].clone()
}

/// Loads the key page at `url`, changes fields of its form as a person
/// would (an empty `all_permissions` unticks that box) and posts it.
async fn edit_key(b: &mut Browser<'_>, url: &str, changes: &[(&str, &str)]) -> Page {
    let page = b.get(url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let mut fields = form_fields(&page, "key-form");
    for (name, value) in changes {
        fields.retain(|(n, _)| n != name);
        if !(*name == "all_permissions" && value.is_empty()) {
            fields.push((name.to_string(), value.to_string()));
        }
    }
    b.post_fields(url, &fields).await
}

/// Edits the key and expects the redirect back to its page.
async fn save_key(b: &mut Browser<'_>, url: &str, changes: &[(&str, &str)]) {
    let page = edit_key(b, url, changes).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "{changes:?}: {}",
        page.body
    );
    assert_eq!(page.location(), format!("{url}?done=key-saved"));
}

#[tokio::test]
async fn a_key_page_shows_its_policy_and_edits_each_member() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let app_id = create_app(&mut b, "Chat").await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &app.owner(),
            json!({
                "displayName": "backend",
                "permissions": ["messages:read", "messages:write"],
                "restrictions": {"allowedIps": ["203.0.113.7/24"]},
                "ratelimit": {"limit": 600, "windowSeconds": 60},
                "credits": {"remaining": 100, "refill": {"amount": 100, "interval": "month"}},
                "meta": {"plan": "pro"},
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = Key::from_reply(&r);
    let api = format!("/v1/apps/{app_id}/keys/{}", key.id);
    let url = format!("/dashboard/apps/{app_id}/keys/{}", key.id);
    let check = |extra: serde_json::Value| {
        let mut body = json!({"authorization": key.basic()});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let v = verify(&app, check(json!({"ip": "203.0.113.9"}))).await;
    assert_eq!(v["credits"]["remaining"], 99, "{v}");

    // The keys tab links each key to its page.
    let list = b.get(&format!("/dashboard/apps/{app_id}")).await;
    assert_eq!(
        list.href_of(&format!("key-link-{}", key.id)).as_deref(),
        Some(url.as_str())
    );
    assert_eq!(
        list.href_of(&format!("open-{}", key.id)).as_deref(),
        Some(url.as_str())
    );
    let page = b.get(&url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for (id, text) in [
        ("key-name", "backend"),
        ("key-id", key.id.as_str()),
        ("key-status", "active"),
        ("key-expires", "never"),
        ("key-permissions", "messages:read, messages:write"),
        ("key-allowed-ips", "203.0.113.0/24"),
        ("key-allowed-origins", "any origin"),
        ("key-ratelimit", "600 requests per 60 seconds"),
        ("key-credits", "99"),
        ("key-refill", "100 at the start of every UTC month"),
        ("owner-link", "Chat"),
    ] {
        assert_eq!(page.text_of(id).as_deref(), Some(text), "{id}");
    }
    assert_ne!(page.text_of("key-last-used").as_deref(), Some("never"));
    assert_eq!(
        page.text_of("key-meta").map(|m| unescape(&m)).as_deref(),
        Some("{\n  \"plan\": \"pro\"\n}")
    );
    // The form starts from the key as it is, with the balance left empty.
    let fields = form_fields(&page, "key-form");
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("permissions"), Some("messages:read\nmessages:write"));
    assert_eq!(field("all_permissions"), None);
    assert_eq!(field("credits"), Some("on"));
    assert_eq!(field("credits_remaining"), Some(""));
    assert_eq!(field("refill_interval"), Some("month"));

    // Sent back as it is, the form changes nothing: not even the balance,
    // which a verification has moved since the page was loaded.
    let v = verify(&app, check(json!({"ip": "203.0.113.9"}))).await;
    assert_eq!(v["credits"]["remaining"], 98, "{v}");
    let before = key_json(&app, &api).await;
    let unchanged = b.post_fields(&url, &fields).await;
    assert_eq!(
        unchanged.status,
        StatusCode::SEE_OTHER,
        "{}",
        unchanged.body
    );
    assert_eq!(unchanged.location(), format!("{url}?done=key-unchanged"));
    assert_eq!(key_json(&app, &api).await, before);
    assert_eq!(before["credits"]["remaining"], 98);

    // Name and permissions: a permission taken away is refused at once.
    save_key(
        &mut b,
        &url,
        &[
            ("display_name", "backend v2"),
            ("permissions", "messages:read"),
        ],
    )
    .await;
    let saved = b.get(&format!("{url}?done=key-saved")).await;
    assert!(
        saved
            .text_of("notice")
            .expect("notice")
            .contains("Key saved")
    );
    assert_eq!(saved.text_of("key-name").as_deref(), Some("backend v2"));
    let k = key_json(&app, &api).await;
    assert_eq!(k["displayName"], "backend v2");
    assert_eq!(k["permissions"], json!(["messages:read"]));
    let v = verify(
        &app,
        check(json!({"ip": "203.0.113.9", "permissions": "messages:write"})),
    )
    .await;
    assert_eq!(v["code"], "insufficient_permissions", "{v}");
    let v = verify(
        &app,
        check(json!({"ip": "203.0.113.9", "permissions": "messages:read"})),
    )
    .await;
    assert_eq!(v["valid"], true, "{v}");

    // Restrictions.
    save_key(
        &mut b,
        &url,
        &[
            ("allowed_ips", "198.51.100.7/24\r\n2001:db8::/32"),
            ("allowed_origins", "https://app.example.com"),
        ],
    )
    .await;
    assert_eq!(
        key_json(&app, &api).await["restrictions"],
        json!({"allowedIps": ["198.51.100.0/24", "2001:db8::/32"],
               "allowedOrigins": ["https://app.example.com"]})
    );
    // Origins are a browser's: checked on the key's appUser JWTs.
    let jwt = key.jwt(json!({"scope": "appUser", "userId": "alice"}));
    for (body, code) in [
        (check(json!({"ip": "203.0.113.9"})), Some("ip_not_allowed")),
        (check(json!({"ip": "198.51.100.1"})), None),
        (
            json!({"authorization": jwt, "ip": "198.51.100.1", "origin": "https://evil.example"}),
            Some("origin_not_allowed"),
        ),
        (
            json!({"authorization": jwt, "ip": "198.51.100.1", "origin": "https://app.example.com"}),
            None,
        ),
    ] {
        let v = verify(&app, body.clone()).await;
        assert_eq!(v["code"].as_str(), code, "{body}: {v}");
    }
    let ok = json!({"ip": "198.51.100.1"});

    // Credits: a balance typed in replaces the live one; a refill changed
    // alone keeps it.
    save_key(
        &mut b,
        &url,
        &[("credits_remaining", "5"), ("refill_amount", "")],
    )
    .await;
    assert_eq!(
        key_json(&app, &api).await["credits"],
        json!({"remaining": 5})
    );
    let v = verify(&app, check(ok.clone())).await;
    assert_eq!(v["credits"]["remaining"], 4, "{v}");
    save_key(
        &mut b,
        &url,
        &[("refill_amount", "50"), ("refill_interval", "day")],
    )
    .await;
    assert_eq!(
        key_json(&app, &api).await["credits"],
        json!({"remaining": 4, "refill": {"amount": 50, "interval": "day"}})
    );
    let page = b.get(&url).await;
    assert_eq!(page.text_of("key-credits").as_deref(), Some("4"));

    // Meta.
    save_key(&mut b, &url, &[("meta", r#"{"plan": "team", "seats": 3}"#)]).await;
    assert_eq!(
        key_json(&app, &api).await["meta"],
        json!({"plan": "team", "seats": 3})
    );
    let v = verify(&app, check(ok.clone())).await;
    assert_eq!(v["meta"], json!({"plan": "team", "seats": 3}), "{v}");

    // Rate limit: two a window, so a third verification is refused.
    save_key(
        &mut b,
        &url,
        &[
            ("ratelimit_limit", "2"),
            ("ratelimit_window_seconds", "3600"),
        ],
    )
    .await;
    assert_eq!(
        key_json(&app, &api).await["ratelimit"],
        json!({"limit": 2, "windowSeconds": 3600})
    );
    let mut last = json!(null);
    for _ in 0..3 {
        last = verify(&app, check(ok.clone())).await;
    }
    assert_eq!(last["code"], "rate_limited", "{last}");

    // Everything lifted: the key is as powerful as one without a policy.
    save_key(
        &mut b,
        &url,
        &[
            ("all_permissions", "on"),
            ("allowed_ips", ""),
            ("allowed_origins", ""),
            ("ratelimit_limit", ""),
            ("ratelimit_window_seconds", ""),
            ("credits", "none"),
            ("meta", ""),
        ],
    )
    .await;
    let k = key_json(&app, &api).await;
    for member in [
        "permissions",
        "restrictions",
        "ratelimit",
        "credits",
        "meta",
    ] {
        assert!(k.get(member).is_none(), "{member}: {k}");
    }
    let v = verify(&app, check(json!({"permissions": "anything"}))).await;
    assert_eq!(v["valid"], true, "{v}");
    assert!(v.get("credits").is_none() && v.get("meta").is_none(), "{v}");
    let page = b.get(&url).await;
    assert_eq!(
        page.text_of("key-permissions").as_deref(),
        Some("all permissions of its scope")
    );
    assert_eq!(
        page.text_of("key-credits").as_deref(),
        Some("none: unlimited use")
    );

    // Each save is one audited update by the signed-in person; the
    // unchanged form made none.
    let audit = app.get("/v1/audit?action=key.updated", &app.owner()).await;
    let events = audit.body["events"].as_array().expect("events");
    assert_eq!(events.len(), 7, "{events:?}");
    assert!(events.iter().all(|e| e["actor"]["type"] == "userAccount"));
}

#[tokio::test]
async fn a_service_account_keys_page_edits_its_policy() {
    let app = TestApp::spawn().await;
    let owner = app.owner();
    let sa_id = app.create_service_account(&owner).await;
    let key = app.create_service_account_key(&owner, &sa_id).await;
    let mut b = Browser::signed_in(&app).await;
    let sa_url = format!("/dashboard/service-accounts/{sa_id}");
    let url = format!("{sa_url}/keys/{}", key.id);
    let list = b.get(&sa_url).await;
    assert_eq!(
        list.href_of(&format!("key-link-{}", key.id)).as_deref(),
        Some(url.as_str())
    );
    let page = b.get(&url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.text_of("owner-link").as_deref(), Some("robot"));
    assert_eq!(
        page.text_of("key-permissions").as_deref(),
        Some("all permissions of its scope")
    );
    assert_eq!(
        page.text_of("key-allowed-ips").as_deref(),
        Some("any address")
    );

    save_key(
        &mut b,
        &url,
        &[
            ("all_permissions", ""),
            ("permissions", "reports:read\nlatchkey:apps.read"),
            ("allowed_ips", "10.1.2.3/8"),
        ],
    )
    .await;
    let k = key_json(
        &app,
        &format!("/v1/serviceAccounts/{sa_id}/keys/{}", key.id),
    )
    .await;
    assert_eq!(
        k["permissions"],
        json!(["latchkey:apps.read", "reports:read"])
    );
    assert_eq!(k["restrictions"]["allowedIps"], json!(["10.0.0.0/8"]));
    let v = verify(
        &app,
        json!({"authorization": key.basic(), "ip": "10.9.9.9", "permissions": "reports:read"}),
    )
    .await;
    assert_eq!(v["valid"], true, "{v}");
    let v = verify(
        &app,
        json!({"authorization": key.basic(), "ip": "10.9.9.9", "permissions": "reports:write"}),
    )
    .await;
    assert_eq!(v["code"], "insufficient_permissions", "{v}");
    // The tests reach the API from 127.0.0.1, outside the key's network.
    let r = app.get("/v1/apps", &key.basic()).await;
    assert_eq!(r.code(), "ip_not_allowed", "{:?}", r.body);
    let page = b.get(&url).await;
    assert_eq!(
        page.text_of("key-permissions").as_deref(),
        Some("latchkey:apps.read, reports:read")
    );
}

#[tokio::test]
async fn bad_key_input_is_explained_kept_in_the_form_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let app_id = create_app(&mut b, "Chat").await;
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/keys"),
            &app.owner(),
            json!({
                "displayName": "backend",
                "permissions": ["messages:read"],
                "restrictions": {"allowedIps": ["203.0.113.0/24"]},
                "ratelimit": {"limit": 600, "windowSeconds": 60},
                "meta": {"plan": "pro"},
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let key = Key::from_reply(&r);
    let api = format!("/v1/apps/{app_id}/keys/{}", key.id);
    let url = format!("/dashboard/apps/{app_id}/keys/{}", key.id);
    let before = key_json(&app, &api).await;
    // (the fields changed, the error shown, what the page keeps of them)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 10] = [
        (
            &[("allowed_ips", "203.0.113.0/24\n10.0.0.300/8")],
            "is not an IPv4 or IPv6 address or CIDR",
            "10.0.0.300/8</textarea>",
        ),
        (
            &[("allowed_origins", "https://app.example.com/path")],
            "exact origins",
            "https://app.example.com/path</textarea>",
        ),
        (
            &[("meta", "[1, 2]")],
            "Meta must be a JSON object",
            "[1, 2]</textarea>",
        ),
        (
            &[("meta", "{\"plan\": pro}")],
            "Meta is not valid JSON",
            "{&#34;plan&#34;: pro}</textarea>",
        ),
        (
            &[("ratelimit_limit", "0")],
            "with N from 1 to",
            r#"name="ratelimit_limit" inputmode="numeric" value="0""#,
        ),
        (
            &[("ratelimit_limit", "10"), ("ratelimit_window_seconds", "")],
            "Give both the rate limit and its window",
            r#"name="ratelimit_limit" inputmode="numeric" value="10""#,
        ),
        (
            &[("permissions", "messages:read\nNot A Name!")],
            "is not a valid name",
            "Not A Name!</textarea>",
        ),
        (
            &[("credits", "on")],
            "Credits.remaining is required to give a key credits",
            r#"value="on" checked"#,
        ),
        (
            &[("credits", "on"), ("credits_remaining", "-1")],
            "Credits.remaining must be an integer from 0",
            r#"name="credits_remaining" inputmode="numeric" value="-1""#,
        ),
        (
            &[("display_name", "   ")],
            "The name must be 1 to 100 characters",
            r#"name="display_name" value="   ""#,
        ),
    ];
    for (changes, error, kept) in cases {
        let page = edit_key(&mut b, &url, changes).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{changes:?}");
        let shown = page.text_of("error").expect("error");
        assert!(shown.contains(error), "{changes:?}: {shown}");
        assert!(page.body.contains(kept), "{changes:?} kept: {}", page.body);
        // The page still shows the key as it is.
        assert_eq!(
            page.text_of("key-permissions").as_deref(),
            Some("messages:read"),
            "{changes:?}"
        );
        assert_eq!(key_json(&app, &api).await, before, "{changes:?}");
    }
    let audit = app.get("/v1/audit?action=key.updated", &app.owner()).await;
    assert_eq!(audit.body["events"], json!([]));
}

#[tokio::test]
async fn another_accounts_keys_are_the_same_404_page_as_unknown_ones() {
    let app = TestApp::spawn().await;
    let other = app.create_account("other@example.com").await;
    let theirs = app.create_app(&other.basic(), "Theirs").await;
    let their_key = app.create_app_key(&other.basic(), &theirs).await;
    let their_sa = app.create_service_account(&other.basic()).await;
    let their_sa_key = app
        .create_service_account_key(&other.basic(), &their_sa)
        .await;
    let mine = app.create_app(&app.owner(), "Mine").await;
    let second = app.create_app(&app.owner(), "Second").await;
    let second_key = app.create_app_key(&app.owner(), &second).await;
    let my_sa = app.create_service_account(&app.owner()).await;

    let mut b = Browser::signed_in(&app).await;
    let unknown_app = b.get("/dashboard/apps/ap_doesnotexist/keys/app_x").await;
    let unknown_key = b
        .get(&format!("/dashboard/apps/{mine}/keys/app_doesnotexist"))
        .await;
    let unknown_sa = b
        .get("/dashboard/service-accounts/sa_doesnotexist/keys/svc_x")
        .await;
    for (path, like) in [
        (
            format!("/dashboard/apps/{theirs}/keys/{}", their_key.id),
            &unknown_app,
        ),
        (
            format!("/dashboard/apps/{mine}/keys/{}", their_key.id),
            &unknown_key,
        ),
        // A key of my other app, under this one.
        (
            format!("/dashboard/apps/{mine}/keys/{}", second_key.id),
            &unknown_key,
        ),
        (
            format!(
                "/dashboard/service-accounts/{their_sa}/keys/{}",
                their_sa_key.id
            ),
            &unknown_sa,
        ),
        (
            format!(
                "/dashboard/service-accounts/{my_sa}/keys/{}",
                their_sa_key.id
            ),
            &unknown_key,
        ),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(like.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(page.body, like.body, "{path}");
        assert!(!page.body.contains("Theirs"), "{path}");
        // Posting the form there changes nothing either.
        let csrf = b.get("/dashboard").await.csrf();
        let page = b
            .post(
                &path,
                &[
                    ("csrf", &csrf),
                    ("display_name", "mine now"),
                    ("all_permissions", "on"),
                    ("credits", "none"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "POST {path}");
    }
    let k = key_json(&app, &format!("/v1/apps/{second}/keys/{}", second_key.id)).await;
    assert_eq!(k["displayName"], "test key");
    for (path, auth) in [
        (format!("/v1/apps/{theirs}/keys/{}", their_key.id), &other),
        (
            format!("/v1/serviceAccounts/{their_sa}/keys/{}", their_sa_key.id),
            &other,
        ),
    ] {
        let r = app.get(&path, &auth.basic()).await;
        assert_ne!(r.body["key"]["displayName"], "mine now", "{path}");
    }
}

#[tokio::test]
async fn a_key_form_without_the_sessions_token_changes_nothing() {
    let app = TestApp::spawn().await;
    let app_id = app.create_app(&app.owner(), "Chat").await;
    let key = app.create_app_key(&app.owner(), &app_id).await;
    let api = format!("/v1/apps/{app_id}/keys/{}", key.id);
    let url = format!("/dashboard/apps/{app_id}/keys/{}", key.id);
    let mut b = Browser::signed_in(&app).await;
    let page = b.get(&url).await;
    let mut fields = form_fields(&page, "key-form");
    fields.retain(|(n, _)| n != "display_name" && n != "all_permissions");
    fields.push(("display_name".into(), "hijacked".into()));
    fields.push(("permissions".into(), "nothing".into()));
    let before = key_json(&app, &api).await;

    let without: Vec<(String, String)> = fields
        .iter()
        .filter(|(n, _)| n != "csrf")
        .cloned()
        .collect();
    let page = b.post_fields(&url, &without).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    let mut wrong = without.clone();
    wrong.push((
        "csrf".into(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    ));
    let page = b.post_fields(&url, &wrong).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // The right token, from another site.
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let page = b
        .post_with(&url, &pairs, &[("origin", "https://evil.example")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Signed out, the form leads to the sign-in page.
    let mut stranger = Browser::new(&app);
    let page = stranger.post_fields(&url, &fields).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/signin");
    assert_eq!(key_json(&app, &api).await, before);

    // The same form with the session's token is taken.
    let page = b.post_fields(&url, &fields).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(key_json(&app, &api).await["displayName"], "hijacked");
}

/// A failed delivery is listed with its attempts and error, and its
/// Redeliver button queues it again (audited); a pending one has no button
/// and is refused with a 409 in the page.
#[tokio::test]
async fn a_failed_delivery_is_shown_and_redelivered() {
    let app = TestApp::spawn().await;
    let mut b = Browser::signed_in(&app).await;
    let app_id = create_app(&mut b, "Hooks").await;
    // A receiver that answers 404: final, the delivery fails at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let receiver = tokio::spawn(async move {
        let router = axum::Router::new().fallback(|| async { axum::http::StatusCode::NOT_FOUND });
        let _ = axum::serve(listener, router).await;
    });
    let r = app
        .post(
            &format!("/v1/apps/{app_id}/webhooks"),
            &app.owner(),
            json!({"target": format!("http://{addr}/in"), "triggers": ["key:created"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let webhook = r.body["webhook"]["id"].as_str().expect("id").to_string();
    app.create_app_key(&app.owner(), &app_id).await;
    let state = &app.server.as_ref().expect("running").state;
    let page_of = latchkey_store::Page {
        limit: 10,
        after: None,
    };
    let id = state
        .store
        .list_deliveries(&webhook, &page_of)
        .await
        .expect("deliveries")
        .items[0]
        .id
        .clone();
    let url = format!("/dashboard/apps/{app_id}/webhooks");
    let redeliver = format!("{url}/{webhook}/deliveries/{id}/redeliver");

    // Pending: no button, and a redelivery is refused.
    let page = b.get(&url).await;
    assert!(!page.body.contains(&format!(r#"id="redeliver-{id}""#)));
    let refused = b.submit(&url, &redeliver, &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        refused
            .text_of("error")
            .expect("error")
            .contains("still pending")
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        latchkey_server::webhooks::dispatch_due(state).await;
        let d = state
            .store
            .get_delivery(&id)
            .await
            .expect("get")
            .expect("delivery");
        if d.status == latchkey_store::DeliveryStatus::Failed {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let page = b.get(&url).await;
    assert_eq!(
        page.text_of(&format!("delivery-status-{id}")).as_deref(),
        Some("failed")
    );
    assert_eq!(
        page.text_of(&format!("delivery-attempts-{id}")).as_deref(),
        Some("1")
    );
    let error = page
        .text_of(&format!("delivery-error-{id}"))
        .expect("the last error");
    assert!(error.contains("404"), "{error}");
    assert!(page.body.contains(&format!(r#"id="redeliver-{id}""#)));

    let done = b.submit(&url, &redeliver, &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), format!("{url}?done=redelivered"));
    let d = state
        .store
        .get_delivery(&id)
        .await
        .expect("get")
        .expect("delivery");
    assert_eq!(d.status, latchkey_store::DeliveryStatus::Pending);
    assert_eq!(d.attempts, 0);
    let audit = app
        .get("/v1/audit?action=webhook.redelivered", &app.owner())
        .await;
    assert_eq!(audit.body["events"][0]["target"]["id"], webhook.as_str());
    assert_eq!(
        audit.body["events"][0]["details"]["deliveryId"],
        id.as_str()
    );
    receiver.abort();
}
