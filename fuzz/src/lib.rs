//! What the fuzz targets share: an index seeded with keys and tokens of
//! every kind, the checks that the fast verification paths answer as the
//! general ones, and an ordered view of a JSON object (serde_json's own
//! reading of it) to hold the hand-written readers to.

use std::borrow::Cow;
use std::sync::LazyLock;

use latchkey_core::crypto::sha256;
use latchkey_core::fuzzing::{secret_with_checksum, verify_common, verify_general};
use latchkey_core::secret::{KEY_SECRET_PREFIX, OPERATOR_TOKEN_PREFIX, VERIFIER_TOKEN_PREFIX};
use latchkey_core::verify::{MAX_HEADER_LEN, trim_ows};
use latchkey_core::{AppPolicy, AuthError, KeyIndex, KeyOwner, LiveKey, Verified, VerifyOptions};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The time every verification runs at.
pub const NOW: i64 = 1_800_000_000;

/// A key of the fixture: its id and secret.
#[derive(Debug)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

/// The seeded index and what it holds.
#[derive(Debug)]
pub struct Fixture {
    pub index: KeyIndex,
    /// An app key, a key of an app whose tokens live at most an hour, a
    /// service account's, a user account's, an expired app key, and a key
    /// whose secret is not in Latchkey's format (imported keys).
    pub keys: Vec<Key>,
    pub operator_token: String,
    pub verifier_token: String,
}

/// A base62 body of 22 characters for ids, 43 for secrets, from `seed`.
fn body(seed: u8, len: usize) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|i| char::from(BASE62[(usize::from(seed) * 7 + i * 13) % 62]))
        .collect()
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let index = KeyIndex::new();
    index.insert_account("acc_A");
    index.insert_app("ap_1", "acc_A");
    index.insert_app("ap_2", "acc_A");
    index.set_app_policy(
        "ap_2",
        AppPolicy {
            max_token_ttl: Some(3600),
            allowed_origins: Some(vec!["https://example.com".into()]),
            block_browser_secrets: true,
            default_key_ratelimit: None,
        },
    );
    index.insert_service_account("sa_1", "acc_A");
    index.grant("sa_1", "ap_1");
    let app = |app_id: &str| KeyOwner::App {
        account_id: "acc_A".into(),
        app_id: app_id.into(),
    };
    let owners: [(&str, KeyOwner, Option<i64>); 6] = [
        ("app_", app("ap_1"), None),
        ("app_", app("ap_2"), Some(NOW + 86_400)),
        (
            "svc_",
            KeyOwner::ServiceAccount {
                account_id: "acc_A".into(),
                service_account_id: "sa_1".into(),
            },
            None,
        ),
        (
            "act_",
            KeyOwner::UserAccount {
                account_id: "acc_A".into(),
                user_account_id: "ua_1".into(),
            },
            None,
        ),
        ("app_", app("ap_1"), Some(NOW - 10)),
        ("app_", app("ap_1"), None),
    ];
    let mut keys = Vec::new();
    for (n, (prefix, owner, expires)) in owners.into_iter().enumerate() {
        let seed = u8::try_from(n).expect("few keys");
        let id = format!("{prefix}{}", body(seed, 22));
        let secret = if n == 5 {
            "an imported secret".to_string()
        } else {
            secret_with_checksum(KEY_SECRET_PREFIX, &body(seed + 10, 43))
        };
        assert!(index.insert_key(LiveKey::new(
            id.clone(),
            owner,
            secret.as_bytes(),
            expires,
            None
        )));
        keys.push(Key { id, secret });
    }
    let operator_token = secret_with_checksum(OPERATOR_TOKEN_PREFIX, &body(40, 43));
    index.insert_operator_token("op_1", sha256(operator_token.as_bytes()));
    let verifier_token = secret_with_checksum(VERIFIER_TOKEN_PREFIX, &body(41, 43));
    index.insert_verifier_token("vt_1", sha256(verifier_token.as_bytes()));
    Fixture {
        index,
        keys,
        operator_token,
        verifier_token,
    }
});

/// Whether two outcomes of verification are the same.
pub fn same_outcome(a: &Result<Verified, AuthError>, b: &Result<Verified, AuthError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            a.principal == b.principal && a.expires_at == b.expires_at && a.issued_at == b.issued_at
        }
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

/// Verifies `header` against the fixture and checks what the verification
/// path promises: the fast path, where it answers, answers as the general
/// path does; optional whitespace around the value changes nothing.
pub fn verify_and_check(header: &[u8]) -> Result<Verified, AuthError> {
    let f = &*FIXTURE;
    let opts = VerifyOptions::default();
    let answer = f.index.verify_authorization(Some(header), NOW, opts);
    let trimmed = trim_ows(header);
    if trimmed.len() <= MAX_HEADER_LEN {
        let general = verify_general(&f.index, trimmed, NOW, opts);
        if let Some(fast) = verify_common(&f.index, trimmed, NOW, opts) {
            assert!(
                same_outcome(&fast, &general),
                "fast path {fast:?}, general path {general:?}"
            );
        }
        assert!(
            same_outcome(&answer, &general),
            "verify_authorization {answer:?}, general path {general:?}"
        );
    }
    let mut padded = b" \t".to_vec();
    padded.extend_from_slice(header);
    padded.extend_from_slice(b"\t ");
    let again = f.index.verify_authorization(Some(&padded), NOW, opts);
    assert!(same_outcome(&answer, &again), "{answer:?} / {again:?}");
    answer
}

/// A member name as serde_json read it, and whether it had escapes
/// (serde_json lends the input's text only for a string without them).
#[derive(Debug)]
pub struct Name<'a> {
    pub text: Cow<'a, str>,
    pub escaped: bool,
}

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name {
                    text: Cow::Borrowed(v),
                    escaped: false,
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name {
                    text: Cow::Owned(v.to_string()),
                    escaped: true,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object's members as serde_json reads them: in order,
/// duplicates kept, each value as the text it was written as.
#[derive(Debug)]
pub struct Members<'a>(pub Vec<(Name<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<Name<'de>, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Splits `data` at each 0xFF byte (never part of UTF-8 text) into at
/// most `n` pieces; missing pieces are empty.
pub fn pieces(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0xFF).collect();
    out.resize(n, &[]);
    out
}
