//! A strict HS256 JWT reader and signer.
//!
//! Written here rather than taken from a general JWT crate because the
//! verification path needs exactly one algorithm, a key looked up by `kid`
//! from the in-memory index, typed claims of our own, and the cost of about
//! one HMAC. Anything else is refused: other algorithms (including `none`),
//! a missing `kid`, a `crit` header (whatever its value, `null` included:
//! RFC 7515 §4.1.11), tokens over [`MAX_TOKEN_LEN`], bad base64, duplicate
//! or wrongly typed claims, and a header or claims set that is not JSON
//! text in every member, read or not (invalid UTF-8, or a `\u` escape of a
//! lone surrogate: RFC 8259 §8).

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::hs256::Hs256Key;
use crate::{b64, flat};

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
#[cfg_attr(test, derive(Debug))]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    /// Whether the header has a `crit` member, whatever its value (`null`
    /// included): Latchkey understands no extension, so any is refused.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// `true` for a member that is present, whatever its value.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Checked::deserialize(d).map(|Checked| true)
}

/// Any JSON value, read in full and dropped. Unlike serde's `IgnoredAny`,
/// which skips a string without looking at its bytes or escapes, every
/// string (member names included) is read as serde_json reads a string it
/// returns: valid UTF-8, and no `\u` escape of a lone surrogate.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Whether `json` is one JSON text with every member valid (see
/// [`Checked`]), whether Latchkey reads it or not. The typed readers below
/// check only the members they read; serde skips the others unexamined.
fn every_member_is_json_text(json: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(json).map(|Checked| ())
}

/// A token split into its parts, header checked, signature not yet checked.
/// `Debug` shows only the `kid`: the token is a credential.
pub struct UnverifiedJwt<'a> {
    kid: Kid,
    signing_input: &'a [u8],
    payload: &'a [u8],
    signature: &'a [u8],
    /// The signature, already decoded when [`parse_fast`] decoded it to
    /// see that it has no dot.
    decoded_signature: Option<[u8; 32]>,
}

/// The largest decoded payload read without allocating (larger ones go
/// through serde).
const PAYLOAD_INLINE: usize = 512;

/// The header's `kid`: inline when the header took the fast path (no
/// allocation), owned otherwise.
enum Kid {
    Inline { len: u8, bytes: [u8; KID_INLINE] },
    Owned(String),
}

/// Longest `kid` kept inline (key ids are 26 bytes).
const KID_INLINE: usize = 31;

impl std::fmt::Debug for UnverifiedJwt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedJwt")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl UnverifiedJwt<'_> {
    /// The `kid` as bytes (the index looks keys up by bytes, without
    /// checking UTF-8 first).
    pub(crate) fn kid_bytes(&self) -> &[u8] {
        match &self.kid {
            Kid::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Kid::Owned(kid) => kid.as_bytes(),
        }
    }

    /// The header's `kid`: the id of the key to verify with.
    pub fn kid(&self) -> &str {
        match &self.kid {
            // Only valid UTF-8 is stored inline.
            Kid::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Kid::Owned(kid) => kid,
        }
    }
}

/// Splits a compact JWS and checks its header.
pub fn parse(token: &str) -> Result<UnverifiedJwt<'_>, JwtError> {
    match parse_fast(token.as_bytes()) {
        Some(parsed) => Ok(parsed),
        None => parse_full(token),
    }
}

