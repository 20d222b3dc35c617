//! Secrets at rest and secret formats: `MasterKey::open` on any bytes
//! (the database is not trusted to hold only what Latchkey sealed), the
//! secret format with its checksum (`secret::check_format`), the id
//! formats (`ids.rs`), and `secret::redact` (request paths bound for the
//! access log).
//!
//! The first byte chooses:
//! 0: open the rest as a sealed secret (`aad 0xFF sealed`): refused;
//! 1: seal the rest, then open it (the same bytes), open it under another
//!    row's id, and open it with one byte changed (both refused);
//! 2: check the rest as a secret of each kind against a checksum computed
//!    here (crc32fast, independently of `secret.rs`);
//! 3: a well-formed secret made from the rest, then changed in one place:
//!    refused;
//! 4: the rest as an id and an external id, against the rules written out
//!    here;
//! 5: `redact` of text around a well-formed secret: its body does not
//!    survive.
#![no_main]

use std::sync::LazyLock;

use latchkey_core::MasterKey;
use latchkey_core::fuzzing::secret_with_checksum;
use latchkey_core::ids::{self, IdKind, KeyId};
use latchkey_core::secret::{
    self, CHECKSUM_LEN, SECRET_BODY_LEN, SECRET_PREFIXES, SecretFormatError,
};
use latchkey_fuzz::pieces;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;

static KEY: LazyLock<MasterKey> =
    LazyLock::new(|| MasterKey::from_bytes(&[7u8; 32]).expect("a 32-byte key"));

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const KINDS: [IdKind; 12] = [
    IdKind::Account,
    IdKind::App,
    IdKind::UserAccount,
    IdKind::ServiceAccount,
    IdKind::AppUser,
    IdKind::AppKey,
    IdKind::UserAccountKey,
    IdKind::ServiceAccountKey,
    IdKind::OperatorToken,
    IdKind::VerifierToken,
    IdKind::Event,
    IdKind::Webhook,
];

/// The format as documented: prefix, 43 base62 characters, and the
/// base62 form (six digits, most significant first) of the CRC-32 of all
/// before it.
fn expected_format(prefix: &str, s: &str) -> Result<(), SecretFormatError> {
    let body = s.strip_prefix(prefix).ok_or(SecretFormatError::Prefix)?;
    if body.len() != SECRET_BODY_LEN + CHECKSUM_LEN {
        return Err(SecretFormatError::Length);
    }
    if !body.bytes().all(|b| BASE62.contains(&b)) {
        return Err(SecretFormatError::Charset);
    }
    let (signed, sum) = s.split_at(s.len() - CHECKSUM_LEN);
    let mut n = u64::from(crc32fast::hash(signed.as_bytes()));
    let mut digits = [0u8; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    if sum.as_bytes() == digits {
        Ok(())
    } else {
        Err(SecretFormatError::Checksum)
    }
}

fn base62_from(bytes: &[u8], len: usize) -> String {
    (0..len)
        .map(|i| char::from(BASE62[usize::from(bytes.get(i).copied().unwrap_or(0)) % 62]))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => {
            let p = pieces(rest, 2);
            let aad = String::from_utf8_lossy(p[0]);
            assert!(KEY.open(&aad, p[1]).is_err());
        }
        1 => {
            let p = pieces(rest, 3);
            let (aad, plain) = (String::from_utf8_lossy(p[0]), p[1]);
            let sealed = KEY.seal(&SystemRandom::new(), &aad, plain).expect("sealed");
            let opened = KEY.open(&aad, &sealed).expect("opens");
            assert_eq!(opened.as_slice(), plain);
            assert!(KEY.open(&format!("{aad}x"), &sealed).is_err());
            let (&at, &bit) = (p[2].first().unwrap_or(&0), p[2].get(1).unwrap_or(&1));
            let mut changed = sealed.clone();
            let at = usize::from(at) % changed.len();
            changed[at] ^= bit.max(1);
            assert!(KEY.open(&aad, &changed).is_err());
            assert!(KEY.open(&aad, &sealed[..sealed.len() - 1]).is_err());
        }
        2 => {
            let Ok(s) = std::str::from_utf8(rest) else {
                return;
            };
            for prefix in SECRET_PREFIXES {
                assert_eq!(secret::check_format(prefix, s), expected_format(prefix, s));
            }
        }
        3 => {
            let (&which, rest) = rest.split_first().unwrap_or((&0, &[]));
            let prefix = SECRET_PREFIXES[usize::from(which) % SECRET_PREFIXES.len()];
            let s = secret_with_checksum(prefix, &base62_from(rest, SECRET_BODY_LEN));
            assert_eq!(secret::check_format(prefix, &s), Ok(()));
            let (&at, &to) = (
                rest.get(SECRET_BODY_LEN).unwrap_or(&0),
                rest.get(SECRET_BODY_LEN + 1).unwrap_or(&0),
            );
            let mut changed = s.clone().into_bytes();
            let at = prefix.len() + usize::from(at) % (SECRET_BODY_LEN + CHECKSUM_LEN);
            changed[at] = BASE62[usize::from(to) % 62];
            let changed = String::from_utf8(changed).expect("ascii");
            if changed != s {
                assert_eq!(
                    secret::check_format(prefix, &changed),
                    Err(SecretFormatError::Checksum)
                );
            }
        }
        4 => {
            let Ok(s) = std::str::from_utf8(rest) else {
                return;
            };
            for kind in KINDS {
                let body = s.strip_prefix(kind.prefix());
                let expected = body.is_some_and(|b| {
                    b.len() == ids::ID_BODY_LEN && b.bytes().all(|c| BASE62.contains(&c))
                });
                assert_eq!(kind.matches(s), expected);
            }
            // 1 to 255 bytes, no control characters, not a usr_ id.
            let refused = s.is_empty()
                || s.len() > ids::MAX_EXTERNAL_ID_LEN
                || s.chars().any(char::is_control)
                || IdKind::AppUser.matches(s);
            let expected = if refused { Err(()) } else { Ok(()) };
            assert_eq!(ids::check_external_id(s).map_err(|_| ()), expected);
            let id = KeyId::from(s);
            assert_eq!(id.as_str(), s);
            assert_eq!(id.as_bytes(), s.as_bytes());
        }
        _ => {
            let p = pieces(rest, 3);
            let (Ok(before), Ok(after)) = (std::str::from_utf8(p[0]), std::str::from_utf8(p[1]))
            else {
                return;
            };
            let (&which, body) = p[2].split_first().unwrap_or((&0, &[]));
            let prefix = SECRET_PREFIXES[usize::from(which) % SECRET_PREFIXES.len()];
            let s = secret_with_checksum(prefix, &base62_from(body, SECRET_BODY_LEN));
            let text = format!("{before}{s}{after}");
            let redacted = secret::redact(&text);
            // The body survives only where the text around it held it
            // already, without a prefix (then it is no secret's).
            let secret_body = &s[prefix.len()..];
            assert!(
                !redacted.contains(secret_body)
                    || before.contains(secret_body)
                    || after.contains(secret_body),
                "{text:?} became {redacted:?}"
            );
            // Nothing to redact: the text itself.
            let plain = secret::redact(before);
            if !before.contains(['l', 'e', '%']) {
                assert_eq!(plain, before);
            }
        }
    }
});
