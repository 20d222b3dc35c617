//! The hand-written flat JSON reader (`flat.rs`, the fast path of JOSE
//! headers and claims sets) against serde_json as the oracle.
//!
//! The reader is not meant to read all of JSON: it takes one object whose
//! names are strings without escapes and whose values are strings without
//! escapes, integers `0|[1-9][0-9]{0,14}`, `true`, `false` or `null`, and
//! answers `None` for everything else, which its callers then give to
//! serde. So the relationship checked on every input is exact in both
//! directions:
//!
//! - it answers `Some(members)` exactly when serde_json reads the text as
//!   an object and every member is of that shape (judged from the text
//!   serde_json read each name and value from), and
//! - then it has the same members, in order (duplicates included), with
//!   the same values.
//!
//! The fast readers built on it are held to their serde paths on the same
//! text: the claims reader (`claims()` of a token) and the header reader
//! (the fast path of `jwt::parse`, with this text as the header).
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::fuzzing::{
    FlatValue, claims_fast, claims_with_serde, flat_members, jwt_parse_fast, jwt_parse_full,
    jwt_parts,
};
use latchkey_fuzz::Members;
use libfuzzer_sys::fuzz_target;

/// A value of the flat shape, from the text it was written as.
fn flat_value(raw: &str) -> Option<FlatValue<'_>> {
    match raw {
        "true" | "false" | "null" => return Some(FlatValue::Other),
        _ => {}
    }
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return (!inner.contains('\\')).then_some(FlatValue::Str(inner));
    }
    let digits = raw.len() <= 15 && raw.bytes().all(|b| b.is_ascii_digit());
    let canonical = raw == "0" || raw.as_bytes().first().is_some_and(|&b| b != b'0');
    (digits && canonical && !raw.is_empty())
        .then(|| raw.parse().ok().map(FlatValue::Int))
        .flatten()
}

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let ours = flat_members(json);
    let expected = serde_json::from_str::<Members<'_>>(json)
        .ok()
        .and_then(|m| {
            m.0.iter()
                .map(|(name, raw)| {
                    let value = flat_value(raw.get())?;
                    (!name.escaped).then(|| (name.text.to_string(), value))
                })
                .collect::<Option<Vec<_>>>()
        });
    let ours_owned = ours.as_ref().map(|m| {
        m.iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect::<Vec<_>>()
    });
    assert_eq!(
        ours_owned, expected,
        "flat reader and serde_json on {json:?}"
    );

    // The claims reader: where it answers, as serde.
    if let Some(fast) = claims_fast(data) {
        assert_eq!(fast, claims_with_serde(data), "claims of {json:?}");
    }
    // The header reader, through `jwt::parse`'s fast path.
    let token = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(data));
    if let Some(fast) = jwt_parse_fast(token.as_bytes()) {
        let full = jwt_parse_full(&token)
            .unwrap_or_else(|e| panic!("header {json:?}: fast path took it, serde refuses: {e:?}"));
        assert_eq!(jwt_parts(&fast), jwt_parts(&full), "header {json:?}");
    }
});
