//! What the integration tests of `latchkey-server` (a server inside the
//! test's process) and of `latchkey` (the binary, run as a child process)
//! share: HTTP calls and their replies, and credentials built the way a
//! client builds them.
//!
//! JWTs are signed here with ring's HMAC, not with latchkey-core's signer,
//! so a bug shared by the server's signer and its reader cannot hide in the
//! tests. A dev-dependency only; nothing here is part of Latchkey.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub use reqwest::{Method, StatusCode};

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

/// An `Authorization: Basic` value for a key id and its secret.
pub fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// A compact HS256 JWT: `kid` in the header, the whole `lksk_…` secret as
/// the HMAC key.
pub fn hs256(kid: &str, secret: &str, claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// An `Authorization: Bearer` value carrying [`hs256`]'s JWT.
pub fn bearer_jwt(kid: &str, secret: &str, claims: &Value) -> String {
    format!("Bearer {}", hs256(kid, secret, claims))
}

/// The token of a Bearer header (a JWT, an operator or verifier token).
pub fn token_of(bearer: &str) -> &str {
    bearer.strip_prefix("Bearer ").expect("a Bearer header")
}

/// The string at `pointer` in `v`; panics, showing `v`, when there is none.
pub fn field(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} missing or not a string in {v}"))
        .to_string()
}

/// An API key as created: id and secret.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

impl Key {
    /// The key in the body of the 201 that created it (`key.id`,
    /// `key.secret`).
    pub fn from_body(body: &Value) -> Self {
        Key {
            id: field(body, "/key/id"),
            secret: field(body, "/key/secret"),
        }
    }

    /// The key in the 201 reply that created it.
    pub fn from_reply(r: &Reply) -> Self {
        Self::from_body(&r.body)
    }

    /// The key as `Authorization: Basic`.
    pub fn basic(&self) -> String {
        basic(&self.id, &self.secret)
    }

    /// `Authorization: Bearer` with a JWT of `claims` signed by this key.
    pub fn jwt(&self, claims: Value) -> String {
        bearer_jwt(&self.id, &self.secret, &claims)
    }
}

/// Whether a `Latchkey-Signature` header (`t=<unix>,v1=<hex HMAC-SHA256 of
/// "t.body">`) signs `body` with `secret`, checked the way a webhook
/// receiver would.
pub fn webhook_signature_ok(header: &str, body: &str, secret: &str) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let expected: String = ring::hmac::sign(&key, format!("{t}.{body}").as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// One response, its body parsed as JSON (Null when empty, a string when it
/// is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Reply {
    /// Reads a response; an error if its body cannot be read whole.
    pub async fn try_read(resp: reqwest::Response) -> Result<Self, reqwest::Error> {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Reply {
            status,
            body,
            headers,
        })
    }

    /// Reads a response; panics if its body cannot be read whole.
    pub async fn read(resp: reqwest::Response) -> Self {
        Self::try_read(resp).await.expect("body")
    }

    /// The error code of an error body (empty if there is none).
    pub fn code(&self) -> &str {
        self.body["errors"][0]["code"].as_str().unwrap_or("")
    }

    /// The title of an error body (empty if there is none).
    pub fn title(&self) -> &str {
        self.body["errors"][0]["title"].as_str().unwrap_or("")
    }
}

/// A reqwest client builder; rustls uses ring, as the server does (the
/// provider is installed first, once per process).
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A reqwest client with no timeout of its own (see [`client_builder`]).
pub fn http_client() -> reqwest::Client {
    client_builder().build().expect("http client")
}

/// Sends a request and reads its reply; panics if no whole reply comes.
pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request");
    Reply::read(resp).await
}

/// `method url` with `Authorization: auth` and a JSON `body`, when given.
pub async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = http.request(method.clone(), url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Reply::read(resp).await
}

pub async fn get(http: &reqwest::Client, url: &str, auth: &str) -> Reply {
    call(http, Method::GET, url, Some(auth), None).await
}

pub async fn post(http: &reqwest::Client, url: &str, auth: &str, body: Value) -> Reply {
    call(http, Method::POST, url, Some(auth), Some(body)).await
}

pub async fn delete(http: &reqwest::Client, url: &str, auth: &str) -> Reply {
    call(http, Method::DELETE, url, Some(auth), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_is_base64_of_id_colon_secret() {
        assert_eq!(basic("act_1", "lksk_x"), "Basic YWN0XzE6bGtza194");
    }

    #[test]
    fn a_signature_made_with_the_secret_is_ok_and_no_other() {
        let body = r#"{"type":"key:created"}"#;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"whsec");
        let tag: String = ring::hmac::sign(&key, format!("100.{body}").as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let header = format!("t=100,v1={tag}");
        assert!(webhook_signature_ok(&header, body, "whsec"));
        assert!(!webhook_signature_ok(&header, body, "other"));
        assert!(!webhook_signature_ok(&header, "{}", "whsec"));
        assert!(!webhook_signature_ok("v1=00", body, "whsec"));
    }
}
