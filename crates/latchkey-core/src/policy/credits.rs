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
}

/// One key's balance.
#[derive(Debug)]
pub struct CreditCell {
    inner: Mutex<Inner>,
}

/// The outcome of spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub before: i64,
    pub remaining: i64,
}

impl CreditCell {
    pub fn new(state: CreditState, version: i64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state,
                version,
                dirty: false,
            }),
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
            inner.state = state;
            inner.version = version;
            inner.dirty = false;
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
    pub fn spend(&self, cost: i64, refill: Option<Refill>, now: i64) -> Result<Spent, i64> {
        let mut inner = self.lock();
        let state = inner.state.at(refill, now);
        if state != inner.state {
            inner.state = state;
            inner.dirty = true;
        }
        let before = inner.state.remaining;
        if before <= 0 || before < cost {
            return Err(before.max(0));
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

    /// Gives back what [`spend`](Self::spend) took, for a request that a
    /// later check refused.
    pub fn refund(&self, cost: i64) {
        let mut inner = self.lock();
        inner.state.remaining = inner.state.remaining.saturating_add(cost).min(MAX_CREDITS);
        inner.dirty = true;
    }

    /// The balance at `now`, refilled if due.
    pub fn remaining(&self, refill: Option<Refill>, now: i64) -> i64 {
        self.lock().state.at(refill, now).remaining
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
            inner.dirty = dirty;
        }
    }

    pub fn version(&self) -> i64 {
        self.lock().version
    }

    /// After a failed write: the balance still has to be written.
    pub fn mark_dirty(&self) {
        self.lock().dirty = true;
    }

    pub fn state(&self) -> CreditState {
        self.lock().state
    }
}
