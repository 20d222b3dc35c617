//! A signed request's `Signature-Input`, `Signature` and a header it may
//! cover, as `latchkey_core::http_sig::prepare` reads them for a fixed
//! request, then verified against the fixture's index; and
//! `Content-Digest` against a body. Never a panic; a request that
//! verifies names a key of the fixture by its `keyid`.
//!
//! The input is split at 0xFF bytes: Signature-Input, Signature, the value
//! of header `x-any`, and a body.
#![no_main]

use latchkey_core::http_sig::{RequestParts, SignedRequestPolicy, content_digest_matches, prepare};
use latchkey_fuzz::{FIXTURE, NOW, pieces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = pieces(data, 4);
    let (Ok(input), Ok(signature), Ok(any)) = (
        std::str::from_utf8(parts[0]),
        std::str::from_utf8(parts[1]),
        std::str::from_utf8(parts[2]),
    ) else {
        return;
    };
    let headers = vec![
        ("host".to_string(), "api.example.com".to_string()),
        ("x-any".to_string(), any.to_string()),
        ("content-digest".to_string(), any.to_string()),
    ];
    let req = RequestParts {
        method: "POST",
        scheme: "https",
        authority: "api.example.com",
        path: "/v1/apps/ap_1/users",
        query: Some("limit=5"),
        headers: &headers,
        has_body: !parts[3].is_empty(),
    };
    if let Ok(prepared) = prepare(input, signature, &req, NOW, SignedRequestPolicy::default()) {
        if let Ok(verified) = FIXTURE.index.verify_signed_request(&prepared, NOW) {
            assert_eq!(verified.principal.key_id(), Some(prepared.key_id.as_str()));
        }
    }
    let _ = content_digest_matches(any, parts[3]);
});
