//! A strict HS256 JWT reader and signer.
//!
//! Written here rather than taken from a general JWT crate because the
//! verification path needs exactly one algorithm, a key looked up by `kid`
//! from the in-memory index, typed claims of our own, and the cost of about
//! one HMAC. Anything else is refused: other algorithms (including `none`),
//! a missing `kid`, a `crit` header, tokens over [`MAX_TOKEN_LEN`], bad
//! base64, duplicate or wrongly typed claims.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The largest token accepted (8 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
pub use crate::ids::MAX_EXTERNAL_ID_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the JWT is larger than 8 KiB")]
    TooLarge,
    #[error("the JWT must have three base64url parts separated by dots")]
    Shape,
    #[error("the JWT header is not valid base64url-encoded JSON")]
    Header,
    #[error("the JWT header's alg must be HS256")]
    Algorithm,
    #[error("the JWT header must name the signing key in kid")]
    MissingKid,
    #[error("the JWT header carries crit extensions, which are not supported")]
    Critical,
    #[error("the JWT signature does not match its key")]
    Signature,
    #[error("the JWT claims are not valid JSON of the expected types: {0}")]
    Claims(String),
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// A token split into its parts, header checked, signature not yet checked.
/// `Debug` shows only the `kid`: the token is a credential.
pub struct UnverifiedJwt<'a> {
    pub kid: String,
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl std::fmt::Debug for UnverifiedJwt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedJwt")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Splits a compact JWS and checks its header.
pub fn parse(token: &str) -> Result<UnverifiedJwt<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(JwtError::Shape);
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Header)?;
    if !is_json_object(&header_json) {
        return Err(JwtError::Header);
    }
    let raw: RawHeader<'_> = serde_json::from_slice(&header_json).map_err(|_| JwtError::Header)?;
    if raw.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    if raw.crit.is_some() {
        return Err(JwtError::Critical);
    }
    let kid = match raw.kid {
        Some(k) if !k.is_empty() => k.into_owned(),
        _ => return Err(JwtError::MissingKid),
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(UnverifiedJwt {
        kid,
        signing_input,
        payload,
        signature,
    })
}

/// serde's derived structs also accept JSON arrays; a JOSE header or claims
/// set must be an object.
fn is_json_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Numeric dates may be integers or decimals (RFC 7519 NumericDate).
#[derive(Debug, Clone, Copy, PartialEq)]
struct NumericDate(i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        // `as` saturates for out-of-range floats; NaN cannot come from JSON.
        #[allow(clippy::cast_possible_truncation)]
        Ok(NumericDate(v.floor() as i64))
    }
}

#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow, default)]
    scope: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "userId")]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    external_id: Option<Cow<'a, str>>,
    #[serde(default)]
    exp: Option<NumericDate>,
    #[serde(default)]
    nbf: Option<NumericDate>,
    #[serde(default)]
    iat: Option<NumericDate>,
}

/// The claims Latchkey reads, after type checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub scope: ClaimedScope,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

/// The scope a token claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimedScope {
    App,
    Account,
    /// `appUser` with `userId`, or `user` with `external_id`.
    AppUser {
        external_id: String,
    },
    /// Any other value, kept for the error message.
    Other(String),
    Missing,
}

