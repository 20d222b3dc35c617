//! A live key as the index holds it: its id, owner, expiry, usage
//! counters, its secret (held once) and its verification material (for
//! an HS256 key, the HMAC state of its secret).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{AppEntry, KeyOwner};
use crate::hs256::Hs256Key;
use crate::ids::KeyId;
use crate::jwt::VerifyingKey;
use crate::policy::{CreditCell, CreditSeed, CreditState, KeyPolicy, LivePolicy, RateLimit};
use crate::secret::{CHECKSUM_LEN, KEY_SECRET_PREFIX, SECRET_BODY_LEN, check_format};

/// A live key as the verification path needs it.
///
/// `repr(C)` to keep the declared order: what every verification reads
/// comes first, then the Basic and the JWT material, so that a
/// verification touches as few cache lines of the key as it can (with
/// many keys, each is a miss).
#[repr(C)]
pub struct LiveKey {
    pub id: KeyId,
    /// Unix seconds from which the key is refused; `NEVER` for none (an
    /// `Option` would take 8 more bytes of every key).
    pub(super) expires: i64,
    /// Last successful use (unix seconds, 0 = never), written without a
    /// store write per request and flushed periodically.
    pub(super) last_used: AtomicI64,
    /// The app of an app key, set when the key enters the index: JWT
    /// verification reads the app's token-lifetime policy through it
    /// instead of looking the app up again.
    pub(super) app: Option<Arc<AppEntry>>,
    /// Permissions, restrictions, limits, credits and metadata, for a key
    /// that has any (`None` costs nothing on the verification path).
    pub(super) policy: Option<Arc<LivePolicy>>,
    pub owner: KeyOwner,
    pub(super) secret: KeySecret,
    /// What verifies its JWTs, and so their one algorithm (see `jwt`).
    verifying_key: VerifyingKey,
    /// The value of `last_used` that the store already has.
    pub(super) flushed: AtomicI64,
}

/// A key's secret, held once: the HMAC key schedule next to it is what
/// JWT verification uses, so the raw bytes are only needed on rare paths
/// (minting a token, Basic credentials of an unusual form) and are decoded
/// again there rather than kept in a second copy for every key.
#[derive(Clone)]
pub(super) enum KeySecret {
    /// `base64(secret)`, when the id is a well-formed key id and the secret
    /// a well-formed key secret: Basic credentials are
    /// `base64(keyId ":" secret)` and a key id plus the colon is 27 bytes
    /// (whole base64 groups), so the presented encoding of the secret can
    /// be compared with this directly, without decoding it or recomputing
    /// its checksum (see `verify_basic`).
    Basic(Zeroizing<[u8; BASIC_SECRET_B64_LEN]>),
    /// Any other secret, as it is.
    Raw(Zeroizing<Vec<u8>>),
    /// None: the key is a customer's public key (issue 22). It matches no
    /// presented secret, so Basic with it is refused, and it signs
    /// nothing.
    None,
    /// None here either: the key is an app's signing key, Latchkey's own,
    /// whose private key stays sealed in the store and is opened only to
    /// mint. It verifies only appUser tokens (Latchkey mints nothing else
    /// with it).
    Signer,
}

impl KeySecret {
    fn new(id: &str, secret: &[u8]) -> Self {
        match basic_secret_b64(id, secret) {
            Some(encoded) => KeySecret::Basic(encoded),
            None => KeySecret::Raw(Zeroizing::new(secret.to_vec())),
        }
    }

    /// The secret's bytes.
    fn raw(&self) -> Zeroizing<Vec<u8>> {
        match self {
            KeySecret::Basic(encoded) => {
                let mut out = Zeroizing::new(vec![0u8; KEY_SECRET_LEN]);
                // Our own encoding of KEY_SECRET_LEN bytes always decodes
                // to exactly that many; anything else leaves an empty
                // secret, which matches nothing.
                match STANDARD.decode_slice(encoded.as_slice(), out.as_mut_slice()) {
                    Ok(KEY_SECRET_LEN) => out,
                    _ => Zeroizing::new(Vec::new()),
                }
            }
            KeySecret::Raw(raw) => raw.clone(),
            KeySecret::None | KeySecret::Signer => Zeroizing::new(Vec::new()),
        }
    }
}

