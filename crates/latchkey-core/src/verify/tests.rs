//! The verification path's tests: every kind of credential, the policies,
//! and the fast paths held to the general path's answers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;
use crate::crypto::sha256;
use crate::ids::new_id;
use crate::secret::{KEY_SECRET_PREFIX, generate};
use proptest::prelude::*;
use ring::rand::SystemRandom;
use serde_json::json;

struct Fixture {
    index: KeyIndex,
    app_key: String,
    app_secret: String,
    svc_key: String,
    svc_secret: String,
    op_token: String,
    vf_token: String,
}

fn fixture() -> Fixture {
    let rng = SystemRandom::new();
    let index = KeyIndex::new();
    index.insert_account("acc_A");
    index.insert_app("ap_1", "acc_A");
    index.insert_service_account("sa_1", "acc_A");
    let app_key = new_id(&rng, IdKind::AppKey);
    let app_secret = generate(&rng, KEY_SECRET_PREFIX).expose().to_string();
    index.insert_key(LiveKey::new(
        app_key.clone(),
        KeyOwner::App {
            account_id: "acc_A".into(),
            app_id: "ap_1".into(),
        },
        app_secret.as_bytes(),
        None,
        None,
    ));
    let svc_key = new_id(&rng, IdKind::ServiceAccountKey);
    let svc_secret = generate(&rng, KEY_SECRET_PREFIX).expose().to_string();
    index.insert_key(LiveKey::new(
        svc_key.clone(),
        KeyOwner::ServiceAccount {
            account_id: "acc_A".into(),
            service_account_id: "sa_1".into(),
        },
        svc_secret.as_bytes(),
        None,
        None,
    ));
    let op_token = generate(&rng, OPERATOR_TOKEN_PREFIX).expose().to_string();
    index.insert_operator_token("op_1", sha256(op_token.as_bytes()));
    let vf_token = generate(&rng, VERIFIER_TOKEN_PREFIX).expose().to_string();
    index.insert_verifier_token("vt_1", sha256(vf_token.as_bytes()));
    Fixture {
        index,
        app_key,
        app_secret,
        svc_key,
        svc_secret,
        op_token,
        vf_token,
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

const NOW: i64 = 1_800_000_000;

fn verify(f: &Fixture, header: &str) -> Result<Verified, AuthError> {
    f.index
        .verify_authorization(Some(header.as_bytes()), NOW, VerifyOptions::default())
}

#[test]
fn claims_count_only_after_the_signature() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let f = fixture();
    let token = |kid: &str, secret: &str, payload: &str| {
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = crate::hs256::Hs256Key::new(secret.as_bytes()).sign(input.as_bytes());
        format!("Bearer {input}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    let payloads = [
        "not json",
        "[]",
        r#"{"scope":1}"#,
        r#"{"scope":"app","exp":"soon"}"#,
        r#"{"scope":"app","exp":1}"#,
        r#"{"scope":"app","nbf":99999999999}"#,
        r#"{"scope":"account"}"#,
        r#"{"userId":"a"}"#,
        r#"{"scope":"app","scope":"app"}"#,
    ];
    for payload in payloads {
        let good = verify(&f, &token(&f.app_key, &f.app_secret, payload)).err();
        assert!(good.is_some(), "{payload}");
        assert_ne!(good, Some(AuthError::BadSignature), "{payload}");
        assert_eq!(
            verify(&f, &token(&f.app_key, &f.svc_secret, payload)).err(),
            Some(AuthError::BadSignature),
            "{payload}"
        );
        assert_eq!(
            verify(&f, &token("app_unknown", &f.app_secret, payload)).err(),
            Some(AuthError::UnknownKid),
            "{payload}"
        );
    }
    assert!(f.index.set_key_expiry(&f.app_key, Some(NOW)));
    for payload in payloads {
        assert_eq!(
            verify(&f, &token(&f.app_key, &f.app_secret, payload)).err(),
            Some(AuthError::UnknownKid),
            "{payload}"
        );
    }
}

#[test]
fn basic_gives_app_and_account_scope() {
    let f = fixture();
    let v = verify(&f, &basic(&f.app_key, &f.app_secret)).expect("app key");
    assert!(matches!(v.principal, Principal::App { .. }));
    assert_eq!(v.principal.key_id(), Some(f.app_key.as_str()));
    let key = f.index.key(&f.app_key).expect("key");
    assert_eq!(key.last_used_at(), Some(NOW));
    let v = verify(&f, &basic(&f.svc_key, &f.svc_secret)).expect("svc key");
    assert!(matches!(v.principal, Principal::ServiceAccount { .. }));
    assert_eq!(
        verify(&f, &basic(&f.app_key, &f.svc_secret)).err(),
        Some(AuthError::BadCredentials)
    );
    assert_eq!(
        verify(&f, &basic("app_nope", &f.app_secret)).err(),
        Some(AuthError::MalformedKeyId)
    );
    assert!(matches!(
        verify(&f, &basic(&f.app_key, "lksk_short")).err(),
        Some(AuthError::MalformedSecret(_))
    ));
    assert_eq!(
        verify(&f, "Basic !!!").err(),
        Some(AuthError::MalformedBasic)
    );
    assert_eq!(verify(&f, "Digest x").err(), Some(AuthError::Scheme));
}

#[test]
fn jwt_scopes_follow_the_key_kind() {
    let f = fixture();
    let sign = |kid: &str, secret: &str, claims: serde_json::Value| {
        format!(
            "Bearer {}",
            jwt::sign_hs256(secret.as_bytes(), kid, &claims)
        )
    };
    let v = verify(
        &f,
        &sign(
            &f.app_key,
            &f.app_secret,
            json!({"scope":"appUser","userId":"alice"}),
        ),
    )
    .expect("appUser");
    assert!(
        matches!(v.principal, Principal::AppUser { ref external_id, .. } if external_id == "alice")
    );
    let v = verify(&f, &sign(&f.app_key, &f.app_secret, json!({"scope":"app"}))).expect("app");
    assert!(matches!(v.principal, Principal::App { .. }));
    let v = verify(
        &f,
        &sign(&f.svc_key, &f.svc_secret, json!({"scope":"account"})),
    )
    .expect("account");
    assert!(matches!(v.principal, Principal::ServiceAccount { .. }));
    for (kid, secret, claims) in [
        (&f.app_key, &f.app_secret, json!({"scope":"account"})),
        (&f.svc_key, &f.svc_secret, json!({"scope":"app"})),
        (
            &f.svc_key,
            &f.svc_secret,
            json!({"scope":"appUser","userId":"a"}),
        ),
        (&f.app_key, &f.app_secret, json!({"scope":"admin"})),
    ] {
        assert!(matches!(
            verify(&f, &sign(kid, secret, claims)).err(),
            Some(AuthError::ScopeNotAllowed(_))
        ));
    }
    assert_eq!(
        verify(&f, &sign(&f.app_key, &f.app_secret, json!({"userId":"a"}))).err(),
        Some(AuthError::MissingScope)
    );
    // Signed by the svc secret but naming the app key.
    assert!(matches!(
        verify(&f, &sign(&f.app_key, &f.svc_secret, json!({"scope":"app"}))).err(),
        Some(AuthError::BadSignature)
    ));
    assert_eq!(
        verify(
            &f,
            &sign("app_unknown", &f.app_secret, json!({"scope":"app"}))
        )
        .err(),
        Some(AuthError::UnknownKid)
    );
}

#[test]
fn exp_and_nbf_with_leeway() {
    let f = fixture();
    let sign = |claims: serde_json::Value| {
        format!(
            "Bearer {}",
            jwt::sign_hs256(f.app_secret.as_bytes(), &f.app_key, &claims)
        )
    };
    assert!(verify(&f, &sign(json!({"scope":"app","exp": NOW - 10}))).is_ok());
    assert_eq!(
        verify(&f, &sign(json!({"scope":"app","exp": NOW - 31}))).err(),
        Some(AuthError::TokenExpired)
    );
    assert_eq!(AuthError::TokenExpired.code(), "token_expired");
    assert!(verify(&f, &sign(json!({"scope":"app","nbf": NOW + 10}))).is_ok());
    assert_eq!(
        verify(&f, &sign(json!({"scope":"app","nbf": NOW + 31}))).err(),
        Some(AuthError::NotYetValid)
    );
}

#[test]
fn app_token_ttl_policy() {
    let f = fixture();
    let sign = |claims: serde_json::Value| {
        format!(
            "Bearer {}",
            jwt::sign_hs256(f.app_secret.as_bytes(), &f.app_key, &claims)
        )
    };
    let no_exp = sign(json!({"scope":"app"}));
    assert!(verify(&f, &no_exp).is_ok(), "no policy: no exp needed");
    f.index.set_app_token_ttl("ap_1", Some(600));
    assert_eq!(
        verify(&f, &no_exp).err(),
        Some(AuthError::TokenTooLong(600))
    );
    let ok = sign(json!({"scope":"app","iat": NOW, "exp": NOW + 600}));
    assert!(verify(&f, &ok).is_ok());
    let long = sign(json!({"scope":"app","iat": NOW, "exp": NOW + 601}));
    assert_eq!(verify(&f, &long).err(), Some(AuthError::TokenTooLong(600)));
    let future_iat = sign(json!({"scope":"app","iat": NOW + 86_400, "exp": NOW + 86_400 + 600}));
    assert_eq!(
        verify(&f, &future_iat).err(),
        Some(AuthError::TokenTooLong(600))
    );
    let backwards = sign(json!({"scope":"app","iat": NOW + 7200, "exp": NOW + 3600}));
    assert_eq!(
        verify(&f, &backwards).err(),
        Some(AuthError::TokenTooLong(600))
    );
    let long_no_iat = sign(json!({"scope":"app","exp": NOW + 3600}));
    assert_eq!(
        verify(&f, &long_no_iat).err(),
        Some(AuthError::TokenTooLong(600))
    );
    // Basic is not a JWT: the policy does not apply.
    assert!(verify(&f, &basic(&f.app_key, &f.app_secret)).is_ok());
    f.index.set_app_token_ttl("ap_1", None);
    assert!(verify(&f, &no_exp).is_ok());
}

#[test]
fn rotation_shortens_a_live_key() {
    let f = fixture();
    let header = basic(&f.app_key, &f.app_secret);
    assert!(f.index.set_key_expiry(&f.app_key, Some(NOW + 10)));
    assert!(verify(&f, &header).is_ok());
    assert!(
        f.index
            .verify_authorization(Some(header.as_bytes()), NOW + 10, VerifyOptions::default())
            .is_err()
    );
}

#[test]
fn removed_and_expired_keys_stop_at_once() {
    let f = fixture();
    let token = format!(
        "Bearer {}",
        jwt::sign_hs256(f.app_secret.as_bytes(), &f.app_key, &json!({"scope":"app"}))
    );
    assert!(verify(&f, &token).is_ok());
    f.index.remove_key(&f.app_key);
    assert_eq!(verify(&f, &token).err(), Some(AuthError::UnknownKid));
    assert_eq!(
        verify(&f, &basic(&f.app_key, &f.app_secret)).err(),
        Some(AuthError::BadCredentials)
    );
}

#[test]
fn operator_token() {
    let f = fixture();
    let v = verify(&f, &format!("Bearer {}", f.op_token)).expect("operator");
    assert!(v.principal.is_operator());
    let mut wrong = f.op_token.clone();
    wrong.replace_range(6..7, if &wrong[6..7] == "a" { "b" } else { "a" });
    assert!(verify(&f, &format!("Bearer {wrong}")).is_err());
}

#[test]
fn verifier_token() {
    let f = fixture();
    let v = verify(&f, &format!("Bearer {}", f.vf_token)).expect("verifier");
    assert_eq!(
        v.principal,
        Principal::Verifier {
            token_id: "vt_1".into()
        }
    );
    assert_eq!((v.expires_at, v.issued_at), (None, None));
    // Optional whitespace around the value is not part of it.
    assert!(verify(&f, &format!("\tBearer {}  ", f.vf_token)).is_ok());
    let rng = SystemRandom::new();
    let unknown = generate(&rng, VERIFIER_TOKEN_PREFIX);
    assert_eq!(
        verify(&f, &format!("Bearer {}", unknown.expose())).err(),
        Some(AuthError::BadVerifierToken)
    );
    let mut typo = f.vf_token.clone();
    typo.replace_range(8..9, if &typo[8..9] == "a" { "b" } else { "a" });
    assert_eq!(
        verify(&f, &format!("Bearer {typo}")).err(),
        Some(AuthError::MalformedSecret(SecretFormatError::Checksum))
    );
    // The operator token is not a verifier token, nor the reverse.
    let as_operator = format!("Bearer lkop_{}", &f.vf_token[5..]);
    assert!(verify(&f, &as_operator).is_err());
    // Deleted: refused at once.
    assert!(f.index.remove_verifier_token("vt_1"));
    assert_eq!(
        verify(&f, &format!("Bearer {}", f.vf_token)).err(),
        Some(AuthError::BadVerifierToken)
    );
}

#[test]
fn verified_credentials_carry_their_times() {
    let f = fixture();
    let sign = |claims: serde_json::Value| {
        format!(
            "Bearer {}",
            jwt::sign_hs256(f.app_secret.as_bytes(), &f.app_key, &claims)
        )
    };
    let v = verify(
        &f,
        &sign(json!({"scope":"app","iat": NOW - 5, "exp": NOW + 60})),
    )
    .expect("jwt");
    assert_eq!((v.expires_at, v.issued_at), (Some(NOW + 60), Some(NOW - 5)));
    let v = verify(&f, &sign(json!({"scope":"app"}))).expect("jwt");
    assert_eq!((v.expires_at, v.issued_at), (None, None));
    let v = verify(&f, &basic(&f.app_key, &f.app_secret)).expect("basic");
    assert_eq!((v.expires_at, v.issued_at), (None, None));
    // A key that expires first ends the JWT's life first.
    assert!(f.index.set_key_expiry(&f.app_key, Some(NOW + 30)));
    let v = verify(&f, &sign(json!({"scope":"app","exp": NOW + 60}))).expect("jwt");
    assert_eq!(v.expires_at, Some(NOW + 30));
    let v = verify(&f, &sign(json!({"scope":"app","exp": NOW + 10}))).expect("jwt");
    assert_eq!(v.expires_at, Some(NOW + 10));
    let v = verify(&f, &basic(&f.app_key, &f.app_secret)).expect("basic");
    assert_eq!(v.expires_at, Some(NOW + 30));
}

#[test]
fn basic_fast_and_full_paths_agree() {
    let f = fixture();
    // A key whose id is not a well-formed key id gets no fast path and
    // is refused by the full one, as before.
    f.index.insert_key(LiveKey::new(
        "app_1".into(),
        KeyOwner::App {
            account_id: "acc_A".into(),
            app_id: "ap_1".into(),
        },
        f.app_secret.as_bytes(),
        None,
        None,
    ));
    assert_eq!(
        verify(&f, &basic("app_1", &f.app_secret)).err(),
        Some(AuthError::MalformedKeyId)
    );
    // Optional whitespace around the value is not part of it, on both
    // paths.
    let header = format!(" {} \t", basic(&f.app_key, &f.app_secret));
    assert!(verify(&f, &header).is_ok());
    // Another key's secret, a one-character change (checksum) and an
    // expired key are refused with the full path's reasons.
    assert_eq!(
        verify(&f, &basic(&f.app_key, &f.svc_secret)).err(),
        Some(AuthError::BadCredentials)
    );
    let mut typo = f.app_secret.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    assert!(matches!(
        verify(&f, &basic(&f.app_key, &typo)).err(),
        Some(AuthError::MalformedSecret(SecretFormatError::Checksum))
    ));
    f.index.set_key_expiry(&f.app_key, Some(NOW));
    assert_eq!(
        verify(&f, &basic(&f.app_key, &f.app_secret)).err(),
        Some(AuthError::BadCredentials)
    );
}

/// One fixture for a whole property test.
fn shared() -> &'static Fixture {
    static SHARED: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    SHARED.get_or_init(fixture)
}

/// A verification's outcome, comparable.
fn outcome(
    r: Result<Verified, AuthError>,
) -> Result<(Principal, Option<i64>, Option<i64>), AuthError> {
    r.map(|v| (v.principal, v.expires_at, v.issued_at))
}

/// Headers near the common forms: valid Basic and JWT credentials of
/// the fixture's keys with a few bytes changed (any byte, non-ASCII
/// and invalid UTF-8 included), spaces or text added, parts cut.
fn near_headers(f: &Fixture) -> impl Strategy<Value = Vec<u8>> {
    let sign = |secret: &str, kid: &str, claims: serde_json::Value| {
        format!(
            "Bearer {}",
            jwt::sign_hs256(secret.as_bytes(), kid, &claims)
        )
    };
    let valid = vec![
        basic(&f.app_key, &f.app_secret),
        basic(&f.svc_key, &f.svc_secret),
        sign(
            &f.app_secret,
            &f.app_key,
            json!({"scope":"app","exp": NOW + 60}),
        ),
        sign(
            &f.app_secret,
            &f.app_key,
            json!({"scope":"appUser","userId":"alice"}),
        ),
        sign(&f.svc_secret, &f.svc_key, json!({"scope":"account"})),
        sign(&f.svc_secret, &f.svc_key, json!({"scope":"app"})),
        sign(
            &f.app_secret,
            &f.app_key,
            json!({"scope":"app","exp": NOW - 60}),
        ),
        format!("Bearer {}", f.op_token),
        format!("Bearer {}", f.vf_token),
    ];
    (
        proptest::sample::select(valid),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        prop_oneof![
            6 => Just(String::new()),
            1 => Just(" ".to_string()),
            1 => Just("\t".to_string()),
            1 => Just("\u{a0}".to_string()),
            1 => Just(".x".to_string()),
        ],
        any::<bool>(),
        0usize..3,
    )
        .prop_map(|(header, changes, suffix, upper, cut)| {
            let mut bytes = header.into_bytes();
            if upper {
                bytes[..6].make_ascii_uppercase();
            }
            for (at, b) in changes {
                let at = at % bytes.len();
                bytes[at] = b;
            }
            bytes.truncate(bytes.len() - cut);
            bytes.extend_from_slice(suffix.as_bytes());
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The byte-level fast paths answer exactly as the general path.
    #[test]
    fn common_forms_are_answered_as_the_general_path_would(header in near_headers(shared())) {
        let index = &shared().index;
        let opts = VerifyOptions::default();
        prop_assert_eq!(
            outcome(index.verify_authorization(Some(&header), NOW, opts)),
            outcome(index.verify_general(trim_ows(&header), NOW, opts))
        );
    }

    /// Spaces and tabs before and after a header's value change
    /// nothing, for every scheme and every outcome; any other
    /// whitespace around a good credential is refused.
    #[test]
    fn optional_whitespace_around_the_value_changes_nothing(
        header in near_headers(shared()),
        before in "[ \t]{0,3}",
        after in "[ \t]{0,3}",
        other in prop::sample::select(vec!["\n", "\r\n", "\u{a0}", "\u{c}", "\u{b}"]),
        other_after in any::<bool>(),
    ) {
        let index = &shared().index;
        let opts = VerifyOptions::default();
        let bare = trim_ows(&header).to_vec();
        let padded = [before.as_bytes(), &bare, after.as_bytes()].concat();
        let answer = outcome(index.verify_authorization(Some(&bare), NOW, opts));
        prop_assert_eq!(
            outcome(index.verify_authorization(Some(&padded), NOW, opts)),
            answer.clone()
        );
        if answer.is_ok() {
            let mut odd = bare.clone();
            if other_after {
                odd.extend_from_slice(other.as_bytes());
            } else {
                odd.splice(0..0, other.bytes());
            }
            prop_assert!(index.verify_authorization(Some(&odd), NOW, opts).is_err());
        }
    }
}

proptest! {
    #[test]
    fn is_ascii_is_the_standard_one(bytes in proptest::collection::vec(any::<u8>(), 0..300), high in 0usize..300) {
        let mut bytes = bytes;
        let ascii: Vec<u8> = bytes.iter().map(|b| b & 0x7F).collect();
        prop_assert!(is_ascii(&ascii));
        if let Some(b) = bytes.get_mut(high) {
            *b |= 0x80;
        }
        prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
    }

    #[test]
    fn arbitrary_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let f = fixture();
        let _ = f.index.verify_authorization(Some(&bytes), NOW, VerifyOptions::default());
    }

    #[test]
    fn arbitrary_basic_payloads_are_refused(payload in ".{0,120}") {
        let f = fixture();
        let header = format!("Basic {}", STANDARD.encode(&payload));
        prop_assert!(verify(&f, &header).is_err());
    }

    #[test]
    fn scheme_is_case_insensitive(upper in proptest::bool::ANY) {
        let f = fixture();
        let scheme = if upper { "BASIC" } else { "basic" };
        let header = format!("{scheme} {}", STANDARD.encode(format!("{}:{}", f.app_key, f.app_secret)));
        prop_assert!(verify(&f, &header).is_ok());
    }
}