impl UnverifiedJwt<'_> {
    /// Checks the signature against `key` in constant time.
    pub fn verify_signature(&self, key: &hmac::Key) -> Result<(), JwtError> {
        let mut sig = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(self.signature, &mut sig) {
            Ok(32) => {}
            _ => return Err(JwtError::Signature),
        }
        hmac::verify(key, self.signing_input.as_bytes(), &sig).map_err(|_| JwtError::Signature)
    }

    /// Decodes and type-checks the claims. Call only after the signature
    /// has been verified.
    pub fn claims(&self) -> Result<Claims, JwtError> {
        let json = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| JwtError::Claims("the payload is not base64url".into()))?;
        if !is_json_object(&json) {
            return Err(JwtError::Claims("the claims must be a JSON object".into()));
        }
        let raw: RawClaims<'_> =
            serde_json::from_slice(&json).map_err(|e| JwtError::Claims(claims_error(&e)))?;
        let scope = match raw.scope.as_deref() {
            None => ClaimedScope::Missing,
            Some("app") => ClaimedScope::App,
            Some("account") => ClaimedScope::Account,
            Some(s @ ("appUser" | "user")) => {
                let id = match (s, &raw.user_id, &raw.external_id) {
                    ("appUser", Some(u), None) => u,
                    ("user", None, Some(e)) => e,
                    ("appUser", None, _) => {
                        return Err(JwtError::Claims(
                            "scope appUser needs a userId claim".into(),
                        ));
                    }
                    ("user", _, None) => {
                        return Err(JwtError::Claims(
                            "scope user needs an external_id claim".into(),
                        ));
                    }
                    _ => {
                        return Err(JwtError::Claims(
                            "use userId with scope appUser, or external_id with scope user".into(),
                        ));
                    }
                };
                crate::ids::check_external_id(id).map_err(|e| JwtError::Claims(e.to_string()))?;
                ClaimedScope::AppUser {
                    external_id: id.to_string(),
                }
            }
            Some(other) => ClaimedScope::Other(other.chars().take(32).collect()),
        };
        Ok(Claims {
            scope,
            exp: raw.exp.map(|d| d.0),
            nbf: raw.nbf.map(|d| d.0),
            iat: raw.iat.map(|d| d.0),
        })
    }
}

/// A short description of a claims error that never echoes token content.
fn claims_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    // serde_json messages name the field and expected type ("invalid type:
    // string \"x\", expected f64"); keep the part before any quoted value.
    match msg.find('"') {
        Some(i) if msg.starts_with("invalid type") => msg[..i].trim_end().to_string(),
        _ => msg
            .split(" at line")
            .next()
            .unwrap_or("invalid")
            .to_string(),
    }
}

