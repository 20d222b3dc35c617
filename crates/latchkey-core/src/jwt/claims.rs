//! The claims set: the claims Latchkey reads and their types, read by the
//! fast reader (no serde) in the common form and by serde otherwise.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::json::{every_member_is_json_text, is_json_object};
use super::{JwtError, UnverifiedJwt};
use crate::{b64, flat};

/// The largest decoded payload read without allocating (larger ones go
/// through serde).
const PAYLOAD_INLINE: usize = 512;

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
pub(super) struct RawClaims<'a> {
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

/// The claims of a decoded claims set as the fast reader reads them
/// (`None` where it leaves them to serde), for the fuzz targets
/// (`crate::fuzzing`).
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

/// The claims of a claims set that serde would read as the same
/// [`RawClaims`], in the common form: a flat object whose names are strings
/// without escapes, the claims Latchkey reads are present at most once,
/// `scope`, `userId` and `external_id` are strings without escapes and
/// `exp`, `nbf` and `iat` integers of at most 15 digits (exact as f64).
/// `None` for anything else, left to serde.
pub(super) fn read_claims(json: &[u8]) -> Option<RawClaims<'_>> {
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
    pub(super) fn into_claims(self) -> Result<Claims, JwtError> {
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
