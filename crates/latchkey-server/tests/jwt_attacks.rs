//! Hostile and malformed credentials over real HTTP.
//!
//! Tokens are built by hand (base64url and ring's HMAC; a correct token
//! with latchkey-testkit's `hs256`, also ring's) or with the `jsonwebtoken`
//! crate, never with the server's own signer, so a bug shared by the
//! signer and the reader cannot hide. Every attack must be answered
//! 401 `unauthorized` in the documented error body with a
//! `WWW-Authenticate` header, both on an app endpoint and on `/v1/verify`,
//! and `/v1/verify` must call it invalid when it arrives in the body. The
//! server must keep answering normally afterwards. All mismatches are
//! collected and reported at once.

mod common;

use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Key, Reply, StatusCode, TestApp, basic, hs256};
use latchkey_core::Clock;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use ring::hmac;
use serde_json::{Value, json};

// --- building tokens by hand --------------------------------------------

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn tag(alg: hmac::Algorithm, secret: &str, input: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg, secret.as_bytes()), input.as_bytes())
        .as_ref()
        .to_vec()
}

/// `base64url(header).base64url(claims)` from raw JSON texts.
fn signing_input(header: &str, claims: &str) -> String {
    format!("{}.{}", b64(header), b64(claims))
}

/// A compact token from raw header and claims texts, HMAC-SHA256-signed
/// with `secret` whatever the header says.
fn signed_raw(header: &str, claims: &str, secret: &str) -> String {
    let input = signing_input(header, claims);
    let sig = b64(tag(hmac::HMAC_SHA256, secret, &input));
    format!("{input}.{sig}")
}

/// As [`signed_raw`], from raw bytes (which need not be UTF-8).
fn signed_raw_bytes(header: &[u8], claims: &[u8], secret: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = b64(tag(hmac::HMAC_SHA256, secret, &input));
    format!("{input}.{sig}")
}

fn header_json(alg: &str, kid: &str) -> String {
    json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A token made by the `jsonwebtoken` crate.
fn jsonwebtoken_token(
    alg: jsonwebtoken::Algorithm,
    kid: &str,
    secret: &str,
    claims: &Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("jsonwebtoken encodes")
}

/// Replaces the signature part of a token.
fn with_signature(token: &str, sig: &str) -> String {
    let cut = token.rfind('.').expect("a token has dots");
    format!("{}.{sig}", &token[..cut])
}

/// The decoded signature of a token.
fn signature_bytes(token: &str) -> Vec<u8> {
    let cut = token.rfind('.').expect("a token has dots");
    URL_SAFE_NO_PAD
        .decode(&token[cut + 1..])
        .expect("our own signature decodes")
}

/// Changes the last character of `s` to another base62 character.
fn change_last_char(s: &str) -> String {
    let mut out = s.to_string();
    let last = out.pop().expect("non-empty");
    out.push(if last == 'A' { 'B' } else { 'A' });
    out
}

// --- sending ------------------------------------------------------------

/// Sends one request with any number of Authorization headers; a failed
/// request (the server dropped the connection) is an error, not a panic.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    auths: &[String],
    body: Option<Value>,
) -> Result<Reply, String> {
    let mut headers = HeaderMap::new();
    for a in auths {
        let value = HeaderValue::from_str(a).map_err(|e| format!("bad header value: {e}"))?;
        headers.append(AUTHORIZATION, value);
    }
    let mut req = app.http.request(method, app.url(path)).headers(headers);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    Reply::try_read(resp)
        .await
        .map_err(|e| format!("reading the body failed: {e}"))
}

