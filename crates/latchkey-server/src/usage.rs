//! Usage analytics: every check of a key's credentials, wherever it
//! happens (`/v1/verify`, forward-auth, the gateway, introspection, the
//! management API), counted per key, minute and outcome (`valid` or the
//! refusal's code) in memory, and added to the store's buckets by the
//! flusher with `lastUsedAt` (`serve.rs`): no database write on the
//! verification path, and what was counted before a clean stop is written
//! at the stop.
//!
//! Only real keys are counted: a refusal that names a key id is counted
//! for it only if the index holds that key, so a client that makes up ids
//! cannot grow the table. The table is split in [`SHARDS`] by a byte of
//! the key id (ids end in random characters), so that verifications on
//! different cores rarely wait for one another.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use latchkey_core::Principal;
use latchkey_store::{MINUTE, UsageCount};

use crate::state::AppState;

/// Locks the table is split over.
pub const SHARDS: usize = 16;

/// `valid`: the outcome of a credential that was accepted.
pub const VALID: &str = "valid";

type Minutes = Vec<(i64, Cow<'static, str>, u64)>;
type Table = HashMap<Box<str>, Minutes, foldhash::fast::RandomState>;

/// Counts not yet written, per key: (minute, outcome, count). Between two
/// flushes a key has one or two minutes, so a list is searched.
#[derive(Debug, Default)]
pub struct UsageCounter {
    shards: [Mutex<Table>; SHARDS],
}

impl UsageCounter {
    fn shard(&self, key_id: &str) -> &Mutex<Table> {
        let byte = key_id.as_bytes().last().copied().unwrap_or(0);
        &self.shards[usize::from(byte) % SHARDS]
    }

    /// One check of `key_id` at `now` (Unix seconds) with `outcome`.
    pub fn count(&self, key_id: &str, now: i64, outcome: &'static str) {
        let minute = now - now.rem_euclid(MINUTE);
        let mut shard = self.shard(key_id).lock().unwrap_or_else(|e| e.into_inner());
        let minutes = match shard.get_mut(key_id) {
            Some(minutes) => minutes,
            None => shard.entry(key_id.into()).or_default(),
        };
        match minutes
            .iter_mut()
            .find(|(m, o, _)| *m == minute && *o == outcome)
        {
            Some((_, _, n)) => *n += 1,
            None => minutes.push((minute, Cow::Borrowed(outcome), 1)),
        }
    }

    /// Everything counted since the last call, leaving the table empty.
    pub fn take(&self) -> Vec<UsageCount> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            for (key_id, minutes) in taken {
                out.extend(
                    minutes
                        .into_iter()
                        .map(|(minute, outcome, count)| UsageCount {
                            key_id: key_id.to_string(),
                            minute,
                            outcome: outcome.into_owned(),
                            count,
                        }),
                );
            }
        }
        out
    }

    /// Puts back counts whose write failed, to go with the next flush.
    pub fn restore(&self, batch: Vec<UsageCount>) {
        for c in batch {
            let mut shard = self
                .shard(&c.key_id)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let minutes = shard.entry(c.key_id.into_boxed_str()).or_default();
            match minutes
                .iter_mut()
                .find(|(m, o, _)| *m == c.minute && *o == c.outcome)
            {
                Some((_, _, n)) => *n += c.count,
                None => minutes.push((c.minute, Cow::Owned(c.outcome), c.count)),
            }
        }
    }

    /// Keys with counts not yet written.
    pub fn pending_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }
}

/// A credential accepted for `principal`: counted for its key, if it has
/// one (operator and verifier tokens are not keys).
#[inline]
pub fn valid(state: &AppState, principal: &Principal) {
    if let Some(key_id) = principal.key_id() {
        state.usage.count(key_id, state.now(), VALID);
    }
}

/// A credential refused with `code` that named `key_id`: counted if that
/// is a key of the index.
pub fn refused(state: &AppState, key_id: Option<&str>, code: &'static str) {
    if let Some(key_id) = key_id
        && state.index.contains_key(key_id)
    {
        state.usage.count(key_id, state.now(), code);
    }
}

/// Adds what was counted since the last flush to the store; on failure
/// keeps it for the next.
pub async fn flush(state: &AppState) {
    let batch = state.usage.take();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = state.store.record_usage(&batch).await {
        tracing::warn!(error = %e, counts = batch.len(), "could not store usage counts; will retry");
        state.usage.restore(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_key_minute_and_outcome_and_takes_them_once() {
        let usage = UsageCounter::default();
        let t = 1_800_000_000;
        let minute = t - t % 60;
        usage.count("app_a", t, VALID);
        usage.count("app_a", t + 1, VALID);
        usage.count("app_a", t + 2, "key_expired");
        usage.count("app_b", t, VALID);
        usage.count("app_a", minute + 60, VALID);
        assert_eq!(usage.pending_keys(), 2);
        let mut taken = usage.take();
        taken.sort_by(|a, b| {
            (&a.key_id, a.minute, &a.outcome).cmp(&(&b.key_id, b.minute, &b.outcome))
        });
        let got: Vec<_> = taken
            .iter()
            .map(|c| {
                (
                    c.key_id.as_str(),
                    c.minute - minute,
                    c.outcome.as_str(),
                    c.count,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("app_a", 0, "key_expired", 1),
                ("app_a", 0, "valid", 2),
                ("app_a", 60, "valid", 1),
                ("app_b", 0, "valid", 1),
            ]
        );
        assert!(usage.take().is_empty());
        usage.restore(taken);
        usage.count("app_b", t, VALID);
        let again: u64 = usage
            .take()
            .iter()
            .filter(|c| c.key_id == "app_b")
            .map(|c| c.count)
            .sum();
        assert_eq!(again, 2, "a failed batch put back adds to what came since");
    }
}
