use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use sfv::{Dictionary, ListEntry, Parser};

use super::*;
use crate::hs256::Hs256Key;
use crate::ids::{IdKind, new_id};
use crate::index::{KeyIndex, KeyOwner, LiveKey};
use crate::secret::{KEY_SECRET_PREFIX, generate};

/// RFC 9421 appendix B.2: the test request.
fn rfc_request_headers() -> Vec<(String, String)> {
    [
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        (
            "Content-Digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        ),
        ("Content-Length", "18"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

/// RFC 9421 appendix B.2.5: the signature base and HMAC-SHA256 signature
/// of the test request under the shared secret of B.1.5, rebuilt here.
#[test]
fn the_signature_base_and_hmac_of_rfc_9421_b_2_5_are_rebuilt() {
    let headers = rfc_request_headers();
    let req = RequestParts {
        method: "POST",
        scheme: "https",
        authority: "example.com",
        path: "/foo",
        query: Some("param=Value&Pet=dog"),
        headers: &headers,
        has_body: true,
    };
    let input: Dictionary = Parser::new(
        r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
    )
    .parse()
    .expect("dictionary");
    let Some((_, ListEntry::InnerList(inner))) = input.into_iter().next() else {
        panic!("an inner list");
    };
    let base = signature_base(&["date", "@authority", "content-type"], &inner, &req).expect("base");
    assert_eq!(
        base,
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
    );
    let secret = STANDARD
        .decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")
        .expect("base64");
    let tag = Hs256Key::new(&secret).sign(base.as_bytes());
    assert_eq!(
        STANDARD.encode(tag),
        "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8="
    );
    // And the test request's Content-Digest is its body's.
    let digest = &headers[3].1;
    assert_eq!(
        content_digest_matches(digest, br#"{"hello": "world"}"#),
        Ok(())
    );
    assert_eq!(
        content_digest_matches(digest, br#"{"hello": "World"}"#),
        Err(SignedRequestError::DigestMismatch)
    );
    assert_eq!(
        content_digest_matches(
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            br#"{"hello": "world"}"#
        ),
        Ok(())
    );
    for bad in [
        "md5=:AAAA:",
        "sha-256=\"text\"",
        "sha-256",
        "not a dictionary (",
    ] {
        assert_eq!(
            content_digest_matches(bad, b"x"),
            Err(SignedRequestError::DigestSyntax),
            "{bad}"
        );
    }
}

const NOW: i64 = 1_800_000_000;

/// A signed request of an app key: the index, the key id, and a function
/// that signs a `Signature-Input` value with the key's secret for `req`.
struct Signer {
    index: KeyIndex,
    key_id: String,
    secret: String,
}

impl Signer {
    fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let index = KeyIndex::new();
        index.insert_account("acc_1");
        assert!(index.insert_app("ap_1", "acc_1"));
        let key_id = new_id(&rng, IdKind::AppKey);
        let secret = generate(&rng, KEY_SECRET_PREFIX).expose().to_string();
        let owner = KeyOwner::App {
            account_id: "acc_1".into(),
            app_id: "ap_1".into(),
        };
        assert!(index.insert_key(LiveKey::new(
            key_id.clone(),
            owner,
            secret.as_bytes(),
            None,
            None
        )));
        Self {
            index,
            key_id,
            secret,
        }
    }

    /// `Signature` for `input` (label `sig1`), signed over the base that
    /// `prepare` rebuilds; checked against the base written out by hand in
    /// the test that needs it.
    fn sign(&self, input: &str, req: &RequestParts<'_>) -> String {
        let dict: Dictionary = Parser::new(input).parse().expect("input");
        let Some((_, ListEntry::InnerList(inner))) = dict.into_iter().next() else {
            panic!("an inner list");
        };
        let components: Vec<&str> = inner
            .items
            .iter()
            .filter_map(|i| i.bare_item.as_string().map(|s| s.as_str()))
            .collect();
        // A base that cannot be built (the case under test refuses it):
        // any signature will do.
        let Ok(base) = signature_base(&components, &inner, req) else {
            return "sig1=:AAAA:".to_string();
        };
        let tag = Hs256Key::new(self.secret.as_bytes()).sign(base.as_bytes());
        format!("sig1=:{}:", STANDARD.encode(tag))
    }

    fn input(&self, components: &str, extra: &str) -> String {
        format!(
            "sig1=({components});created={NOW};keyid=\"{}\";alg=\"hmac-sha256\"{extra}",
            self.key_id
        )
    }
}

fn get_request(headers: &[(String, String)]) -> RequestParts<'_> {
    RequestParts {
        method: "GET",
        scheme: "http",
        authority: "127.0.0.1:8080",
        path: "/v1/apps/ap_1",
        query: Some("limit=5"),
        headers,
        has_body: false,
    }
}

#[test]
fn a_signed_request_verifies_as_its_key_and_only_as_signed() {
    let s = Signer::new();
    let headers = vec![("Host".to_string(), "127.0.0.1:8080".to_string())];
    let req = get_request(&headers);
    let input = s.input(r#""@method" "@target-uri""#, r#";nonce="n-1""#);
    let sig = s.sign(&input, &req);
    let prepared =
        prepare(&input, &sig, &req, NOW, SignedRequestPolicy::default()).expect("prepared");
    assert_eq!(
        prepared.base(),
        format!(
            "\"@method\": GET\n\"@target-uri\": http://127.0.0.1:8080/v1/apps/ap_1?limit=5\n\"@signature-params\": (\"@method\" \"@target-uri\");created={NOW};keyid=\"{}\";alg=\"hmac-sha256\";nonce=\"n-1\"",
            s.key_id
        )
    );
    assert_eq!(prepared.nonce.as_deref(), Some("n-1"));
    let verified = s
        .index
        .verify_signed_request(&prepared, NOW)
        .expect("verified");
    assert_eq!(verified.principal.key_id(), Some(s.key_id.as_str()));

    // The same signature for another method, path, query or host.
    let others = [
        RequestParts {
            method: "DELETE",
            ..req.clone()
        },
        RequestParts {
            path: "/v1/apps/ap_2",
            ..req.clone()
        },
        RequestParts {
            query: Some("limit=6"),
            ..req.clone()
        },
        RequestParts {
            query: None,
            ..req.clone()
        },
        RequestParts {
            authority: "127.0.0.1:8081",
            ..req.clone()
        },
        RequestParts {
            scheme: "https",
            ..req.clone()
        },
    ];
    for other in others {
        // Refused when read (a DELETE must cover content-digest), or when
        // its HMAC is compared.
        if let Ok(prepared) = prepare(&input, &sig, &other, NOW, SignedRequestPolicy::default()) {
            assert_eq!(
                s.index.verify_signed_request(&prepared, NOW).err(),
                Some(AuthError::BadCredentials),
                "{other:?}"
            );
        }
    }
    // Another key's id, or a key that is gone.
    let stranger = Signer::new();
    let input_other = input.replace(&s.key_id, &stranger.key_id);
    let prepared = prepare(
        &input_other,
        &sig,
        &req,
        NOW,
        SignedRequestPolicy::default(),
    )
    .expect("prepared");
    assert!(s.index.verify_signed_request(&prepared, NOW).is_err());
    s.index.remove_key(&s.key_id);
    let prepared =
        prepare(&input, &sig, &req, NOW, SignedRequestPolicy::default()).expect("prepared");
    assert!(s.index.verify_signed_request(&prepared, NOW).is_err());
}

#[test]
fn what_a_signature_must_cover_and_when_it_was_made_are_checked() {
    let s = Signer::new();
    let headers = vec![
        ("Host".to_string(), "127.0.0.1:8080".to_string()),
        ("X-Two".to_string(), " a ".to_string()),
        ("x-two".to_string(), "b".to_string()),
    ];
    let req = get_request(&headers);
    let policy = SignedRequestPolicy::default();
    let check = |components: &str, extra: &str, req: &RequestParts<'_>| {
        let input = s.input(components, extra);
        let sig = s.sign(&input, req);
        prepare(&input, &sig, req, NOW, policy).map(|p| p.base().to_string())
    };
    assert_eq!(
        check(r#""@target-uri""#, "", &req).err(),
        Some(SignedRequestError::NotCovered("@method"))
    );
    assert_eq!(
        check(r#""@method" "@path""#, "", &req).err(),
        Some(SignedRequestError::NotCovered(
            "@target-uri, or @authority and @path"
        ))
    );
    assert_eq!(
        check(r#""@method" "@authority" "@path""#, "", &req).err(),
        Some(SignedRequestError::NotCovered(
            "@query (the request has a query)"
        ))
    );
    let base = check(
        r#""@method" "@authority" "@path" "@query" "x-two""#,
        "",
        &req,
    )
    .expect("covered");
    assert!(base.contains("\"@authority\": 127.0.0.1:8080\n\"@path\": /v1/apps/ap_1\n\"@query\": ?limit=5\n\"x-two\": a, b\n"), "{base}");
    let bodiless_post = RequestParts {
        method: "POST",
        ..req.clone()
    };
    assert!(matches!(
        check(r#""@method" "@target-uri""#, "", &bodiless_post).err(),
        Some(SignedRequestError::NotCovered(_))
    ));
    let post = RequestParts {
        method: "POST",
        has_body: true,
        ..req.clone()
    };
    assert_eq!(
        check(r#""@method" "@target-uri""#, "", &post).err(),
        Some(SignedRequestError::NotCovered(
            "content-digest (the request has a body, or its method may carry one: every method \
             but GET, HEAD and OPTIONS)"
        ))
    );
    assert_eq!(
        check(r#""@method" "@target-uri" "content-digest""#, "", &post).err(),
        Some(SignedRequestError::Absent("content-digest".into()))
    );
    assert_eq!(
        check(r#""@method" "@target-uri" "X-Two""#, "", &req).err(),
        Some(SignedRequestError::Unsupported("X-Two".into()))
    );
    assert_eq!(
        check(r#""@method" "@target-uri" "@status""#, "", &req).err(),
        Some(SignedRequestError::Unsupported("@status".into()))
    );
    assert_eq!(
        check(r#""@method" "@target-uri" "x-two";sf"#, "", &req).err(),
        Some(SignedRequestError::Components)
    );
    assert_eq!(
        check(r#""@method" "@method" "@target-uri""#, "", &req).err(),
        Some(SignedRequestError::Components)
    );
    assert_eq!(
        check(
            r#""@method" "@target-uri""#,
            &format!(";expires={NOW}"),
            &req
        )
        .err(),
        Some(SignedRequestError::Expired)
    );
    assert!(
        check(
            r#""@method" "@target-uri""#,
            &format!(";expires={}", NOW + 1),
            &req
        )
        .is_ok()
    );

    // Time: created within the window, not ahead beyond the leeway.
    let at = |created: i64| {
        let input = format!(
            r#"sig1=("@method" "@target-uri");created={created};keyid="{}""#,
            s.key_id
        );
        let sig = s.sign(&input, &req);
        prepare(&input, &sig, &req, NOW, policy).map(|_| ())
    };
    assert_eq!(at(NOW - 300), Ok(()));
    assert_eq!(at(NOW + 30), Ok(()));
    assert_eq!(at(NOW - 301), Err(SignedRequestError::Stale(300)));
    assert_eq!(at(NOW + 31), Err(SignedRequestError::Stale(300)));

    // The parameters and the two fields.
    let sig = "sig1=:AAAA:";
    let cases = [
        (
            r#"sig1=("@method" "@target-uri");created=1"#.to_string(),
            sig,
            SignedRequestError::KeyId,
        ),
        (
            format!(r#"sig1=("@method");keyid="{}""#, s.key_id),
            sig,
            SignedRequestError::Created,
        ),
        (
            format!(
                r#"sig1=("@method");created={NOW};keyid="{}";alg="rsa-pss-sha512""#,
                s.key_id
            ),
            sig,
            SignedRequestError::Algorithm,
        ),
        (
            format!(
                r#"sig1=("@method");created={NOW};keyid="{}";nonce=1"#,
                s.key_id
            ),
            sig,
            SignedRequestError::Nonce,
        ),
        (
            format!(
                r#"sig1=("@method");created={NOW};keyid="{}";nonce="{}""#,
                s.key_id,
                "n".repeat(129)
            ),
            sig,
            SignedRequestError::Nonce,
        ),
        (
            format!(
                r#"sig1=("@method");created={NOW};keyid="{}", sig2=("@method");created={NOW};keyid="x""#,
                s.key_id
            ),
            sig,
            SignedRequestError::NotOne,
        ),
        (
            format!(r#"sig2=("@method");created={NOW};keyid="{}""#, s.key_id),
            sig,
            SignedRequestError::NoSignature,
        ),
        (
            format!(r#"sig1=("@method");created={NOW};keyid="{}""#, s.key_id),
            "sig1=\"text\"",
            SignedRequestError::NoSignature,
        ),
        (
            r#"sig1="@method""#.to_string(),
            sig,
            SignedRequestError::Components,
        ),
        (
            "sig1=(".to_string(),
            sig,
            SignedRequestError::Syntax("Signature-Input"),
        ),
        (
            format!(r#"sig1=("@method");created={NOW};keyid="{}""#, s.key_id),
            "sig1=:::",
            SignedRequestError::Syntax("Signature"),
        ),
        (
            "x".repeat(MAX_FIELD_LEN + 1),
            sig,
            SignedRequestError::TooLarge,
        ),
    ];
    for (input, sig, want) in cases {
        assert_eq!(
            prepare(&input, sig, &req, NOW, policy).err(),
            Some(want),
            "{input}"
        );
    }
}

#[test]
fn a_public_key_key_cannot_sign_requests() {
    let index = KeyIndex::new();
    index.insert_account("acc_1");
    assert!(index.insert_app("ap_1", "acc_1"));
    let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let owner = KeyOwner::App {
        account_id: "acc_1".into(),
        app_id: "ap_1".into(),
    };
    let public = crate::jwt::PublicKey::from_jwk(&jwk).expect("jwk");
    assert!(index.insert_key(LiveKey::with_public_key(
        "app_pub".into(),
        owner,
        public,
        None,
        None
    )));
    let headers = vec![];
    let req = get_request(&headers);
    let input = format!(r#"sig1=("@method" "@target-uri");created={NOW};keyid="app_pub""#);
    // The HMAC under an empty key: what a key without a secret would give.
    let dict: Dictionary = Parser::new(&input).parse().expect("input");
    let Some((_, ListEntry::InnerList(inner))) = dict.into_iter().next() else {
        panic!("an inner list");
    };
    let base = signature_base(&["@method", "@target-uri"], &inner, &req).expect("base");
    let sig = format!(
        "sig1=:{}:",
        STANDARD.encode(Hs256Key::new(b"").sign(base.as_bytes()))
    );
    let prepared =
        prepare(&input, &sig, &req, NOW, SignedRequestPolicy::default()).expect("prepared");
    assert_eq!(
        index.verify_signed_request(&prepared, NOW).err(),
        Some(AuthError::BadCredentials)
    );
}

proptest! {
    /// Whatever the two fields hold, `prepare` answers without panicking.
    #[test]
    fn any_signature_fields_are_read_or_refused(
        input in "[ -~]{0,120}",
        sig in "[ -~]{0,120}",
    ) {
        let headers = vec![("host".to_string(), "h".to_string())];
        let req = get_request(&headers);
        let _ = prepare(&input, &sig, &req, NOW, SignedRequestPolicy::default());
        let _ = content_digest_matches(&input, sig.as_bytes());
    }
}
