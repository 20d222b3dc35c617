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
        // The current minute is the newest, at the end.
        match minutes
            .iter_mut()
            .rev()
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
    /// While the store stays unreachable a key's list would grow by a
    /// minute at a time: past [`MAX_PENDING_PER_KEY`] entries its older
    /// minutes are folded (see [`fold`]).
    pub fn restore(&self, batch: Vec<UsageCount>) {
        let mut touched: Vec<String> = Vec::new();
        for c in batch {
            if touched.last() != Some(&c.key_id) {
                touched.push(c.key_id.clone());
            }
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
            if minutes.len() > 2 * MAX_PENDING_PER_KEY {
                fold(minutes);
            }
        }
        for key_id in touched {
            let mut shard = self
                .shard(&key_id)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(minutes) = shard.get_mut(key_id.as_str()) {
                fold(minutes);
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

/// Entries one key keeps waiting for the store at most.
pub const MAX_PENDING_PER_KEY: usize = 240;

/// Keeps a key's waiting counts within [`MAX_PENDING_PER_KEY`] entries:
/// minutes more than an hour older than the newest go into their hour's
/// first minute, then those more than a day older into their day's (the
/// hour and day totals stay exact; the minute detail of that time is
/// lost); past that, the oldest entries are dropped. Sorted by minute
/// afterwards, the newest last.
fn fold(minutes: &mut Minutes) {
    if minutes.len() <= MAX_PENDING_PER_KEY {
        return;
    }
    let newest = minutes.iter().map(|(m, _, _)| *m).max().unwrap_or(0);
    for size in [latchkey_store::HOUR, latchkey_store::DAY] {
        for entry in minutes.iter_mut() {
            if newest - entry.0 >= size {
                entry.0 -= entry.0.rem_euclid(size);
            }
        }
        minutes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        minutes.dedup_by(|later, kept| {
            let same = later.0 == kept.0 && later.1 == kept.1;
            if same {
                kept.2 += later.2;
            }
            same
        });
        if minutes.len() <= MAX_PENDING_PER_KEY {
            return;
        }
    }
    let dropped = minutes.len() - MAX_PENDING_PER_KEY;
    minutes.drain(..dropped);
    tracing::warn!(
        dropped,
        "usage counts waiting for the store too long: the oldest were dropped"
    );
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

    #[test]
    fn counts_waiting_through_a_long_outage_stay_bounded_and_keep_their_hours() {
        let usage = UsageCounter::default();
        let start = 1_800_000_000 - 1_800_000_000 % 86_400;
        // Two days of failed flushes, two outcomes a minute.
        let mut total = 0;
        for minute in 0..2 * 1_440 {
            let t = start + minute * 60;
            usage.count("app_k", t, VALID);
            usage.count("app_k", t, "unauthorized");
            total += 2;
            if minute % 10 == 9 {
                let batch = usage.take();
                usage.restore(batch);
            }
        }
        let shard = usage.shard("app_k").lock().expect("lock");
        let minutes = &shard["app_k"];
        assert!(minutes.len() <= MAX_PENDING_PER_KEY, "{}", minutes.len());
        assert_eq!(minutes.iter().map(|e| e.2).sum::<u64>(), total);
        // The last hour is still by minute; older time is by hour (two
        // days of hours fit), one entry per hour and outcome.
        let newest = start + (2 * 1_440 - 1) * 60;
        assert!(minutes.iter().any(|e| e.0 == newest));
        let first_day: Vec<_> = minutes.iter().filter(|e| e.0 < start + 86_400).collect();
        assert_eq!(first_day.len(), 48, "{first_day:?}");
        assert!(first_day.iter().all(|e| e.0 % 3_600 == 0 && e.2 == 60));
    }

    #[test]
    fn a_month_waiting_is_kept_by_day_and_months_lose_their_oldest() {
        let usage = UsageCounter::default();
        let start = 1_800_000_000 - 1_800_000_000 % 86_400;
        let batch = |days: i64| -> Vec<UsageCount> {
            (0..days * 1_440)
                .map(|m| UsageCount {
                    key_id: "app_k".into(),
                    minute: start + m * 60,
                    outcome: VALID.into(),
                    count: 1,
                })
                .collect()
        };
        usage.restore(batch(30));
        {
            let shard = usage.shard("app_k").lock().expect("lock");
            let minutes = &shard["app_k"];
            assert!(minutes.len() <= MAX_PENDING_PER_KEY, "{}", minutes.len());
            assert_eq!(minutes.iter().map(|e| e.2).sum::<u64>(), 30 * 1_440);
            assert_eq!(minutes[0], (start, Cow::Borrowed(VALID), 1_440));
        }
        let _ = usage.take();
        usage.restore(batch(200));
        let shard = usage.shard("app_k").lock().expect("lock");
        let minutes = &shard["app_k"];
        assert_eq!(minutes.len(), MAX_PENDING_PER_KEY);
        // The newest minute is kept; the oldest days went.
        assert_eq!(
            minutes.last().map(|e| e.0),
            Some(start + (200 * 1_440 - 1) * 60)
        );
        assert!(minutes[0].0 > start);
    }
}
