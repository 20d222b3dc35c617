//! The index's tests: owners and their keys, usage flushes and reloads,
//! a key's size and secret.

use super::live_key::KeySecret;
use super::usage::REPLACE_CHUNK;
use super::*;
use crate::crypto::sha256;
use crate::hs256::Hs256Key;
use crate::secret::KEY_SECRET_PREFIX;

fn app_key(id: &str, app: &str, account: &str) -> LiveKey {
    LiveKey::new(
        id.into(),
        KeyOwner::App {
            account_id: account.into(),
            app_id: app.into(),
        },
        b"secret",
        None,
        None,
    )
}

#[test]
fn deleting_an_app_or_account_drops_its_keys() {
    let index = KeyIndex::new();
    index.insert_account("acc_A");
    index.insert_app("ap_1", "acc_A");
    index.insert_app("ap_2", "acc_A");
    index.insert_key(app_key("app_1", "ap_1", "acc_A"));
    index.insert_key(app_key("app_2", "ap_2", "acc_A"));
    index.insert_service_account("sa_1", "acc_A");
    index.grant("sa_1", "ap_1");
    assert!(index.service_account_reaches("sa_1", "ap_1"));
    index.remove_app("ap_1");
    assert!(index.key("app_1").is_none());
    assert!(index.key("app_2").is_some());
    assert!(!index.service_account_reaches("sa_1", "ap_1"));
    index.remove_account("acc_A");
    assert_eq!(index.key_count(), 0);
    assert!(index.app_account("ap_2").is_none());
}

#[test]
fn last_used_is_flushed_once_per_change() {
    let index = KeyIndex::new();
    index.insert_account("acc_A");
    index.insert_app("ap_1", "acc_A");
    index.insert_key(app_key("app_1", "ap_1", "acc_A"));
    assert!(index.take_unflushed_last_used().is_empty());
    let touch = |now| index.with_key(b"app_1", |key| key.touch(now));
    touch(100);
    touch(90);
    assert_eq!(
        index.take_unflushed_last_used(),
        vec![("app_1".to_string(), 100)]
    );
    assert!(index.take_unflushed_last_used().is_empty());
    touch(200);
    let batch = index.take_unflushed_last_used();
    index.unflush(&batch);
    assert_eq!(
        index.take_unflushed_last_used(),
        vec![("app_1".to_string(), 200)]
    );
}

#[test]
fn a_reload_keeps_usage_not_yet_stored() {
    let fresh_index = |store_last_used: &[(&str, Option<i64>)]| {
        let index = KeyIndex::new();
        index.insert_account("acc_A");
        index.insert_app("ap_1", "acc_A");
        for (id, last) in store_last_used {
            let mut key = app_key(id, "ap_1", "acc_A");
            key = LiveKey::new(key.id.to_string(), key.owner, b"s", None, *last);
            assert!(index.insert_key(key));
        }
        index
    };
    // More used keys than one chunk of the carry-over.
    let many: Vec<String> = (0..REPLACE_CHUNK + 10)
        .map(|i| format!("app_{i}"))
        .collect();
    let mut ids: Vec<(&str, Option<i64>)> = many.iter().map(|id| (id.as_str(), None)).collect();
    ids.extend([("app_old", None), ("app_stored", Some(50))]);
    let index = fresh_index(&ids);
    let touch = |id: &str, now| index.with_key(id.as_bytes(), |key| key.touch(now));
    for id in &many {
        touch(id, 70);
    }
    touch("app_old", 100);
    // Older than what the store has: nothing to flush.
    touch("app_stored", 40);
    assert_eq!(index.take_unflushed_last_used().len(), many.len() + 1);
    touch("app_stored", 60);

    // The reload: `app_old` is gone from the store, `app_new` is new,
    // `app_stored` has 50 there (older than its use here at 60).
    let mut reloaded: Vec<(&str, Option<i64>)> =
        many.iter().map(|id| (id.as_str(), Some(20))).collect();
    reloaded.extend([("app_stored", Some(50)), ("app_new", Some(30))]);
    index.replace_with(fresh_index(&reloaded));

    assert!(!index.contains_key("app_old"));
    assert_eq!(index.key_last_used("app_new"), Some(30));
    assert_eq!(index.key_last_used("app_stored"), Some(60));
    assert!(many.iter().all(|id| index.key_last_used(id) == Some(70)));
    // Usage the store lacks is flushed again; the rest is not.
    let mut unflushed = index.take_unflushed_last_used();
    unflushed.sort();
    let mut expected: Vec<(String, i64)> = many.iter().map(|id| (id.clone(), 70)).collect();
    expected.push(("app_stored".to_string(), 60));
    expected.sort();
    assert_eq!(unflushed, expected);
}

#[test]
fn keys_of_deleted_owners_are_not_added() {
    let index = KeyIndex::new();
    assert!(!index.insert_app("ap_1", "acc_A"), "no such account");
    index.insert_account("acc_A");
    assert!(index.insert_app("ap_1", "acc_A"));
    assert!(
        !index.insert_key(app_key("app_1", "ap_1", "acc_B")),
        "wrong account"
    );
    index.remove_app("ap_1");
    // A create that committed before the delete but indexes after it.
    assert!(!index.insert_key(app_key("app_1", "ap_1", "acc_A")));
    assert_eq!(index.key_count(), 0);
    assert!(index.insert_service_account("sa_1", "acc_A"));
    assert!(!index.grant("sa_1", "ap_1"), "deleted app");
    index.remove_account("acc_A");
    assert!(!index.insert_service_account("sa_2", "acc_A"));
}

