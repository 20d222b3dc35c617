//! Keys' last use: recorded in the index on each verification, flushed to
//! the store in batches, and carried over when the whole index is reloaded.

use std::sync::atomic::Ordering;

use super::KeyIndex;

/// Keys whose usage [`KeyIndex::replace_with`] carries over per read lock.
pub(super) const REPLACE_CHUNK: usize = 4096;

impl KeyIndex {
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
        // Credit balances, spending not yet written included, carry over
        // too (unless the store's balance is newer: set through the API).
        {
            let inner = self.read();
            for (id, older) in &old.credit_cells {
                if let Some(cell) = inner.credit_cells.get(id) {
                    cell.carry_from(older);
                }
            }
        }
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
