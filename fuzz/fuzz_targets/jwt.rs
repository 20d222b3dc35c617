//! The JWT reader: `jwt::parse` (its fast path without serde and its
//! serde path), the signature check, the claims readers, the base64url
//! decoders, and the whole verification of `Bearer <token>`.
//!
//! The first byte chooses the form of the input:
//! - even: the rest is the token as it is;
//! - odd: the rest is `header JSON 0xFF claims JSON 0xFF control`, and the
//!   token is built from them: the header as given or one of the usual
//!   header shapes around a `kid` (the fixture key's id unless the header
//!   piece gives one), both parts base64url-encoded, and signed with the
//!   chosen key's secret (so that the HMAC passes and the claims are
//!   read), or with the control bytes as the signature.
//!
//! Checked: no panic; the fast path accepts only what the serde path
//! accepts, with the same parts; `claims()` answers as serde alone would;
//! the decoders answer as the base64 crate does; the verification's fast
//! path answers as its general path.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_core::fuzzing::{
    b64_decode_url, b64_decode_url_run, b64_decode_whole_groups, claims_with_serde, jwt_parse_fast,
    jwt_parse_full, jwt_parts,
};
use latchkey_core::hs256::Hs256Key;
use latchkey_core::jwt::{self, JwtError};
use latchkey_fuzz::{FIXTURE, pieces, verify_and_check};
use libfuzzer_sys::fuzz_target;

