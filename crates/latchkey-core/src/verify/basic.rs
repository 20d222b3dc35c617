//! Basic credentials: `base64(keyId ":" secret)`, compared with the key's
//! secret in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::{AuthError, KEY_ID_LEN, Verified, is_key_id, key_principal};
use crate::b64;
use crate::index::{KeyIndex, LiveKey};
use crate::secret::{self, KEY_SECRET_PREFIX};

impl KeyIndex {
    /// `keyId:secret`, base64-encoded.
    pub fn verify_basic(&self, credentials: &str, now: i64) -> Result<Verified, AuthError> {
        if let Some(verified) = self.verify_basic_fast(credentials.as_bytes(), now) {
            return Ok(verified);
        }
        // Anything the fast path did not accept goes through every check
        // in order, so that it is refused with the precise reason.
        let decoded = Zeroizing::new(
            STANDARD
                .decode(credentials)
                .map_err(|_| AuthError::MalformedBasic)?,
        );
        let decoded = std::str::from_utf8(&decoded).map_err(|_| AuthError::MalformedBasic)?;
        let (key_id, secret) = decoded.split_once(':').ok_or(AuthError::MalformedBasic)?;
        if !is_key_id(key_id) {
            return Err(AuthError::MalformedKeyId);
        }
        secret::check_format(KEY_SECRET_PREFIX, secret).map_err(AuthError::MalformedSecret)?;
        self.with_key(key_id.as_bytes(), |key| {
            (key.secret_matches(secret.as_bytes()) && !key.is_expired(now))
                .then(|| basic_verified(key, now))
        })
        .flatten()
        .ok_or(AuthError::BadCredentials)
    }

    /// The common case without decoding the secret: a key id and its colon
    /// are 27 bytes, whole base64 groups, so the first 36 characters are
    /// exactly `base64(keyId ":")` and the rest exactly `base64(secret)`.
    /// Decodes the key id only and compares the rest, in constant time,
    /// with the key's stored encoding of its secret, which exists only for
    /// a secret that passes [`secret::check_format`]. Accepts exactly what
    /// the full path accepts; `None` sends everything else there.
    pub(super) fn verify_basic_fast(&self, credentials: &[u8], now: i64) -> Option<Verified> {
        const ID_B64_LEN: usize = (KEY_ID_LEN + 1) / 3 * 4;
        const _: () = assert!((KEY_ID_LEN + 1).is_multiple_of(3));
        if credentials.len() != ID_B64_LEN + crate::index::BASIC_SECRET_B64_LEN {
            return None;
        }
        let (id_b64, secret_b64) = credentials.split_at(ID_B64_LEN);
        let mut id_colon = [0u8; KEY_ID_LEN + 1];
        if !b64::decode_whole_groups(id_b64, &mut id_colon) {
            return None;
        }
        let (key_id, colon) = id_colon.split_at(KEY_ID_LEN);
        if colon != b":" {
            return None;
        }
        // The key's stored encoding exists only when its id passes
        // `is_key_id` too, so a key found here by that id needs no check.
        self.with_key(key_id, |key| {
            (key.basic_secret_b64_matches(secret_b64) && !key.is_expired(now))
                .then(|| basic_verified(key, now))
        })
        .flatten()
    }
}

/// The principal of a key that presented its secret (Basic).
fn basic_verified(key: &LiveKey, now: i64) -> Verified {
    let principal = key_principal(key, &key.owner);
    key.touch(now);
    Verified {
        principal,
        expires_at: key.expires_at(),
        issued_at: None,
        policy: key.policy().cloned(),
        ratelimit: key.ratelimit(),
    }
}