/// The common case of [`parse`], without serde and without allocating:
/// the header matched by [`usual_header`], or decoded into a stack buffer
/// and read by [`read_header`]; the signature decoded on the way (it is
/// needed anyway, and decoding it shows that it has no dot). `Some` only for tokens that [`parse_full`] accepts too, with the same
/// result; `None` for everything else, which then takes `parse_full`
/// (so that it is refused, if it is, with the same error as always).
pub(crate) fn parse_fast(token: &[u8]) -> Option<UnverifiedJwt<'_>> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    // The header is decoded up to its first character outside the
    // alphabet, which must be the first dot: a header with any other
    // character is not base64url, and the full path refuses it.
    let mut buf = [0u8; 256];
    let (first, kid) = match usual_header(token, &mut buf) {
        Some(found) => found,
        None => {
            let (first, len) = b64::decode_url_run(token, &mut buf)?;
            if first == 0 || token.get(first) != Some(&b'.') {
                return None;
            }
            (first, inline_kid(read_header(&buf[..len])?)?)
        }
    };
    let rest = &token[first + 1..];
    let second = memchr::memchr(b'.', rest)?;
    let (payload, signature) = (&rest[..second], &rest[second + 1..]);
    // A signature that decodes to 32 bytes has no dot; any other is
    // refused later, but only once it is known to hold no dot.
    let mut sig = [0u8; 32];
    let decoded_signature = match b64::decode_url(signature, &mut sig) {
        Some(32) => Some(sig),
        _ if memchr::memchr(b'.', signature).is_some() => return None,
        _ => None,
    };
    if payload.is_empty() || signature.is_empty() {
        return None;
    }
    Some(UnverifiedJwt {
        kid,
        signing_input: &token[..first + 1 + second],
        payload,
        signature,
        decoded_signature,
    })
}

/// A `kid` kept inline; `None` if it is longer than [`KID_INLINE`].
fn inline_kid(kid: &[u8]) -> Option<Kid> {
    let mut bytes = [0u8; KID_INLINE];
    bytes.get_mut(..kid.len())?.copy_from_slice(kid);
    Some(Kid::Inline {
        len: u8::try_from(kid.len()).ok()?,
        bytes,
    })
}

/// A header that is one of [`USUAL_HEADERS`], read without decoding the
/// part before the `kid` that fills whole base64 groups: that part is
/// compared as text (its encoding is unique), the rest decoded up to the
/// header's dot and compared as [`read_usual_header`] compares. The
/// position of the dot and the `kid`; `None` when the header is of none
/// of these forms.
fn usual_header(token: &[u8], buf: &mut [u8]) -> Option<(usize, Kid)> {
    // Written out for each prefix, so that every comparison is of a
    // known length (inline, no `memcmp` call).
    let [h0, h1, h2, h3] = USUAL_HEADERS_B64;
    type Form = (&'static [u8], &'static [u8]);
    let (prefix_len, forms): (usize, [Form; 2]) = if token.starts_with(h0.0) {
        // Two forms have the same text before the kid.
        (h0.0.len(), [(h0.1, h0.2), (h3.1, h3.2)])
    } else if token.starts_with(h1.0) {
        (h1.0.len(), [(h1.1, h1.2); 2])
    } else if token.starts_with(h2.0) {
        (h2.0.len(), [(h2.1, h2.2); 2])
    } else {
        return None;
    };
    let (read, len) = b64::decode_url_run(&token[prefix_len..], buf)?;
    let first = prefix_len + read;
    if token.get(first) != Some(&b'.') {
        return None;
    }
    let json = &buf[..len];
    let [(before_a, after_a), (before_b, after_b)] = forms;
    let kid = match json.strip_prefix(before_a)?.strip_suffix(after_a) {
        Some(kid) => kid,
        None => json.strip_prefix(before_b)?.strip_suffix(after_b)?,
    };
    if kid.is_empty() || !kid.is_ascii() || flat::find_stop(kid).is_some() {
        return None;
    }
    Some((first, inline_kid(kid)?))
}

/// [`parse`] with serde: every header it accepts, every error.
pub(crate) fn parse_full(token: &str) -> Result<UnverifiedJwt<'_>, JwtError> {
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
    every_member_is_json_text(&header_json).map_err(|_| JwtError::Header)?;
    let raw: RawHeader<'_> = serde_json::from_slice(&header_json).map_err(|_| JwtError::Header)?;
    if raw.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    if raw.crit {
        return Err(JwtError::Critical);
    }
    let kid = match raw.kid {
        Some(k) if !k.is_empty() => k.into_owned(),
        _ => return Err(JwtError::MissingKid),
    };
    let signing_input = &token.as_bytes()[..header.len() + 1 + payload.len()];
    Ok(UnverifiedJwt {
        kid: Kid::Owned(kid),
        signing_input,
        payload: payload.as_bytes(),
        signature: signature.as_bytes(),
        decoded_signature: None,
    })
}

