//! Secret formats and the type that holds a secret in memory.
//!
//! A secret is `PREFIX`, then 43 base62 characters (256 bits from the OS
//! CSPRNG), then a 6-character base62 CRC32 of everything before it. The prefix lets
//! secret scanners find a leaked secret; the checksum lets us refuse a
//! mistyped or truncated one before any lookup. The prefixes never change.

use std::borrow::Cow;
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
/// Prefix of replica tokens (may read only the replication feed,
/// `/v1/replica/…`).
pub const REPLICA_TOKEN_PREFIX: &str = "lkrp_";

/// Prefix of webhook signing secrets.
pub const WEBHOOK_SECRET_PREFIX: &str = "lkwh_";

/// Prefix of the one-time tokens of invites to join an account (teams).
pub const INVITE_TOKEN_PREFIX: &str = "lkin_";

/// The prefix of every kind of secret Latchkey issues: what a secret
/// scanner, and [`redact`], look for.
pub const SECRET_PREFIXES: [&str; 6] = [
    KEY_SECRET_PREFIX,
    OPERATOR_TOKEN_PREFIX,
    VERIFIER_TOKEN_PREFIX,
    REPLICA_TOKEN_PREFIX,
    WEBHOOK_SECRET_PREFIX,
    INVITE_TOKEN_PREFIX,
];

/// What [`redact`] puts in place of a secret's body or a JWT's text.
pub const REDACTED: &str = "[redacted]";

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

