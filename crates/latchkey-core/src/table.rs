//! The index's table of live keys, laid out for lookups in a large index.
//!
//! With 10^6 keys almost every lookup misses the CPU caches, and on this
//! kind of machine each dependent miss costs 100 to 300 ns. A SwissTable
//! (`std::collections::HashMap`) reads its control bytes, then the bucket
//! they point to, then the key's id and the key: three dependent misses. Here a
//! slot holds the id's hash, the id and the key, so a lookup reads the slot
//! (its neighbours share the cache line), then the id and the key, whose
//! addresses are both in the slot: two.
//!
//! Open addressing with linear probing; at most 7/8 of the slots are used
//! (so lookups stay short); removal shifts the following entries back
//! (no tombstones). Keys are only inserted by the server (ids are random),
//! and the hasher is keyed per table (see `index.rs`).

use std::hash::BuildHasher;
use std::sync::Arc;

use crate::index::LiveKey;

#[derive(Clone)]
struct Slot {
    hash: u64,
    /// The key's own `id` (the same allocation).
    id: Arc<str>,
    key: Arc<LiveKey>,
}

/// See the module documentation.
pub(crate) struct KeyTable<S> {
    /// A power of two in length, or empty.
    slots: Vec<Option<Slot>>,
    len: usize,
    hasher: S,
}