impl fmt::Debug for LiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveKey")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at())
            .finish()
    }
}

impl LiveKey {
    pub fn new(
        id: String,
        owner: KeyOwner,
        secret: &[u8],
        expires_at: Option<i64>,
        last_used_at: Option<i64>,
    ) -> Self {
        let last = last_used_at.unwrap_or(0);
        Self {
            secret: KeySecret::new(&id, secret),
            id: id.into(),
            owner,
            app: None,
            policy: None,
            // Every key is an HS256 key: its secret is the HMAC key.
            verifying_key: VerifyingKey::Hs256(Hs256Key::new(secret)),
            expires: expires_at.unwrap_or(NEVER),
            last_used: AtomicI64::new(last),
            flushed: AtomicI64::new(last),
        }
    }

    /// A key that holds a customer's public key instead of a secret: it
    /// verifies the JWTs its private key signed, with the public key's
    /// one algorithm, and nothing else (no Basic, no minting).
    pub fn with_public_key(
        id: String,
        owner: KeyOwner,
        public_key: crate::jwt::PublicKey,
        expires_at: Option<i64>,
        last_used_at: Option<i64>,
    ) -> Self {
        let last = last_used_at.unwrap_or(0);
        Self {
            secret: KeySecret::None,
            id: id.into(),
            owner,
            app: None,
            policy: None,
            verifying_key: VerifyingKey::from(public_key),
            expires: expires_at.unwrap_or(NEVER),
            last_used: AtomicI64::new(last),
            flushed: AtomicI64::new(last),
        }
    }

    /// An app's signing key (see [`KeySecret::Signer`]), by its public
    /// key: it verifies the appUser tokens Latchkey minted with it.
    pub fn app_signer(
        id: String,
        account_id: &str,
        app_id: &str,
        public_key: crate::jwt::Ed25519PublicKey,
    ) -> Self {
        let owner = KeyOwner::App {
            account_id: account_id.into(),
            app_id: app_id.into(),
        };
        let mut key = Self::with_public_key(
            id,
            owner,
            crate::jwt::PublicKey::Ed25519(public_key),
            None,
            None,
        );
        key.secret = KeySecret::Signer;
        key
    }

    /// Whether the key holds a secret (Basic, HS256, minting), rather than
    /// a public key.
    pub fn holds_secret(&self) -> bool {
        !matches!(self.secret, KeySecret::None | KeySecret::Signer)
    }

    /// Whether the key is an app's signing key, which verifies appUser
    /// tokens only.
    pub fn is_app_signer(&self) -> bool {
        matches!(self.secret, KeySecret::Signer)
    }

    /// The key with its policy (nothing changes for an empty one).
    /// `credits`: the stored balance and the version of the last balance
    /// set through the API, when the policy has credits.
    pub fn with_policy(mut self, policy: &KeyPolicy, credits: Option<CreditSeed>) -> Self {
        self.set_policy(policy, credits);
        self
    }

    /// See [`LiveKey::with_policy`].
    pub(super) fn set_policy(&mut self, policy: &KeyPolicy, credits: Option<CreditSeed>) {
        let counted = self.policy.take();
        self.set_policy_afresh(policy, credits);
        // The count of the key's own window goes on across the change.
        if let (Some(old), Some(new)) = (counted, self.policy.as_mut().and_then(Arc::get_mut)) {
            new.carry_own_window(&old);
        }
    }

