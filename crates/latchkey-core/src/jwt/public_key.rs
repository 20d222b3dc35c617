//! Public keys that verify JWS signatures (issue 22): Ed25519 (the JWS
//! algorithm `Ed25519` of RFC 9864, and the older `EdDSA`) and ECDSA over
//! P-256 with SHA-256 (`ES256`). The customer keeps the private key;
//! Latchkey holds only the public one, so no secret crosses the network or
//! rests here.
//!
//! Verification is strict (RFC 8725): an ES256 signature only in JOSE's
//! fixed-size form (`r || s`, 32 bytes each; DER is refused), `r` and `s`
//! each in `[1, n-1]`, a high `s` accepted (ECDSA does not require the low
//! one); an Ed25519 signature of exactly 64 bytes whose `S` is canonical.
//! Both are ring's (`ED25519`, `ECDSA_P256_SHA256_FIXED`), checked against
//! Project Wycheproof's vectors in `tests/wycheproof.rs`.
//!
//! Not yet reachable from a token: the header parser names only HS256
//! until keys of these kinds can be created.

use ring::signature::{self, UnparsedPublicKey};

/// An Ed25519 public key (32 bytes, RFC 8032's encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519PublicKey([u8; 32]);

impl Ed25519PublicKey {
    /// The key's 32 bytes; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Whether `sig` (64 bytes) is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        sig.len() == 64
            && UnparsedPublicKey::new(&signature::ED25519, &self.0)
                .verify(message, sig)
                .is_ok()
    }
}

/// A P-256 public key, as the uncompressed SEC 1 point (`04 || x || y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P256PublicKey([u8; 65]);

impl P256PublicKey {
    /// The uncompressed point (65 bytes, first `04`); `None` otherwise.
    /// Whether the point is on the curve is checked by every
    /// verification (a point that is not verifies nothing).
    pub fn from_uncompressed(bytes: &[u8]) -> Option<Self> {
        let point = <[u8; 65]>::try_from(bytes).ok()?;
        (point[0] == 4).then_some(Self(point))
    }

    /// The point of a JWK's `x` and `y` (32 bytes each).
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Option<Self> {
        if x.len() != 32 || y.len() != 32 {
            return None;
        }
        let mut point = [0u8; 65];
        point[0] = 4;
        point[1..33].copy_from_slice(x);
        point[33..].copy_from_slice(y);
        Some(Self(point))
    }

    /// Whether `sig` (`r || s`, 64 bytes) is this key's ES256 signature
    /// of `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        sig.len() == 64
            && UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.0)
                .verify(message, sig)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    use super::*;

    #[test]
    fn a_signature_verifies_under_its_key_only_and_for_its_message_only() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let key = Ed25519PublicKey::from_bytes(pair.public_key().as_ref()).expect("32 bytes");
        let sig = pair.sign(b"header.payload");
        assert!(key.verify(b"header.payload", sig.as_ref()));
        assert!(!key.verify(b"header.payloae", sig.as_ref()));
        assert!(!key.verify(b"header.payload", &sig.as_ref()[..63]));
        let other = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let other = Ed25519KeyPair::from_pkcs8(other.as_ref()).expect("key");
        let other = Ed25519PublicKey::from_bytes(other.public_key().as_ref()).expect("key");
        assert!(!other.verify(b"header.payload", sig.as_ref()));
        assert!(Ed25519PublicKey::from_bytes(&[0u8; 31]).is_none());

        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
        let point = pair.public_key().as_ref();
        let key = P256PublicKey::from_uncompressed(point).expect("65 bytes");
        assert_eq!(
            P256PublicKey::from_coordinates(&point[1..33], &point[33..]),
            Some(key.clone())
        );
        let sig = pair.sign(&rng, b"header.payload").expect("sign");
        assert_eq!(sig.as_ref().len(), 64, "JOSE's fixed-size form");
        assert!(key.verify(b"header.payload", sig.as_ref()));
        assert!(!key.verify(b"header.payloae", sig.as_ref()));
        let mut flipped = sig.as_ref().to_vec();
        flipped[40] ^= 1;
        assert!(!key.verify(b"header.payload", &flipped));
        assert!(P256PublicKey::from_uncompressed(&point[1..]).is_none());
        let mut compressed_tag = point.to_vec();
        compressed_tag[0] = 2;
        assert!(P256PublicKey::from_uncompressed(&compressed_tag).is_none());
    }
}
