//! Identifier formats. Every id starts with a prefix naming what it is, then
//! random base62 characters from the OS CSPRNG.

use ring::rand::{SecureRandom, SystemRandom};

pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Random characters after an id's prefix (22 base62 characters, ~131 bits).
pub const ID_BODY_LEN: usize = 22;

/// What an identifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Account,
    App,
    UserAccount,
    ServiceAccount,
    AppUser,
    AppKey,
    UserAccountKey,
    ServiceAccountKey,
    OperatorToken,
    VerifierToken,
    ReplicaToken,
    Event,
    Webhook,
    Invite,
    /// An app's signing key: Latchkey's own Ed25519 key that signs the
    /// appUser tokens it mints with `alg` `EdDSA` (published in the app's
    /// JWKS).
    SigningKey,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Account => "acc_",
            IdKind::App => "ap_",
            IdKind::UserAccount => "ua_",
            IdKind::ServiceAccount => "sa_",
            IdKind::AppUser => "usr_",
            IdKind::AppKey => "app_",
            IdKind::UserAccountKey => "act_",
            IdKind::ServiceAccountKey => "svc_",
            IdKind::OperatorToken => "op_",
            IdKind::VerifierToken => "vt_",
            IdKind::ReplicaToken => "rt_",
            IdKind::Event => "evt_",
            IdKind::Webhook => "whk_",
            IdKind::Invite => "inv_",
            IdKind::SigningKey => "sig_",
        }
    }

    /// True when `id` has this kind's prefix followed by a well-formed body.
    pub fn matches(self, id: &str) -> bool {
        id.strip_prefix(self.prefix())
            .is_some_and(|body| body.len() == ID_BODY_LEN && body.bytes().all(is_base62))
    }
}

pub fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Fills `out` with uniformly distributed base62 characters (rejection
/// sampling, so no character is more likely than another).
pub fn fill_base62(rng: &SystemRandom, out: &mut Vec<u8>, count: usize) {
    let mut buf = [0u8; 64];
    let mut produced = 0;
    while produced < count {
        if rng.fill(&mut buf).is_err() {
            // The OS CSPRNG does not fail on supported platforms; if it ever
            // does there is nothing safe to fall back to.
            panic!("the operating system's random number generator failed");
        }
        for &b in &buf {
            // 248 = 4 * 62: values at or above it would bias the result.
            if b < 248 && produced < count {
                out.push(BASE62[usize::from(b % 62)]);
                produced += 1;
            }
        }
    }
}

/// Longest accepted external id (an app user's id in the customer's system).
pub const MAX_EXTERNAL_ID_LEN: usize = 255;

/// Checks an app user's external id: 1 to 255 bytes, no control characters,
/// and not shaped like a `usr_` id (paths accept either, so an external id
/// that looks like another user's id would be ambiguous).
pub fn check_external_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_EXTERNAL_ID_LEN {
        return Err("the user id must be 1 to 255 bytes");
    }
    // `char::is_control` is `is_ascii_control` on ASCII; one pass without
    // early exit, eight bytes at a time, decides for ASCII text.
    let (non_ascii, mut control) = ascii_and_control(id.as_bytes());
    if non_ascii {
        control = id.chars().any(char::is_control);
    }
    if control {
        return Err("the user id must not contain control characters");
    }
    if IdKind::AppUser.matches(id) {
        return Err("the user id must not have the form of a usr_ id");
    }
    Ok(())
}

/// Whether `bytes` has a byte above 0x7f, and whether it has an ASCII
/// control character (below 0x20, or 0x7f), eight bytes per step (this
/// runs on every appUser JWT).
fn ascii_and_control(bytes: &[u8]) -> (bool, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let (mut high, mut control) = (0u64, 0u64);
    let mut words = bytes.chunks_exact(8);
    // The last, partial word is padded with spaces (neither high nor
    // control), so every byte goes through the same steps.
    let mut tail = [b' '; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    for chunk in (&mut words).chain(std::iter::once(&tail[..])) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        high |= w;
        // With the top bits cleared no byte borrows from the next one:
        // the top bit of `low7 - 0x20` is clear exactly for bytes of at
        // least 0x20, and that of `low7 + 1` is set exactly for 0x7f.
        let low7 = w & !HIGH;
        let below_space = !(low7 | HIGH).wrapping_sub(ONES * 0x20) & HIGH;
        let delete = (low7 + ONES) & HIGH;
        // Bytes above 0x7f are judged by the caller's slow path.
        control |= (below_space | delete) & !w;
    }
    (high & HIGH != 0, control != 0)
}

/// A fresh identifier of the given kind.
pub fn new_id(rng: &SystemRandom, kind: IdKind) -> String {
    let prefix = kind.prefix();
    let mut out = Vec::with_capacity(prefix.len() + ID_BODY_LEN);
    out.extend_from_slice(prefix.as_bytes());
    fill_base62(rng, &mut out, ID_BODY_LEN);
    String::from_utf8(out).unwrap_or_default()
}

