//! Credits: a balance that each successful verification spends (one, or
//! the request's `cost`), optionally reset to a fixed amount at the start
//! of every UTC day or month. At zero the key is refused with
//! `usage_exceeded`.
//!
//! The balance lives in memory ([`CreditCell`], one per key, kept by the
//! index across reloads of the key) and is written to the store
//! periodically, not per request.

use std::sync::Mutex;

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
    state: CreditState,
    /// Which balance set through the API this one derives from: a key
    /// loaded again from the store keeps its cell unless the stored
    /// balance is newer.
    version: i64,
    /// Changed since the store last had it.
    dirty: bool,
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
#[derive(Debug)]
pub struct CreditCell {
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
            inner: Mutex::new(Inner {
                state,
                version,
                dirty: false,
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

    /// Adds credits the store leased to this node for `period` (a lease of
    /// a later period replaces what is held), and what the store has left.
    pub fn grant(&self, amount: i64, store_left: i64, period: i64) {
        let mut inner = self.lock();
        if period > inner.state.period {
            inner.state = CreditState {
                remaining: 0,
                period,
            };
        }
        if period == inner.state.period {
            inner.state.remaining = inner.state.remaining.saturating_add(amount);
        }
        inner.store_left = Some(store_left);
    }

    /// Leased mode: what this node holds and has not spent, to give back
    /// to the store (with its period and version); it holds nothing after.
    pub fn take_unused(&self) -> Option<(i64, i64, i64)> {
        let mut inner = self.lock();
        let held = inner.state.remaining;
        if !self.leased || held <= 0 {
            return None;
        }
        inner.state.remaining = 0;
        Some((held, inner.state.period, inner.version))
    }

    /// The balance to show, given the store's: on one node the cell's, with
    /// a shared store the store's plus what this node holds.
    pub fn shown(&self, stored: i64) -> i64 {
        let held = self.lock().state.remaining;
        if self.leased {
            stored.saturating_add(held)
        } else {
            held
        }
    }

    /// Takes `other`'s balance when it was set later through the API.
    pub fn take_newer(&self, other: &CreditCell) {
        let (state, version) = {
            let o = other.lock();
            (o.state, o.version)
        };
        let mut inner = self.lock();
        if version > inner.version {
            inner.version = version;
            inner.dirty = false;
            if self.leased {
                // A balance set through the API replaces the old one, and
                // with it what this node had leased from the old one.
                inner.state = CreditState {
                    remaining: 0,
                    period: state.period,
                };
                inner.store_left = None;
            } else {
                inner.state = state;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Spends `cost` at `now` (after a refill that is due): `Ok` with the
    /// balance before and after, or `Err(balance)` when the balance is zero
    /// or below `cost` (nothing is spent then). The balance never goes
    /// below zero.
    pub fn spend(&self, cost: i64, refill: Option<Refill>, now: i64) -> Result<Spent, Shortfall> {
        if self.leased {
            return self.spend_leased(cost, refill, now);
        }
        let mut inner = self.lock();
        let state = inner.state.at(refill, now);
        if state != inner.state {
            inner.state = state;
            inner.dirty = true;
        }
        let before = inner.state.remaining;
        if before <= 0 || before < cost {
            return Err(Shortfall {
                remaining: before.max(0),
                want_lease: false,
            });
        }
        inner.state.remaining = before - cost;
        if cost != 0 {
            inner.dirty = true;
        }
        Ok(Spent {
            before,
            remaining: inner.state.remaining,
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
            if period > inner.state.period {
                inner.state = CreditState {
                    remaining: 0,
                    period,
                };
                inner.store_left = None;
            }
        }
        let held = inner.state.remaining;
        let left = inner.store_left.unwrap_or(0);
        // Spending 0 checks that there is a credit at all.
        if held < cost.max(1) {
            return Err(Shortfall {
                remaining: held.saturating_add(left),
                want_lease: inner.store_left.is_none_or(|l| l > 0),
            });
        }
        inner.state.remaining = held - cost;
        Ok(Spent {
            before: held.saturating_add(left),
            remaining: inner.state.remaining.saturating_add(left),
        })
    }

    /// Gives back what [`spend`](Self::spend) took, for a request that a
    /// later check refused.
    pub fn refund(&self, cost: i64) {
        let mut inner = self.lock();
        inner.state.remaining = inner.state.remaining.saturating_add(cost).min(MAX_CREDITS);
        inner.dirty = !self.leased;
    }

    /// The balance at `now`, refilled if due (leased: what this node holds
    /// and what the store had left at the last lease).
    pub fn remaining(&self, refill: Option<Refill>, now: i64) -> i64 {
        let inner = self.lock();
        if self.leased {
            return inner
                .state
                .remaining
                .saturating_add(inner.store_left.unwrap_or(0));
        }
        inner.state.at(refill, now).remaining
    }

    /// Sets the balance (changed through the API): what the store now
    /// holds, so nothing is left to write.
    pub fn set(&self, state: CreditState, version: i64) {
        let mut inner = self.lock();
        inner.state = state;
        inner.version = version;
        inner.dirty = false;
    }

    /// The balance to write to the store, with the version it derives
    /// from, if it changed since the last write; the cell is then clean
    /// until it changes again.
    pub fn take_dirty(&self) -> Option<(CreditState, i64)> {
        let mut inner = self.lock();
        if !inner.dirty {
            return None;
        }
        inner.dirty = false;
        Some((inner.state, inner.version))
    }

    /// After a reload of the whole index: this (fresh) cell takes what an
    /// older cell of the same key held, spending not yet written included,
    /// unless the store's balance is newer.
    pub fn carry_from(&self, older: &CreditCell) {
        let (state, version, dirty) = {
            let o = older.lock();
            (o.state, o.version, o.dirty)
        };
        let mut inner = self.lock();
        if inner.version <= version {
            inner.state = state;
            inner.version = version;
            inner.dirty = dirty && !self.leased;
        }
    }

    pub fn version(&self) -> i64 {
        self.lock().version
    }

    /// After a failed write: the balance still has to be written.
    pub fn mark_dirty(&self) {
        self.lock().dirty = !self.leased;
    }

    pub fn state(&self) -> CreditState {
        self.lock().state
    }
}