    fn set_policy_afresh(&mut self, policy: &KeyPolicy, credits: Option<CreditSeed>) {
        if policy.is_empty() {
            self.policy = None;
            return;
        }
        let cell = match (&policy.credits, credits) {
            (Some(_), Some(seed)) => Some(Arc::new(CreditCell::from_seed(seed))),
            // No balance of its own (a rotated key spending its
            // successor's): a placeholder that the owner's balance replaces
            // (version -1 is older than any stored one).
            (Some(_), None) => Some(Arc::new(CreditCell::new(
                CreditState {
                    remaining: 0,
                    period: 0,
                },
                -1,
            ))),
            (None, _) => None,
        };
        self.policy = Some(Arc::new(LivePolicy::new(policy, cell)));
    }

    /// The key's policy, if it has one.
    pub fn policy(&self) -> Option<&Arc<LivePolicy>> {
        self.policy.as_ref()
    }

    /// The rate limit that applies to the key: its own, or else its app's
    /// default.
    pub fn ratelimit(&self) -> Option<RateLimit> {
        self.policy
            .as_ref()
            .and_then(|p| p.ratelimit())
            .or_else(|| self.app.as_ref().and_then(|app| app.default_ratelimit()))
    }

    /// Keeps one credit cell per key id in `cells`: a key loaded again
    /// takes over the cell it had (with what was spent since the last
    /// write to the store), unless the stored balance was set later
    /// through the API.
    pub(super) fn adopt_credit_cell<S: std::hash::BuildHasher>(
        &mut self,
        cells: &mut std::collections::HashMap<Box<str>, Arc<CreditCell>, S>,
    ) {
        let fresh = self.policy.as_ref().and_then(|p| p.credits().cloned());
        let Some(fresh) = fresh else {
            cells.remove(self.id.as_str());
            return;
        };
        // A key replaced by rotation spends its successor's balance.
        let balance_id = self
            .policy
            .as_ref()
            .and_then(|p| p.balance_of())
            .unwrap_or(self.id.as_str())
            .to_string();
        match cells.get(balance_id.as_str()) {
            Some(existing) if !Arc::ptr_eq(existing, &fresh) => {
                existing.take_newer(&fresh);
                let existing = existing.clone();
                if let Some(policy) = self.policy.as_mut().and_then(Arc::get_mut) {
                    policy.set_credit_cell(existing);
                }
            }
            Some(_) => {}
            None => {
                cells.insert(Box::from(balance_id.as_str()), fresh);
            }
        }
    }

    /// Constant-time comparison with a presented secret; false for a
    /// public-key key, whatever is presented.
    pub fn secret_matches(&self, presented: &[u8]) -> bool {
        self.holds_secret() && bool::from(self.secret.raw().as_slice().ct_eq(presented))
    }

    /// Constant-time comparison of `presented` with the standard base64
    /// encoding of this key's secret; false when the secret is not a
    /// well-formed key secret. Encodings of whole groups are unique, so
    /// this is true exactly when `presented` decodes to the secret.
    pub fn basic_secret_b64_matches(&self, presented: &[u8]) -> bool {
        let KeySecret::Basic(expected) = &self.secret else {
            return false;
        };
        let Ok(presented) = <&[u8; BASIC_SECRET_B64_LEN]>::try_from(presented) else {
            return false;
        };
        crate::crypto::ct_eq_words(expected.as_slice(), presented)
    }

    /// Signs `claims` as an HS256 JWT with this key (for tokens Latchkey
    /// mints on behalf of an app); `None` for a public-key key, which has
    /// no secret to sign with.
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> Option<String> {
        self.holds_secret()
            .then(|| crate::jwt::sign_hs256(&self.secret.raw(), &self.id, claims))
    }

    /// The HMAC state of the key's secret; `None` for a public-key key.
    pub fn hmac_key(&self) -> Option<&Hs256Key> {
        match &self.verifying_key {
            VerifyingKey::Hs256(key) => Some(key),
            VerifyingKey::Ed25519(_) | VerifyingKey::Es256(_) => None,
        }
    }

    /// The customer's public key of a public-key key.
    pub fn public_key(&self) -> Option<crate::jwt::PublicKey> {
        match &self.verifying_key {
            VerifyingKey::Hs256(_) => None,
            VerifyingKey::Ed25519(key) => Some(crate::jwt::PublicKey::Ed25519(key.clone())),
            VerifyingKey::Es256(key) => Some(crate::jwt::PublicKey::P256(key.clone())),
        }
    }