#[test]
#[cfg(target_pointer_width = "64")]
fn a_live_key_stays_small() {
    // The table holds keys inline (`table.rs`): a slot is a `LiveKey`
    // and a tag byte, and the table is 70 to 87.5% full, so with 10^6
    // keys every 8 bytes of a key are up to 11 MB. 320 bytes now (the
    // verifying key is 128 of them: HS256's 120-byte state and the tag
    // that tells it from a public key, issue 22; the id 32, the pointer
    // to a key's policy 8): at most 459 bytes of table per key, within
    // issue 6's 512.
    let slot = std::mem::size_of::<LiveKey>() + 1;
    assert!(slot <= 321, "{slot}");
}

#[test]
fn a_well_formed_secret_is_kept_once_and_still_matches_and_signs() {
    let rng = ring::rand::SystemRandom::new();
    let id = crate::ids::new_id(&rng, crate::ids::IdKind::AppKey);
    let secret = crate::secret::generate(&rng, KEY_SECRET_PREFIX);
    let secret = secret.expose().as_bytes();
    let owner = KeyOwner::App {
        account_id: "acc_A".into(),
        app_id: "ap_1".into(),
    };
    let key = LiveKey::new(id.clone(), owner, secret, None, None);
    assert!(matches!(key.secret, KeySecret::Basic(_)));
    assert!(key.secret_matches(secret));
    let mut other = secret.to_vec();
    other[10] ^= 1;
    assert!(!key.secret_matches(&other));
    assert!(!key.secret_matches(&secret[1..]));
    let claims = serde_json::json!({"scope": "app"});
    assert_eq!(
        key.sign_jwt(&claims),
        Some(crate::jwt::sign_hs256(secret, &id, &claims))
    );
    // Anything else is kept as it is.
    let raw = app_key("app_1", "ap_1", "acc_A");
    assert!(matches!(raw.secret, KeySecret::Raw(_)));
    assert!(raw.secret_matches(b"secret"));
    assert!(!raw.secret_matches(b"secreT"));
}

#[test]
fn expiry_without_an_option() {
    let index = KeyIndex::new();
    index.insert_account("acc_A");
    index.insert_app("ap_1", "acc_A");
    let key = app_key("app_1", "ap_1", "acc_A");
    assert_eq!(key.expires_at(), None);
    assert!(!key.is_expired(i64::MAX - 1));
    assert!(index.insert_key(key));
    index.with_key(b"app_1", |k| k.touch(50));
    assert!(index.set_key_expiry("app_1", Some(100)));
    let key = index.key("app_1").expect("live");
    assert_eq!(key.expires_at(), Some(100));
    assert!(!key.is_expired(99));
    assert!(key.is_expired(100));
    assert_eq!(key.last_used_at(), Some(50), "usage survives a new expiry");
    assert!(index.set_key_expiry("app_1", None));
    assert!(index.key("app_1").expect("live").expires_at().is_none());
    assert!(!index.set_key_expiry("app_2", None));
}

#[test]
fn a_blank_key_holds_no_secret_and_matches_nothing() {
    let blank = LiveKey::blank();
    assert!(matches!(&blank.secret, KeySecret::Basic(zeros) if zeros.iter().all(|&b| b == 0)));
    assert_eq!(
        blank.hmac_key().expect("hs256").sign(b"input"),
        Hs256Key::new(b"").sign(b"input"),
        "the empty key's state, which is public"
    );
    // Never found: the table looks keys up by tag, and no key id is empty.
    assert!(blank.id.is_empty());
}

#[test]
fn operator_tokens_match_by_hash() {
    let index = KeyIndex::new();
    index.insert_operator_token("op_1", sha256(b"lkop_abc"));
    assert_eq!(index.operator_token_id("lkop_abc").as_deref(), Some("op_1"));
    assert_eq!(index.operator_token_id("lkop_abd"), None);
}

#[test]
fn verifier_tokens_match_by_hash_until_removed() {
    let index = KeyIndex::new();
    index.insert_operator_token("op_1", sha256(b"lkop_abc"));
    index.insert_verifier_token("vt_1", sha256(b"lkvf_abc"));
    index.insert_verifier_token("vt_2", sha256(b"lkvf_def"));
    assert_eq!(index.verifier_token_id("lkvf_abc").as_deref(), Some("vt_1"));
    assert_eq!(index.verifier_token_id("lkvf_def").as_deref(), Some("vt_2"));
    assert_eq!(index.verifier_token_id("lkvf_abd"), None);
    // The two kinds of token are kept apart.
    assert_eq!(index.verifier_token_id("lkop_abc"), None);
    assert_eq!(index.operator_token_id("lkvf_abc"), None);
    // Inserting again (a follower reloading it) keeps one entry.
    index.insert_verifier_token("vt_1", sha256(b"lkvf_abc"));
    assert!(index.remove_verifier_token("vt_1"));
    assert!(!index.remove_verifier_token("vt_1"));
    assert!(!index.contains_verifier_token("vt_1"));
    assert_eq!(index.verifier_token_id("lkvf_abc"), None);
    assert!(index.contains_verifier_token("vt_2"));
}