/// The `kid` of a header that serde would read as a [`RawHeader`] with
/// `alg` HS256, no `crit` and a non-empty `kid`, in the common form: a flat
/// object whose names and values are strings without escapes. `None` for
/// anything else (other value types included), left to serde.
fn read_header(json: &[u8]) -> Option<&[u8]> {
    if let Some(kid) = read_usual_header(json) {
        return Some(kid);
    }
    let json = std::str::from_utf8(json).ok()?;
    let mut alg = None;
    let mut kid = None;
    flat::object(json, |name, value| {
        let slot = match name.as_bytes() {
            [b'a', b'l', b'g'] => &mut alg,
            [b'k', b'i', b'd'] => &mut kid,
            // Refused by the full path, whatever its value.
            [b'c', b'r', b'i', b't'] => return None,
            _ => return Some(()),
        };
        match (&slot, value) {
            (None, flat::Value::Str(v)) => {
                *slot = Some(v);
                Some(())
            }
            // Duplicates and other types are errors for serde.
            _ => None,
        }
    })?;
    match (alg, kid) {
        (Some("HS256"), Some(kid)) if !kid.is_empty() => Some(kid.as_bytes()),
        _ => None,
    }
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
#[cfg_attr(test, derive(Debug, PartialEq))]
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
    pub fn verify_signature(&self, key: &Hs256Key) -> Result<(), JwtError> {
        let sig = match self.decoded_signature {
            Some(sig) => sig,
            None => {
                let mut sig = [0u8; 32];
                match b64::decode_url(self.signature, &mut sig) {
                    Some(32) => sig,
                    _ => return Err(JwtError::Signature),
                }
            }
        };
        if key.verify(self.signing_input, &sig) {
            Ok(())
        } else {
            Err(JwtError::Signature)
        }
    }

    /// Decodes and type-checks the claims. Call only after the signature
    /// has been verified.
    pub fn claims(&self) -> Result<Claims, JwtError> {
        // The common case: decoded into a stack buffer and read without
        // serde; anything else (or too large) goes through serde.
        let mut buf = [0u8; PAYLOAD_INLINE];
        if let Some(len) = b64::decode_url(self.payload, &mut buf)
            && let Some(raw) = read_claims(&buf[..len])
        {
            return raw.into_claims();
        }
        let json = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| JwtError::Claims("the payload is not base64url".into()))?;
        claims_with_serde(&json)
    }
}

/// The parts of a parsed token and the claims of a decoded claims set as
/// the fast reader reads them (`None` where it leaves them to serde), for
/// the fuzz targets (`crate::fuzzing`).
#[cfg(fuzzing)]
impl UnverifiedJwt<'_> {
    pub(crate) fn parts(&self) -> (&[u8], &[u8], &[u8], Option<[u8; 32]>) {
        (
            self.signing_input,
            self.payload,
            self.signature,
            self.decoded_signature,
        )
    }
}

#[cfg(fuzzing)]
pub(crate) fn fast_claims(json: &[u8]) -> Option<Result<Claims, JwtError>> {
    read_claims(json).map(RawClaims::into_claims)
}

/// The claims of a decoded claims set, read by serde: every form, every
/// error.
pub(crate) fn claims_with_serde(json: &[u8]) -> Result<Claims, JwtError> {
    if !is_json_object(json) {
        return Err(JwtError::Claims("the claims must be a JSON object".into()));
    }
    every_member_is_json_text(json).map_err(|e| JwtError::Claims(claims_error(&e)))?;
    let raw: RawClaims<'_> =
        serde_json::from_slice(json).map_err(|e| JwtError::Claims(claims_error(&e)))?;
    raw.into_claims()
}

