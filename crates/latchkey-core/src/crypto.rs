//! The master key and encryption of secrets at rest.
//!
//! Each stored secret is sealed with AES-256-GCM under the master key, with a
//! fresh random nonce and the owning row's id as associated data, so a
//! ciphertext copied onto another row does not decrypt. A copy of the
//! database without the master key yields no usable secret.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

pub const MASTER_KEY_LEN: usize = 32;
const FORMAT_V1: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be {MASTER_KEY_LEN} bytes, base64-encoded")]
    BadMasterKey,
    #[error("a stored secret could not be decrypted: wrong master key or damaged data")]
    Decrypt,
    #[error("the operating system's random number generator failed")]
    Random,
}

/// The key that seals every stored secret. `Debug` prints nothing of it.
pub struct MasterKey {
    key: LessSafeKey,
    encoded: Zeroizing<String>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate(rng: &SystemRandom) -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        rng.fill(bytes.as_mut()).map_err(|_| CryptoError::Random)?;
        Self::from_bytes(bytes.as_ref())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != MASTER_KEY_LEN {
            return Err(CryptoError::BadMasterKey);
        }
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            encoded: Zeroizing::new(STANDARD.encode(bytes)),
        })
    }

    /// Parses the base64 text form (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| CryptoError::BadMasterKey)?,
        );
        Self::from_bytes(&bytes)
    }

    /// The base64 text form, for writing the key file.
    pub fn to_base64(&self) -> &str {
        &self.encoded
    }

    /// Seals `plaintext`, binding it to `aad` (the owning row's id).
    pub fn seal(
        &self,
        rng: &SystemRandom,
        aad: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut buf = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        buf.push(FORMAT_V1);
        buf.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut body,
            )
            .map_err(|_| CryptoError::Random)?;
        buf.extend_from_slice(&body);
        Ok(buf)
    }

    /// Opens what [`MasterKey::seal`] produced for the same `aad`.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (&version, rest) = sealed.split_first().ok_or(CryptoError::Decrypt)?;
        if version != FORMAT_V1 || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
        let mut body = Zeroizing::new(ciphertext.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut body)
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

/// SHA-256, for high-entropy tokens that are only ever compared (operator
/// tokens). Passwords use argon2id instead.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Constant-time equality of two SHA-256 digests (or other byte strings
/// whose length is a multiple of 8): the stored hash of a one-time token
/// against the hash of the one presented.
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    ct_eq_words(a, b)
}

/// Constant-time equality of two byte strings of the same length, a
/// multiple of 8 (false otherwise; lengths are not secret): the OR of the
/// words' differences, compared with zero by subtle. One optimization
/// barrier in all, where subtle's byte-wise slice comparison (and the
/// `hmac` crate's `verify_slice`) puts one per byte, several times the
/// cost on the verification path (a Basic secret's encoding, an HS256 tag).
pub(crate) fn ct_eq_words(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || !a.len().is_multiple_of(8) {
        return false;
    }
    let mut diff = 0u64;
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        diff |= word(a) ^ word(b);
    }
    subtle::ConstantTimeEq::ct_eq(&diff, &0).into()
}

fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ct_eq_words_is_equality_of_whole_words() {
        let a = [7u8; 32];
        assert!(super::ct_eq_words(&a, &a));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!super::ct_eq_words(&a, &b), "byte {i}");
        }
        assert!(!super::ct_eq_words(&a, &a[..24]), "other length");
        assert!(!super::ct_eq_words(&a[..7], &a[..7]), "not whole words");
        assert!(super::ct_eq_words(&[], &[]));
    }

    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_row() {
        let rng = SystemRandom::new();
        let key = MasterKey::generate(&rng).expect("key");
        let sealed = key.seal(&rng, "app_1", b"lksk_secret").expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.open("app_1", &sealed).expect("open").as_slice(),
            b"lksk_secret"
        );
        assert_eq!(key.open("app_2", &sealed), Err(CryptoError::Decrypt));
        let other = MasterKey::generate(&rng).expect("key");
        assert_eq!(other.open("app_1", &sealed), Err(CryptoError::Decrypt));
        assert_eq!(key.open("app_1", &sealed[..10]), Err(CryptoError::Decrypt));
    }

    #[test]
    fn base64_round_trip_and_bad_lengths() {
        let rng = SystemRandom::new();
        let key = MasterKey::generate(&rng).expect("key");
        let again = MasterKey::from_base64(&format!("{}\n", key.to_base64())).expect("parse");
        let sealed = key.seal(&rng, "x", b"y").expect("seal");
        assert!(again.open("x", &sealed).is_ok());
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").err(),
            Some(CryptoError::BadMasterKey)
        );
        assert_eq!(
            MasterKey::from_base64("not base64!").err(),
            Some(CryptoError::BadMasterKey)
        );
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }
}
