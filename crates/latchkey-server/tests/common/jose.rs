//! Third-party JOSE clients in tests: PyPI PyJWT and joserfc (over
//! pyca/cryptography) through `tests/clients/jose_py.py`, and npm `jose`
//! through `tests/clients/jwks_verify.mjs`. They make key pairs, sign
//! JWTs and verify the tokens Latchkey mints against its JWKS, as a
//! customer's or an operator's services would; none of it is our code.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn clients_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients")
}

/// Runs the Python client with one request; its answer.
pub fn python(request: Value) -> Value {
    python_client("jose_py.py", request)
}

/// Runs the Python client `script` (in `tests/clients/`) with one JSON
/// request on stdin; its JSON answer.
pub fn python_client(script: &str, request: Value) -> Value {
    let script = format!("{}/{script}", clients_dir());
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "the client failed (pip install pyjwt joserfc cryptography requests-http-signature \
         http-message-signatures): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A key pair made by PyJWT over pyca/cryptography: (private JWK, public
/// JWK). `kind`: `ed25519` or `p256`.
pub fn keypair(kind: &str) -> (Value, Value) {
    let pair = python(json!({"op": "keypair", "kind": kind}));
    (pair["private"].clone(), pair["public"].clone())
}

/// `Authorization: Bearer` with a JWT of `claims` that `lib` (`pyjwt` or
/// `joserfc`) signed with `alg` under `private`, naming `kid`.
pub fn signed(lib: &str, alg: &str, kid: &str, private: &Value, claims: Value) -> String {
    let out = python(json!({"op": "sign", "lib": lib, "alg": alg, "kid": kid,
        "private": private, "claims": claims}));
    format!("Bearer {}", out["token"].as_str().expect("token"))
}

/// joserfc's verdict on `token`, with the JWKS fetched from `jwks_url`:
/// `{"claims", "header"}` or `{"error"}`; `exp` checked at `now`. Runs on
/// a blocking thread: the
/// JWKS is fetched from the test's own server, on the test's runtime.
pub async fn joserfc_verify(jwks_url: &str, token: &str, now: i64) -> Value {
    joserfc_verify_for(jwks_url, token, now, None, None).await
}

/// As [`joserfc_verify`], also requiring the token's `iss` and `aud` to be
/// `iss` and `aud` (each when given), as a service that trusts one issuer
/// and is one audience would.
pub async fn joserfc_verify_for(
    jwks_url: &str,
    token: &str,
    now: i64,
    iss: Option<&str>,
    aud: Option<&str>,
) -> Value {
    let request = json!({"op": "verify", "jwks_url": jwks_url, "token": token, "now": now,
        "iss": iss, "aud": aud});
    tokio::task::spawn_blocking(move || python(request))
        .await
        .expect("python thread")
}

/// npm jose's verdict (`createRemoteJWKSet`, `jwtVerify`):
/// `{"payload", "header"}` or `{"error"}`. Runs on a blocking thread: the
/// JWKS is fetched from the test's own server.
pub async fn node_jose_verify(jwks_url: &str, token: &str, now: i64) -> Value {
    node_jose_verify_for(jwks_url, token, now, None, None).await
}

/// As [`node_jose_verify`], with jose's `issuer` and `audience` options
/// (each when given).
pub async fn node_jose_verify_for(
    jwks_url: &str,
    token: &str,
    now: i64,
    iss: Option<&str>,
    aud: Option<&str>,
) -> Value {
    let (url, token) = (jwks_url.to_string(), token.to_string());
    let (iss, aud) = (iss.unwrap_or("").to_string(), aud.unwrap_or("").to_string());
    tokio::task::spawn_blocking(move || {
        let dir = clients_dir();
        assert!(
            std::path::Path::new(&format!("{dir}/node_modules/jose")).exists(),
            "npm jose is not installed: npm ci --prefix {dir}"
        );
        let out = Command::new("node")
            .arg(format!("{dir}/jwks_verify.mjs"))
            .arg(url)
            .arg(token)
            .arg(now.to_string())
            .arg(iss)
            .arg(aud)
            .current_dir(dir)
            .output()
            .expect("node");
        assert!(
            out.status.success(),
            "node failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    })
    .await
    .expect("node thread")
}