/// Headers as common signers write them (Latchkey's own, the jsonwebtoken
/// crate's, and the usual JOSE order), by their text before and after the
/// `kid`.
const USUAL_HEADERS: [(&[u8], &[u8]); 4] = [
    (br#"{"alg":"HS256","kid":""#, br#"","typ":"JWT"}"#),
    (br#"{"typ":"JWT","alg":"HS256","kid":""#, br#""}"#),
    (br#"{"alg":"HS256","typ":"JWT","kid":""#, br#""}"#),
    (br#"{"alg":"HS256","kid":""#, br#""}"#),
];

/// [`USUAL_HEADERS`] with the text before the `kid` split where its
/// whole base64 groups end: their base64url encoding (which no other text
/// has), the rest, and the text after the `kid`. Checked against
/// `USUAL_HEADERS` by a test.
const USUAL_HEADERS_B64: [(&[u8], &[u8], &[u8]); 4] = [
    (b"eyJhbGciOiJIUzI1NiIsImtpZCI6", b"\"", br#"","typ":"JWT"}"#),
    (
        b"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiIsImtpZCI6",
        b"\"",
        br#""}"#,
    ),
    (
        b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6",
        b"\"",
        br#""}"#,
    ),
    (b"eyJhbGciOiJIUzI1NiIsImtpZCI6", b"\"", br#""}"#),
];

/// The `kid` of a header that is one of [`USUAL_HEADERS`] around a
/// non-empty ASCII `kid` without escapes: a flat object [`read_header`]
/// and serde read the same way, compared as text.
fn read_usual_header(json: &[u8]) -> Option<&[u8]> {
    USUAL_HEADERS.iter().find_map(|(before, after)| {
        let kid = json.strip_prefix(*before)?.strip_suffix(*after)?;
        (!kid.is_empty() && kid.is_ascii() && flat::find_stop(kid).is_none()).then_some(kid)
    })
}

/// The claims of a claims set that serde would read as the same
/// [`RawClaims`], in the common form: a flat object whose names are strings
/// without escapes, the claims Latchkey reads are present at most once,
/// `scope`, `userId` and `external_id` are strings without escapes and
/// `exp`, `nbf` and `iat` integers of at most 15 digits (exact as f64).
/// `None` for anything else, left to serde.
fn read_claims(json: &[u8]) -> Option<RawClaims<'_>> {
    let json = std::str::from_utf8(json).ok()?;
    let mut raw = RawClaims {
        scope: None,
        user_id: None,
        external_id: None,
        exp: None,
        nbf: None,
        iat: None,
    };
    enum Slot<'s, 'a> {
        Text(&'s mut Option<Cow<'a, str>>),
        Date(&'s mut Option<NumericDate>),
    }
    flat::object(json, |name, value| {
        let slot = match name.as_bytes() {
            [b's', b'c', b'o', b'p', b'e'] => Slot::Text(&mut raw.scope),
            [b'u', b's', b'e', b'r', b'I', b'd'] => Slot::Text(&mut raw.user_id),
            [
                b'e',
                b'x',
                b't',
                b'e',
                b'r',
                b'n',
                b'a',
                b'l',
                b'_',
                b'i',
                b'd',
            ] => Slot::Text(&mut raw.external_id),
            [b'e', b'x', b'p'] => Slot::Date(&mut raw.exp),
            [b'n', b'b', b'f'] => Slot::Date(&mut raw.nbf),
            [b'i', b'a', b't'] => Slot::Date(&mut raw.iat),
            _ => return Some(()),
        };
        match (slot, value) {
            (Slot::Text(text @ None), flat::Value::Str(v)) => *text = Some(Cow::Borrowed(v)),
            (Slot::Date(date @ None), flat::Value::Int(n)) => *date = Some(NumericDate(n)),
            // Duplicates and other types are errors for serde.
            _ => return None,
        }
        Some(())
    })?;
    Some(raw)
}

impl RawClaims<'_> {
    fn into_claims(self) -> Result<Claims, JwtError> {
        let raw = self;
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
    let tag = Hs256Key::new(secret).sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag));
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    // Tokens built independently of the code under test.
    use ring::hmac;
    use serde_json::json;

    const SECRET: &[u8] = b"lksk_test-secret";

    fn key() -> Hs256Key {
        Hs256Key::new(SECRET)
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
        assert_eq!(parsed.kid(), "app_x");
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

    /// A token over raw header and claims bytes, signed with [`SECRET`].
    fn raw_token(header: &[u8], claims: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let tag = key().sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Texts that are not JSON (RFC 8259 §8.1: UTF-8; §7: a `\u` escape
    /// of a lone surrogate names no character), placed in members Latchkey
    /// does not read, nested or not, and in a member's name.
    const NOT_JSON_TEXT: [&[u8]; 12] = [
        b"\"\\ud800\"",
        b"\"\\udfff\"",
        b"\"x\\ud83d\"",
        b"\"\\ud83d\\u0041\"",
        b"\"\\ude00\\ud83d\"",
        b"[\"\\udc00\"]",
        b"{\"a\":\"\\ud800\"}",
        b"\"\xff\"",
        b"\"\xc0\x80\"",
        b"\"\xed\xa0\x80\"",
        b"[\"\x80\"]",
        b"{\"\xf4\x90\x80\x80\":1}",
    ];

    /// Where the texts above go: the value of a member of a name Latchkey
    /// does not read, and (strings) a member's name.
    fn with_member(prefix: &str, value: &[u8]) -> Vec<Vec<u8>> {
        let mut unread = prefix.as_bytes().to_vec();
        unread.extend_from_slice(b",\"x\":");
        unread.extend_from_slice(value);
        unread.push(b'}');
        let mut out = vec![unread];
        if value.starts_with(b"\"") {
            let mut named = prefix.as_bytes().to_vec();
            named.push(b',');
            named.extend_from_slice(value);
            named.extend_from_slice(b":1}");
            out.push(named);
        }
        out
    }

    #[test]
    fn members_that_are_not_json_text_are_refused_read_or_not() {
        for value in NOT_JSON_TEXT {
            for header in with_member(r#"{"alg":"HS256","kid":"k""#, value) {
                let token = raw_token(&header, br#"{"scope":"app"}"#);
                assert_eq!(
                    parse(&token).err(),
                    Some(JwtError::Header),
                    "{}",
                    String::from_utf8_lossy(&header)
                );
            }
            for claims in with_member(r#"{"scope":"app""#, value) {
                let token = raw_token(br#"{"alg":"HS256","kid":"k"}"#, &claims);
                let parsed = parse(&token).expect("the header is good");
                parsed.verify_signature(&key()).expect("signature");
                assert!(
                    matches!(parsed.claims(), Err(JwtError::Claims(_))),
                    "{}",
                    String::from_utf8_lossy(&claims)
                );
            }
        }
        // A valid surrogate pair, escaped, and the character itself are
        // JSON text.
        for value in [&b"\"\\ud83d\\ude00\""[..], "\"\u{1f600}\"".as_bytes()] {
            for header in with_member(r#"{"alg":"HS256","kid":"k""#, value) {
                let token = raw_token(&header, br#"{"scope":"app"}"#);
                assert_eq!(parse(&token).expect("parse").kid(), "k");
            }
            for claims in with_member(r#"{"scope":"app""#, value) {
                let token = raw_token(br#"{"alg":"HS256","kid":"k"}"#, &claims);
                let claims = parse(&token).expect("parse").claims();
                assert_eq!(claims.expect("claims").scope, ClaimedScope::App);
            }
        }
    }

    #[test]
    fn a_crit_member_is_refused_whatever_its_value() {
        for crit in ["null", "[]", "[\"b64\"]", "\"b64\"", "{}", "false", "0"] {
            let header = format!(r#"{{"alg":"HS256","kid":"k","crit":{crit}}}"#);
            let token = raw_token(header.as_bytes(), br#"{"scope":"app"}"#);
            assert_eq!(parse(&token).err(), Some(JwtError::Critical), "{header}");
        }
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
        let tag = key().sign(input.as_bytes());
        let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag));
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

    proptest! {
        /// Around a header the fast path reads, any payload and signature
        /// text (dots, characters outside the alphabet, signatures of any
        /// length, valid ones among them): what parse_fast accepts,
        /// parse_full accepts with the same parts, and the signature and
        /// the claims then answer the same.
        #[test]
        fn fast_split_agrees_with_full(
            payload in prop_oneof![
                Just(URL_SAFE_NO_PAD.encode(r#"{"scope":"app"}"#)),
                "[A-Za-z0-9_.+-]{0,30}",
            ],
            signature in prop_oneof![
                Just(String::new()),
                "[A-Za-z0-9_-]{43}",
                "[A-Za-z0-9_.+=-]{0,50}",
            ],
            sign in any::<bool>(),
        ) {
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k"}"#);
            let input = format!("{header}.{payload}");
            let signature = if sign {
                URL_SAFE_NO_PAD.encode(key().sign(input.as_bytes()))
            } else {
                signature
            };
            let token = format!("{input}.{signature}");
            let full = parse_full(&token);
            match parse_fast(token.as_bytes()) {
                Some(fast) => {
                    let full = full.expect("parse_full accepts it");
                    prop_assert_eq!(fast.kid(), full.kid());
                    prop_assert_eq!(fast.signing_input, full.signing_input);
                    prop_assert_eq!(fast.payload, full.payload);
                    prop_assert_eq!(fast.signature, full.signature);
                    prop_assert_eq!(fast.verify_signature(&key()), full.verify_signature(&key()));
                    prop_assert_eq!(fast.claims(), full.claims());
                }
                None => prop_assert!(full.is_err(), "parse_fast refused what parse_full accepts"),
            }
        }
    }

    /// JSON values of every kind, mostly well-formed: strings with and
    /// without escapes, non-ASCII and control characters, integers,
    /// decimals, exponents, negative and long numbers, nested values,
    /// broken literals.
    fn any_value() -> BoxedStrategy<String> {
        prop_oneof![
            4 => prop_oneof![
                Just("\"HS256\"".to_string()), Just("\"hs256\"".to_string()),
                Just("\"app\"".to_string()), Just("\"appUser\"".to_string()),
                Just("\"user\"".to_string()), Just("\"account\"".to_string()),
                Just("\"\"".to_string()),
                "\"[a-zA-Z0-9_@. -]{0,30}\"",
            ],
            2 => "[0-9]{1,17}",
            1 => "\"[a-z\\\\\"\\n\\t\u{e9}\u{7f}\u{1}/]{0,8}\"",
            1 => "-?(0|[1-9][0-9]{0,16})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
            1 => prop_oneof![
                Just("true".to_string()), Just("false".to_string()),
                Just("null".to_string()), Just("tru".to_string()),
                Just("[\"b64\"]".to_string()), Just("{\"a\":1}".to_string()),
                Just("[]".to_string()), Just("01".to_string()),
            ],
            // \u escapes of surrogates: pairs (JSON text), lone ones and
            // pairs in the wrong order (not JSON text), also nested.
            1 => (
                prop_oneof![
                    Just("\\ud83d\\ude00"), Just("\\ud800"), Just("\\udfff"),
                    Just("\\ude00\\ud83d"), Just("\\ud83d\\u0041"), Just("\\u00e9"),
                ],
                "[a-z]{0,3}",
                0..3usize,
            )
                .prop_map(|(escape, text, nest)| match nest {
                    0 => format!("\"{text}{escape}\""),
                    1 => format!("[\"{escape}{text}\"]"),
                    _ => format!("{{\"{text}\":\"{escape}\"}}"),
                }),
        ]
        .boxed()
    }

    fn any_ws() -> BoxedStrategy<&'static str> {
        prop_oneof![
            30 => Just(""), 3 => Just(" "), 2 => Just("\n\t"), 1 => Just("\u{c}"),
        ]
        .boxed()
    }

    /// `"name": value`, the value usually from `usual`.
    fn member(name: &'static str, usual: BoxedStrategy<String>) -> BoxedStrategy<String> {
        (
            any_ws(),
            prop_oneof![12 => usual, 1 => any_value()],
            any_ws(),
        )
            .prop_map(move |(w1, v, w2)| format!("\"{name}\"{w1}:{w2}{v}"))
            .boxed()
    }

    /// Any member: the names both readers care about (some escaped or
    /// differently cased), any value.
    fn any_member() -> BoxedStrategy<String> {
        let name = prop_oneof![
            Just("alg"),
            Just("kid"),
            Just("crit"),
            Just("typ"),
            Just("scope"),
            Just("userId"),
            Just("external_id"),
            Just("exp"),
            Just("nbf"),
            Just("iat"),
            Just("x"),
            Just("a\\u006cg"),
            Just("ki\\u0064"),
            Just("Alg"),
            Just("s\\ncope"),
            Just("\\ud800"),
            Just("\\ud83d\\ude00"),
        ];
        (name, any_ws(), any_value(), any_ws())
            .prop_map(|(n, w1, v, w2)| format!("\"{n}\"{w1}:{w2}{v}"))
            .boxed()
    }

    /// JSON texts near the common shape: `usual` members (each kept with
    /// probability 9/10) and up to two others (duplicates included), in
    /// any order, with odd whitespace, separators and trailing text.
    fn near_object(usual: Vec<BoxedStrategy<String>>) -> BoxedStrategy<String> {
        let kept = usual
            .into_iter()
            .map(|m| proptest::option::weighted(0.9, m))
            .collect::<Vec<_>>();
        (
            kept,
            proptest::collection::vec(any_member(), 0..3),
            any_ws(),
            prop_oneof![20 => Just(","), 2 => Just(" , "), 1 => Just(",,")],
            any_ws(),
            prop_oneof![20 => Just(""), 1 => Just(","), 1 => Just("}"), 1 => Just("x")],
        )
            .prop_flat_map(|(kept, others, lead, sep, trail, junk)| {
                let members: Vec<String> = kept.into_iter().flatten().chain(others).collect();
                Just(members)
                    .prop_shuffle()
                    .prop_map(move |m| format!("{lead}{{{}}}{trail}{junk}", m.join(sep)))
            })
            .boxed()
    }

    fn near_header() -> BoxedStrategy<String> {
        prop_oneof![
            5 => near_object(vec![
                member("alg", Just("\"HS256\"".to_string()).boxed()),
                member("kid", "\"[a-zA-Z0-9_]{1,30}\"".boxed()),
                member("typ", Just("\"JWT\"".to_string()).boxed()),
            ]),
            // The usual headers around kids of every kind.
            1 => (
                proptest::sample::select(USUAL_HEADERS.to_vec()),
                prop_oneof![
                    "[a-zA-Z0-9_]{0,30}",
                    "[a-z\\\\\"\\n\u{e9}\u{7f}\u{1}/ ]{0,8}",
                ],
            )
                .prop_map(|((before, after), kid)| {
                    let (before, after) = (
                        std::str::from_utf8(before).expect("ascii"),
                        std::str::from_utf8(after).expect("ascii"),
                    );
                    format!("{before}{kid}{after}")
                }),
        ]
        .boxed()
    }

    fn near_claims() -> BoxedStrategy<String> {
        near_object(vec![
            member(
                "scope",
                prop_oneof![
                    Just("\"app\"".to_string()),
                    Just("\"appUser\"".to_string()),
                    Just("\"user\"".to_string()),
                    Just("\"account\"".to_string()),
                ]
                .boxed(),
            ),
            member("userId", "\"[a-zA-Z0-9@._\u{e9}-]{0,20}\"".boxed()),
            // Up to 18 digits: above 2^53 serde's f64 rounds.
            member(
                "exp",
                prop_oneof!["[0-9]{1,11}", "[1-9][0-9]{13,17}"].boxed(),
            ),
            member("iat", "[0-9]{1,11}".boxed()),
            member("nbf", "[0-9]{1,11}".boxed()),
        ])
    }

    #[test]
    fn usual_headers_in_base64_are_the_usual_headers() {
        for ((before, after), (prefix, rest, after_b64)) in
            USUAL_HEADERS.iter().zip(USUAL_HEADERS_B64.iter())
        {
            let whole = before.len() / 3 * 3;
            assert_eq!(URL_SAFE_NO_PAD.encode(&before[..whole]).as_bytes(), *prefix);
            assert_eq!(&before[whole..], *rest);
            assert_eq!(after, after_b64);
        }
    }

    /// The differential tests below are only worth something if the fast
    /// readers accept a good share of what they are given.
    #[test]
    fn near_objects_often_take_the_fast_paths() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut headers, mut claims, mut serde_ok) = (0, 0, 0);
        for _ in 0..2000 {
            let json = near_header().new_tree(&mut runner).expect("tree").current();
            headers += usize::from(read_header(json.as_bytes()).is_some());
            let json = near_claims().new_tree(&mut runner).expect("tree").current();
            claims += usize::from(read_claims(json.as_bytes()).is_some());
            serde_ok += usize::from(serde_json::from_str::<RawClaims<'_>>(&json).is_ok());
        }
        eprintln!("fast headers {headers}, fast claims {claims} of {serde_ok} serde reads");
        assert!(headers >= 200, "fast headers: {headers}");
        assert!(
            claims >= 200,
            "fast claims: {claims} of {serde_ok} serde reads"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// What the fast header reader accepts, serde accepts with the
        /// same kid, and parse_full with the same parts.
        #[test]
        fn fast_header_agrees_with_serde(json in near_header()) {
            let fast = read_header(json.as_bytes());
            let token = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(&json));
            let full = parse_full(&token);
            if let Some(kid) = fast {
                let raw: RawHeader<'_> = serde_json::from_str(&json).expect("serde reads it");
                prop_assert!(is_json_object(json.as_bytes()));
                prop_assert_eq!(raw.alg.as_ref(), "HS256");
                prop_assert!(!raw.crit);
                prop_assert_eq!(raw.kid.as_deref().map(str::as_bytes), Some(kid));
                let full = full.as_ref().expect("parse_full accepts it");
                let fast = parse_fast(token.as_bytes()).expect("parse_fast accepts it");
                prop_assert_eq!(fast.kid(), full.kid());
                prop_assert_eq!(fast.signing_input, full.signing_input);
                prop_assert_eq!(fast.payload, full.payload);
                prop_assert_eq!(fast.signature, full.signature);
            } else {
                prop_assert!(parse_fast(token.as_bytes()).is_none());
            }
            // An independent oracle for the members nobody reads: what is
            // accepted is JSON text throughout, as serde_json's Value (which
            // reads every string) finds.
            if full.is_ok() {
                let value = serde_json::from_str::<serde_json::Value>(&json);
                prop_assert!(value.is_ok_and(|v| v.is_object()), "{}", json);
            }
            // parse() answers as parse_full always did.
            prop_assert_eq!(
                parse(&token).map(|p| p.kid().to_string()),
                full.map(|p| p.kid().to_string())
            );
        }

        /// What the fast claims reader accepts, serde reads as the same
        /// claims; claims() answers as serde alone would.
        #[test]
        fn fast_claims_agree_with_serde(json in near_claims()) {
            if let Some(fast) = read_claims(json.as_bytes()) {
                let raw: RawClaims<'_> = serde_json::from_str(&json).expect("serde reads it");
                prop_assert!(is_json_object(json.as_bytes()));
                prop_assert_eq!(&fast, &raw);
                prop_assert_eq!(fast.into_claims(), raw.into_claims());
            }
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k"}"#);
            let t = format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode(&json));
            let p = parse(&t).expect("parse");
            prop_assert_eq!(p.claims(), claims_with_serde(json.as_bytes()));
            if p.claims().is_ok() {
                let value = serde_json::from_str::<serde_json::Value>(&json);
                prop_assert!(value.is_ok_and(|v| v.is_object()), "{}", json);
            }
        }

        /// A header or claims set with bytes that are not UTF-8 anywhere
        /// (in a member nobody reads, in a name, between members) is
        /// refused, on the fast paths and off them.
        #[test]
        fn invalid_utf8_anywhere_is_refused(
            header in near_header(),
            claims in near_claims(),
            in_header in any::<bool>(),
            at in any::<prop::sample::Index>(),
            bad in prop::sample::select(vec![
                &[0xffu8][..], &[0xc0, 0x80], &[0x80], &[0xe2, 0x82], &[0xed, 0xa0, 0x80],
                &[0xf4, 0x90, 0x80, 0x80], &[0xf8, 0x88, 0x80, 0x80, 0x80],
            ]),
        ) {
            let (mut header, mut claims) = (header.into_bytes(), claims.into_bytes());
            let target = if in_header { &mut header } else { &mut claims };
            let at = at.index(target.len() + 1);
            target.splice(at..at, bad.iter().copied());
            prop_assume!(std::str::from_utf8(target).is_err());
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&header),
                URL_SAFE_NO_PAD.encode(&claims)
            );
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(key().sign(input.as_bytes())));
            if in_header {
                prop_assert!(parse_fast(token.as_bytes()).is_none());
                prop_assert!(parse(&token).is_err());
            } else if let Ok(p) = parse(&token) {
                prop_assert!(read_claims(&claims).is_none());
                prop_assert!(p.claims().is_err());
            }
        }
    }
}