impl<S> std::fmt::Debug for KeyTable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable")
            .field("len", &self.len)
            .field("capacity", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<S: BuildHasher> KeyTable<S> {
    pub(crate) fn with_hasher(hasher: S) -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            hasher,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn hash(&self, id: &[u8]) -> u64 {
        self.hasher.hash_one(id)
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where an entry with this hash starts probing: the hash's top bits
    /// (the best mixed ones), as many as the table has index bits.
    fn home(&self, hash: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        match bits {
            0 => 0,
            // Dropping the low bits keeps a value below the table length.
            _ => usize::try_from(hash >> (64 - bits)).unwrap_or(0),
        }
    }

    /// The slot holding `id`, if any.
    fn find(&self, id: &[u8], hash: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(hash);
        // At least one slot is always empty, so this ends.
        loop {
            match &self.slots[i] {
                None => return None,
                Some(slot) if slot.hash == hash && slot.id.as_bytes() == id => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    pub(crate) fn get(&self, id: &[u8]) -> Option<&Arc<LiveKey>> {
        let at = self.find(id, self.hash(id))?;
        self.slots[at].as_ref().map(|slot| &slot.key)
    }

    /// Adds `key` under its id, replacing (and returning) a key with the
    /// same id.
    pub(crate) fn insert(&mut self, key: Arc<LiveKey>) -> Option<Arc<LiveKey>> {
        let id = key.id.clone();
        let hash = self.hash(id.as_bytes());
        if let Some(at) = self.find(id.as_bytes(), hash) {
            let slot = self.slots[at].as_mut()?;
            return Some(std::mem::replace(&mut slot.key, key));
        }
        // Grow at 7/8 full.
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        self.place(Slot { hash, id, key });
        self.len += 1;
        None
    }

    /// Puts a slot whose id is not in the table into the first free place
    /// of its probe sequence.
    fn place(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut i = self.home(slot.hash);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some(slot);
    }

    fn grow(&mut self) {
        self.resize((self.slots.len() * 2).max(16));
    }

    /// Grows the table once so that `additional` more entries fit without
    /// growing again (each growth re-places every entry, and the old and
    /// new slot arrays exist side by side meanwhile).
    pub(crate) fn reserve(&mut self, additional: usize) {
        if additional == 0 {
            return;
        }
        let wanted = self.len.saturating_add(additional);
        let mut capacity = self.slots.len().max(16);
        while wanted.saturating_mul(8) > capacity.saturating_mul(7) {
            let Some(doubled) = capacity.checked_mul(2) else {
                return;
            };
            capacity = doubled;
        }
        if capacity > self.slots.len() {
            self.resize(capacity);
        }
    }

    fn resize(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![None; capacity]);
        for slot in old.into_iter().flatten() {
            self.place(slot);
        }
    }

    pub(crate) fn remove(&mut self, id: &[u8]) -> Option<Arc<LiveKey>> {
        let at = self.find(id, self.hash(id))?;
        let removed = self.slots[at].take()?;
        self.len -= 1;
        self.close_gap(at);
        Some(removed.key)
    }

    /// After `hole` was emptied: moves back each following entry of the
    /// run that may sit there (its home is not after the hole), so every
    /// entry stays reachable from its home without tombstones.
    fn close_gap(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(slot) = &self.slots[j] else {
                return;
            };
            let home = self.home(slot.hash);
            // The entry at j is (j - home) past its home; it may move back
            // to the hole if the hole is not before its home.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
    }

    /// Keeps the keys for which `keep` is true (rebuilding the table: this
    /// runs when an app, service account or account is deleted).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&LiveKey) -> bool) {
        if self.slots.iter().flatten().all(|slot| keep(&slot.key)) {
            return;
        }
        let old = std::mem::take(&mut self.slots);
        let kept: Vec<Slot> = old.into_iter().flatten().filter(|s| keep(&s.key)).collect();
        self.len = 0;
        let mut capacity = 16;
        while kept.len() * 8 > capacity * 7 {
            capacity *= 2;
        }
        self.slots = if kept.is_empty() {
            Vec::new()
        } else {
            vec![None; capacity]
        };
        for slot in kept {
            self.place(slot);
            self.len += 1;
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<LiveKey>> {
        self.slots.iter().flatten().map(|slot| &slot.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::KeyOwner;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(id: &str) -> Arc<LiveKey> {
        Arc::new(LiveKey::new(
            id.to_string(),
            KeyOwner::App {
                account_id: "acc_A".into(),
                app_id: "ap_1".into(),
            },
            b"secret",
            None,
            None,
        ))
    }

    /// A hasher with few distinct values, so that probe runs are long
    /// and wrap around the end of the table.
    #[derive(Clone, Default)]
    struct Colliding;

    impl BuildHasher for Colliding {
        type Hasher = CollidingHasher;
        fn build_hasher(&self) -> CollidingHasher {
            CollidingHasher(0)
        }
    }

    struct CollidingHasher(u64);

    impl std::hash::Hasher for CollidingHasher {
        fn finish(&self) -> u64 {
            // Three homes, one of them the last slot (so runs wrap).
            ((self.0 % 3) + 1) << 62 | u64::MAX >> 2
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(b));
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Remove(u8),
        Retain(u8),
        Reserve(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0u8..40).prop_map(Op::Insert),
            3 => (0u8..40).prop_map(Op::Remove),
            1 => (1u8..5).prop_map(Op::Retain),
            1 => (0u8..64).prop_map(Op::Reserve),
        ]
    }

    fn check<S: BuildHasher>(ops: &[Op], table: &mut KeyTable<S>) -> Result<(), TestCaseError> {
        let mut model: HashMap<String, Arc<LiveKey>> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(n) => {
                    let k = key(&format!("app_{n}"));
                    let old = table.insert(k.clone());
                    let expected = model.insert(k.id.to_string(), k);
                    prop_assert_eq!(old.map(|k| k.id.clone()), expected.map(|k| k.id.clone()));
                }
                Op::Remove(n) => {
                    let id = format!("app_{n}");
                    let removed = table.remove(id.as_bytes()).map(|k| k.id.to_string());
                    prop_assert_eq!(removed, model.remove(&id).map(|k| k.id.to_string()));
                }
                Op::Retain(m) => {
                    // Keeps the ids whose number is not a multiple of m.
                    let keep =
                        |k: &LiveKey| !k.id[4..].parse::<u8>().unwrap_or(0).is_multiple_of(*m);
                    table.retain(keep);
                    model.retain(|_, k| keep(k));
                }
                Op::Reserve(n) => {
                    let before = table.slots.len();
                    table.reserve(usize::from(*n));
                    let capacity = table.slots.len();
                    prop_assert!(capacity >= before);
                    // The reserved entries fit without growing again.
                    prop_assert!((table.len() + usize::from(*n)) * 8 <= capacity.max(16) * 7);
                }
            }
            prop_assert_eq!(table.len(), model.len());
            for n in 0u8..40 {
                let id = format!("app_{n}");
                let found = table.get(id.as_bytes());
                prop_assert_eq!(found.is_some(), model.contains_key(&id), "{}", id);
                if let (Some(a), Some(b)) = (found, model.get(&id)) {
                    prop_assert!(Arc::ptr_eq(a, b));
                }
            }
            let mut ids: Vec<String> = table.values().map(|k| k.id.to_string()).collect();
            ids.sort();
            let mut expected: Vec<String> = model.keys().cloned().collect();
            expected.sort();
            prop_assert_eq!(ids, expected);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(op(), 0..200)) {
            check(&ops, &mut KeyTable::with_hasher(foldhash::fast::SeedableRandomState::random()))?;
        }

        #[test]
        fn behaves_as_a_map_with_long_probe_runs(ops in proptest::collection::vec(op(), 0..200)) {
            check(&ops, &mut KeyTable::with_hasher(Colliding))?;
        }
    }

    #[test]
    fn reserving_sizes_the_table_once() {
        let mut table = KeyTable::with_hasher(foldhash::fast::SeedableRandomState::random());
        table.reserve(1000);
        let capacity = table.slots.len();
        assert_eq!(capacity, 2048, "the smallest power of two at most 7/8 full");
        for n in 0..1000 {
            assert!(table.insert(key(&format!("app_{n}"))).is_none());
        }
        assert_eq!(table.slots.len(), capacity, "no growth while filling");
        assert_eq!(table.len(), 1000);
        table.reserve(0);
        assert_eq!(table.slots.len(), capacity);
    }

    #[test]
    fn unknown_and_empty() {
        let mut table = KeyTable::with_hasher(Colliding);
        assert!(table.get(b"app_1").is_none());
        assert!(table.remove(b"app_1").is_none());
        table.retain(|_| false);
        assert_eq!(table.len(), 0);
        assert!(table.insert(key("app_1")).is_none());
        assert!(table.get(b"app_2").is_none());
        assert!(table.get(b"app_1").is_some());
    }
}