/// What is wrong with a reply that must be a 401 with `code`, if anything.
fn not_a_401(reply: &Result<Reply, String>, code: &str) -> Option<String> {
    let r = match reply {
        Ok(r) => r,
        Err(e) => return Some(e.clone()),
    };
    let mut wrong = Vec::new();
    if r.status != StatusCode::UNAUTHORIZED {
        wrong.push(format!("status {} (wanted 401)", r.status.as_u16()));
    }
    let errors = r.body["errors"].as_array();
    if errors.map(Vec::len) != Some(1) || !r.body["errors"][0]["title"].is_string() {
        wrong.push(format!(
            "body not {{\"errors\":[{{code,title}}]}}: {}",
            r.body
        ));
    } else if r.code() != code {
        wrong.push(format!("code {:?} (wanted {code:?})", r.code()));
    }
    if r.headers.get("www-authenticate").is_none() {
        wrong.push("no WWW-Authenticate header".to_string());
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// What is wrong with a `/v1/verify` answer that must call the credential
/// invalid with `code`, if anything.
fn not_invalid(reply: &Result<Reply, String>, code: &str) -> Option<String> {
    let r = match reply {
        Ok(r) => r,
        Err(e) => return Some(e.clone()),
    };
    if r.status != StatusCode::OK || r.body["valid"] != false || r.body["code"] != code {
        return Some(format!(
            "wanted 200 {{\"valid\":false,\"code\":{code:?}}}, got {} {}",
            r.status.as_u16(),
            r.body
        ));
    }
    None
}

/// The status of a reply, for control checks.
fn status_of(reply: &Result<Reply, String>) -> String {
    match reply {
        Ok(r) => format!("{} {}", r.status.as_u16(), r.body),
        Err(e) => e.clone(),
    }
}

// --- fixtures -------------------------------------------------------------

struct Fixture {
    app: TestApp,
    owner: Key,
    ap1: String,
    /// The app key the attacks mostly impersonate.
    k1: Key,
    /// A second, live key of the same app.
    k2: Key,
    /// A service-account key granted ap1.
    svc: Key,
    /// A key of ap1 that has been deleted.
    deleted: Key,
}

impl Fixture {
    async fn build() -> Self {
        let app = TestApp::spawn().await;
        let owner = app.owner_key();
        let auth = owner.basic();
        let ap1 = app.create_app(&auth, "ap1").await;
        let k1 = app.create_app_key(&auth, &ap1).await;
        let k2 = app.create_app_key(&auth, &ap1).await;
        let sa = app.create_service_account(&auth).await;
        let svc = app.create_service_account_key(&auth, &sa).await;
        let r = app
            .put(&format!("/v1/serviceAccounts/{sa}/apps/{ap1}"), &auth)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
        let deleted = app.create_app_key(&auth, &ap1).await;
        let r = app
            .delete(&format!("/v1/apps/{ap1}/keys/{}", deleted.id), &auth)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
        Self {
            app,
            owner,
            ap1,
            k1,
            k2,
            svc,
            deleted,
        }
    }

    fn app_path(&self) -> String {
        format!("/v1/apps/{}", self.ap1)
    }
}

/// One hostile credential: the Authorization header values it sends.
struct Attack {
    name: String,
    headers: Vec<String>,
}

fn attack(name: &str, header: String) -> Attack {
    Attack {
        name: name.to_string(),
        headers: vec![header],
    }
}

fn attacks(f: &Fixture) -> Vec<Attack> {
    let k1 = &f.k1;
    let app_claims = json!({"scope": "app"});
    let app_text = app_claims.to_string();
    let good = hs256(&k1.id, &k1.secret, &app_claims);
    let good_sig = signature_bytes(&good);
    let mut list = Vec::new();

    // alg none.
    let none_input = signing_input(&header_json("none", &k1.id), &app_text);
    list.push(attack(
        "alg none, empty signature part",
        bearer(&format!("{none_input}.")),
    ));
    list.push(attack("alg none, no signature part", bearer(&none_input)));
    list.push(attack(
        "alg none, carrying a valid HMAC-SHA256 signature",
        bearer(&signed_raw(
            &header_json("none", &k1.id),
            &app_text,
            &k1.secret,
        )),
    ));
    list.push(attack(
        "alg None (capitalised), empty signature part",
        bearer(&format!(
            "{}.",
            signing_input(&header_json("None", &k1.id), &app_text)
        )),
    ));

    // Other algorithms.
    let hs512_input = signing_input(&header_json("HS512", &k1.id), &app_text);
    let hs512_sig = b64(tag(hmac::HMAC_SHA512, &k1.secret, &hs512_input));
    list.push(attack(
        "alg HS512, HMAC-SHA512 with the key's secret",
        bearer(&format!("{hs512_input}.{hs512_sig}")),
    ));
    list.push(attack(
        "alg HS512 made by jsonwebtoken",
        bearer(&jsonwebtoken_token(
            jsonwebtoken::Algorithm::HS512,
            &k1.id,
            &k1.secret,
            &app_claims,
        )),
    ));
    list.push(attack(
        "alg HS384 made by jsonwebtoken",
        bearer(&jsonwebtoken_token(
            jsonwebtoken::Algorithm::HS384,
            &k1.id,
            &k1.secret,
            &app_claims,
        )),
    ));
    list.push(attack(
        "alg RS256 with an HMAC-SHA256 signature (key confusion)",
        bearer(&signed_raw(
            &header_json("RS256", &k1.id),
            &app_text,
            &k1.secret,
        )),
    ));
    list.push(attack(
        "alg \"hs256\" (lower case), valid HS256 signature",
        bearer(&signed_raw(
            &header_json("hs256", &k1.id),
            &app_text,
            &k1.secret,
        )),
    ));

    // kid.
    list.push(attack(
        "no kid, valid HS256 signature",
        bearer(&signed_raw(
            &json!({"alg": "HS256", "typ": "JWT"}).to_string(),
            &app_text,
            &k1.secret,
        )),
    ));
    list.push(attack(
        "empty kid, valid HS256 signature",
        bearer(&hs256("", &k1.secret, &app_claims)),
    ));
    list.push(attack(
        "kid of another live key of the app, signed with this key's secret",
        bearer(&hs256(&f.k2.id, &k1.secret, &app_claims)),
    ));
    list.push(attack(
        "kid of the account owner's key, signed with the app key's secret, scope account",
        bearer(&hs256(
            &f.owner.id,
            &k1.secret,
            &json!({"scope": "account"}),
        )),
    ));
    list.push(attack(
        "kid of a deleted key, signed with its secret",
        bearer(&hs256(&f.deleted.id, &f.deleted.secret, &app_claims)),
    ));
    list.push(attack(
        "kid of a key that never existed",
        bearer(&hs256(
            "app_0000000000000000000000",
            &k1.secret,
            &app_claims,
        )),
    ));

    // Signatures.
    list.push(attack(
        "forged signature (another secret)",
        bearer(&hs256(
            &k1.id,
            "lksk_not-the-secret-of-this-key",
            &app_claims,
        )),
    ));
    let mut flipped = good_sig.clone();
    flipped[0] ^= 1;
    list.push(attack(
        "valid signature with one bit flipped",
        bearer(&with_signature(&good, &b64(&flipped))),
    ));
    list.push(attack(
        "signature of 31 bytes (valid one truncated)",
        bearer(&with_signature(&good, &b64(&good_sig[..31]))),
    ));
    let mut longer = good_sig.clone();
    longer.push(0);
    list.push(attack(
        "signature of 33 bytes (valid one plus a byte)",
        bearer(&with_signature(&good, &b64(&longer))),
    ));
    list.push(attack(
        "signature of 64 bytes (valid one twice)",
        bearer(&with_signature(
            &good,
            &b64([good_sig.clone(), good_sig.clone()].concat()),
        )),
    ));
    list.push(attack(
        "HS256 with an empty signature part",
        bearer(&with_signature(&good, "")),
    ));
    list.push(attack(
        "signature in padded standard base64",
        bearer(&with_signature(&good, &STANDARD.encode(&good_sig))),
    ));

    // Claims of the wrong type, all validly signed.
    for (name, claims) in [
        ("scope is a number", json!({"scope": 1})),
        ("scope is an array", json!({"scope": ["app"]})),
        (
            "userId is a number",
            json!({"scope": "appUser", "userId": 42}),
        ),
        (
            "exp is a string",
            json!({"scope": "app", "exp": "tomorrow"}),
        ),
        ("nbf is a string", json!({"scope": "app", "nbf": "now"})),
        ("appUser without userId", json!({"scope": "appUser"})),
        ("user without external_id", json!({"scope": "user"})),
        (
            "appUser with an empty userId",
            json!({"scope": "appUser", "userId": ""}),
        ),
        ("no scope claim", json!({"userId": "alice"})),
        ("unknown scope", json!({"scope": "admin"})),
    ] {
        list.push(attack(
            &format!("claims: {name}"),
            bearer(&hs256(&k1.id, &k1.secret, &claims)),
        ));
    }
    list.push(attack(
        "claims: duplicate scope (appUser, then app)",
        bearer(&signed_raw(
            &header_json("HS256", &k1.id),
            r#"{"scope":"appUser","userId":"alice","scope":"app"}"#,
            &k1.secret,
        )),
    ));
    list.push(attack(
        "claims: a JSON array",
        bearer(&signed_raw(
            &header_json("HS256", &k1.id),
            r#"["scope","app"]"#,
            &k1.secret,
        )),
    ));

    // Scopes the key may not sign.
    list.push(attack(
        "app key signing scope account",
        bearer(&hs256(&k1.id, &k1.secret, &json!({"scope": "account"}))),
    ));
    list.push(attack(
        "svc key signing scope app",
        bearer(&hs256(&f.svc.id, &f.svc.secret, &app_claims)),
    ));
    list.push(attack(
        "svc key signing scope appUser",
        bearer(&hs256(
            &f.svc.id,
            &f.svc.secret,
            &json!({"scope": "appUser", "userId": "alice"}),
        )),
    ));
    list.push(attack(
        "act key signing scope app",
        bearer(&hs256(&f.owner.id, &f.owner.secret, &app_claims)),
    ));

    // Size.
    let (_, over) = around_the_size_limit(k1);
    list.push(attack(
        "token one step over 8 KiB, validly signed",
        bearer(&over),
    ));
    list.push(attack(
        "token of 12 KiB, validly signed",
        bearer(&hs256(
            &k1.id,
            &k1.secret,
            &json!({"scope": "app", "pad": "x".repeat(9 * 1024)}),
        )),
    ));

    // Header shapes.
    list.push(attack(
        "header is a JSON array",
        bearer(&signed_raw(
            &json!(["HS256", k1.id]).to_string(),
            &app_text,
            &k1.secret,
        )),
    ));
    list.push(attack(
        "header is a JSON string",
        bearer(&signed_raw("\"HS256\"", &app_text, &k1.secret)),
    ));
    list.push(attack(
        "header with crit",
        bearer(&signed_raw(
            &json!({"alg": "HS256", "kid": k1.id, "crit": ["exp"]}).to_string(),
            &app_text,
            &k1.secret,
        )),
    ));
    for crit in ["null", "[]", "{}", "false"] {
        list.push(attack(
            &format!("header with crit {crit}"),
            bearer(&signed_raw(
                &format!(r#"{{"alg":"HS256","kid":"{}","crit":{crit}}}"#, k1.id),
                &app_text,
                &k1.secret,
            )),
        ));
    }
    // Members Latchkey does not read must still be JSON text (RFC 8259):
    // UTF-8, and no \u escape of a lone surrogate, nested or not, names
    // included. Everything else about these tokens is right.
    let header_start = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}""#, k1.id);
    for (name, member) in [
        ("a lone high surrogate escape", &br#""x":"\ud800""#[..]),
        ("a lone low surrogate escape", br#""x":"a\udfff""#),
        (
            "surrogate escapes in the wrong order",
            br#""x":"\ude00\ud83d""#,
        ),
        (
            "a lone surrogate escape, nested",
            br#""x":[{"y":"\udbff"}]"#,
        ),
        ("a lone surrogate escape as a name", br#""\ud800":1"#),
        ("invalid UTF-8 (0xff)", b"\"x\":\"\xff\""),
        ("an overlong UTF-8 encoding", b"\"x\":\"\xc0\xaf\""),
        ("a UTF-8-encoded surrogate", b"\"x\":[\"\xed\xa0\x80\"]"),
        ("invalid UTF-8 in a name", b"\"\x80\":true"),
    ] {
        let mut header = header_start.as_bytes().to_vec();
        header.push(b',');
        header.extend_from_slice(member);
        header.push(b'}');
        list.push(attack(
            &format!("header member not read by Latchkey holding {name}"),
            bearer(&signed_raw_bytes(&header, app_text.as_bytes(), &k1.secret)),
        ));
        let mut claims = br#"{"scope":"app""#.to_vec();
        claims.push(b',');
        claims.extend_from_slice(member);
        claims.push(b'}');
        list.push(attack(
            &format!("claims member not read by Latchkey holding {name}"),
            bearer(&signed_raw_bytes(
                header_json("HS256", &k1.id).as_bytes(),
                &claims,
                &k1.secret,
            )),
        ));
    }
    list.push(attack(
        "kid is a number",
        bearer(&signed_raw(
            &json!({"alg": "HS256", "kid": 7}).to_string(),
            &app_text,
            &k1.secret,
        )),
    ));

    // Parts that are not base64url (signed over the literal text, so only
    // the decoding can refuse them).
    let sign_literal = |input: &str| {
        let sig = b64(tag(hmac::HMAC_SHA256, &k1.secret, input));
        format!("{input}.{sig}")
    };
    list.push(attack(
        "header part not base64url",
        bearer(&sign_literal(&format!("!!header**.{}", b64(&app_text)))),
    ));
    list.push(attack(
        "payload part not base64url",
        bearer(&sign_literal(&format!(
            "{}.$$payload%%",
            b64(header_json("HS256", &k1.id))
        ))),
    ));
    let mut padded_header = header_json("HS256", &k1.id);
    while padded_header.len().is_multiple_of(3) {
        padded_header.push(' ');
    }
    list.push(attack(
        "header part in padded standard base64",
        bearer(&sign_literal(&format!(
            "{}.{}",
            STANDARD.encode(&padded_header),
            b64(&app_text)
        ))),
    ));
    list.push(attack(
        "payload is base64url of invalid JSON",
        bearer(&sign_literal(&format!(
            "{}.{}",
            b64(header_json("HS256", &k1.id)),
            b64("{\"scope\":\"app\"")
        ))),
    ));
    list.push(attack(
        "four parts",
        bearer(&format!("{good}.{}", b64("x"))),
    ));

    // Headers themselves.
    list.push(Attack {
        name: "two Authorization headers (app key and owner key)".into(),
        headers: vec![k1.basic(), f.owner.basic()],
    });
    list.push(Attack {
        name: "two identical Authorization headers (valid app key)".into(),
        headers: vec![k1.basic(), k1.basic()],
    });
    list.push(Attack {
        name: "two identical Authorization headers (valid JWT)".into(),
        headers: vec![bearer(&good), bearer(&good)],
    });
    list.push(attack("Bearer with an empty token", "Bearer ".into()));
    list.push(attack("Bearer with only spaces", "Bearer    ".into()));
    list.push(attack("Bearer with no token at all", "Bearer".into()));
    list.push(attack(
        "Basic with a secret whose checksum is wrong",
        basic(&k1.id, &change_last_char(&k1.secret)),
    ));
    list.push(attack(
        "Basic with the secret of another key",
        basic(&k1.id, &f.k2.secret),
    ));
    list.push(attack(
        "Basic with a deleted key",
        basic(&f.deleted.id, &f.deleted.secret),
    ));
    list.push(attack(
        "Bearer carrying an app key secret",
        bearer(&k1.secret),
    ));
    list
}

/// The largest validly signed token of at most 8 KiB, and the smallest one
/// over it.
fn around_the_size_limit(k1: &Key) -> (String, String) {
    let mut pad = 5_000;
    let mut previous = hs256(
        &k1.id,
        &k1.secret,
        &json!({"scope": "app", "pad": "x".repeat(pad)}),
    );
    assert!(previous.len() <= 8 * 1024, "start below the limit");
    loop {
        pad += 1;
        let next = hs256(
            &k1.id,
            &k1.secret,
            &json!({"scope": "app", "pad": "x".repeat(pad)}),
        );
        if next.len() > 8 * 1024 {
            return (previous, next);
        }
        previous = next;
    }
}

// --- the tests --------------------------------------------------------------

#[tokio::test]
async fn hostile_tokens_are_refused_and_the_server_keeps_answering() {
    let f = Fixture::build().await;
    let app = &f.app;
    let operator = app.operator();
    let k1 = &f.k1;
    let mut failures: Vec<String> = Vec::new();

    // Controls: tokens built the same ways, but correct, are accepted, so a
    // refusal below is the attack's doing and not the builder's.
    let (under, _) = around_the_size_limit(k1);
    let controls = [
        ("Basic with the app key", k1.basic(), f.app_path(), 200),
        (
            "hand-made HS256, scope app",
            bearer(&hs256(&k1.id, &k1.secret, &json!({"scope": "app"}))),
            f.app_path(),
            200,
        ),
        (
            "jsonwebtoken HS256, scope app",
            bearer(&jsonwebtoken_token(
                jsonwebtoken::Algorithm::HS256,
                &k1.id,
                &k1.secret,
                &json!({"scope": "app"}),
            )),
            f.app_path(),
            200,
        ),
        (
            "hand-made HS256 of exactly the largest size accepted",
            bearer(&under),
            f.app_path(),
            200,
        ),
        (
            "hand-made HS256, svc key, scope account",
            bearer(&hs256(
                &f.svc.id,
                &f.svc.secret,
                &json!({"scope": "account"}),
            )),
            f.app_path(),
            200,
        ),
        (
            "hand-made HS256, act key, scope account",
            bearer(&hs256(
                &f.owner.id,
                &f.owner.secret,
                &json!({"scope": "account"}),
            )),
            f.app_path(),
            200,
        ),
        (
            "hand-made HS256, scope appUser alice",
            bearer(&hs256(
                &k1.id,
                &k1.secret,
                &json!({"scope": "appUser", "userId": "alice"}),
            )),
            format!("{}/users/alice", f.app_path()),
            200,
        ),
        (
            "hand-made HS256, scope user with external_id bob",
            bearer(&hs256(
                &k1.id,
                &k1.secret,
                &json!({"scope": "user", "external_id": "bob"}),
            )),
            format!("{}/users/bob", f.app_path()),
            200,
        ),
        (
            "hand-made HS256 with the second key",
            bearer(&hs256(&f.k2.id, &f.k2.secret, &json!({"scope": "app"}))),
            f.app_path(),
            200,
        ),
    ];
    for (name, header, path, want) in &controls {
        let r = send(app, Method::GET, path, std::slice::from_ref(header), None).await;
        if !matches!(&r, Ok(reply) if reply.status.as_u16() == *want) {
            failures.push(format!(
                "control {name:?}: GET {path} wanted {want}, got {}",
                status_of(&r)
            ));
        }
    }

    let list = attacks(&f);
    let verify_body = json!({"authorization": f.owner.basic()});
    for a in &list {
        // On an app endpoint.
        let r = send(app, Method::GET, &f.app_path(), &a.headers, None).await;
        if let Some(p) = not_a_401(&r, "unauthorized") {
            failures.push(format!("{:<70} GET /v1/apps/{{ap1}}: {p}", a.name));
        }
        // As the caller of /v1/verify.
        let r = send(
            app,
            Method::POST,
            "/v1/verify",
            &a.headers,
            Some(verify_body.clone()),
        )
        .await;
        if let Some(p) = not_a_401(&r, "unauthorized") {
            failures.push(format!("{:<70} POST /v1/verify (caller): {p}", a.name));
        }
        // As the credential /v1/verify is asked about.
        if let [one] = a.headers.as_slice() {
            let r = send(
                app,
                Method::POST,
                "/v1/verify",
                std::slice::from_ref(&operator),
                Some(json!({"authorization": one, "appId": f.ap1})),
            )
            .await;
            if let Some(p) = not_invalid(&r, "unauthorized") {
                failures.push(format!("{:<70} POST /v1/verify (body): {p}", a.name));
            }
        }
        // Still answering normally.
        let r = send(
            app,
            Method::GET,
            &f.app_path(),
            std::slice::from_ref(&k1.basic()),
            None,
        )
        .await;
        if !matches!(&r, Ok(reply) if reply.status == StatusCode::OK) {
            failures.push(format!(
                "{:<70} the next good request failed: {}",
                a.name,
                status_of(&r)
            ));
        }
    }

    // After everything: health, Basic, a JWT and the verify service.
    let r = send(app, Method::GET, "/healthz", &[], None).await;
    if !matches!(&r, Ok(reply) if reply.status == StatusCode::OK) {
        failures.push(format!("GET /healthz after the attacks: {}", status_of(&r)));
    }
    let good = bearer(&hs256(&k1.id, &k1.secret, &json!({"scope": "app"})));
    let r = send(
        app,
        Method::POST,
        "/v1/verify",
        std::slice::from_ref(&operator),
        Some(json!({"authorization": good, "appId": f.ap1})),
    )
    .await;
    if !matches!(&r, Ok(reply) if reply.status == StatusCode::OK && reply.body["valid"] == true) {
        failures.push(format!(
            "POST /v1/verify of a good JWT after the attacks: {}",
            status_of(&r)
        ));
    }

    let mut report = String::new();
    for line in &failures {
        let _ = writeln!(report, "  {line}");
    }
    assert!(
        failures.is_empty(),
        "{} problems over {} attacks and {} controls:\n{report}",
        failures.len(),
        list.len(),
        controls.len(),
    );
}

#[tokio::test]
async fn exp_and_nbf_follow_the_clock_with_thirty_seconds_of_leeway() {
    let f = Fixture::build().await;
    let app = &f.app;
    let k1 = &f.k1;
    let path = f.app_path();
    let operator = app.operator();
    let mut failures: Vec<String> = Vec::new();

    let get = |header: String| {
        let path = path.clone();
        async move { send(app, Method::GET, &path, &[header], None).await }
    };
    let ok = |r: &Result<Reply, String>| matches!(r, Ok(reply) if reply.status == StatusCode::OK);

    let now = app.clock.unix();
    let sign = |claims: Value| bearer(&hs256(&k1.id, &k1.secret, &claims));

    // exp, judged against the server's clock.
    let expiring = sign(json!({"scope": "app", "exp": now}));
    let r = get(expiring.clone()).await;
    if !ok(&r) {
        failures.push(format!("exp = now: wanted 200, got {}", status_of(&r)));
    }
    let r = get(sign(json!({"scope": "app", "exp": now - 10}))).await;
    if !ok(&r) {
        failures.push(format!(
            "exp 10 s in the past (inside the leeway): wanted 200, got {}",
            status_of(&r)
        ));
    }
    let r = get(sign(json!({"scope": "app", "exp": now - 31}))).await;
    if let Some(p) = not_a_401(&r, "token_expired") {
        failures.push(format!("exp 31 s in the past: {p}"));
    }
    let r = get(sign(json!({"scope": "app", "exp": now - 86_400}))).await;
    if let Some(p) = not_a_401(&r, "token_expired") {
        failures.push(format!("exp a day in the past: {p}"));
    }

    // The same token, as the clock moves. The rule (RFC 7519: the time
    // must be before exp): expired once exp + leeway is reached.
    app.clock.advance(time::Duration::seconds(29));
    let r = get(expiring.clone()).await;
    if !ok(&r) {
        failures.push(format!(
            "exp 29 s in the past after moving the clock: wanted 200, got {}",
            status_of(&r)
        ));
    }
    app.clock.advance(time::Duration::seconds(1));
    let r = get(expiring.clone()).await;
    if let Some(p) = not_a_401(&r, "token_expired") {
        failures.push(format!(
            "exp exactly 30 s (the leeway) in the past after moving the clock: {p}"
        ));
    }
    app.clock.advance(time::Duration::seconds(1));
    let r = get(expiring.clone()).await;
    if let Some(p) = not_a_401(&r, "token_expired") {
        failures.push(format!("exp 31 s in the past after moving the clock: {p}"));
    }
    let r = send(
        app,
        Method::POST,
        "/v1/verify",
        std::slice::from_ref(&operator),
        Some(json!({"authorization": expiring})),
    )
    .await;
    if let Some(p) = not_invalid(&r, "token_expired") {
        failures.push(format!("/v1/verify of the expired token: {p}"));
    }
    let alice = sign(json!({"scope": "appUser", "userId": "alice", "exp": now}));
    let r = send(
        app,
        Method::GET,
        &format!("{path}/users/alice"),
        &[alice],
        None,
    )
    .await;
    if let Some(p) = not_a_401(&r, "token_expired") {
        failures.push(format!("expired appUser token on its own user: {p}"));
    }

    // nbf.
    let now = app.clock.unix();
    let r = get(sign(json!({"scope": "app", "nbf": now + 10}))).await;
    if !ok(&r) {
        failures.push(format!(
            "nbf 10 s ahead (inside the leeway): wanted 200, got {}",
            status_of(&r)
        ));
    }
    let early = sign(json!({"scope": "app", "nbf": now + 31}));
    let r = get(early.clone()).await;
    if let Some(p) = not_a_401(&r, "unauthorized") {
        failures.push(format!("nbf 31 s ahead: {p}"));
    }
    let r = get(sign(json!({"scope": "app", "nbf": now + 86_400}))).await;
    if let Some(p) = not_a_401(&r, "unauthorized") {
        failures.push(format!("nbf a day ahead: {p}"));
    }
    app.clock.advance(time::Duration::seconds(1));
    let r = get(early).await;
    if !ok(&r) {
        failures.push(format!(
            "nbf 30 s ahead after moving the clock: wanted 200, got {}",
            status_of(&r)
        ));
    }

    let mut report = String::new();
    for line in &failures {
        let _ = writeln!(report, "  {line}");
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{report}",
        failures.len()
    );
}
