//! A tour of the API: every operation answers with a documented, valid
//! response, and every body the server accepts matches the documented
//! request schema.
//!
//! One test per resource, each on a server of its own. What a test needs
//! from other resources (an app and its key, a service account, users) it
//! makes first with plain calls, the fixtures below, which are neither
//! checked against the document nor counted as reached. Each test names the
//! operations it reaches with a documented success (and must reach exactly
//! those); `the_tours_reach_every_documented_operation` checks that
//! together they reach every operation of the document.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{Key, Reply, StatusCode, TestApp};
use crate::openapi::{doc_from_disk, method, resolve};
use crate::schema::{assert_valid, check_reply, request_errors};

mod accounts;
mod apps;
mod audit;
mod browsers;
mod errors;
mod keys;
mod members;
mod meta;
mod replica;
mod service_accounts;
mod usage;
mod users;
mod verifier_tokens;
mod verify;
mod webhooks;

/// Operations, as (method, path template).
pub type Ops = &'static [(&'static str, &'static str)];

/// What each test of the tour reaches.
pub const TOURS: &[Ops] = &[
    meta::META,
    meta::IDENTITY,
    accounts::ACCOUNTS,
    apps::APPS,
    apps::POLICY,
    keys::APP_KEYS,
    keys::EXPIRY_AND_ROTATION,
    keys::ACCOUNT_KEYS,
    keys::KEY_POLICIES,
    keys::PUBLIC_KEYS,
    keys::SIGNING_KEYS,
    users::USERS,
    users::MINTED_TOKENS,
    webhooks::WEBHOOKS,
    webhooks::DELIVERIES,
    service_accounts::SERVICE_ACCOUNTS,
    verifier_tokens::VERIFIER_TOKENS,
    verify::VERIFICATION,
    verify::FORWARD_AUTH,
    errors::ERRORS,
    browsers::BROWSERS,
    audit::ACCOUNT_AUDIT,
    audit::APP_AUDIT,
    usage::USAGE,
    members::MEMBERS,
    replica::REPLICA,
];

pub struct Tour<'a> {
    pub doc: Value,
    app: &'a TestApp,
    covered: BTreeSet<(String, String)>,
}

