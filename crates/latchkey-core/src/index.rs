//! The in-memory index of live keys, apps and grants.
//!
//! Verification reads only this index, never the store. Every change that
//! affects verification (a key created or deleted, an app, service account
//! or account deleted, a grant given or taken back) is applied here right
//! after the store commits it and before the change is acknowledged, so the
//! very next request sees it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use foldhash::fast::SeedableRandomState;
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::sha256;
use crate::hs256::Hs256Key;
use crate::ids::KeyId;
use crate::secret::{CHECKSUM_LEN, KEY_SECRET_PREFIX, SECRET_BODY_LEN, check_format};
use crate::table::KeyTable;

/// What an app's settings ask of the verification path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppPolicy {
    /// JWTs signed by the app's keys must carry `exp` and live at most this
    /// many seconds.
    pub max_token_ttl: Option<i64>,
    /// Origins whose browsers may call the API with appUser credentials;
    /// `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Refuse the app's server credentials when they arrive from a browser.
    pub block_browser_secrets: bool,
}

impl AppPolicy {
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .as_ref()
            .is_none_or(|list| list.iter().any(|o| o == origin))
    }
}

/// Who owns a key. The ids are shared (`Arc<str>`): a verified
/// [`Principal`](crate::Principal) takes its ids from here without copying
/// them, and the index makes all keys of one owner share one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwner {
    App {
        account_id: Arc<str>,
        app_id: Arc<str>,
    },
    UserAccount {
        account_id: Arc<str>,
        user_account_id: Arc<str>,
    },
    ServiceAccount {
        account_id: Arc<str>,
        service_account_id: Arc<str>,
    },
}

impl KeyOwner {
    pub fn account_id(&self) -> &str {
        match self {
            KeyOwner::App { account_id, .. }
            | KeyOwner::UserAccount { account_id, .. }
            | KeyOwner::ServiceAccount { account_id, .. } => account_id,
        }
    }
}

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
    expires: i64,
    /// Last successful use (unix seconds, 0 = never), written without a
    /// store write per request and flushed periodically.
    last_used: AtomicI64,
    /// The app of an app key, set when the key enters the index: JWT
    /// verification reads the app's token-lifetime policy through it
    /// instead of looking the app up again.
    app: Option<Arc<AppEntry>>,
    pub owner: KeyOwner,
    secret: KeySecret,
    hmac: Hs256Key,
    /// The value of `last_used` that the store already has.
    flushed: AtomicI64,
}

