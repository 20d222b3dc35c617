//! The seam for the signature algorithm: the algorithms Latchkey verifies
//! ([`Algorithm`]), the key material the index holds for each kind of key
//! ([`VerifyingKey`]), and the one verifier of each kind ([`JwsVerifier`]).
//! Why it is shaped this way: the module documentation of `jwt`.

use super::UnverifiedJwt;
use super::public_key::{Ed25519PublicKey, P256PublicKey, PublicKey};
use crate::hs256::Hs256Key;

/// A JWS algorithm Latchkey verifies, by its RFC 7518 name.
///
/// A key has exactly one (its [`JwsVerifier::algorithm`]); a token's
/// header must name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC-SHA256 under the key's secret.
    Hs256,
    /// Ed25519 under the key's public key: RFC 9864's `Ed25519`, also
    /// read under RFC 8037's older name `EdDSA` (which, for a key of this
    /// kind, can mean nothing else).
    Ed25519,
    /// ECDSA over P-256 with SHA-256 under the key's public key.
    Es256,
}

impl Algorithm {
    /// The header's `alg` value for this algorithm.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Ed25519 => "Ed25519",
            Algorithm::Es256 => "ES256",
        }
    }

    /// The algorithm a header's `alg` names, if Latchkey verifies it
    /// (names compare case-sensitively: RFC 7515 §4.1.1). `None` for
    /// every other name, `none` included.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Algorithm::Hs256),
            "Ed25519" | "EdDSA" => Some(Algorithm::Ed25519),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }
}

/// A kind of key that verifies token signatures, with one algorithm.
///
/// Implemented by each kind of key ([`Hs256Key`] in `hs256.rs`,
/// [`Ed25519PublicKey`] and [`P256PublicKey`] in `public_key.rs`) and by
/// [`VerifyingKey`], which hands a token to its variant's verifier. Sealed:
/// the algorithms are Latchkey's to choose, never a caller's or a token's.
/// Verify through [`UnverifiedJwt::verify_signature`], which checks the
/// header's `alg` against [`JwsVerifier::algorithm`] first.
pub trait JwsVerifier: sealed::Sealed {
    /// The one algorithm this key verifies.
    fn algorithm(&self) -> Algorithm;

    /// Whether the token's signature is this key's over its signing
    /// input, compared in constant time. Does not look at the header's
    /// `alg`.
    fn signature_matches(&self, jwt: &UnverifiedJwt<'_>) -> bool;
}

/// A key's verification material as the index holds it (inline, in its
/// table's slot): one variant per kind of key, each of one algorithm.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    /// The HMAC state of the key's secret (`hs256.rs`, 120 bytes).
    Hs256(Hs256Key),
    /// A customer's Ed25519 public key (32 bytes).
    Ed25519(Ed25519PublicKey),
    /// A customer's P-256 public key (65 bytes).
    Es256(P256PublicKey),
}

impl From<PublicKey> for VerifyingKey {
    fn from(key: PublicKey) -> Self {
        match key {
            PublicKey::Ed25519(key) => VerifyingKey::Ed25519(key),
            PublicKey::P256(key) => VerifyingKey::Es256(key),
        }
    }
}

impl JwsVerifier for VerifyingKey {
    fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKey::Hs256(key) => key.algorithm(),
            VerifyingKey::Ed25519(key) => key.algorithm(),
            VerifyingKey::Es256(key) => key.algorithm(),
        }
    }

    fn signature_matches(&self, jwt: &UnverifiedJwt<'_>) -> bool {
        match self {
            VerifyingKey::Hs256(key) => key.signature_matches(jwt),
            VerifyingKey::Ed25519(key) => key.signature_matches(jwt),
            VerifyingKey::Es256(key) => key.signature_matches(jwt),
        }
    }
}

mod sealed {
    /// Only this crate's kinds of key verify tokens.
    pub trait Sealed {}

    impl Sealed for crate::hs256::Hs256Key {}
    impl Sealed for crate::jwt::Ed25519PublicKey {}
    impl Sealed for crate::jwt::P256PublicKey {}
    impl Sealed for super::VerifyingKey {}
}