impl<'a> Tour<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Tour {
            doc: doc_from_disk(),
            app,
            covered: BTreeSet::new(),
        }
    }

    /// Calls `path` (an instance of `template`) and checks the reply.
    pub async fn call(
        &mut self,
        m: &str,
        template: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Reply {
        self.call_from(m, template, path, auth, body, None, expect)
            .await
    }

    /// Like [`Tour::call`], from a browser page when `origin` is given
    /// (the request carries that `Origin` header).
    #[allow(clippy::too_many_arguments)]
    pub async fn call_from(
        &mut self,
        m: &str,
        template: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        origin: Option<&str>,
        expect: StatusCode,
    ) -> Reply {
        let r = match origin {
            None => self.app.call(method(m), path, auth, body.clone()).await,
            Some(o) => send_from(self.app, m, path, auth, body.clone(), o).await,
        };
        assert_eq!(r.status, expect, "{m} {path}: {:?}", r.body);
        check_reply(&self.doc, template, m, &r);
        if r.status.is_success() {
            if let Some(b) = &body {
                let errs = request_errors(&self.doc, template, m, b);
                assert!(
                    errs.is_empty(),
                    "{m} {template}: the server accepted {b}, which the document refuses: {errs:#?}"
                );
            }
            self.covered.insert((template.to_string(), m.to_string()));
        }
        r
    }

    /// Like [`Tour::call`] with an `application/x-www-form-urlencoded`
    /// body of `fields`, which the documented form schema must accept
    /// when the server does.
    pub async fn call_form(
        &mut self,
        template: &str,
        auth: Option<&str>,
        fields: &[(&str, &str)],
        expect: StatusCode,
    ) -> Reply {
        let mut req = self
            .app
            .http
            .post(self.app.url(template))
            .header("content-type", FORM)
            .body(serde_urlencoded::to_string(fields).expect("form"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = TestApp::send(req).await;
        assert_eq!(r.status, expect, "post {template}: {:?}", r.body);
        check_reply(&self.doc, template, "post", &r);
        if r.status.is_success() {
            let rb = resolve(
                &self.doc,
                &self.doc["paths"][template]["post"]["requestBody"],
            );
            let schema = &rb["content"][FORM]["schema"];
            assert!(!schema.is_null(), "post {template} documents no form body");
            let as_json: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect();
            assert_valid(
                &self.doc,
                schema,
                &Value::Object(as_json),
                &format!("the form the server accepted on post {template}"),
            );
            self.covered
                .insert((template.to_string(), "post".to_string()));
        }
        r
    }

    /// GETs a streamed response (`application/x-ndjson`), reads it for at
    /// most `for_how_long` (or to its end), and checks every line.
    pub async fn stream(
        &mut self,
        template: &str,
        path: &str,
        auth: &str,
        for_how_long: std::time::Duration,
        expect: StatusCode,
    ) -> Reply {
        let mut response = self
            .app
            .http
            .get(self.app.url(path))
            .header("authorization", auth)
            .send()
            .await
            .expect("send");
        let status = response.status();
        let headers = response.headers().clone();
        let mut text = Vec::new();
        let deadline = tokio::time::Instant::now() + for_how_long;
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
            text.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(text).expect("UTF-8");
        let body = if status.is_success() {
            Value::String(text)
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let r = Reply {
            status,
            body,
            headers,
        };
        assert_eq!(r.status, expect, "get {path}: {:?}", r.body);
        check_reply(&self.doc, template, "get", &r);
        if r.status.is_success() {
            self.covered
                .insert((template.to_string(), "get".to_string()));
        }
        r
    }

    /// Asserts that the operations this tour answered with a documented
    /// success are exactly `ops`.
    pub fn assert_covered(&self, ops: Ops) {
        let declared: BTreeSet<(String, String)> = ops
            .iter()
            .map(|(m, template)| (template.to_string(), m.to_string()))
            .collect();
        assert_eq!(
            self.covered, declared,
            "the operations this tour reached (left) are not those it names (right)"
        );
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A request with an `Origin` header, as a browser page sends it.
async fn send_from(
    app: &TestApp,
    m: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
    origin: &str,
) -> Reply {
    let mut req = app
        .http
        .request(method(m), app.url(path))
        .header("origin", origin);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    TestApp::send(req).await
}

/// The `Access-Control-Allow-Origin` of a reply.
pub fn allowed_origin(r: &Reply) -> Option<&str> {
    r.headers
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
}

/// Seconds since the epoch of an RFC 3339 member of a reply.
pub fn unix(v: &Value) -> i64 {
    let text = v.as_str().expect("an RFC 3339 time");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
        .unix_timestamp()
}

pub fn id_of(r: &Reply, member: &str) -> String {
    r.body[member]["id"].as_str().expect("id").to_string()
}

/// The body of `POST /v1/verify`: `authorization` and the members of
/// `extra`.
pub fn verify(authorization: &str, extra: Value) -> Value {
    let mut body = json!({"authorization": authorization});
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// An app of the owner's and a key of it, with the credentials these tests
/// make from the key.
pub struct World {
    pub app_id: String,
    /// `/v1/apps/{app_id}`.
    pub ap: String,
    pub key: Key,
    /// The key as Basic.
    pub app_basic_auth: String,
    /// An appUser JWT for alice, signed with the key.
    pub alice_auth: String,
}

impl World {
    pub async fn new(app: &TestApp) -> Self {
        let app_id = app.create_app(&app.owner(), "Chat").await;
        let key = app.create_app_key(&app.owner(), &app_id).await;
        World {
            ap: format!("/v1/apps/{app_id}"),
            app_basic_auth: key.basic(),
            alice_auth: key.jwt(json!({"scope": "appUser", "userId": "alice"})),
            app_id,
            key,
        }
    }

    /// The app's users as the users tour leaves them: bob, created with
    /// the app key, and alice, created by her token's first use. Returns
    /// bob's `usr_` id.
    pub async fn with_users(&self, app: &TestApp) -> String {
        let r = app
            .post(
                &format!("{}/users", self.ap),
                &self.app_basic_auth,
                json!({"externalId": "bob"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let bob = id_of(&r, "user");
        let r = app
            .get(&format!("{}/users/alice", self.ap), &self.alice_auth)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        bob
    }
}

/// A service account of the owner's, with a key.
pub struct Robot {
    pub sa_id: String,
    /// `/v1/serviceAccounts/{sa_id}`.
    pub sa: String,
    /// Its key as Basic.
    pub svc_basic: String,
}

impl Robot {
    pub async fn new(app: &TestApp) -> Self {
        let sa_id = app.create_service_account(&app.owner()).await;
        let svc = app.create_service_account_key(&app.owner(), &sa_id).await;
        Robot {
            sa: format!("/v1/serviceAccounts/{sa_id}"),
            svc_basic: svc.basic(),
            sa_id,
        }
    }

    /// Grants the service account the app `app_id`.
    pub async fn grant(&self, app: &TestApp, app_id: &str) {
        let r = app
            .put(&format!("{}/apps/{app_id}", self.sa), &app.owner())
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    }
}

/// A fresh public JWK: Ed25519, or P-256 when `p256`.
pub fn public_jwk(p256: bool) -> Value {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    if p256 {
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
        let point = pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
               "y": URL_SAFE_NO_PAD.encode(&point[33..])})
    } else {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())})
    }
}