/// Signs `claims` with HS256 under `secret`, naming `kid` in the header.
pub fn sign_hs256(secret: &[u8], kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SECRET: &[u8] = b"lksk_test-secret";

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, SECRET)
    }

    fn encode_parts(
        header: &serde_json::Value,
        claims: &serde_json::Value,
        secret: &[u8],
    ) -> String {
        let mut t = URL_SAFE_NO_PAD.encode(header.to_string());
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), t.as_bytes());
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
        t
    }

    #[test]
    fn our_tokens_verify_and_read_back() {
        let t = sign_hs256(
            SECRET,
            "app_x",
            &json!({"scope":"appUser","userId":"alice","exp":1.5e9}),
        );
        let parsed = parse(&t).expect("parse");
        assert_eq!(parsed.kid, "app_x");
        parsed.verify_signature(&key()).expect("signature");
        let claims = parsed.claims().expect("claims");
        assert_eq!(
            claims.scope,
            ClaimedScope::AppUser {
                external_id: "alice".into()
            }
        );
        assert_eq!(claims.exp, Some(1_500_000_000));
    }

    #[test]
    fn tokens_from_the_jsonwebtoken_crate_verify() {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("app_y".into());
        let t = jsonwebtoken::encode(
            &header,
            &json!({"scope":"user","external_id":"bob"}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .expect("encode");
        let parsed = parse(&t).expect("parse");
        parsed.verify_signature(&key()).expect("signature");
        assert_eq!(
            parsed.claims().expect("claims").scope,
            ClaimedScope::AppUser {
                external_id: "bob".into()
            }
        );
    }

    #[test]
    fn attacks_are_refused() {
        let claims = json!({"scope":"app"});
        let none = encode_parts(&json!({"alg":"none","kid":"k"}), &claims, SECRET);
        assert_eq!(parse(&none).err(), Some(JwtError::Algorithm));
        let hs512 = encode_parts(&json!({"alg":"HS512","kid":"k"}), &claims, SECRET);
        assert_eq!(parse(&hs512).err(), Some(JwtError::Algorithm));
        let lower = encode_parts(&json!({"alg":"hs256","kid":"k"}), &claims, SECRET);
        assert_eq!(parse(&lower).err(), Some(JwtError::Algorithm));
        let no_kid = encode_parts(&json!({"alg":"HS256"}), &claims, SECRET);
        assert_eq!(parse(&no_kid).err(), Some(JwtError::MissingKid));
        let kid_number = encode_parts(&json!({"alg":"HS256","kid":5}), &claims, SECRET);
        assert_eq!(parse(&kid_number).err(), Some(JwtError::Header));
        let crit = encode_parts(
            &json!({"alg":"HS256","kid":"k","crit":["b64"]}),
            &claims,
            SECRET,
        );
        assert_eq!(parse(&crit).err(), Some(JwtError::Critical));
        let forged = encode_parts(&json!({"alg":"HS256","kid":"k"}), &claims, b"other secret");
        assert_eq!(
            parse(&forged)
                .expect("parse")
                .verify_signature(&key())
                .err(),
            Some(JwtError::Signature)
        );
        let unsigned = format!("{}.", &forged[..forged.rfind('.').expect("dot")]);
        assert_eq!(parse(&unsigned).err(), Some(JwtError::Shape));
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(parse(&big).err(), Some(JwtError::TooLarge));
        assert_eq!(parse("a.b.c.d").err(), Some(JwtError::Shape));
    }

    #[test]
    fn wrongly_typed_or_duplicate_claims_are_refused() {
        for claims in [
            json!({"scope":"app","exp":"tomorrow"}),
            json!({"scope":7}),
            json!({"scope":"appUser","userId":42}),
            json!({"scope":"appUser"}),
            json!({"scope":"appUser","userId":""}),
            json!({"scope":"appUser","userId":"ev\nil"}),
            json!({"scope":"appUser","userId":"usr_0123456789012345678901"}),
            json!({"scope":"user","userId":"a"}),
            json!({"scope":"appUser","userId":"a","external_id":"b"}),
            json!(["scope", "app"]),
        ] {
            let t = encode_parts(&json!({"alg":"HS256","kid":"k"}), &claims, SECRET);
            let parsed = parse(&t).expect("parse");
            parsed.verify_signature(&key()).expect("signature");
            assert!(parsed.claims().is_err(), "{claims}");
        }
        // Duplicate keys cannot be built with json!; write the text by hand.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k"}"#);
        let payload = URL_SAFE_NO_PAD.encode(r#"{"scope":"appUser","scope":"app"}"#);
        let input = format!("{header}.{payload}");
        let tag = hmac::sign(&key(), input.as_bytes());
        let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        let parsed = parse(&t).expect("parse");
        parsed.verify_signature(&key()).expect("signature");
        assert!(parsed.claims().is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_text(s in ".{0,300}") {
            if let Ok(p) = parse(&s) {
                let _ = p.verify_signature(&key());
                let _ = p.claims();
            }
        }

        #[test]
        fn parse_never_panics_on_dotted_base64(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,80}", c in "[A-Za-z0-9_-]{0,60}") {
            let t = format!("{a}.{b}.{c}");
            if let Ok(p) = parse(&t) {
                prop_assert!(p.verify_signature(&key()).is_err());
            }
        }

        #[test]
        fn any_claims_object_round_trips(user in "[a-zA-Z0-9@._-]{1,64}", exp in 0i64..4_000_000_000) {
            let t = sign_hs256(SECRET, "app_k", &json!({"scope":"appUser","userId":user,"exp":exp}));
            let p = parse(&t).expect("parse");
            p.verify_signature(&key()).expect("sig");
            let c = p.claims().expect("claims");
            prop_assert_eq!(c.scope, ClaimedScope::AppUser { external_id: user });
            prop_assert_eq!(c.exp, Some(exp));
        }

        #[test]
        fn flipping_any_signature_bit_is_detected(pos in 0usize..32, bit in 0u8..8) {
            let t = sign_hs256(SECRET, "app_k", &json!({"scope":"app"}));
            let dot = t.rfind('.').expect("dot");
            let mut sig = URL_SAFE_NO_PAD.decode(&t[dot + 1..]).expect("b64");
            sig[pos] ^= 1 << bit;
            let forged = format!("{}.{}", &t[..dot], URL_SAFE_NO_PAD.encode(&sig));
            let p = parse(&forged).expect("parse");
            prop_assert_eq!(p.verify_signature(&key()), Err(JwtError::Signature));
        }
    }
}
