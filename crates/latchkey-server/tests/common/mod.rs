//! Test harness: a real server on 127.0.0.1:0 over a fresh store, driven
//! with a manual clock and real HTTP.
//!
//! The store is an SQLite file in a temporary directory, or, with
//! `LATCHKEY_TEST_BACKEND=postgres`, a fresh schema of its own on the
//! PostgreSQL server of `LATCHKEY_TEST_POSTGRES_URL` (see
//! `latchkey-testdb`); CI runs the whole suite both ways.
#![allow(dead_code)]

use std::sync::Arc;

use latchkey_core::ManualClock;
use latchkey_server::{Config, InitReport, RunningServer};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

// HTTP calls, replies and credentials, shared with the binary's tests
// (each test file uses its own part).
#[allow(unused_imports)]
pub use latchkey_testkit::{
    Key, Reply, StatusCode, basic, bearer_jwt, client_builder, hs256, http_client, token_of,
};

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

/// A port on 127.0.0.1 that was free a moment ago (for programs that need
/// a concrete port: ChromeDriver, the proxies).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// One HTTP/1.1 response read from a raw connection: status and body (the
/// body by its `content-length`). Its head must come within 10 s, and
/// nothing may follow the body.
pub async fn read_response(conn: &mut tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head[9..12].parse().expect("status code");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().expect("content-length"));
            while buf.len() < end + 4 + length {
                let mut more = [0u8; 4096];
                let n = conn.read(&mut more).await.expect("read body");
                assert!(n > 0, "connection closed inside the body");
                buf.extend_from_slice(&more[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            buf.drain(..end + 4 + length);
            assert!(buf.is_empty(), "more bytes than one response");
            return (status, body);
        }
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut more))
            .await
            .expect("a response within 10 s")
            .expect("read head");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&more[..n]);
    }
}

/// RFC 3339, as the API writes times.
pub fn iso(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
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
        latchkey_testkit::call(&self.http, method, &self.url(path), auth, body).await
    }

    /// Sends a request built on [`TestApp::http`] and reads its reply.
    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        latchkey_testkit::send(req).await
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

    /// An in-process replica of this server, on its clock, with a replica
    /// token made for it.
    pub async fn replica(&self) -> latchkey_replica::Replica {
        let r = self
            .post(
                "/v1/replicaTokens",
                &self.operator(),
                json!({"displayName": "test replica"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let token = r.body["replicaToken"]["token"].as_str().expect("token");
        latchkey_replica::Replica::builder(&self.base, token)
            .clock(self.clock.clone())
            .connect()
            .await
            .expect("connect the replica")
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

    /// A second node on this server's database (PostgreSQL: nodes share
    /// it), with the same master key and clock.
    pub async fn second_node(&self) -> RunningServer {
        let first = self.server.as_ref().expect("running");
        let mut config = Config::new(self.dir.path().join("second"));
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.database_url = first.state.config.database_url.clone();
        config.master_key_file = Some(first.state.config.master_key_path());
        let opened = latchkey_server::open(config, self.clock.clone(), true)
            .await
            .expect("open the second node");
        latchkey_server::start(opened.state)
            .await
            .expect("start the second node")
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