/// A key's secret, held once: the HMAC key schedule next to it is what
/// JWT verification uses, so the raw bytes are only needed on rare paths
/// (minting a token, Basic credentials of an unusual form) and are decoded
/// again there rather than kept in a second copy for every key.
#[derive(Clone)]
enum KeySecret {
    /// `base64(secret)`, when the id is a well-formed key id and the secret
    /// a well-formed key secret: Basic credentials are
    /// `base64(keyId ":" secret)` and a key id plus the colon is 27 bytes
    /// (whole base64 groups), so the presented encoding of the secret can
    /// be compared with this directly, without decoding it or recomputing
    /// its checksum (see `verify_basic`).
    Basic(Zeroizing<[u8; BASIC_SECRET_B64_LEN]>),
    /// Any other secret, as it is.
    Raw(Zeroizing<Vec<u8>>),
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
            hmac: Hs256Key::new(secret),
            expires: expires_at.unwrap_or(NEVER),
            last_used: AtomicI64::new(last),
            flushed: AtomicI64::new(last),
        }
    }

    /// Constant-time comparison with a presented secret.
    pub fn secret_matches(&self, presented: &[u8]) -> bool {
        self.secret.raw().as_slice().ct_eq(presented).into()
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
    /// mints on behalf of an app).
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> String {
        crate::jwt::sign_hs256(&self.secret.raw(), &self.id, claims)
    }

    pub fn hmac_key(&self) -> &Hs256Key {
        &self.hmac
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
            secret: self.secret.clone(),
            hmac: self.hmac.clone(),
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
            // The larger variant: its zeros cover every byte of either.
            secret: KeySecret::Basic(Zeroizing::new([0; BASIC_SECRET_B64_LEN])),
            hmac: Hs256Key::new(b""),
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

/// A live app as its keys see it: shared ids and the one policy value the
/// verification path reads, kept current by [`KeyIndex::set_app_policy`].
#[derive(Debug)]
struct AppEntry {
    account_id: Arc<str>,
    app_id: Arc<str>,
    /// One per app id: an app inserted again under another account gets a
    /// new entry with the same cell, so its older keys see policy changes.
    max_token_ttl: Arc<TtlCell>,
}

impl AppEntry {
    fn max_token_ttl(&self) -> Option<i64> {
        self.max_token_ttl.get()
    }
}

/// An `Option<i64>` readable without a lock.
#[derive(Debug, Default)]
struct TtlCell {
    set: AtomicBool,
    seconds: AtomicI64,
}

impl TtlCell {
    fn get(&self) -> Option<i64> {
        // Value first, flag second (Release); read in the opposite order
        // (Acquire), so a set flag comes with its value.
        if self.set.load(Ordering::Acquire) {
            Some(self.seconds.load(Ordering::Acquire))
        } else {
            None
        }
    }

    /// Called under the index's write lock.
    fn put(&self, ttl: Option<i64>) {
        match ttl {
            Some(t) => {
                self.seconds.store(t, Ordering::Release);
                self.set.store(true, Ordering::Release);
            }
            None => self.set.store(false, Ordering::Release),
        }
    }
}

/// A key's expiry when it has none. An expiry at this very second, the
/// end of time, reads as none.
const NEVER: i64 = i64::MAX;

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

/// The id whose hash equals the SHA-256 of `token`. Every hash is
/// compared, in constant time, so the time taken says nothing about which
/// (if any) matched. Deployments have a handful of such tokens.
fn token_id_by_hash(tokens: &[(String, [u8; 32])], token: &str) -> Option<String> {
    let presented = sha256(token.as_bytes());
    let mut found = None;
    for (id, hash) in tokens {
        if bool::from(hash.ct_eq(&presented)) {
            found = Some(id.clone());
        }
    }
    found
}

/// The maps' hasher: foldhash, keyed per index with 64 bits from the OS
/// CSPRNG. Key ids are random and only the server inserts them; a caller
/// chooses only the ids it looks up, which cannot lengthen any probe
/// sequence, and the secret is compared in constant time after the lookup.
/// SipHash's protection against chosen inserts is not needed here, and
/// foldhash costs a fraction of it on a 26-byte id.
type Hasher = SeedableRandomState;
type Map<K, V> = HashMap<K, V, Hasher>;
type Set<T> = HashSet<T, Hasher>;

#[derive(Debug)]
struct Inner {
    accounts: Set<Arc<str>>,
    /// Live keys by id (see `table.rs`).
    keys: KeyTable<Hasher>,
    /// app id -> the app's ids and token-lifetime policy
    apps: Map<Arc<str>, Arc<AppEntry>>,
    /// app id -> what its settings ask of verification
    policies: Map<String, Arc<AppPolicy>>,
    /// service account id -> (account id, apps it created or was granted)
    service_accounts: Map<Arc<str>, (Arc<str>, HashSet<String>)>,
    /// operator token id -> SHA-256 of the token
    operator_tokens: Vec<(String, [u8; 32])>,
    /// verifier token id -> SHA-256 of the token
    verifier_tokens: Vec<(String, [u8; 32])>,
}

impl Inner {
    fn new() -> Self {
        let hasher = random_hasher();
        Self {
            accounts: Set::with_hasher(hasher.clone()),
            keys: KeyTable::with_hasher(hasher.clone()),
            apps: Map::with_hasher(hasher.clone()),
            policies: Map::with_hasher(hasher.clone()),
            service_accounts: Map::with_hasher(hasher),
            operator_tokens: Vec::new(),
            verifier_tokens: Vec::new(),
        }
    }

    /// See [`KeyIndex::insert_key`].
    fn insert_key(&mut self, mut key: LiveKey) -> bool {
        let shared = match &key.owner {
            KeyOwner::App { account_id, app_id } => self.apps.get(&**app_id).and_then(|app| {
                (app.account_id == *account_id).then(|| {
                    key.app = Some(app.clone());
                    KeyOwner::App {
                        account_id: app.account_id.clone(),
                        app_id: app.app_id.clone(),
                    }
                })
            }),
            KeyOwner::ServiceAccount {
                account_id,
                service_account_id,
            } => self
                .service_accounts
                .get_key_value(&**service_account_id)
                .and_then(|(sa, (acc, _))| {
                    (acc == account_id).then(|| KeyOwner::ServiceAccount {
                        account_id: acc.clone(),
                        service_account_id: sa.clone(),
                    })
                }),
            KeyOwner::UserAccount {
                account_id,
                user_account_id,
            } => self
                .accounts
                .get(&**account_id)
                .map(|acc| KeyOwner::UserAccount {
                    account_id: acc.clone(),
                    user_account_id: user_account_id.clone(),
                }),
        };
        let Some(owner) = shared else {
            return false;
        };
        key.owner = owner;
        self.keys.insert(key);
        true
    }
}

fn random_hasher() -> Hasher {
    let mut seed = [0u8; 8];
    match ring::rand::SystemRandom::new().fill(&mut seed) {
        Ok(()) => Hasher::with_seed(
            u64::from_le_bytes(seed),
            foldhash::SharedSeed::global_random(),
        ),
        // The OS CSPRNG does not fail on supported platforms; foldhash's
        // own per-process randomness is the fallback.
        Err(_) => Hasher::random(),
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct KeyIndex {
    inner: RwLock<Inner>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self::new()
    }
}

/// Keys whose usage [`KeyIndex::replace_with`] carries over per read lock.
const REPLACE_CHUNK: usize = 4096;

impl KeyIndex {
    pub fn new() -> Self {
        Self {
            inner: RwLock::new(Inner::new()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (each update is a single map operation), so a poisoned lock is safe
        // to keep using.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of a live key, secret included: for the rare callers that
    /// need the key itself (minting a token); the questions below copy
    /// nothing.
    pub fn key(&self, id: &str) -> Option<LiveKey> {
        self.read().keys.get(id.as_bytes()).map(LiveKey::snapshot)
    }

    /// Whether `id` is a key in the index (expired or not).
    pub fn contains_key(&self, id: &str) -> bool {
        self.with_key(id.as_bytes(), |_| ()).is_some()
    }

    /// Whether `id` is a key in the index that has not expired at `now`.
    pub fn key_is_live(&self, id: &str, now: i64) -> bool {
        self.with_key(id.as_bytes(), |key| !key.is_expired(now))
            .unwrap_or(false)
    }

    /// A key's last use as the index has it (it may be newer than the
    /// store's until the next flush); `None` for keys not in the index and
    /// keys never used.
    pub fn key_last_used(&self, id: &str) -> Option<i64> {
        self.with_key(id.as_bytes(), LiveKey::last_used_at)
            .flatten()
    }

    /// Runs `f` on a live key in place, under the index's read lock (the
    /// verification path: it copies nothing out of the key but the ids of
    /// the principal). Keep `f` short: writers wait for it.
    pub(crate) fn with_key<R>(&self, id: &[u8], f: impl FnOnce(&LiveKey) -> R) -> Option<R> {
        self.read().keys.get(id).map(f)
    }

    pub fn key_count(&self) -> usize {
        self.read().keys.len()
    }

    pub fn insert_account(&self, account_id: &str) {
        self.write().accounts.insert(account_id.into());
    }

    /// Adds a key if its owner is still live. Checking under the same lock
    /// that deletions take means a key created concurrently with the
    /// deletion of its app, service account or account never outlives it
    /// here. Returns false (and adds nothing) if the owner is gone.
    ///
    /// The key's owner ids are replaced by the index's copies of the same
    /// ids (all keys of an owner share them), and an app key is linked to
    /// its app's entry.
    pub fn insert_key(&self, key: LiveKey) -> bool {
        self.write().insert_key(key)
    }

    /// [`KeyIndex::insert_key`] for many keys under one lock; returns how
    /// many were added.
    pub fn insert_keys(&self, keys: impl IntoIterator<Item = LiveKey>) -> usize {
        let mut inner = self.write();
        keys.into_iter()
            .map(|key| inner.insert_key(key))
            .filter(|added| *added)
            .count()
    }

    /// Makes room for `additional` more keys at once (a snapshot knows how
    /// many it brings) instead of growing the table step by step.
    pub fn reserve_keys(&self, additional: usize) {
        self.write().keys.reserve(additional);
    }

    /// Changes a live key's expiry; false if the key is not live.
    pub fn set_key_expiry(&self, id: &str, expires_at: Option<i64>) -> bool {
        match self.write().keys.get_mut(id.as_bytes()) {
            Some(key) => {
                key.expires = expires_at.unwrap_or(NEVER);
                true
            }
            None => false,
        }
    }

    /// Sets what a live app's settings ask of verification.
    pub fn set_app_policy(&self, app_id: &str, policy: AppPolicy) {
        let mut inner = self.write();
        if let Some(app) = inner.apps.get(app_id) {
            app.max_token_ttl.put(policy.max_token_ttl);
            inner.policies.insert(app_id.to_string(), Arc::new(policy));
        }
    }

    /// A live app's policy (the default for an app without one).
    pub fn app_policy(&self, app_id: &str) -> Option<Arc<AppPolicy>> {
        let inner = self.read();
        if !inner.apps.contains_key(app_id) {
            return None;
        }
        Some(inner.policies.get(app_id).cloned().unwrap_or_default())
    }

    /// The app's maxTokenTtlSeconds policy, if any.
    pub fn app_token_ttl(&self, app_id: &str) -> Option<i64> {
        self.read()
            .policies
            .get(app_id)
            .and_then(|p| p.max_token_ttl)
    }

    /// Sets (or clears) only the longest JWT lifetime an app accepts.
    pub fn set_app_token_ttl(&self, app_id: &str, max_seconds: Option<i64>) {
        let mut policy = self
            .app_policy(app_id)
            .map(|p| (*p).clone())
            .unwrap_or_default();
        policy.max_token_ttl = max_seconds;
        self.set_app_policy(app_id, policy);
    }

    pub fn remove_key(&self, id: &str) -> bool {
        self.write().keys.remove(id.as_bytes()).is_some()
    }

    /// Adds an app if its account is still live; returns false otherwise.
    pub fn insert_app(&self, app_id: &str, account_id: &str) -> bool {
        let mut inner = self.write();
        let Some(account) = inner.accounts.get(account_id).cloned() else {
            return false;
        };
        let entry = match inner.apps.get(app_id) {
            Some(app) if app.account_id == account => return true,
            // Keys already in the index keep their entry; the policy cell
            // stays shared.
            Some(app) => AppEntry {
                account_id: account,
                app_id: app.app_id.clone(),
                max_token_ttl: app.max_token_ttl.clone(),
            },
            None => AppEntry {
                account_id: account,
                app_id: app_id.into(),
                max_token_ttl: Arc::default(),
            },
        };
        inner.apps.insert(entry.app_id.clone(), Arc::new(entry));
        true
    }

    /// The account that owns a live app.
    pub fn app_account(&self, app_id: &str) -> Option<Arc<str>> {
        self.read()
            .apps
            .get(app_id)
            .map(|app| Arc::clone(&app.account_id))
    }

    /// Forgets an app, its keys, and every grant of it.
    pub fn remove_app(&self, app_id: &str) {
        let mut inner = self.write();
        inner.apps.remove(app_id);
        inner.policies.remove(app_id);
        inner.keys.retain(|k| match &k.owner {
            KeyOwner::App { app_id: a, .. } => &**a != app_id,
            _ => true,
        });
        for (_, apps) in inner.service_accounts.values_mut() {
            apps.remove(app_id);
        }
    }

    /// Adds a service account if its account is still live.
    pub fn insert_service_account(&self, sa_id: &str, account_id: &str) -> bool {
        let mut inner = self.write();
        let Some(account) = inner.accounts.get(account_id).cloned() else {
            return false;
        };
        inner
            .service_accounts
            .entry(sa_id.into())
            .or_insert_with(|| (account, HashSet::new()));
        true
    }

    /// Forgets a service account and its keys.
    pub fn remove_service_account(&self, sa_id: &str) {
        let mut inner = self.write();
        inner.service_accounts.remove(sa_id);
        inner.keys.retain(|k| match &k.owner {
            KeyOwner::ServiceAccount {
                service_account_id, ..
            } => &**service_account_id != sa_id,
            _ => true,
        });
    }

    /// Records that a service account reaches an app of its own account,
    /// if both are still live.
    pub fn grant(&self, sa_id: &str, app_id: &str) -> bool {
        let mut inner = self.write();
        let Some(app_account) = inner.apps.get(app_id).map(|app| app.account_id.clone()) else {
            return false;
        };
        match inner.service_accounts.get_mut(sa_id) {
            Some((account, apps)) if *account == app_account => {
                apps.insert(app_id.to_string());
                true
            }
            _ => false,
        }
    }

    /// Replaces the apps a service account reaches with `app_ids` (those
    /// that are live apps of its account).
    pub fn set_grants(&self, sa_id: &str, app_ids: &[String]) {
        let mut inner = self.write();
        let Inner {
            apps,
            service_accounts,
            ..
        } = &mut *inner;
        if let Some((account, reached)) = service_accounts.get_mut(sa_id) {
            *reached = app_ids
                .iter()
                .filter(|app| {
                    apps.get(app.as_str())
                        .is_some_and(|app| app.account_id == *account)
                })
                .cloned()
                .collect();
        }
    }

    /// Replaces everything with the contents of `fresh` (a reload from the
    /// store), keeping the usage of keys present in both that was not
    /// flushed yet.
    ///
    /// Only the swap holds the write lock: carrying usage over (a lookup
    /// per used key) and freeing the old table would otherwise stop every
    /// verification for most of a second with 10^6 keys
    /// (`benches/replace_stall.rs`).
    pub fn replace_with(&self, fresh: KeyIndex) {
        let fresh = fresh.inner.into_inner().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *self.write(), fresh);
        // No verification holds a key of `old` any more (one holds the read
        // lock while it uses a key), so its counters are final. A fresh
        // key's `flushed` is what the store has, so a later use carried
        // over here is flushed again. A chunk at a time under the read
        // lock: writers wait for one chunk at most.
        let mut used = old
            .keys
            .values()
            .filter_map(|key| {
                let used = key.last_used.load(Ordering::Relaxed);
                (used > 0).then_some((key.id.as_bytes(), used))
            })
            .peekable();
        while used.peek().is_some() {
            let inner = self.read();
            for (id, used) in used.by_ref().take(REPLACE_CHUNK) {
                if let Some(key) = inner.keys.get(id) {
                    key.last_used.fetch_max(used, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn revoke_grant(&self, sa_id: &str, app_id: &str) {
        if let Some((_, apps)) = self.write().service_accounts.get_mut(sa_id) {
            apps.remove(app_id);
        }
    }

    /// Whether a service account created or was granted an app.
    pub fn service_account_reaches(&self, sa_id: &str, app_id: &str) -> bool {
        self.read()
            .service_accounts
            .get(sa_id)
            .is_some_and(|(_, apps)| apps.contains(app_id))
    }

    /// Forgets an account and everything under it.
    pub fn remove_account(&self, account_id: &str) {
        let mut inner = self.write();
        inner.accounts.remove(account_id);
        inner.apps.retain(|_, app| &*app.account_id != account_id);
        let Inner { apps, policies, .. } = &mut *inner;
        policies.retain(|app, _| apps.contains_key(app.as_str()));
        inner
            .service_accounts
            .retain(|_, (acc, _)| &**acc != account_id);
        inner.keys.retain(|k| k.owner.account_id() != account_id);
    }

    pub fn insert_operator_token(&self, token_id: &str, token_hash: [u8; 32]) {
        self.write()
            .operator_tokens
            .push((token_id.to_string(), token_hash));
    }

    /// The id of the operator token `token` matches, compared in constant time.
    pub fn operator_token_id(&self, token: &str) -> Option<String> {
        token_id_by_hash(&self.read().operator_tokens, token)
    }

    /// Adds a verifier token (by the SHA-256 of the token), or replaces
    /// the hash of one with the same id.
    pub fn insert_verifier_token(&self, token_id: &str, token_hash: [u8; 32]) {
        let mut inner = self.write();
        inner.verifier_tokens.retain(|(id, _)| id != token_id);
        inner
            .verifier_tokens
            .push((token_id.to_string(), token_hash));
    }

    /// Forgets a verifier token; false if it was not there.
    pub fn remove_verifier_token(&self, token_id: &str) -> bool {
        let mut inner = self.write();
        let before = inner.verifier_tokens.len();
        inner.verifier_tokens.retain(|(id, _)| id != token_id);
        inner.verifier_tokens.len() != before
    }

    /// The id of the verifier token `token` matches, compared in constant time.
    pub fn verifier_token_id(&self, token: &str) -> Option<String> {
        token_id_by_hash(&self.read().verifier_tokens, token)
    }

    /// Whether a verifier token is in the index.
    pub fn contains_verifier_token(&self, token_id: &str) -> bool {
        self.read()
            .verifier_tokens
            .iter()
            .any(|(id, _)| id == token_id)
    }

    /// Keys whose `lastUsedAt` moved since the last call, as (id, unix
    /// seconds), marking them flushed. If the caller fails to store them it
    /// hands them back with [`KeyIndex::unflush`].
    pub fn take_unflushed_last_used(&self) -> Vec<(String, i64)> {
        let inner = self.read();
        let mut out = Vec::new();
        for key in inner.keys.values() {
            let used = key.last_used.load(Ordering::Relaxed);
            let flushed = key.flushed.swap(used, Ordering::Relaxed);
            if used > flushed {
                out.push((key.id.to_string(), used));
            }
        }
        out
    }

    /// Marks keys as not flushed again after a failed store write.
    pub fn unflush(&self, failed: &[(String, i64)]) {
        let inner = self.read();
        for (id, _) in failed {
            if let Some(key) = inner.keys.get(id.as_bytes()) {
                key.flushed.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_key(id: &str, app: &str, account: &str) -> LiveKey {
        LiveKey::new(
            id.into(),
            KeyOwner::App {
                account_id: account.into(),
                app_id: app.into(),
            },
            b"secret",
            None,
            None,
        )
    }

    #[test]
    fn deleting_an_app_or_account_drops_its_keys() {
        let index = KeyIndex::new();
        index.insert_account("acc_A");
        index.insert_app("ap_1", "acc_A");
        index.insert_app("ap_2", "acc_A");
        index.insert_key(app_key("app_1", "ap_1", "acc_A"));
        index.insert_key(app_key("app_2", "ap_2", "acc_A"));
        index.insert_service_account("sa_1", "acc_A");
        index.grant("sa_1", "ap_1");
        assert!(index.service_account_reaches("sa_1", "ap_1"));
        index.remove_app("ap_1");
        assert!(index.key("app_1").is_none());
        assert!(index.key("app_2").is_some());
        assert!(!index.service_account_reaches("sa_1", "ap_1"));
        index.remove_account("acc_A");
        assert_eq!(index.key_count(), 0);
        assert!(index.app_account("ap_2").is_none());
    }

    #[test]
    fn last_used_is_flushed_once_per_change() {
        let index = KeyIndex::new();
        index.insert_account("acc_A");
        index.insert_app("ap_1", "acc_A");
        index.insert_key(app_key("app_1", "ap_1", "acc_A"));
        assert!(index.take_unflushed_last_used().is_empty());
        let touch = |now| index.with_key(b"app_1", |key| key.touch(now));
        touch(100);
        touch(90);
        assert_eq!(
            index.take_unflushed_last_used(),
            vec![("app_1".to_string(), 100)]
        );
        assert!(index.take_unflushed_last_used().is_empty());
        touch(200);
        let batch = index.take_unflushed_last_used();
        index.unflush(&batch);
        assert_eq!(
            index.take_unflushed_last_used(),
            vec![("app_1".to_string(), 200)]
        );
    }

    #[test]
    fn a_reload_keeps_usage_not_yet_stored() {
        let fresh_index = |store_last_used: &[(&str, Option<i64>)]| {
            let index = KeyIndex::new();
            index.insert_account("acc_A");
            index.insert_app("ap_1", "acc_A");
            for (id, last) in store_last_used {
                let mut key = app_key(id, "ap_1", "acc_A");
                key = LiveKey::new(key.id.to_string(), key.owner, b"s", None, *last);
                assert!(index.insert_key(key));
            }
            index
        };
        // More used keys than one chunk of the carry-over.
        let many: Vec<String> = (0..REPLACE_CHUNK + 10)
            .map(|i| format!("app_{i}"))
            .collect();
        let mut ids: Vec<(&str, Option<i64>)> = many.iter().map(|id| (id.as_str(), None)).collect();
        ids.extend([("app_old", None), ("app_stored", Some(50))]);
        let index = fresh_index(&ids);
        let touch = |id: &str, now| index.with_key(id.as_bytes(), |key| key.touch(now));
        for id in &many {
            touch(id, 70);
        }
        touch("app_old", 100);
        // Older than what the store has: nothing to flush.
        touch("app_stored", 40);
        assert_eq!(index.take_unflushed_last_used().len(), many.len() + 1);
        touch("app_stored", 60);

        // The reload: `app_old` is gone from the store, `app_new` is new,
        // `app_stored` has 50 there (older than its use here at 60).
        let mut reloaded: Vec<(&str, Option<i64>)> =
            many.iter().map(|id| (id.as_str(), Some(20))).collect();
        reloaded.extend([("app_stored", Some(50)), ("app_new", Some(30))]);
        index.replace_with(fresh_index(&reloaded));

        assert!(!index.contains_key("app_old"));
        assert_eq!(index.key_last_used("app_new"), Some(30));
        assert_eq!(index.key_last_used("app_stored"), Some(60));
        assert!(many.iter().all(|id| index.key_last_used(id) == Some(70)));
        // Usage the store lacks is flushed again; the rest is not.
        let mut unflushed = index.take_unflushed_last_used();
        unflushed.sort();
        let mut expected: Vec<(String, i64)> = many.iter().map(|id| (id.clone(), 70)).collect();
        expected.push(("app_stored".to_string(), 60));
        expected.sort();
        assert_eq!(unflushed, expected);
    }

    #[test]
    fn keys_of_deleted_owners_are_not_added() {
        let index = KeyIndex::new();
        assert!(!index.insert_app("ap_1", "acc_A"), "no such account");
        index.insert_account("acc_A");
        assert!(index.insert_app("ap_1", "acc_A"));
        assert!(
            !index.insert_key(app_key("app_1", "ap_1", "acc_B")),
            "wrong account"
        );
        index.remove_app("ap_1");
        // A create that committed before the delete but indexes after it.
        assert!(!index.insert_key(app_key("app_1", "ap_1", "acc_A")));
        assert_eq!(index.key_count(), 0);
        assert!(index.insert_service_account("sa_1", "acc_A"));
        assert!(!index.grant("sa_1", "ap_1"), "deleted app");
        index.remove_account("acc_A");
        assert!(!index.insert_service_account("sa_2", "acc_A"));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_live_key_stays_small() {
        // The table holds keys inline (`table.rs`): a slot is a `LiveKey`
        // and a tag byte, and the table is 70 to 87.5% full, so with 10^6
        // keys every 8 bytes of a key are up to 11 MB. 304 bytes now (the
        // HS256 key state is 120 of them, the id 32): at most 436 bytes of
        // table per key, within issue 6's 512.
        let slot = std::mem::size_of::<LiveKey>() + 1;
        assert!(slot <= 305, "{slot}");
    }

    #[test]
    fn a_well_formed_secret_is_kept_once_and_still_matches_and_signs() {
        let rng = ring::rand::SystemRandom::new();
        let id = crate::ids::new_id(&rng, crate::ids::IdKind::AppKey);
        let secret = crate::secret::generate(&rng, KEY_SECRET_PREFIX);
        let secret = secret.expose().as_bytes();
        let owner = KeyOwner::App {
            account_id: "acc_A".into(),
            app_id: "ap_1".into(),
        };
        let key = LiveKey::new(id.clone(), owner, secret, None, None);
        assert!(matches!(key.secret, KeySecret::Basic(_)));
        assert!(key.secret_matches(secret));
        let mut other = secret.to_vec();
        other[10] ^= 1;
        assert!(!key.secret_matches(&other));
        assert!(!key.secret_matches(&secret[1..]));
        let claims = serde_json::json!({"scope": "app"});
        assert_eq!(
            key.sign_jwt(&claims),
            crate::jwt::sign_hs256(secret, &id, &claims)
        );
        // Anything else is kept as it is.
        let raw = app_key("app_1", "ap_1", "acc_A");
        assert!(matches!(raw.secret, KeySecret::Raw(_)));
        assert!(raw.secret_matches(b"secret"));
        assert!(!raw.secret_matches(b"secreT"));
    }

    #[test]
    fn expiry_without_an_option() {
        let index = KeyIndex::new();
        index.insert_account("acc_A");
        index.insert_app("ap_1", "acc_A");
        let key = app_key("app_1", "ap_1", "acc_A");
        assert_eq!(key.expires_at(), None);
        assert!(!key.is_expired(i64::MAX - 1));
        assert!(index.insert_key(key));
        index.with_key(b"app_1", |k| k.touch(50));
        assert!(index.set_key_expiry("app_1", Some(100)));
        let key = index.key("app_1").expect("live");
        assert_eq!(key.expires_at(), Some(100));
        assert!(!key.is_expired(99));
        assert!(key.is_expired(100));
        assert_eq!(key.last_used_at(), Some(50), "usage survives a new expiry");
        assert!(index.set_key_expiry("app_1", None));
        assert!(index.key("app_1").expect("live").expires_at().is_none());
        assert!(!index.set_key_expiry("app_2", None));
    }

    #[test]
    fn a_blank_key_holds_no_secret_and_matches_nothing() {
        let blank = LiveKey::blank();
        assert!(matches!(&blank.secret, KeySecret::Basic(zeros) if zeros.iter().all(|&b| b == 0)));
        assert_eq!(
            blank.hmac_key().sign(b"input"),
            Hs256Key::new(b"").sign(b"input"),
            "the empty key's state, which is public"
        );
        // Never found: the table looks keys up by tag, and no key id is empty.
        assert!(blank.id.is_empty());
    }

    #[test]
    fn operator_tokens_match_by_hash() {
        let index = KeyIndex::new();
        index.insert_operator_token("op_1", sha256(b"lkop_abc"));
        assert_eq!(index.operator_token_id("lkop_abc").as_deref(), Some("op_1"));
        assert_eq!(index.operator_token_id("lkop_abd"), None);
    }

    #[test]
    fn verifier_tokens_match_by_hash_until_removed() {
        let index = KeyIndex::new();
        index.insert_operator_token("op_1", sha256(b"lkop_abc"));
        index.insert_verifier_token("vt_1", sha256(b"lkvf_abc"));
        index.insert_verifier_token("vt_2", sha256(b"lkvf_def"));
        assert_eq!(index.verifier_token_id("lkvf_abc").as_deref(), Some("vt_1"));
        assert_eq!(index.verifier_token_id("lkvf_def").as_deref(), Some("vt_2"));
        assert_eq!(index.verifier_token_id("lkvf_abd"), None);
        // The two kinds of token are kept apart.
        assert_eq!(index.verifier_token_id("lkop_abc"), None);
        assert_eq!(index.operator_token_id("lkvf_abc"), None);
        // Inserting again (a follower reloading it) keeps one entry.
        index.insert_verifier_token("vt_1", sha256(b"lkvf_abc"));
        assert!(index.remove_verifier_token("vt_1"));
        assert!(!index.remove_verifier_token("vt_1"));
        assert!(!index.contains_verifier_token("vt_1"));
        assert_eq!(index.verifier_token_id("lkvf_abc"), None);
        assert!(index.contains_verifier_token("vt_2"));
    }
}
