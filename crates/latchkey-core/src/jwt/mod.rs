//! A strict JWT reader and signer: HS256 under a key's secret, and
//! Ed25519 and ES256 under a customer's public key (`public_key.rs`),
//! behind a seam for the signature algorithm.
//!
//! Written here rather than taken from a general JWT crate because the
//! verification path needs the algorithm of the key, a key looked up by
//! `kid` from the in-memory index, typed claims of our own, and the cost of
//! about one HMAC. Anything else is refused: algorithms Latchkey does not
//! verify (including `none`; every one but HS256, Ed25519 under either of
//! its names, and ES256), a missing `kid`, a
//! `crit` header (whatever its value, `null` included: RFC 7515 §4.1.11),
//! tokens over [`MAX_TOKEN_LEN`], bad base64, duplicate or wrongly typed
//! claims, and a header or claims set that is not JSON text in every
//! member, read or not (invalid UTF-8, or a `\u` escape of a lone
//! surrogate: RFC 8259 §8).
//!
//! # The algorithm seam
//!
//! The algorithm is the key's, never the token's choice (RFC 8725 §2.1,
//! §3.1). Each key in the index holds its verification material as a
//! [`VerifyingKey`], an enum with one variant per kind of key (HS256's
//! HMAC state, an Ed25519 or a P-256 public key), and the variant fixes
//! the one [`Algorithm`] the key verifies. Each kind of key has its own
//! verifier, an implementation of [`JwsVerifier`] in its own file
//! (`hs256.rs`, `public_key.rs`).
//! [`UnverifiedJwt::verify_signature`] compares the header's `alg` with the
//! key's algorithm (another is refused with [`JwtError::Algorithm`]) and
//! only then hands the token to the key's verifier. The header never picks
//! a verifier, so a token cannot have a public key used as an HMAC secret
//! or the other way round. The parser refuses the names it does not know
//! (its allowlist is [`Algorithm`]'s), as it always did.
//!
//! Why an enum matched once and not a `dyn` verifier: the index's table
//! holds its keys inline (`table.rs`), so the material has to be a sized
//! value in the key's slot (a box would add a dependent cache miss to each
//! lookup among 10^6 keys), and the verifier is called directly, so HS256's
//! path stays inlined, free of allocation and the same code as before the
//! seam. The enum's tag costs one compare on HS256's path; its size is
//! HS256's 120-byte state plus the tag (a public key takes at most 65).
//! The fast header reader (`header.rs`) reads HS256 headers only; tokens
//! of other algorithms take the serde reader, and their verifier decodes
//! their 64-byte signature itself.
//!
//! A new algorithm is a variant of [`Algorithm`] and of [`VerifyingKey`]
//! (a match arm in `alg.rs`), a file with its [`JwsVerifier`], and its name
//! in [`Algorithm`]'s reader; the other verifiers do not change.

mod alg;
mod claims;
mod header;
mod hs256;
mod json;
mod public_key;
#[cfg(test)]
mod tests;

pub use alg::{Algorithm, JwsVerifier, VerifyingKey};
pub use claims::{ClaimedScope, Claims};
#[cfg(fuzzing)]
pub(crate) use claims::{claims_with_serde, fast_claims};
pub(crate) use header::{parse_fast, parse_full};
pub use hs256::sign_hs256;
pub use public_key::{Ed25519PublicKey, JwkError, P256PublicKey, PublicKey};

/// The largest token accepted (8 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
pub use crate::ids::MAX_EXTERNAL_ID_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the JWT is larger than 8 KiB")]
    TooLarge,
    #[error("the JWT must have three base64url parts separated by dots")]
    Shape,
    #[error("the JWT header is not valid base64url-encoded JSON")]
    Header,
    #[error(
        "the JWT header's alg must be one Latchkey verifies: HS256, Ed25519 (or EdDSA) or ES256"
    )]
    Algorithm,
    #[error("the JWT header must name the signing key in kid")]
    MissingKid,
    #[error("the JWT header carries crit extensions, which are not supported")]
    Critical,
    #[error("the JWT signature does not match its key")]
    Signature,
    #[error("the JWT claims are not valid JSON of the expected types: {0}")]
    Claims(String),
}

/// A token split into its parts, header checked, signature not yet checked.
/// `Debug` shows only the `kid`: the token is a credential.
pub struct UnverifiedJwt<'a> {
    /// The header's `alg`: one that Latchkey verifies (any other is
    /// refused by the parser), not yet compared with the key's.
    alg: Algorithm,
    kid: Kid,
    signing_input: &'a [u8],
    payload: &'a [u8],
    signature: &'a [u8],
    /// The signature, already decoded when [`parse_fast`] decoded it to
    /// see that it has no dot.
    decoded_signature: Option<[u8; 32]>,
}

/// The header's `kid`: inline when the header took the fast path (no
/// allocation), owned otherwise.
enum Kid {
    Inline { len: u8, bytes: [u8; KID_INLINE] },
    Owned(String),
}

/// Longest `kid` kept inline (key ids are 26 bytes).
const KID_INLINE: usize = 31;

impl std::fmt::Debug for UnverifiedJwt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedJwt")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl UnverifiedJwt<'_> {
    /// The `kid` as bytes (the index looks keys up by bytes, without
    /// checking UTF-8 first).
    pub(crate) fn kid_bytes(&self) -> &[u8] {
        match &self.kid {
            Kid::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Kid::Owned(kid) => kid.as_bytes(),
        }
    }

    /// The header's `kid`: the id of the key to verify with.
    pub fn kid(&self) -> &str {
        match &self.kid {
            // Only valid UTF-8 is stored inline.
            Kid::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Kid::Owned(kid) => kid,
        }
    }

    /// The algorithm the header names.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Checks the signature with `key`, by the key's algorithm: refused
    /// with [`JwtError::Algorithm`] when the header names another, with
    /// [`JwtError::Signature`] when the key's verifier finds no match
    /// (compared in constant time).
    pub fn verify_signature<K: JwsVerifier>(&self, key: &K) -> Result<(), JwtError> {
        if self.alg != key.algorithm() {
            return Err(JwtError::Algorithm);
        }
        if key.signature_matches(self) {
            Ok(())
        } else {
            Err(JwtError::Signature)
        }
    }
}

/// Splits a compact JWS and checks its header.
pub fn parse(token: &str) -> Result<UnverifiedJwt<'_>, JwtError> {
    match parse_fast(token.as_bytes()) {
        Some(parsed) => Ok(parsed),
        None => parse_full(token),
    }
}

/// The parts of a parsed token, for the fuzz targets (`crate::fuzzing`).
#[cfg(fuzzing)]
impl UnverifiedJwt<'_> {
    pub(crate) fn parts(&self) -> (&[u8], &[u8], &[u8], Option<[u8; 32]>) {
        (
            self.signing_input,
            self.payload,
            self.signature,
            self.decoded_signature,
        )
    }
}
