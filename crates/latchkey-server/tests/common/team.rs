//! Teams in tests: members added the way people are (an owner's invite
//! through the API, accepted in the dashboard, a key of their own made
//! there), and a small cookie-keeping form client for the dashboard.
#![allow(dead_code)]

use std::collections::BTreeMap;

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::common::{Key, StatusCode, TestApp, client_builder};

pub const PASSWORD: &str = "a long enough password";

/// One dashboard response.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub location: String,
    pub body: String,
}

impl Page {
    /// The `value` of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        self.attr_after(r#"name="csrf" value=""#)
            .expect("a csrf field")
    }

    pub fn attr_after(&self, prefix: &str) -> Option<String> {
        let start = self.body.find(prefix)? + prefix.len();
        let rest = &self.body[start..];
        Some(rest[..rest.find('"')?].to_string())
    }

    /// The text of the element with this id (up to the next tag).
    pub fn text_of(&self, id: &str) -> Option<String> {
        let start = self.body.find(&format!(r#"id="{id}""#))?;
        let rest = &self.body[start..];
        let rest = &rest[rest.find('>')? + 1..];
        Some(rest[..rest.find('<')?].to_string())
    }

    pub fn has_id(&self, id: &str) -> bool {
        self.body.contains(&format!(r#"id="{id}""#))
    }
}

/// A cookie-keeping client that does not follow redirects.
pub struct Forms<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

impl<'a> Forms<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        let http = client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Forms {
            app,
            http,
            cookies: BTreeMap::new(),
        }
    }

    async fn send(&mut self, mut req: reqwest::RequestBuilder) -> Page {
        if !self.cookies.is_empty() {
            let header = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header(COOKIE, header);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        for c in headers.get_all(SET_COOKIE).iter() {
            let c = c.to_str().expect("cookie");
            let (name, value) = c
                .split(';')
                .next()
                .and_then(|f| f.split_once('='))
                .expect("name=value");
            if c.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Page {
            status,
            location: headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            body: resp.text().await.expect("body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(self.app.url(path));
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(fields).expect("form");
        let req = self
            .http
            .post(self.app.url(path))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Posts a form with the CSRF token of the page at `from`.
    pub async fn submit(&mut self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let csrf = self.get("/dashboard/signin").await.csrf();
        self.post(
            "/dashboard/signin",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }

    /// Accepts an invite with its token: the accept page, then its form.
    pub async fn accept(&mut self, token: &str, password: &str) -> Page {
        let page = self.get(&format!("/dashboard/invite?token={token}")).await;
        if page.status != StatusCode::OK {
            return page;
        }
        let csrf = page.csrf();
        self.post(
            "/dashboard/invite",
            &[
                ("csrf", &csrf),
                ("token", token),
                ("password", password),
                ("confirm", password),
            ],
        )
        .await
    }

    /// Makes a key of the signed-in person's own in the dashboard.
    pub async fn own_key(&mut self, name: &str) -> Key {
        let page = self
            .submit(
                "/dashboard",
                "/dashboard/account/keys",
                &[("display_name", name)],
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        Key {
            id: page.text_of("new-key-id").expect("key id"),
            secret: page.text_of("new-key-secret").expect("secret"),
        }
    }
}

/// A member added through an invite.
pub struct Member {
    pub id: String,
    pub email: String,
    pub key: Key,
}

/// Invites `email` as `role` with `owner` (an owner's credential) and
/// returns the invite's reply (201 with the token) as JSON.
pub async fn invite(app: &TestApp, owner: &str, email: &str, role: &str) -> serde_json::Value {
    let r = app
        .post(
            "/v1/account/invites",
            owner,
            json!({"email": email, "role": role}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

/// A new member of the first account with `role`: invited by its owner,
/// accepted in the dashboard, with a key of their own made there.
pub async fn add_member(app: &TestApp, email: &str, role: &str) -> Member {
    let body = invite(app, &app.owner(), email, role).await;
    let token = body["token"].as_str().expect("token").to_string();
    let mut forms = Forms::new(app);
    let page = forms.accept(&token, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location, "/dashboard");
    let key = forms.own_key("member key").await;
    let who = app.get("/v1/account", &key.basic()).await;
    assert_eq!(who.status, StatusCode::OK, "{:?}", who.body);
    Member {
        id: who.body["userAccountId"]
            .as_str()
            .expect("user id")
            .to_string(),
        email: email.to_string(),
        key,
    }
}
