//! The JWT reader's tests: tokens from other signers, attacks, and the
//! fast readers held to serde's answers (property tests).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
// Tokens built independently of the code under test.
use ring::hmac;
use serde_json::{Value, json};

use super::claims::{RawClaims, claims_with_serde, read_claims};
use super::header::{
    RawHeader, USUAL_HEADERS, USUAL_HEADERS_B64, parse_fast, parse_full, read_header,
};
use super::json::is_json_object;
use super::*;
use crate::hs256::Hs256Key;

const SECRET: &[u8] = b"lksk_test-secret";

fn key() -> Hs256Key {
    Hs256Key::new(SECRET)
}

fn encode_parts(header: &serde_json::Value, claims: &serde_json::Value, secret: &[u8]) -> String {
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

/// The algorithm is the key's: a token names it, the key's verifier checks
/// it, and only the names Latchkey verifies are read.
#[test]
fn the_algorithm_is_named_by_the_header_and_checked_by_the_key() {
    assert_eq!(
        Algorithm::from_name(Algorithm::Hs256.name()),
        Some(Algorithm::Hs256)
    );
    for alg in [Algorithm::Hs256, Algorithm::Ed25519, Algorithm::Es256] {
        assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
    }
    assert_eq!(Algorithm::from_name("EdDSA"), Some(Algorithm::Ed25519));
    for other in [
        "hs256", "HS512", "none", "eddsa", "ed25519", "es256", "ES256K", "ES384", "RS256", "PS256",
        "Ed448", "",
    ] {
        assert_eq!(Algorithm::from_name(other), None, "{other}");
    }
    let t = sign_hs256(SECRET, "app_k", &json!({"scope":"app"}));
    let fast = parse_fast(t.as_bytes()).expect("fast path");
    let full = parse_full(&t).expect("full path");
    assert_eq!(fast.algorithm(), Algorithm::Hs256);
    assert_eq!(full.algorithm(), Algorithm::Hs256);
    // The index's material verifies as the bare HMAC key does.
    let material = VerifyingKey::Hs256(key());
    assert_eq!(material.algorithm(), Algorithm::Hs256);
    for parsed in [&fast, &full] {
        assert_eq!(parsed.verify_signature(&material), Ok(()));
        assert_eq!(parsed.verify_signature(&key()), Ok(()));
        let other = VerifyingKey::Hs256(Hs256Key::new(b"other secret"));
        assert_eq!(parsed.verify_signature(&other), Err(JwtError::Signature));
    }
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

/// A compact JWS over `claims` with `header`, signed by `sign`.
fn signed_with(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Public keys verify tokens of their own algorithm only: an Ed25519 key
/// takes `Ed25519` and `EdDSA`, a P-256 key `ES256`; an HS256 token whose
/// HMAC key is the public key's JWK (the classic key confusion), a token
/// naming another algorithm, and a DER-encoded ECDSA signature are refused.
#[test]
fn public_keys_verify_their_own_algorithm_only() {
    use ring::rand::SystemRandom;
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair,
    };

    use crate::jwt::PublicKey;

    let rng = SystemRandom::new();
    let claims = json!({"scope": "app"});
    let ed =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).expect("key").as_ref())
            .expect("key");
    let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())});
    let ed_key = VerifyingKey::from(PublicKey::from_jwk(&ed_jwk).expect("jwk"));
    assert_eq!(ed_key.algorithm(), Algorithm::Ed25519);
    let es_pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let es = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, es_pkcs8.as_ref(), &rng)
        .expect("key");
    let es_der = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, es_pkcs8.as_ref(), &rng)
        .expect("key");
    let point = es.public_key().as_ref();
    let es_jwk = json!({"kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
    let es_key = VerifyingKey::from(PublicKey::from_jwk(&es_jwk).expect("jwk"));
    assert_eq!(es_key.algorithm(), Algorithm::Es256);

    let ed_sign = |m: &[u8]| ed.sign(m).as_ref().to_vec();
    let es_sign = |m: &[u8]| es.sign(&rng, m).expect("sign").as_ref().to_vec();
    for name in ["Ed25519", "EdDSA"] {
        let t = signed_with(&json!({"alg": name, "kid": "app_k"}), &claims, ed_sign);
        let parsed = parse(&t).expect("parsed");
        assert_eq!(parsed.verify_signature(&ed_key), Ok(()), "{name}");
        assert_eq!(
            parsed.verify_signature(&es_key),
            Err(JwtError::Algorithm),
            "{name}"
        );
    }
    let t = signed_with(&json!({"alg": "ES256", "kid": "app_k"}), &claims, es_sign);
    let parsed = parse(&t).expect("parsed");
    assert_eq!(parsed.verify_signature(&es_key), Ok(()));
    assert_eq!(parsed.verify_signature(&ed_key), Err(JwtError::Algorithm));
    // The signature of another key, of another message, cut short.
    let other = signed_with(
        &json!({"alg": "ES256", "kid": "app_k"}),
        &json!({}),
        es_sign,
    );
    let spliced = format!(
        "{}{}",
        &t[..t.rfind('.').expect("dot")],
        &other[other.rfind('.').expect("dot")..]
    );
    assert_eq!(
        parse(&spliced).expect("parsed").verify_signature(&es_key),
        Err(JwtError::Signature)
    );
    let short = &t[..t.len() - 2];
    assert_eq!(
        parse(short).expect("parsed").verify_signature(&es_key),
        Err(JwtError::Signature)
    );
    // DER, as ring's ASN.1 signer and many libraries make it.
    let der = signed_with(&json!({"alg": "ES256", "kid": "app_k"}), &claims, |m| {
        es_der.sign(&rng, m).expect("sign").as_ref().to_vec()
    });
    assert_eq!(
        parse(&der).expect("parsed").verify_signature(&es_key),
        Err(JwtError::Signature)
    );
    // Key confusion: HS256 under the public key's JWK text, or its bytes.
    for hmac_key in [
        ed_jwk.to_string().into_bytes(),
        ed.public_key().as_ref().to_vec(),
    ] {
        let t = signed_with(&json!({"alg": "HS256", "kid": "app_k"}), &claims, |m| {
            Hs256Key::new(&hmac_key).sign(m).to_vec()
        });
        assert_eq!(
            parse(&t).expect("parsed").verify_signature(&ed_key),
            Err(JwtError::Algorithm)
        );
    }
    // And an HS256 key never takes a public-key token.
    let t = signed_with(&json!({"alg": "EdDSA", "kid": "app_k"}), &claims, ed_sign);
    assert_eq!(
        parse(&t).expect("parsed").verify_signature(&key()),
        Err(JwtError::Algorithm)
    );
}
