//! Rate limits: at most `limit` admitted verifications per fixed window of
//! `windowSeconds`, windows aligned to multiples of their length since the
//! Unix epoch (so every node agrees on where a window starts, and
//! `resetAt` is the same for every caller). Counted per key, and per
//! (key, user) for appUser JWTs, so that one end user cannot spend the
//! app's budget.
//!
//! The counts live in memory on each node; nothing is written per request.

use std::collections::HashMap;
use std::sync::Mutex;

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

/// A limit as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    pub limit: u32,
    pub window_seconds: u32,
}

impl RateLimit {
    /// Start of the window that holds `now`.
    pub fn window_start(&self, now: i64) -> i64 {
        let w = i64::from(self.window_seconds.max(1));
        now - now.rem_euclid(w)
    }
}

/// Where a limit stands after a request was counted (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the current window ends.
    pub reset_at: i64,
    /// The window this count belongs to (for [`RateLimiter::release`]).
    pub window_start: i64,
    /// For a refusal: whether it is the first of its window (a
    /// notification is sent once per window).
    pub first_refusal: bool,
    /// For a refusal of a limiter that leases its counts from the shared
    /// store: this node has used what it leased, and the cluster may have
    /// more (ask the store for a lease, then try again).
    pub want_lease: bool,
}

impl LimitState {
    /// Whole seconds until the window ends, at least 1.
    pub fn retry_after(&self, now: i64) -> i64 {
        (self.reset_at - now).max(1)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start: i64,
    /// The window's length, so that it can be forgotten once it ended.
    len: u32,
    count: u32,
    refused: bool,
    /// Leased mode: how many of the window's requests the store granted
    /// this node, and how many the cluster had left at the last lease
    /// (`None` before the first).
    granted: u32,
    cluster_left: Option<u32>,
}

impl Window {
    fn ended_before(&self, now: i64) -> bool {
        self.start + i64::from(self.len.max(1)) <= now
    }
}

/// Users counted apart per key, at most: further users of a key share one
/// window (the key's holder can sign appUser JWTs for any user id, so the
/// map must not grow without bound).
pub const MAX_USERS_PER_KEY: usize = 10_000;

#[derive(Debug, Default)]
struct KeyWindows {
    own: Window,
    users: HashMap<Box<str>, Window, RandomState>,
    /// Users beyond [`MAX_USERS_PER_KEY`] in this window.
    overflow: Window,
}

const SHARDS: usize = 16;

/// One shard: key id -> its windows.
type Shard = Mutex<HashMap<Box<str>, KeyWindows, RandomState>>;

/// The counts of every limited key on this node.
///
/// On one node the counts are the whole truth. When nodes share a store
/// ([`RateLimiter::leased`]) each node admits only what it leased from the
/// store for the window (a row per key, user and window counts what all
/// nodes took, never more than the limit): the cluster admits at most the
/// limit, and a node that cannot reach the store admits only what it
/// holds.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Box<[Shard]>,
    hasher: RandomState,
    leased: bool,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::default(),
            leased: false,
        }
    }

    /// A limiter for nodes that share a store: admits what it leased.
    pub fn leased() -> Self {
        Self {
            leased: true,
            ..Self::new()
        }
    }

    pub fn is_leased(&self) -> bool {
        self.leased
    }

    /// How many counts a node asks for at once: a tenth of the limit (at
    /// least 1, at most 1000), so a key's traffic moving between nodes
    /// strands at most that many per other node in a window.
    pub fn lease_slice(limit: RateLimit) -> u32 {
        (limit.limit / 10).clamp(1, 1000)
    }

    /// Runs `f` on the window of `key_id` (and `user`) that holds `now`,
    /// started afresh when the last one ended.
    fn with_window<R>(
        &self,
        key_id: &str,
        user: Option<&str>,
        limit: RateLimit,
        now: i64,
        f: impl FnOnce(&mut Window) -> R,
    ) -> R {
        let start = limit.window_start(now);
        let mut shard = match self.shard(key_id).lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let windows = match shard.get_mut(key_id) {
            Some(w) => w,
            None => shard.entry(Box::from(key_id)).or_default(),
        };
        let window = match user {
            None => &mut windows.own,
            Some(user) => {
                if !windows.users.contains_key(user) {
                    if windows.users.len() >= MAX_USERS_PER_KEY {
                        // Make room from users whose window ended first.
                        windows.users.retain(|_, w| !w.ended_before(now));
                    }
                    if windows.users.len() < MAX_USERS_PER_KEY {
                        windows.users.insert(Box::from(user), Window::default());
                    }
                }
                match windows.users.get_mut(user) {
                    Some(w) => w,
                    None => &mut windows.overflow,
                }
            }
        };
        if window.start != start {
            *window = Window {
                start,
                len: limit.window_seconds,
                ..Window::default()
            };
        }
        f(window)
    }

    /// Adds a lease the store granted for the window that started at
    /// `window_start`: `granted` more requests, and `taken` is what the
    /// whole cluster has taken of the window since.
    #[allow(clippy::too_many_arguments)]
    pub fn grant(
        &self,
        key_id: &str,
        user: Option<&str>,
        limit: RateLimit,
        window_start: i64,
        granted: u32,
        taken: u32,
    ) {
        self.with_window(key_id, user, limit, window_start, |w| {
            if w.start == window_start {
                w.granted = w.granted.saturating_add(granted).min(limit.limit);
                w.cluster_left = Some(limit.limit.saturating_sub(taken));
            }
        });
    }

    fn shard(&self, key_id: &str) -> &Shard {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key_id);
        // SHARDS is a power of two and the shard count is fixed.
        &self.shards[(h as usize) & (SHARDS - 1)]
    }

    /// Counts one request of `key_id` (for `user`, when an appUser JWT)
    /// against `limit` at `now`: `Ok` when admitted, `Err` when the window
    /// is full (nothing is counted then).
    pub fn try_acquire(
        &self,
        key_id: &str,
        user: Option<&str>,
        limit: RateLimit,
        now: i64,
    ) -> Result<LimitState, LimitState> {
        let start = limit.window_start(now);
        let leased = self.leased;
        self.with_window(key_id, user, limit, now, |window| {
            let mut state = LimitState {
                limit: limit.limit,
                remaining: 0,
                reset_at: start + i64::from(limit.window_seconds.max(1)),
                window_start: start,
                first_refusal: false,
                want_lease: false,
            };
            let allowance = if leased {
                window.granted.min(limit.limit)
            } else {
                limit.limit
            };
            if window.count >= allowance {
                if leased && window.cluster_left.is_none_or(|left| left > 0) {
                    state.want_lease = true;
                    return Err(state);
                }
                state.first_refusal = !window.refused;
                window.refused = true;
                return Err(state);
            }
            window.count += 1;
            state.remaining = if leased {
                (allowance - window.count).saturating_add(window.cluster_left.unwrap_or(0))
            } else {
                limit.limit - window.count
            };
            Ok(state)
        })
    }

    /// Gives back a count taken by [`try_acquire`](Self::try_acquire) for
    /// a request that a later check refused (a refused check spends
    /// nothing); a no-op once that window has passed.
    pub fn release(&self, key_id: &str, user: Option<&str>, taken: &LimitState) {
        let mut shard = match self.shard(key_id).lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(windows) = shard.get_mut(key_id) else {
            return;
        };
        let window = match user {
            None => Some(&mut windows.own),
            Some(user) => match windows.users.get_mut(user) {
                Some(w) => Some(w),
                None => Some(&mut windows.overflow),
            },
        };
        if let Some(w) = window
            && w.start == taken.window_start
        {
            w.count = w.count.saturating_sub(1);
        }
    }

    /// Forgets windows that have ended (they would start again from zero
    /// anyway); called periodically.
    pub fn prune(&self, now: i64) {
        for shard in self.shards.iter() {
            let mut shard = match shard.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            shard.retain(|_, w| {
                w.users.retain(|_, u| !u.ended_before(now));
                !w.own.ended_before(now) || !w.overflow.ended_before(now) || !w.users.is_empty()
            });
        }
    }

    /// Forgets a key's counts (the key was deleted).
    pub fn forget(&self, key_id: &str) {
        let mut shard = match self.shard(key_id).lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        shard.remove(key_id);
    }

    /// How many keys have counts (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }
}