    /// What verifies the key's JWTs: its material and its algorithm.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying_key
    }

    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires && self.expires != NEVER
    }

    /// Unix seconds from which the key is refused, if ever.
    pub fn expires_at(&self) -> Option<i64> {
        (self.expires != NEVER).then_some(self.expires)
    }

    pub(crate) fn touch(&self, now: i64) {
        // Most requests land in the second already recorded: reading first
        // keeps them from writing the shared cache line.
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// A copy of the key as it is now (for callers outside the index,
    /// which holds its keys inline).
    pub(crate) fn snapshot(&self) -> LiveKey {
        LiveKey {
            id: self.id.clone(),
            owner: self.owner.clone(),
            app: self.app.clone(),
            policy: self.policy.clone(),
            secret: self.secret.clone(),
            verifying_key: self.verifying_key.clone(),
            expires: self.expires,
            last_used: AtomicI64::new(self.last_used.load(Ordering::Relaxed)),
            flushed: AtomicI64::new(self.flushed.load(Ordering::Relaxed)),
        }
    }

    /// What the index's table holds in a slot without a key: no id, no
    /// secret (zeros), and the HMAC state of the empty key, which is
    /// public. Writing it over a slot overwrites every byte of a key's
    /// secret and HMAC state there (see `table.rs`).
    pub(crate) fn blank() -> LiveKey {
        let nobody: Arc<str> = Arc::from("");
        LiveKey {
            id: KeyId::from(""),
            owner: KeyOwner::App {
                account_id: nobody.clone(),
                app_id: nobody,
            },
            app: None,
            policy: None,
            // The larger variant: its zeros cover every byte of either.
            secret: KeySecret::Basic(Zeroizing::new([0; BASIC_SECRET_B64_LEN])),
            // The largest variant (HS256's 120 bytes; a public key takes
            // at most 65): its bytes cover every byte of any other's.
            verifying_key: VerifyingKey::Hs256(Hs256Key::new(b"")),
            expires: NEVER,
            last_used: AtomicI64::new(0),
            flushed: AtomicI64::new(0),
        }
    }

    pub fn last_used_at(&self) -> Option<i64> {
        match self.last_used.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// The longest JWT lifetime the key's app accepts (its
    /// maxTokenTtlSeconds), as of the last policy change; `None` for keys
    /// of other owners and keys not (yet) in an index.
    pub fn app_token_ttl(&self) -> Option<i64> {
        self.app.as_ref().and_then(|app| app.max_token_ttl())
    }
}

/// A key's expiry when it has none. An expiry at this very second, the
/// end of time, reads as none.
pub(super) const NEVER: i64 = i64::MAX;

/// Length of the standard base64 encoding of a key secret (54 bytes).
pub(crate) const BASIC_SECRET_B64_LEN: usize = (KEY_SECRET_LEN / 3) * 4;
const KEY_SECRET_LEN: usize = KEY_SECRET_PREFIX.len() + SECRET_BODY_LEN + CHECKSUM_LEN;
const _: () = assert!(KEY_SECRET_LEN.is_multiple_of(3) && BASIC_SECRET_B64_LEN.is_multiple_of(8));

/// Only for a well-formed key id and a well-formed secret: Basic's fast
/// path relies on both.
fn basic_secret_b64(id: &str, secret: &[u8]) -> Option<Zeroizing<[u8; BASIC_SECRET_B64_LEN]>> {
    if !crate::verify::is_key_id(id) {
        return None;
    }
    let text = std::str::from_utf8(secret).ok()?;
    check_format(KEY_SECRET_PREFIX, text).ok()?;
    let mut out = Zeroizing::new([0u8; BASIC_SECRET_B64_LEN]);
    match STANDARD.encode_slice(secret, out.as_mut_slice()) {
        Ok(BASIC_SECRET_B64_LEN) => Some(out),
        _ => None,
    }
}
