//! Credits: a balance that each successful verification spends (one, or
//! the request's `cost`), optionally reset to a fixed amount at the start
//! of every UTC day or month. At zero the key is refused with
//! `usage_exceeded`.
//!
//! The balance lives in memory ([`CreditCell`], one per key, kept by the
//! index across reloads of the key) and is written to the store
//! periodically, not per request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// Largest balance, refill amount and cost.
pub const MAX_CREDITS: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefillInterval {
    Day,
    Month,
}

impl RefillInterval {
    /// The number of the interval that holds `now` (days, or months since
    /// the epoch, in UTC).
    pub fn period(self, now: i64) -> i64 {
        match self {
            RefillInterval::Day => now.div_euclid(86_400),
            RefillInterval::Month => {
                let t = time::OffsetDateTime::from_unix_timestamp(now)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1
            }
        }
    }
}

/// Reset the balance to `amount` at the start of every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Refill {
    pub amount: i64,
    pub interval: RefillInterval,
}

/// A balance and the refill period it belongs to (0 when the key has no
/// refill), as the store keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditState {
    pub remaining: i64,
    pub period: i64,
}

impl CreditState {
    /// The balance at `now`: refilled when a new period has begun.
    pub fn at(self, refill: Option<Refill>, now: i64) -> CreditState {
        match refill {
            Some(r) if r.interval.period(now) > self.period => CreditState {
                remaining: r.amount,
                period: r.interval.period(now),
            },
            _ => self,
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// The refill period the balance belongs to.
    period: i64,
    /// Which balance set through the API this one derives from: a key
    /// loaded again from the store keeps its cell unless the stored
    /// balance is newer.
    version: i64,
    /// Leased mode: the store's balance at the last lease (what other
    /// nodes may still take), `None` before the first.
    store_left: Option<i64>,
}

/// One key's balance.
///
/// On one node the cell holds the balance itself, and the store is
/// written from it. When nodes share a store ([`CreditCell::leased`]) the
/// store holds the balance and each node's cell only what it leased from
/// it: credits are spent from the lease, a new lease is asked for when it
/// runs short, and the balance never goes below zero anywhere; what a
/// node leased and did not spend goes back at shutdown (a crash strands
/// it: never more spent than there was).
///
/// The balance is an atomic: on one node, for a key without a refill, a
/// verification spends with one compare-and-swap and takes no lock. Every
/// other change (a refill, a lease, a balance set through the API) holds
/// the lock and writes the atomic under it.
#[derive(Debug)]
pub struct CreditCell {
    /// The balance (leased mode: what this node holds).
    remaining: AtomicI64,
    /// Changed since the store last had it (one node only).
    dirty: AtomicBool,
    inner: Mutex<Inner>,
    leased: bool,
}

/// The outcome of spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub before: i64,
    pub remaining: i64,
}

/// Why credits were not spent: the balance (as this node knows it), and
/// whether a lease from the store may cover the cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub remaining: i64,
    pub want_lease: bool,
}

/// What a key's cell starts from: the stored balance and its version, and
/// whether nodes share the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditSeed {
    pub state: CreditState,
    pub version: i64,
    pub leased: bool,
}