/// A key's own window in one atomic word, for the common case (one node,
/// the key's own limit, not per user): the window's number since the
/// epoch (32 bits), whether a refusal was noticed (1 bit), the count (31
/// bits). No lock and no map lookup: about a third of what the shared map
/// costs per verification (`benches/verify.rs`, group `policy`). Held by
/// the key's live policy, so a reload of the key (a change through the
/// API) starts its count afresh on that node.
#[derive(Debug, Default)]
pub struct OwnWindow {
    packed: std::sync::atomic::AtomicU64,
}

const COUNT_BITS: u32 = 31;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const REFUSED_BIT: u64 = 1 << COUNT_BITS;

impl OwnWindow {
    /// Whether `limit`'s count fits the packed form.
    pub fn fits(limit: RateLimit) -> bool {
        u64::from(limit.limit) <= COUNT_MASK
    }

    /// The window's number since the epoch, modulo 2^32 (windows 2^32
    /// apart never meet: a count is only ever compared with the last
    /// window's), and its start. One division.
    fn number(limit: RateLimit, now: i64) -> (u64, i64) {
        let len = i64::from(limit.window_seconds.max(1));
        let n = now.div_euclid(len);
        (u64::from(n as u32), n * len)
    }

    /// As [`RateLimiter::try_acquire`] for this key's own window.
    pub fn try_acquire(&self, limit: RateLimit, now: i64) -> Result<LimitState, LimitState> {
        use std::sync::atomic::Ordering;
        let (number, start) = Self::number(limit, now);
        let mut state = LimitState {
            limit: limit.limit,
            remaining: 0,
            reset_at: start + i64::from(limit.window_seconds.max(1)),
            window_start: start,
            first_refusal: false,
            want_lease: false,
        };
        let mut current = self.packed.load(Ordering::Relaxed);
        loop {
            let (count, refused) = if current >> 32 == number {
                (current & COUNT_MASK, current & REFUSED_BIT != 0)
            } else {
                (0, false)
            };
            let (next, admitted) = if count >= u64::from(limit.limit) {
                (number << 32 | REFUSED_BIT | count, false)
            } else {
                (
                    number << 32 | if refused { REFUSED_BIT } else { 0 } | (count + 1),
                    true,
                )
            };
            if next == current {
                // Refused again in a window already noticed: nothing to write.
                return Err(state);
            }
            match self.packed.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) if admitted => {
                    state.remaining = limit.limit - u32::try_from(count + 1).unwrap_or(limit.limit);
                    return Ok(state);
                }
                Ok(_) => {
                    state.first_refusal = !refused;
                    return Err(state);
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Takes the count of `older` (a key's policy was replaced).
    pub fn carry_from(&self, older: &OwnWindow) {
        use std::sync::atomic::Ordering;
        self.packed
            .store(older.packed.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// As [`RateLimiter::release`].
    pub fn release(&self, taken: &LimitState, limit: RateLimit) {
        use std::sync::atomic::Ordering;
        let (number, _) = Self::number(limit, taken.window_start);
        let _ = self
            .packed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                (current >> 32 == number && current & COUNT_MASK > 0).then(|| current - 1)
            });
    }
}
