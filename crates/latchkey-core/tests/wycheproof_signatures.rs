//! Project Wycheproof's Ed25519 and ECDSA P-256/SHA-256 vectors (the P1363
//! files: JOSE's fixed-size `r || s`) against the public-key verifiers of
//! `jwt/public_key.rs` (issue 22).
//!
//! A `valid` vector must verify and an `invalid` one must not; an
//! `acceptable` one may go either way (Wycheproof's word for encodings
//! some libraries allow), and how each went is counted. Every group's
//! key is taken as the library takes keys (the uncompressed point, the
//! 32 Ed25519 bytes); a key the constructor refuses makes every vector of
//! its group a refusal, which must then be `invalid` ones only.

use latchkey_core::jwt::{Ed25519PublicKey, P256PublicKey};
use wycheproof::TestResult;

#[derive(Debug, Default)]
struct Counts {
    valid: usize,
    invalid: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
}

fn check(
    name: &str,
    at: String,
    result: TestResult,
    verified: bool,
    counts: &mut Counts,
    wrong: &mut Vec<String>,
) {
    match result {
        TestResult::Valid if verified => counts.valid += 1,
        TestResult::Invalid if !verified => counts.invalid += 1,
        TestResult::Acceptable if verified => counts.acceptable_accepted += 1,
        TestResult::Acceptable => counts.acceptable_refused += 1,
        _ => wrong.push(format!(
            "{name} {at}: expected {result:?}, verified {verified}"
        )),
    }
}

#[test]
fn ed25519_vectors() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).expect("the vectors load");
    let (mut counts, mut wrong) = (Counts::default(), Vec::new());
    for group in &set.test_groups {
        let key = Ed25519PublicKey::from_bytes(&group.key.pk);
        for test in &group.tests {
            let verified = key.as_ref().is_some_and(|k| k.verify(&test.msg, &test.sig));
            let at = format!("tcId {} ({}; {:?})", test.tc_id, test.comment, test.flags);
            check(
                "Ed25519",
                at,
                test.result,
                verified,
                &mut counts,
                &mut wrong,
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(counts.valid > 0 && counts.invalid > 0, "{counts:?}");
    eprintln!("Ed25519: {counts:?}");
}

#[test]
fn ecdsa_p256_sha256_fixed_size_vectors() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).expect("the vectors load");
    let (mut counts, mut wrong) = (Counts::default(), Vec::new());
    for group in &set.test_groups {
        let key = P256PublicKey::from_uncompressed(&group.key.key);
        for test in &group.tests {
            let verified = key.as_ref().is_some_and(|k| k.verify(&test.msg, &test.sig));
            let at = format!("tcId {} ({}; {:?})", test.tc_id, test.comment, test.flags);
            check("ES256", at, test.result, verified, &mut counts, &mut wrong);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(counts.valid > 0 && counts.invalid > 0, "{counts:?}");
    eprintln!("ES256: {counts:?}");
}
