//! Test harness: a real server on 127.0.0.1:0 over a fresh store, driven
//! with a manual clock and real HTTP.
//!
//! The store is an SQLite file in a temporary directory, or, with
//! `LATCHKEY_TEST_BACKEND=postgres`, a fresh schema of its own on the
//! PostgreSQL server of `LATCHKEY_TEST_POSTGRES_URL` (see
//! `latchkey-testdb`); CI runs the whole suite both ways.
#![allow(dead_code)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latchkey_core::{ManualClock, jwt};
use latchkey_server::{Config, InitReport, RunningServer};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;

pub use reqwest::StatusCode;

/// One response, body parsed as JSON (Null when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Reply {
    /// A response, its body parsed as JSON (Null when empty, a string when
    /// it is not JSON).
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            body,
            headers,
        }
    }

    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["errors"][0]["code"].as_str().unwrap_or("")
    }
}

pub struct TestApp {
    pub server: Option<RunningServer>,
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub init: InitReport,
    pub dir: TempDir,
}

/// Whether this run's servers use PostgreSQL (`LATCHKEY_TEST_BACKEND`).
pub fn on_postgres() -> bool {
    match std::env::var("LATCHKEY_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("LATCHKEY_TEST_BACKEND must be sqlite or postgres, not {other:?}"),
    }
}

pub fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

pub fn bearer_jwt(kid: &str, secret: &str, claims: Value) -> String {
    format!(
        "Bearer {}",
        jwt::sign_hs256(secret.as_bytes(), kid, &claims)
    )
}

/// An API key as created: id and secret.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

impl Key {
    /// The key in a 201 response that created it.
    pub fn from_reply(r: &Reply) -> Self {
        Key {
            id: r.body["key"]["id"].as_str().expect("key id").to_string(),
            secret: r.body["key"]["secret"]
                .as_str()
                .expect("secret")
                .to_string(),
        }
    }

    pub fn basic(&self) -> String {
        basic(&self.id, &self.secret)
    }

    pub fn jwt(&self, claims: Value) -> String {
        bearer_jwt(&self.id, &self.secret, claims)
    }
}

/// A reqwest client; rustls uses ring, as the server does.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(dir.path().join("data"));
        config.listen = "127.0.0.1:0".parse().expect("addr");
        // Test webhook receivers listen on loopback.
        config.allow_private_webhook_targets = true;
        // Many tests send bad credentials on purpose from 127.0.0.1 under a
        // clock that stands still: the throttle stays out of their way
        // (tests/throttle.rs sets its own bounds).
        config.auth_throttle.per_address = u32::MAX;
        config.auth_throttle.per_key = u32::MAX;
        if on_postgres() {
            let schema = latchkey_testdb::fresh_schema().await;
            config.database_url = Some(latchkey_core::SecretString::new(schema.url));
        }
        configure(&mut config);
        let clock = Arc::new(ManualClock::fixed());
        let (opened, init) = if config.database_url.is_some() {
            // A shared database is initialized explicitly, once.
            let init = latchkey_server::bootstrap::init(config.clone(), clock.clone())
                .await
                .expect("init");
            let opened = latchkey_server::open(config, clock.clone(), true)
                .await
                .expect("open");
            (opened, init)
        } else {
            let mut opened = latchkey_server::open(config, clock.clone(), true)
                .await
                .expect("open");
            let init = opened.init_report.take().expect("fresh store initializes");
            (opened, init)
        };
        let server = latchkey_server::start(opened.state).await.expect("start");
        let base = server.base_url();
        Self {
            server: Some(server),
            base,
            http: http_client(),
            clock,
            init,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn operator(&self) -> String {
        format!("Bearer {}", self.init.operator_token.expose())
    }

    /// The first account's owner key (a user-account key).
    pub fn owner_key(&self) -> Key {
        Key {
            id: self.init.key.id.clone(),
            secret: self.init.key.secret.expose().to_string(),
        }
    }

    pub fn owner(&self) -> String {
        self.owner_key().basic()
    }

    pub fn account_id(&self) -> String {
        self.init.account.id.clone()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::send(req).await
    }

    /// Sends a request built on [`TestApp::http`] and reads its reply.
    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request");
        Reply::read(resp).await
    }

    /// POSTs `fields` as an `application/x-www-form-urlencoded` body.
    pub async fn post_form(&self, path: &str, auth: &str, fields: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(fields).expect("form");
        let req = self
            .http
            .post(self.url(path))
            .header("authorization", auth)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        Self::send(req).await
    }

    /// Creates a verifier token with the operator token; returns its id
    /// and its `Authorization` header (Bearer).
    pub async fn create_verifier_token(&self, name: &str) -> (String, String) {
        let r = self
            .post(
                "/v1/verifierTokens",
                &self.operator(),
                json!({"displayName": name}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let token = &r.body["verifierToken"];
        (
            token["id"].as_str().expect("id").to_string(),
            format!("Bearer {}", token["token"].as_str().expect("token")),
        )
    }

    pub async fn get(&self, path: &str, auth: &str) -> Reply {
        self.call(Method::GET, path, Some(auth), None).await
    }

    pub async fn post(&self, path: &str, auth: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(auth), Some(body)).await
    }

    pub async fn patch(&self, path: &str, auth: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(auth), Some(body)).await
    }

    pub async fn put(&self, path: &str, auth: &str) -> Reply {
        self.call(Method::PUT, path, Some(auth), None).await
    }

    pub async fn delete(&self, path: &str, auth: &str) -> Reply {
        self.call(Method::DELETE, path, Some(auth), None).await
    }

    /// Creates an app with `auth` (account scope) and returns its id.
    pub async fn create_app(&self, auth: &str, name: &str) -> String {
        let r = self
            .post("/v1/apps", auth, json!({"displayName": name}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["app"]["id"].as_str().expect("app id").to_string()
    }

    pub async fn create_app_key(&self, auth: &str, app_id: &str) -> Key {
        let r = self
            .post(
                &format!("/v1/apps/{app_id}/keys"),
                auth,
                json!({"displayName": "test key"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        Key::from_reply(&r)
    }

    pub async fn create_service_account(&self, auth: &str) -> String {
        let r = self
            .post("/v1/serviceAccounts", auth, json!({"displayName": "robot"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["serviceAccount"]["id"]
            .as_str()
            .expect("sa id")
            .to_string()
    }

    pub async fn create_service_account_key(&self, auth: &str, sa_id: &str) -> Key {
        let r = self
            .post(
                &format!("/v1/serviceAccounts/{sa_id}/keys"),
                auth,
                json!({"displayName": "robot key"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        Key::from_reply(&r)
    }

    /// Creates a second account through the operator API; returns its
    /// owner key.
    pub async fn create_account(&self, email: &str) -> Key {
        let r = self
            .post(
                "/v1/accounts",
                &self.operator(),
                json!({"displayName": "Other", "owner": {"email": email, "password": "a long enough password"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        Key::from_reply(&r)
    }

    /// Stops the server gracefully and starts a new one on the same data
    /// directory and clock (the index is rebuilt from the store).
    pub async fn restart(&mut self) {
        let config = {
            let server = self.server.as_ref().expect("running");
            (*server.state.config).clone()
        };
        self.stop().await;
        let opened = latchkey_server::open(config, self.clock.clone(), true)
            .await
            .expect("reopen");
        assert!(
            opened.init_report.is_none(),
            "a restart must not re-initialize"
        );
        let server = latchkey_server::start(opened.state).await.expect("start");
        self.base = server.base_url();
        self.server = Some(server);
    }

    /// Stops the server gracefully (flushing lastUsedAt).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("shutdown");
        }
    }
}
