//! A token's header and its split into parts: the fast reader (no serde,
//! no allocation) for the usual headers, and the full reader (serde) for
//! every other header and every error.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::json::{every_member_is_json_text, is_json_object, present};
use super::{Algorithm, JwtError, KID_INLINE, Kid, MAX_TOKEN_LEN, UnverifiedJwt};
use crate::{b64, flat};

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
pub(super) struct RawHeader<'a> {
    #[serde(borrow)]
    pub(super) alg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) kid: Option<Cow<'a, str>>,
    /// Whether the header has a `crit` member, whatever its value (`null`
    /// included): Latchkey understands no extension, so any is refused.
    #[serde(default, deserialize_with = "present")]
    pub(super) crit: bool,
}

/// The common case of [`parse`](super::parse), without serde and without allocating:
/// the header matched by [`usual_header`], or decoded into a stack buffer
/// and read by [`read_header`]; the signature decoded on the way (it is
/// needed anyway, and decoding it shows that it has no dot). `Some` only for tokens that [`parse_full`] accepts too, with the same
/// result; `None` for everything else, which then takes `parse_full`
/// (so that it is refused, if it is, with the same error as always).
/// It reads HS256 headers only: a token of any other algorithm takes
/// `parse_full`.
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
        // The usual headers and `read_header` are HS256's.
        alg: Algorithm::Hs256,
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

/// [`parse`](super::parse) with serde: every header it accepts, every error.
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
    let alg = Algorithm::from_name(&raw.alg).ok_or(JwtError::Algorithm)?;
    if raw.crit {
        return Err(JwtError::Critical);
    }
    let kid = match raw.kid {
        Some(k) if !k.is_empty() => k.into_owned(),
        _ => return Err(JwtError::MissingKid),
    };
    let signing_input = &token.as_bytes()[..header.len() + 1 + payload.len()];
    Ok(UnverifiedJwt {
        alg,
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
pub(super) fn read_header(json: &[u8]) -> Option<&[u8]> {
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

/// Headers as common signers write them (Latchkey's own, the jsonwebtoken
/// crate's, and the usual JOSE order), by their text before and after the
/// `kid`.
pub(super) const USUAL_HEADERS: [(&[u8], &[u8]); 4] = [
    (br#"{"alg":"HS256","kid":""#, br#"","typ":"JWT"}"#),
    (br#"{"typ":"JWT","alg":"HS256","kid":""#, br#""}"#),
    (br#"{"alg":"HS256","typ":"JWT","kid":""#, br#""}"#),
    (br#"{"alg":"HS256","kid":""#, br#""}"#),
];

/// [`USUAL_HEADERS`] with the text before the `kid` split where its
/// whole base64 groups end: their base64url encoding (which no other text
/// has), the rest, and the text after the `kid`. Checked against
/// `USUAL_HEADERS` by a test.
pub(super) const USUAL_HEADERS_B64: [(&[u8], &[u8], &[u8]); 4] = [
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
