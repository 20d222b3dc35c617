//! Secret formats and the type that holds a secret in memory.
//!
//! A secret is `PREFIX`, then 43 base62 characters (256 bits from the OS
//! CSPRNG), then a 6-character base62 CRC32 of everything before it. The prefix lets
//! secret scanners find a leaked secret; the checksum lets us refuse a
//! mistyped or truncated one before any lookup. The prefixes never change.

use std::fmt;

use ring::rand::SystemRandom;
use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

use crate::ids::{BASE62, fill_base62, is_base62};

/// Prefix of API key secrets.
pub const KEY_SECRET_PREFIX: &str = "lksk_";
/// Prefix of operator tokens.
pub const OPERATOR_TOKEN_PREFIX: &str = "lkop_";
/// Prefix of verifier tokens (may call only `/v1/verify` and
/// `/v1/introspect`).
pub const VERIFIER_TOKEN_PREFIX: &str = "lkvf_";

/// 43 base62 characters carry 256.03 bits.
pub const SECRET_BODY_LEN: usize = 43;
pub const CHECKSUM_LEN: usize = 6;

/// A secret in memory. `Debug` and `Display` never show it; the bytes are
/// zeroed on drop. Serializing it exposes it: only the one response that
/// creates a secret serializes one.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

/// Why a string is not a well-formed secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    #[error("the secret does not start with the expected prefix")]
    Prefix,
    #[error("the secret has the wrong length")]
    Length,
    #[error("the secret contains characters outside base62")]
    Charset,
    #[error("the secret's checksum does not match (mistyped or truncated?)")]
    Checksum,
}

/// Generates a fresh secret with the given prefix.
pub fn generate(rng: &SystemRandom, prefix: &str) -> SecretString {
    let mut out = Vec::with_capacity(prefix.len() + SECRET_BODY_LEN + CHECKSUM_LEN);
    out.extend_from_slice(prefix.as_bytes());
    fill_base62(rng, &mut out, SECRET_BODY_LEN);
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    SecretString::new(String::from_utf8(out).unwrap_or_default())
}

/// Checks prefix, length, alphabet and checksum without any lookup.
pub fn check_format(prefix: &str, s: &str) -> Result<(), SecretFormatError> {
    let body = s.strip_prefix(prefix).ok_or(SecretFormatError::Prefix)?;
    if body.len() != SECRET_BODY_LEN + CHECKSUM_LEN {
        return Err(SecretFormatError::Length);
    }
    if !body.bytes().all(is_base62) {
        return Err(SecretFormatError::Charset);
    }
    let split = s.len() - CHECKSUM_LEN;
    let expected = checksum(&s.as_bytes()[..split]);
    if expected.as_slice() != &s.as_bytes()[split..] {
        return Err(SecretFormatError::Checksum);
    }
    Ok(())
}

fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = u64::from(crc32fast::hash(data));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[usize::try_from(n % 62).unwrap_or(0)];
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_secrets_pass_their_own_check() {
        let rng = SystemRandom::new();
        let s = generate(&rng, KEY_SECRET_PREFIX);
        assert_eq!(s.expose().len(), 5 + 43 + 6);
        assert_eq!(check_format(KEY_SECRET_PREFIX, s.expose()), Ok(()));
        assert_eq!(
            check_format(OPERATOR_TOKEN_PREFIX, s.expose()),
            Err(SecretFormatError::Prefix)
        );
        let v = generate(&rng, VERIFIER_TOKEN_PREFIX);
        assert!(v.expose().starts_with("lkvf_"));
        assert_eq!(check_format(VERIFIER_TOKEN_PREFIX, v.expose()), Ok(()));
        assert_eq!(
            check_format(OPERATOR_TOKEN_PREFIX, v.expose()),
            Err(SecretFormatError::Prefix)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let rng = SystemRandom::new();
        let s = generate(&rng, KEY_SECRET_PREFIX);
        let printed = format!("{s:?}");
        assert!(!printed.contains(&s.expose()[5..20]));
    }

    #[test]
    fn a_single_changed_character_is_refused() {
        let rng = SystemRandom::new();
        let s = generate(&rng, KEY_SECRET_PREFIX);
        let mut bytes = s.expose().as_bytes().to_vec();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).expect("ascii");
        assert_eq!(
            check_format(KEY_SECRET_PREFIX, &typo),
            Err(SecretFormatError::Checksum)
        );
        let truncated = &s.expose()[..s.expose().len() - 1];
        assert_eq!(
            check_format(KEY_SECRET_PREFIX, truncated),
            Err(SecretFormatError::Length)
        );
    }

    proptest! {
        #[test]
        fn check_format_never_panics(s in ".{0,80}") {
            let _ = check_format(KEY_SECRET_PREFIX, &s);
        }

        #[test]
        fn random_strings_of_the_right_shape_are_refused(body in "[0-9A-Za-z]{49}") {
            let s = format!("{KEY_SECRET_PREFIX}{body}");
            // 1 in 2^32 would pass by chance; proptest runs 256 cases.
            prop_assert!(check_format(KEY_SECRET_PREFIX, &s).is_err());
        }
    }
}
