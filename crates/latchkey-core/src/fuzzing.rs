//! Internal readers for the fuzz targets in `fuzz/`: each fast path next
//! to the general path it stands in for, so that a target can hold them
//! to the same answers. Compiled only under `cfg(fuzzing)`, which
//! cargo-fuzz sets for every crate of a fuzz build: no other build has
//! this module.

use crate::KeyIndex;
use crate::jwt::{Claims, JwtError, UnverifiedJwt};
use crate::verify::{AuthError, Verified, VerifyOptions};

/// A member's value as the flat JSON reader (`flat.rs`) reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatValue<'a> {
    /// The text between the quotes (no escapes).
    Str(&'a str),
    Int(i64),
    /// `true`, `false` or `null`.
    Other,
}

/// The members of `json` as the flat reader reads them, in order
/// (duplicates included); `None` where it leaves the text to serde.
pub fn flat_members(json: &str) -> Option<Vec<(&str, FlatValue<'_>)>> {
    let mut out = Vec::new();
    crate::flat::object(json, |name, value| {
        out.push((
            name,
            match value {
                crate::flat::Value::Str(s) => FlatValue::Str(s),
                crate::flat::Value::Int(n) => FlatValue::Int(n),
                crate::flat::Value::Other => FlatValue::Other,
            },
        ));
        Some(())
    })?;
    Some(out)
}

/// `jwt::parse` without serde; `None` for what it leaves to
/// [`jwt_parse_full`].
pub fn jwt_parse_fast(token: &[u8]) -> Option<UnverifiedJwt<'_>> {
    crate::jwt::parse_fast(token)
}

/// `jwt::parse` with serde: every header it accepts, every error.
pub fn jwt_parse_full(token: &str) -> Result<UnverifiedJwt<'_>, JwtError> {
    crate::jwt::parse_full(token)
}

/// What a parsed token holds.
#[derive(Debug, PartialEq, Eq)]
pub struct JwtParts<'a> {
    pub kid: &'a [u8],
    pub signing_input: &'a [u8],
    pub payload: &'a [u8],
    pub signature: &'a [u8],
    /// The signature, when the fast path decoded it already.
    pub decoded_signature: Option<[u8; 32]>,
}

pub fn jwt_parts<'a>(jwt: &'a UnverifiedJwt<'_>) -> JwtParts<'a> {
    let (signing_input, payload, signature, decoded_signature) = jwt.parts();
    JwtParts {
        kid: jwt.kid_bytes(),
        signing_input,
        payload,
        signature,
        decoded_signature,
    }
}

/// The claims of a decoded claims set as the fast reader reads them;
/// `None` where it leaves them to [`claims_with_serde`].
pub fn claims_fast(json: &[u8]) -> Option<Result<Claims, JwtError>> {
    crate::jwt::fast_claims(json)
}

/// The claims of a decoded claims set as serde reads them.
pub fn claims_with_serde(json: &[u8]) -> Result<Claims, JwtError> {
    crate::jwt::claims_with_serde(json)
}

/// Unpadded base64url into `out` (`b64.rs`).
pub fn b64_decode_url(input: &[u8], out: &mut [u8]) -> Option<usize> {
    crate::b64::decode_url(input, out)
}

/// The base64url run at the start of `input`: (characters read, bytes
/// written).
pub fn b64_decode_url_run(input: &[u8], out: &mut [u8]) -> Option<(usize, usize)> {
    crate::b64::decode_url_run(input, out)
}

/// Standard base64 of whole groups into exactly `out.len()` bytes.
pub fn b64_decode_whole_groups(input: &[u8], out: &mut [u8]) -> bool {
    crate::b64::decode_whole_groups(input, out)
}

/// The fast path of `verify_authorization` for a header without optional
/// whitespace around it and within the size limit; `None` where it
/// leaves the header to [`verify_general`].
pub fn verify_common(
    index: &KeyIndex,
    header: &[u8],
    now: i64,
    opts: VerifyOptions,
) -> Option<Result<Verified, AuthError>> {
    index.verify_common(header, now, opts)
}

/// The general path of `verify_authorization` (same preconditions).
pub fn verify_general(
    index: &KeyIndex,
    header: &[u8],
    now: i64,
    opts: VerifyOptions,
) -> Result<Verified, AuthError> {
    index.verify_general(header, now, opts)
}

/// `prefix`, `body` and the checksum of both: a well-formed secret when
/// `body` is 43 base62 characters.
pub fn secret_with_checksum(prefix: &str, body: &str) -> String {
    let mut s = format!("{prefix}{body}");
    let sum = crate::secret::checksum(s.as_bytes());
    s.push_str(std::str::from_utf8(&sum).unwrap_or_default());
    s
}