/// A key's id, held inline when it is short (generated key ids are 26
/// bytes): the index keeps it inside the key's table slot, and a verified
/// [`Principal`](crate::Principal) copies it from there, so verification
/// touches no other allocation for it (with 10^6 keys each would be a
/// cache miss). Longer ids, which Latchkey does not generate, are shared.
#[derive(Clone)]
pub struct KeyId(KeyIdRepr);

#[derive(Clone)]
enum KeyIdRepr {
    /// Valid UTF-8 (it is only ever copied from a `str`).
    Inline {
        len: u8,
        bytes: [u8; KEY_ID_INLINE],
    },
    Shared(std::sync::Arc<str>),
}

/// The longest id kept inline: 30 bytes and a length fill 31 of the
/// type's 32 bytes (the size of its `Arc<str>` form with its tag).
const KEY_ID_INLINE: usize = 30;

impl KeyId {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Never fails: the bytes were a `str`'s.
            KeyIdRepr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            KeyIdRepr::Shared(id) => id,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            KeyIdRepr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyIdRepr::Shared(id) => id.as_bytes(),
        }
    }
}

impl From<&str> for KeyId {
    fn from(id: &str) -> Self {
        let mut bytes = [0u8; KEY_ID_INLINE];
        match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
            (Some(head), Ok(len)) => {
                head.copy_from_slice(id.as_bytes());
                KeyId(KeyIdRepr::Inline { len, bytes })
            }
            _ => KeyId(KeyIdRepr::Shared(id.into())),
        }
    }
}

impl From<String> for KeyId {
    fn from(id: String) -> Self {
        KeyId::from(id.as_str())
    }
}

impl std::ops::Deref for KeyId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for KeyId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for KeyId {}

impl PartialEq<str> for KeyId {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for KeyId {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl std::hash::Hash for KeyId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_are_distinct() {
        let rng = SystemRandom::new();
        let a = new_id(&rng, IdKind::AppKey);
        let b = new_id(&rng, IdKind::AppKey);
        assert!(a.starts_with("app_"));
        assert!(IdKind::AppKey.matches(&a));
        assert!(!IdKind::ServiceAccountKey.matches(&a));
        assert_ne!(a, b);
    }

    proptest::proptest! {
        #[test]
        fn ascii_and_control_is_the_bytewise_answer(
            bytes in proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                proptest::collection::vec(0u8..0x80, 0..40),
                proptest::collection::vec(0x1eu8..0x22, 0..40),
            ]
        ) {
            let expected = (
                bytes.iter().any(|b| !b.is_ascii()),
                bytes.iter().any(|b| b.is_ascii_control()),
            );
            let (high, control) = ascii_and_control(&bytes);
            proptest::prop_assert_eq!(high, expected.0);
            // Only meaningful for ASCII text (the caller checks the rest).
            if !expected.0 {
                proptest::prop_assert_eq!(control, expected.1);
            }
        }

        /// The ASCII shortcut for control characters changes nothing.
        #[test]
        fn external_id_check_matches_its_definition(id in "[ -~\u{0}-\u{1f}\u{7f}-\u{a0}\u{e9}]{0,20}") {
            let reference = !id.is_empty()
                && id.len() <= MAX_EXTERNAL_ID_LEN
                && !id.chars().any(char::is_control)
                && !IdKind::AppUser.matches(&id);
            proptest::prop_assert_eq!(check_external_id(&id).is_ok(), reference);
        }
    }

    #[test]
    fn base62_is_roughly_uniform() {
        let rng = SystemRandom::new();
        let mut out = Vec::new();
        fill_base62(&rng, &mut out, 62_000);
        let mut counts = [0u32; 62];
        for b in out {
            let i = BASE62.iter().position(|&c| c == b).expect("base62");
            counts[i] += 1;
        }
        // Expected 1000 each; a biased generator (b % 62 without rejection)
        // would give the first 8 characters ~25% more.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn key_ids_are_inline_up_to_thirty_bytes_and_compare_by_text() {
        assert_eq!(std::mem::size_of::<KeyId>(), 32);
        for len in [0usize, 1, 26, 30, 31, 80] {
            let text: String = "k".repeat(len);
            let id = KeyId::from(text.as_str());
            assert_eq!(id.as_str(), text);
            assert_eq!(id.as_bytes(), text.as_bytes());
            assert_eq!(matches!(id.0, KeyIdRepr::Inline { .. }), len <= 30);
            assert_eq!(id, KeyId::from(text.clone()));
            assert_eq!(id.to_string(), text);
            assert_eq!(format!("{id:?}"), format!("{text:?}"));
            assert_eq!(
                serde_json::to_string(&id).ok(),
                serde_json::to_string(&text).ok()
            );
        }
        assert_ne!(KeyId::from("app_1"), KeyId::from("app_2"));
        let id = KeyId::from("app_1");
        assert!(id == "app_1");
    }
}
