//! HMAC-SHA256 keys for JWTs (HS256), kept ready to use.
//!
//! A key holds the HMAC's inner and outer SHA-256 states after the padded
//! key block (RustCrypto's `HmacCore`, 120 bytes: it keeps the inner state
//! twice, once for resets), so a verification
//! hashes only the signing input and one outer block. RustCrypto's `sha2`
//! runs on the CPU's SHA extensions when it has them (detected at run
//! time): on this project's machines an HMAC over a 150-byte signing input
//! took 207 ns against 323 ns with `ring::hmac` (docs/BENCHMARKS.md), and
//! the key is smaller than a `ring::hmac::Key` (176 bytes),
//! which the index holds once per key.

use std::fmt;

use hmac::HmacCore;
use hmac::digest::core_api::CoreWrapper;
use hmac::digest::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// SHA-256's block: HMAC pads (or first hashes) the key to this size.
const BLOCK: usize = 64;

/// An HS256 key. Its `Debug` prints nothing of the key.
#[derive(Clone)]
pub struct Hs256Key(HmacCore<Sha256>);

impl fmt::Debug for Hs256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hs256Key(<redacted>)")
    }
}

impl Hs256Key {
    pub fn new(secret: &[u8]) -> Self {
        // RFC 2104: a key longer than the block is hashed first; the key
        // is then padded with zeros to the block. A full block as the key
        // makes the construction infallible. (As with ring's key, the
        // HMAC states derived from the key are not cleared on drop; the
        // index's copy of the secret is.)
        let mut block = Zeroizing::new([0u8; BLOCK]);
        if secret.len() > BLOCK {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        Self(HmacCore::new(&(*block).into()))
    }

    /// The HMAC-SHA256 of `input`.
    pub fn sign(&self, input: &[u8]) -> [u8; 32] {
        let mut mac = CoreWrapper::from_core(self.0.clone());
        mac.update(input);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC-SHA256 of `input`, compared in constant
    /// time.
    pub fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
        // A tag of another length is refused (its length is no secret).
        crate::crypto::ct_eq_words(&self.sign(input), tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::hmac;

    #[test]
    fn rfc_4231_test_case_2() {
        let key = Hs256Key::new(b"Jefe");
        let tag = key.sign(b"what do ya want for nothing?");
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_prints_nothing_of_the_key() {
        let text = format!("{:?}", Hs256Key::new(b"lksk_secret"));
        assert_eq!(text, "Hs256Key(<redacted>)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The same tags as ring's HMAC-SHA256 for keys shorter than, as
        /// long as and longer than the block, and any input.
        #[test]
        fn agrees_with_ring(
            secret in proptest::collection::vec(any::<u8>(), 0..200),
            input in proptest::collection::vec(any::<u8>(), 0..400),
            flip in any::<(usize, u8)>(),
        ) {
            let ours = Hs256Key::new(&secret);
            let theirs = hmac::Key::new(hmac::HMAC_SHA256, &secret);
            let tag = hmac::sign(&theirs, &input);
            prop_assert_eq!(&ours.sign(&input)[..], tag.as_ref());
            prop_assert!(ours.verify(&input, tag.as_ref()));
            // Any changed bit, a short tag or an empty one is refused.
            let mut bad = tag.as_ref().to_vec();
            let (i, bit) = (flip.0 % bad.len(), 1u8 << (flip.1 % 8));
            bad[i] ^= bit;
            prop_assert!(!ours.verify(&input, &bad));
            prop_assert!(!ours.verify(&input, &tag.as_ref()[..31]));
            prop_assert!(!ours.verify(&input, &[]));
        }
    }
}