impl CreditCell {
    pub fn new(state: CreditState, version: i64) -> Self {
        Self {
            remaining: AtomicI64::new(state.remaining),
            dirty: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                period: state.period,
                version,
                store_left: None,
            }),
            leased: false,
        }
    }

    /// A cell of a node that shares its store: it holds nothing until it
    /// leases.
    pub fn leased(period: i64, version: i64) -> Self {
        Self {
            leased: true,
            ..Self::new(
                CreditState {
                    remaining: 0,
                    period,
                },
                version,
            )
        }
    }

    /// The cell a seed describes.
    pub fn from_seed(seed: CreditSeed) -> Self {
        if seed.leased {
            Self::leased(seed.state.period, seed.version)
        } else {
            Self::new(seed.state, seed.version)
        }
    }

    pub fn is_leased(&self) -> bool {
        self.leased
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn held(&self) -> i64 {
        self.remaining.load(Ordering::Acquire)
    }

    fn mark_changed(&self) {
        if !self.leased && !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Adds credits the store leased to this node for `period` (a lease of
    /// a later period replaces what is held), and what the store has left.
    pub fn grant(&self, amount: i64, store_left: i64, period: i64) {
        let mut inner = self.lock();
        if period > inner.period {
            inner.period = period;
            self.remaining.store(0, Ordering::Release);
        }
        if period == inner.period {
            self.remaining.fetch_add(amount, Ordering::AcqRel);
        }
        inner.store_left = Some(store_left);
    }

    /// Leased mode: what this node holds and has not spent, to give back
    /// to the store (with its period and version); it holds nothing after.
    pub fn take_unused(&self) -> Option<(i64, i64, i64)> {
        if !self.leased {
            return None;
        }
        let inner = self.lock();
        let held = self.remaining.swap(0, Ordering::AcqRel);
        if held <= 0 {
            return None;
        }
        Some((held, inner.period, inner.version))
    }

    /// The balance to show, given the store's: on one node the cell's, with
    /// a shared store the store's plus what this node holds.
    pub fn shown(&self, stored: i64) -> i64 {
        let held = self.held();
        if self.leased {
            stored.saturating_add(held)
        } else {
            held
        }
    }

    /// Takes `other`'s balance when it was set later through the API.
    pub fn take_newer(&self, other: &CreditCell) {
        let (state, version) = (other.state(), other.version());
        let mut inner = self.lock();
        if version > inner.version {
            inner.version = version;
            inner.period = state.period;
            self.dirty.store(false, Ordering::Release);
            if self.leased {
                // A balance set through the API replaces the old one, and
                // with it what this node had leased from the old one.
                self.remaining.store(0, Ordering::Release);
                inner.store_left = None;
            } else {
                self.remaining.store(state.remaining, Ordering::Release);
            }
        }
    }

    /// Spends `cost` at `now` (after a refill that is due): `Ok` with the
    /// balance before and after, or `Err` when the balance is zero or below
    /// `cost` (nothing is spent then). The balance never goes below zero.
    pub fn spend(&self, cost: i64, refill: Option<Refill>, now: i64) -> Result<Spent, Shortfall> {
        if self.leased {
            return self.spend_leased(cost, refill, now);
        }
        if refill.is_some() {
            // A refill may be due first: under the lock.
            let mut inner = self.lock();
            let state = CreditState {
                remaining: self.held(),
                period: inner.period,
            }
            .at(refill, now);
            if state.period != inner.period {
                inner.period = state.period;
                self.remaining.store(state.remaining, Ordering::Release);
                self.dirty.store(true, Ordering::Release);
            }
            return self.spend_held(cost);
        }
        self.spend_held(cost)
    }

    /// Takes `cost` from the balance with compare-and-swap.
    fn spend_held(&self, cost: i64) -> Result<Spent, Shortfall> {
        let mut before = self.held();
        loop {
            if before <= 0 || before < cost {
                return Err(Shortfall {
                    remaining: before.max(0),
                    want_lease: false,
                });
            }
            match self.remaining.compare_exchange_weak(
                before,
                before - cost,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(seen) => before = seen,
            }
        }
        if cost != 0 {
            self.mark_changed();
        }
        Ok(Spent {
            before,
            remaining: before - cost,
        })
    }

    /// [`spend`](Self::spend) from what this node leased. The refill
    /// happens in the store (at the next lease); a new period voids what
    /// was leased in the last one.
    fn spend_leased(
        &self,
        cost: i64,
        refill: Option<Refill>,
        now: i64,
    ) -> Result<Spent, Shortfall> {
        let mut inner = self.lock();
        if let Some(r) = refill {
            let period = r.interval.period(now);
            if period > inner.period {
                inner.period = period;
                self.remaining.store(0, Ordering::Release);
                inner.store_left = None;
            }
        }
        let held = self.held();
        let left = inner.store_left.unwrap_or(0);
        // Spending 0 checks that there is a credit at all.
        if held < cost.max(1) {
            return Err(Shortfall {
                remaining: held.saturating_add(left),
                want_lease: inner.store_left.is_none_or(|l| l > 0),
            });
        }
        self.remaining.store(held - cost, Ordering::Release);
        Ok(Spent {
            before: held.saturating_add(left),
            remaining: (held - cost).saturating_add(left),
        })
    }

    /// Gives back what [`spend`](Self::spend) took, for a request that a
    /// later check refused.
    pub fn refund(&self, cost: i64) {
        let _ = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                Some(r.saturating_add(cost).min(MAX_CREDITS))
            });
        self.mark_changed();
    }

    /// The balance at `now`, refilled if due (leased: what this node holds
    /// and what the store had left at the last lease).
    pub fn remaining(&self, refill: Option<Refill>, now: i64) -> i64 {
        let inner = self.lock();
        if self.leased {
            return self.held().saturating_add(inner.store_left.unwrap_or(0));
        }
        CreditState {
            remaining: self.held(),
            period: inner.period,
        }
        .at(refill, now)
        .remaining
    }

    /// Sets the balance (changed through the API): what the store now
    /// holds, so nothing is left to write.
    pub fn set(&self, state: CreditState, version: i64) {
        let mut inner = self.lock();
        inner.period = state.period;
        inner.version = version;
        self.remaining.store(state.remaining, Ordering::Release);
        self.dirty.store(false, Ordering::Release);
    }

    /// The balance to write to the store, with the version it derives
    /// from, if it changed since the last write; the cell is then clean
    /// until it changes again.
    pub fn take_dirty(&self) -> Option<(CreditState, i64)> {
        let inner = self.lock();
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some((
            CreditState {
                remaining: self.held(),
                period: inner.period,
            },
            inner.version,
        ))
    }

    /// After a reload of the whole index: this (fresh) cell takes what an
    /// older cell of the same key held, spending not yet written included,
    /// unless the store's balance is newer.
    pub fn carry_from(&self, older: &CreditCell) {
        let (state, version) = (older.state(), older.version());
        let dirty = older.dirty.load(Ordering::Acquire);
        let mut inner = self.lock();
        if inner.version <= version {
            inner.period = state.period;
            inner.version = version;
            self.remaining.store(state.remaining, Ordering::Release);
            self.dirty.store(dirty && !self.leased, Ordering::Release);
        }
    }

    pub fn version(&self) -> i64 {
        self.lock().version
    }

    /// After a failed write: the balance still has to be written.
    pub fn mark_dirty(&self) {
        self.dirty.store(!self.leased, Ordering::Release);
    }

    pub fn state(&self) -> CreditState {
        let inner = self.lock();
        CreditState {
            remaining: self.held(),
            period: inner.period,
        }
    }
}
