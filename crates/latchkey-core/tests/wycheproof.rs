//! Project Wycheproof's HMAC-SHA256 vectors against `hs256.rs`, the MAC
//! every JWT signature goes through.
//!
//! What each vector means, and so what is asserted:
//!
//! - A `valid` vector with a 256-bit tag is the HMAC of its message under
//!   its key: `Hs256Key::sign` must produce it and `Hs256Key::verify` must
//!   accept it.
//! - A `valid` vector with a 128-bit tag (Wycheproof's truncated HMAC) is
//!   the leftmost half of that HMAC. Our MAC must agree (the first 16 bytes
//!   of `sign`), but our verifier takes only whole 32-byte tags (HS256, RFC
//!   7518 §3.2), so it must refuse the truncated tag: accepting it would
//!   halve a forger's work.
//! - An `invalid` vector (flag `ModifiedTag`: bits flipped, bytes changed)
//!   must be refused by the verifier at any length, and must differ from
//!   what `sign` computes (at its own length).
//!
//! The vectors are also run through ring's HMAC (the oracle `hs256.rs`'s
//! own property test uses) and RustCrypto's `hmac` truncated verifier,
//! which shows the test reads the vectors as their authors meant: ring
//! accepts exactly the valid full tags, `hmac` exactly the valid tags of
//! either length.

use hmac::{Hmac, Mac};
use latchkey_core::hs256::Hs256Key;
use sha2::Sha256;
use wycheproof::TestResult;
use wycheproof::mac::{TestName, TestSet};

/// Full HS256 tags, in bytes.
const FULL: usize = 32;

/// How many vectors of each kind the run saw.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    valid_full_accepted: usize,
    valid_truncated_refused: usize,
    invalid_full_refused: usize,
    invalid_truncated_refused: usize,
}

/// Runs every vector; returns the counts and every disagreement.
fn run_all() -> (Counts, Vec<String>) {
    let set = TestSet::load(TestName::HmacSha256).expect("the vectors load");
    let mut counts = Counts::default();
    let mut wrong = Vec::new();
    for group in &set.test_groups {
        for test in &group.tests {
            let at = format!(
                "tcId {} (key {} bits, tag {} bits, {:?}, {})",
                test.tc_id, group.key_size, group.tag_size, test.result, test.comment
            );
            let key = Hs256Key::new(&test.key);
            let ours = key.sign(&test.msg);
            let tag: &[u8] = &test.tag;
            if tag.len() * 8 != group.tag_size {
                wrong.push(format!("{at}: tag of {} bytes", tag.len()));
                continue;
            }
            let full = tag.len() == FULL;
            // A tag longer than ours would be a vector for another MAC.
            let computed = ours.get(..tag.len());
            let matches = computed == Some(tag);
            let accepted = key.verify(&test.msg, tag);
            match (test.result, full) {
                (TestResult::Valid, true) => {
                    if !matches {
                        wrong.push(format!("{at}: sign gives another tag"));
                    }
                    if accepted {
                        counts.valid_full_accepted += 1;
                    } else {
                        wrong.push(format!("{at}: verify refused a valid tag"));
                    }
                }
                (TestResult::Valid, false) => {
                    if !matches {
                        wrong.push(format!("{at}: sign's leftmost bytes differ"));
                    }
                    if accepted {
                        wrong.push(format!("{at}: verify accepted a truncated tag"));
                    } else {
                        counts.valid_truncated_refused += 1;
                    }
                }
                (TestResult::Invalid, _) => {
                    if matches {
                        wrong.push(format!("{at}: sign computes the modified tag"));
                    }
                    if accepted {
                        wrong.push(format!("{at}: verify accepted a modified tag"));
                    } else if full {
                        counts.invalid_full_refused += 1;
                    } else {
                        counts.invalid_truncated_refused += 1;
                    }
                }
                // The HMAC set has none; a new release that adds some
                // must be looked at, not passed by default.
                (TestResult::Acceptable, _) => {
                    wrong.push(format!("{at}: an 'acceptable' vector, not handled"));
                }
            }
        }
    }
    (counts, wrong)
}

#[test]
fn every_hmac_sha256_vector_is_answered_as_wycheproof_says() {
    let (counts, wrong) = run_all();
    eprintln!(
        "wycheproof HMAC-SHA256: {} valid full tags accepted, {} valid truncated tags refused, \
         {} modified full tags refused, {} modified truncated tags refused",
        counts.valid_full_accepted,
        counts.valid_truncated_refused,
        counts.invalid_full_refused,
        counts.invalid_truncated_refused
    );
    assert!(
        wrong.is_empty(),
        "{} vectors:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The figures of wycheproof 0.7's set (174 vectors): a release that
    // drops or adds vectors shows here rather than passing unseen.
    assert_eq!(
        counts,
        Counts {
            valid_full_accepted: 33,
            valid_truncated_refused: 33,
            invalid_full_refused: 54,
            invalid_truncated_refused: 54,
        }
    );
}

#[test]
fn the_vectors_cover_keys_shorter_and_longer_than_the_block() {
    // HMAC hashes a key longer than SHA-256's 64-byte block first and pads
    // a shorter one: both paths of Hs256Key::new must be exercised.
    let set = TestSet::load(TestName::HmacSha256).expect("the vectors load");
    let sizes: std::collections::BTreeSet<usize> =
        set.test_groups.iter().map(|g| g.key_size / 8).collect();
    assert!(sizes.iter().any(|&s| s < 64), "{sizes:?}");
    assert!(sizes.iter().any(|&s| s > 64), "{sizes:?}");
}

#[test]
fn ring_and_rustcrypto_read_the_vectors_the_same_way() {
    let set = TestSet::load(TestName::HmacSha256).expect("the vectors load");
    let mut checked = 0;
    for group in &set.test_groups {
        for test in &group.tests {
            let valid = test.result == TestResult::Valid;
            let tag: &[u8] = &test.tag;
            // ring verifies whole tags only, like ours.
            let ring_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &test.key);
            let ring_ok = ring::hmac::verify(&ring_key, &test.msg, tag).is_ok();
            assert_eq!(
                ring_ok,
                valid && tag.len() == FULL,
                "ring, tcId {}",
                test.tc_id
            );
            // RustCrypto's truncated verifier takes the leftmost bytes of
            // any length: it accepts exactly the valid vectors.
            let mut mac = Hmac::<Sha256>::new_from_slice(&test.key).expect("any key length");
            mac.update(&test.msg);
            let rc_ok = mac.verify_truncated_left(tag).is_ok();
            assert_eq!(rc_ok, valid, "hmac, tcId {}", test.tc_id);
            checked += 1;
        }
    }
    assert_eq!(checked, 174);
}