/// `text` (a request's path or query as received, or any text bound for a
/// log) with every credential in it redacted:
///
/// - anything with a Latchkey secret's shape, one of [`SECRET_PREFIXES`]
///   followed by base62 characters, keeps its prefix and loses the rest
///   (`lksk_[redacted]`), whether or not it is complete or well-formed: a
///   truncated or mistyped secret is still most of a secret;
/// - a JWT (base64url text that starts with `eyJ`, the encoding of `{"`,
///   with at least two dots) becomes `eyJ[redacted]`.
///
/// A percent-encoded character counts as the character it encodes, so
/// encoding some or all of a secret does not hide it. Borrowed when there
/// is nothing to redact.
pub fn redact(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some((c, width)) = unit(bytes, i) {
        let found = match c {
            b'l' => secret_at(bytes, i).map(|body| (body, secret_body_end(bytes, body))),
            b'e' => word_end(bytes, i, b"eyJ").and_then(|body| {
                let (end, dots) = run_end(bytes, body, |b| is_base64url(b) || b == b'.');
                (dots >= 2).then_some((body, end))
            }),
            _ => None,
        };
        match found {
            Some((body, end)) if end > body => {
                out.extend_from_slice(&bytes[copied..body]);
                out.extend_from_slice(REDACTED.as_bytes());
                copied = end;
                i = end;
            }
            _ => i += width,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.extend_from_slice(&bytes[copied..]);
    // Whole characters were copied and ASCII ones replaced.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// The character at `i` and the bytes it takes: a `%` and two hex digits
/// are the byte they encode.
fn unit(bytes: &[u8], i: usize) -> Option<(u8, usize)> {
    let c = *bytes.get(i)?;
    if c == b'%'
        && let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).and_then(|&h| hex_value(h)),
            bytes.get(i + 2).and_then(|&l| hex_value(l)),
        )
    {
        return Some((hi << 4 | lo, 3));
    }
    Some((c, 1))
}

fn hex_value(h: u8) -> Option<u8> {
    char::from(h)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Where `word` ends if it is written at `i` (each character literal or
/// percent-encoded).
fn word_end(bytes: &[u8], mut i: usize, word: &[u8]) -> Option<usize> {
    for &w in word {
        let (c, width) = unit(bytes, i)?;
        if c != w {
            return None;
        }
        i += width;
    }
    Some(i)
}

/// Where the prefix of a secret that starts at `i` ends, if one does.
fn secret_at(bytes: &[u8], i: usize) -> Option<usize> {
    SECRET_PREFIXES
        .iter()
        .find_map(|prefix| word_end(bytes, i, prefix.as_bytes()))
}

/// Where the body of a secret that starts at `i` ends: after as many base62
/// characters as a secret's body has at most, and before another secret's
/// prefix (two secrets written one after the other are both redacted).
fn secret_body_end(bytes: &[u8], mut i: usize) -> usize {
    for _ in 0..SECRET_BODY_LEN + CHECKSUM_LEN {
        match unit(bytes, i) {
            Some((c, width)) if is_base62(c) && secret_at(bytes, i).is_none() => i += width,
            _ => break,
        }
    }
    i
}

/// Where the run of characters that `allowed` accepts, from `i`, ends; and
/// how many dots it holds.
fn run_end(bytes: &[u8], mut i: usize, allowed: impl Fn(u8) -> bool) -> (usize, usize) {
    let mut dots = 0;
    while let Some((c, width)) = unit(bytes, i) {
        if !allowed(c) {
            break;
        }
        dots += usize::from(c == b'.');
        i += width;
    }
    (i, dots)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

pub(crate) fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
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

    #[test]
    fn secrets_and_jwts_are_redacted_keeping_the_prefix() {
        let rng = SystemRandom::new();
        for prefix in SECRET_PREFIXES {
            let secret = generate(&rng, prefix);
            let secret = secret.expose();
            let body = &secret[prefix.len()..];
            for (text, expected) in [
                (
                    format!("/v1/apps/{secret}"),
                    format!("/v1/apps/{prefix}{REDACTED}"),
                ),
                (
                    format!("/v1/apps/{secret}/keys?after={secret}&x=1"),
                    format!("/v1/apps/{prefix}{REDACTED}/keys?after={prefix}{REDACTED}&x=1"),
                ),
                // Truncated, or glued to other text.
                (
                    format!("/x/{}", &secret[..20]),
                    format!("/x/{prefix}{REDACTED}"),
                ),
                (
                    format!("/x/abc{secret}.json"),
                    format!("/x/abc{prefix}{REDACTED}.json"),
                ),
                // Percent-encoded, in part or whole.
                (
                    format!("/x/%6C{}", &secret[1..]),
                    format!("/x/%6C{}{REDACTED}", &prefix[1..]),
                ),
                (
                    format!("/x/{prefix}{}", percent_encode_all(body)),
                    format!("/x/{prefix}{REDACTED}"),
                ),
                (
                    format!("/x/{}", percent_encode_all(secret)),
                    format!("/x/{}{REDACTED}", percent_encode_all(prefix)),
                ),
            ] {
                let got = redact(&text);
                assert_eq!(got, expected, "{text}");
                assert!(!got.contains(&body[..10]), "{got}");
            }
        }
        // Written one after the other, or before a JWT.
        let a = generate(&rng, KEY_SECRET_PREFIX);
        let b = generate(&rng, VERIFIER_TOKEN_PREFIX);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzY29wZSI6ImFwcCJ9.c2lnbmF0dXJlLWJ5dGVz";
        for (text, expected) in [
            (
                format!("/{}{}", a.expose(), b.expose()),
                format!("/lksk_{REDACTED}lkvf_{REDACTED}"),
            ),
            (
                format!("/lkop_{}", a.expose()),
                format!("/lkop_lksk_{REDACTED}"),
            ),
            (
                format!("/{}{jwt}", a.expose()),
                format!("/lksk_{REDACTED}eyJ{REDACTED}"),
            ),
        ] {
            assert_eq!(redact(&text), expected);
        }
        assert_eq!(
            redact(&format!("/a/{jwt}/b")),
            format!("/a/eyJ{REDACTED}/b")
        );
        assert_eq!(
            redact(&format!("/a?token={jwt}&x")),
            format!("/a?token=eyJ{REDACTED}&x")
        );
        let encoded = jwt.replace('.', "%2E");
        assert_eq!(
            redact(&format!("/a/{encoded}")),
            format!("/a/eyJ{REDACTED}")
        );
    }

    #[test]
    fn text_without_credentials_is_kept_as_it_is() {
        for text in [
            "",
            "/v1/apps/ap_0123456789012345678901/keys/app_0123456789012345678901",
            "/v1/apps/lksk_/x",
            "/lk/lksk/lksk-abc/lkop",
            "/eyJ/eyJhbGciOi/eyJ.a",
            "/%/%6/%6C%6B%73%6B%5F",
            "/caf\u{e9}/\u{1f600}/lksk\u{e9}",
        ] {
            assert!(
                matches!(redact(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    fn percent_encode_all(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        /// A secret of any kind anywhere in any text, parts of it
        /// percent-encoded: the output holds none of its body, and keeps
        /// its prefix.
        #[test]
        fn no_secret_survives_redaction(
            before in prop_oneof![
                "[ -~\u{e9}\u{1f600}]{0,20}",
                Just("lkop_".to_string()),
                Just("/lksk_abc".to_string()),
                Just("eyJhbGci.x".to_string()),
            ],
            after in prop_oneof![
                "[ -~\u{e9}]{0,20}",
                Just("lkvf_0123456789".to_string()),
                Just("eyJhbGci.eyJzY29wZSI6.c2ln".to_string()),
            ],
            which in 0..SECRET_PREFIXES.len(),
            encoded in proptest::collection::vec(any::<bool>(), 54),
        ) {
            let prefix = SECRET_PREFIXES[which];
            let rng = SystemRandom::new();
            let secret = generate(&rng, prefix);
            let written: String = secret
                .expose()
                .bytes()
                .zip(&encoded)
                .map(|(b, &e)| if e { format!("%{b:02x}") } else { char::from(b).to_string() })
                .collect();
            let text = format!("{before}{written}{after}");
            let got = redact(&text);
            let body = &secret.expose()[prefix.len()..];
            for window in body.as_bytes().windows(8) {
                let window = std::str::from_utf8(window).expect("ascii");
                prop_assert!(!got.contains(window), "{got} holds {window}");
            }
            prop_assert!(got.contains(REDACTED));
        }

        #[test]
        fn redact_never_panics(text in ".{0,80}") {
            let _ = redact(&text);
        }
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