/// The header shapes common signers write, around the `kid`.
const USUAL_HEADERS: [(&str, &str); 4] = [
    (r#"{"alg":"HS256","kid":""#, r#"","typ":"JWT"}"#),
    (r#"{"typ":"JWT","alg":"HS256","kid":""#, r#""}"#),
    (r#"{"alg":"HS256","typ":"JWT","kid":""#, r#""}"#),
    (r#"{"alg":"HS256","kid":""#, r#""}"#),
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_token_bytes(rest);
    } else {
        let token = build(rest);
        check_token_bytes(token.as_bytes());
    }
});

fn build(rest: &[u8]) -> String {
    let p = pieces(rest, 3);
    let (header, claims, control) = (p[0], p[1], p[2]);
    let (&key_choice, control) = control.split_first().unwrap_or((&0, &[]));
    let (&shape, control) = control.split_first().unwrap_or((&0, &[]));
    let keys = &FIXTURE.keys;
    let key = keys.get(usize::from(key_choice) % (keys.len() + 1));
    let header = match usize::from(shape) % 5 {
        0 => header.to_vec(),
        n => {
            let (before, after) = USUAL_HEADERS[n - 1];
            let kid = match (header, key) {
                ([], Some(key)) => key.id.as_bytes(),
                _ => header,
            };
            [before.as_bytes(), kid, after.as_bytes()].concat()
        }
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = match key {
        Some(key) if control.is_empty() => {
            URL_SAFE_NO_PAD.encode(Hs256Key::new(key.secret.as_bytes()).sign(input.as_bytes()))
        }
        _ => URL_SAFE_NO_PAD.encode(control),
    };
    format!("{input}.{signature}")
}

fn check_token_bytes(token: &[u8]) {
    for part in token.split(|&b| b == b'.') {
        check_base64(part);
    }
    let fast = jwt_parse_fast(token);
    if let Ok(text) = std::str::from_utf8(token) {
        check_token(text, fast.as_ref());
    }
    // A token that is not UTF-8 only has to cause no panic: `parse` takes
    // text, and the verification's fast path takes only ASCII.
    let header = [b"Bearer ".as_slice(), token].concat();
    let _ = verify_and_check(&header);
}

fn check_token(token: &str, fast: Option<&jwt::UnverifiedJwt<'_>>) {
    let full = jwt_parse_full(token);
    if let Some(fast) = fast {
        let full = full
            .as_ref()
            .unwrap_or_else(|e| panic!("the fast path took a token the serde path refuses: {e:?}"));
        let (a, b) = (jwt_parts(fast), jwt_parts(full));
        assert_eq!(a.kid, b.kid);
        assert_eq!(a.signing_input, b.signing_input);
        assert_eq!(a.payload, b.payload);
        assert_eq!(a.signature, b.signature);
        if let Some(sig) = a.decoded_signature {
            assert_eq!(URL_SAFE_NO_PAD.decode(a.signature).ok(), Some(sig.to_vec()));
        }
        assert_eq!(fast.kid(), full.kid());
    }
    let parsed = jwt::parse(token);
    match (&parsed, &full) {
        (Ok(p), Ok(f)) => assert_eq!(p.kid(), f.kid()),
        (Err(p), Err(f)) => assert_eq!(p, f),
        _ => panic!("parse {parsed:?}, parse_full {full:?}"),
    }
    let Ok(parsed) = parsed else {
        return;
    };
    let parts = jwt_parts(&parsed);
    // The signature check, against every key (one of them signed it when
    // the token was built): it passes only for a token whose header names
    // the key's algorithm (HS256; never the token's choice, RFC 8725) and
    // whose HMAC matches.
    let sig = URL_SAFE_NO_PAD.decode(parts.signature).ok();
    let hs256 = parsed.algorithm() == jwt::Algorithm::Hs256;
    for key in &FIXTURE.keys {
        let hmac = Hs256Key::new(key.secret.as_bytes());
        let expected = hs256
            && sig.as_ref().is_some_and(|sig| {
                sig.len() == 32 && hmac.sign(parts.signing_input).as_slice() == sig.as_slice()
            });
        let verified = parsed.verify_signature(&hmac);
        assert_eq!(verified.is_ok(), expected, "{verified:?}");
        if !hs256 {
            assert_eq!(verified, Err(JwtError::Algorithm));
        }
    }
    // The claims: as serde alone reads them.
    let claims = parsed.claims();
    match URL_SAFE_NO_PAD.decode(parts.payload) {
        Ok(json) => assert_eq!(claims, claims_with_serde(&json)),
        Err(_) => assert!(matches!(claims, Err(JwtError::Claims(_)))),
    }
}

/// The decoders against the base64 crate's, on `input` and into buffers
/// exactly large enough and one byte short.
fn check_base64(input: &[u8]) {
    let n = input.len() * 3 / 4;
    for cap in [n.saturating_sub(1), n] {
        let mut ours = vec![0u8; cap];
        let mut theirs = vec![0u8; cap];
        let got = b64_decode_url(input, &mut ours);
        let want = URL_SAFE_NO_PAD.decode_slice(input, &mut theirs).ok();
        assert_eq!(got, want);
        if let Some(n) = got {
            assert_eq!(ours[..n], theirs[..n]);
        }
        // The run up to the first character outside the alphabet.
        let end = input
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_'))
            .unwrap_or(input.len());
        let mut theirs = vec![0u8; cap];
        let want = URL_SAFE_NO_PAD
            .decode_slice(&input[..end], &mut theirs)
            .ok()
            .map(|n| (end, n));
        let mut ours = vec![0u8; cap];
        let run = b64_decode_url_run(input, &mut ours);
        assert_eq!(run, want);
        if let Some((_, n)) = run {
            assert_eq!(ours[..n], theirs[..n]);
        }
    }
    // Standard base64 of whole groups (a Basic credential's key id).
    let mut out = [0u8; 27];
    let whole = b64_decode_whole_groups(input, &mut out);
    if input.len() != 36 {
        assert!(!whole);
        return;
    }
    let theirs = STANDARD
        .decode(input)
        .ok()
        .filter(|b| b.len() == 27 && !input.contains(&b'='));
    assert_eq!(whole, theirs.is_some());
    if let Some(bytes) = theirs {
        assert_eq!(out.as_slice(), bytes.as_slice());
    }
}
