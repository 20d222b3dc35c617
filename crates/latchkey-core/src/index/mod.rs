//! The in-memory index of live keys, apps and grants.
//!
//! Verification reads only this index, never the store. Every change that
//! affects verification (a key created or deleted, an app, service account
//! or account deleted, a grant given or taken back) is applied here right
//! after the store commits it and before the change is acknowledged, so the
//! very next request sees it.

mod live_key;
mod owners;
mod reach;
#[cfg(test)]
mod tests;
mod tokens;
mod usage;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::fast::SeedableRandomState;
use ring::rand::SecureRandom;

use crate::policy::{CreditCell, RateLimit};
use crate::table::KeyTable;
use live_key::NEVER;

pub(crate) use live_key::BASIC_SECRET_B64_LEN;
pub use live_key::LiveKey;
pub use reach::Reached;

/// What an app's settings ask of the verification path (also what the
/// replication feed sends of an app, in JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPolicy {
    /// JWTs signed by the app's keys must carry `exp` and live at most this
    /// many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_ttl: Option<i64>,
    /// Origins whose browsers may call the API with appUser credentials;
    /// `None` allows any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// Refuse the app's server credentials when they arrive from a browser.
    #[serde(default)]
    pub block_browser_secrets: bool,
    /// The rate limit of the app's keys that set none of their own
    /// (`settings.defaultKeyRatelimit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_key_ratelimit: Option<RateLimit>,
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

    fn default_ratelimit(&self) -> Option<RateLimit> {
        self.max_token_ttl.default_limit()
    }
}

/// What an app's keys read of its policy on every verification, readable
/// without a lock: the longest JWT lifetime (an `Option<i64>`) and the
/// default rate limit of its keys.
#[derive(Debug, Default)]
struct TtlCell {
    set: AtomicBool,
    seconds: AtomicI64,
    /// `limit << 32 | windowSeconds`; 0 for none (a limit is at least 1).
    limit: AtomicU64,
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

    fn default_limit(&self) -> Option<RateLimit> {
        match self.limit.load(Ordering::Acquire) {
            0 => None,
            packed => Some(RateLimit {
                limit: (packed >> 32) as u32,
                window_seconds: (packed & u64::from(u32::MAX)) as u32,
            }),
        }
    }

    /// Called under the index's write lock.
    fn put_limit(&self, limit: Option<RateLimit>) {
        let packed = limit.map_or(0, |l| {
            (u64::from(l.limit) << 32) | u64::from(l.window_seconds)
        });
        self.limit.store(packed, Ordering::Release);
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
    /// user account id -> (account id, its role): the members of accounts
    members: Map<Arc<str>, (Arc<str>, crate::policy::Role)>,
    /// operator token id -> SHA-256 of the token
    operator_tokens: Vec<(String, [u8; 32])>,
    /// verifier token id -> SHA-256 of the token
    verifier_tokens: Vec<(String, [u8; 32])>,
    /// replica token id -> SHA-256 of the token
    replica_tokens: Vec<(String, [u8; 32])>,
    /// Each app's signing keys (ids, current first), which are in `keys`.
    signers: Map<Arc<str>, Vec<(String, crate::jwt::Ed25519PublicKey)>>,
    /// key id -> the key's credit balance, kept when the key is loaded
    /// again so that spending not yet written to the store is not lost
    credit_cells: Map<Box<str>, Arc<CreditCell>>,
}

impl Inner {
    fn new() -> Self {
        let hasher = random_hasher();
        Self {
            accounts: Set::with_hasher(hasher.clone()),
            keys: KeyTable::with_hasher(hasher.clone()),
            apps: Map::with_hasher(hasher.clone()),
            policies: Map::with_hasher(hasher.clone()),
            service_accounts: Map::with_hasher(hasher.clone()),
            members: Map::with_hasher(hasher),
            operator_tokens: Vec::new(),
            verifier_tokens: Vec::new(),
            replica_tokens: Vec::new(),
            signers: Map::with_hasher(random_hasher()),
            credit_cells: Map::with_hasher(random_hasher()),
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
        key.adopt_credit_cell(&mut self.credit_cells);
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

    /// Approximate bytes of the key table (its slots, each a key held
    /// inline, and their tags), for `/metrics`.
    pub fn key_table_bytes(&self) -> usize {
        self.read().keys.bytes()
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

    pub fn remove_key(&self, id: &str) -> bool {
        let mut inner = self.write();
        // A key's own balance goes with it (a key replaced by rotation
        // spends its successor's, which stays).
        inner.credit_cells.remove(id);
        inner.keys.remove(id.as_bytes()).is_some()
    }

    /// Every credit balance changed since the store last had it, as
    /// `(key id, balance)`; each cell is clean afterwards (see
    /// [`CreditCell::take_dirty`]).
    #[allow(clippy::type_complexity)]
    pub fn dirty_credits(&self) -> Vec<(String, Arc<CreditCell>, crate::policy::CreditState, i64)> {
        let inner = self.read();
        inner
            .credit_cells
            .iter()
            .filter_map(|(id, cell)| {
                cell.take_dirty()
                    .map(|(s, version)| (id.to_string(), cell.clone(), s, version))
            })
            .collect()
    }

    /// Changes a live key's policy (and credit balance), keeping its usage
    /// counters; false if the key is not in the index.
    pub fn set_key_policy(
        &self,
        id: &str,
        policy: &crate::policy::KeyPolicy,
        credits: Option<crate::policy::CreditSeed>,
    ) -> bool {
        let mut inner = self.write();
        let Inner {
            keys, credit_cells, ..
        } = &mut *inner;
        match keys.get_mut(id.as_bytes()) {
            Some(key) => {
                key.set_policy(policy, credits);
                key.adopt_credit_cell(credit_cells);
                true
            }
            None => false,
        }
    }

    /// Every credit cell (to give leased credits back at shutdown).
    pub fn credit_cells(&self) -> Vec<(String, Arc<CreditCell>)> {
        self.read()
            .credit_cells
            .iter()
            .map(|(id, cell)| (id.to_string(), cell.clone()))
            .collect()
    }

    /// A key's credit balance cell, if it has credits.
    pub fn credit_cell(&self, id: &str) -> Option<Arc<CreditCell>> {
        self.read().credit_cells.get(id).cloned()
    }
}
