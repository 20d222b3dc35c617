//! The index's table of live keys, laid out for lookups in a large index.
//!
//! With 10^6 keys almost every lookup misses the CPU caches, and on this
//! kind of machine each dependent miss costs about 200 ns (docs/BENCHMARKS.md).
//! So the keys live inside the table itself: a lookup reads the slot's tag
//! byte (the tags are one byte per slot, 1.1 MB for 10^6 keys, and mostly
//! stay cached), then the key, which holds its id, secret and HMAC state
//! inline: one miss. A table of pointers would add a second, dependent one
//! (the pointer, then the key), as this table's first version did.
//!
//! Open addressing with linear probing over the tags; a slot's home is its
//! hash scaled to the table's length (any length, not only powers of two,
//! so the table grows by a quarter and stays 70 to 87.5% full: memory per
//! key stays within 1.45x of a key's size). Removal shifts the following
//! entries back (no tombstones). Keys are only inserted by the server (ids
//! are random), and the hasher is keyed per table (see `index.rs`).
//!
//! Moving a key (growth, removal, shrinking) wipes the encoded secret at
//! its old place, so the freed slot array keeps no copy of it.

use std::hash::BuildHasher;

use crate::index::LiveKey;

/// See the module documentation.
pub(crate) struct KeyTable<S> {
    /// One per slot: `EMPTY`, or the top bit and 7 bits of the key's hash.
    tags: Vec<u8>,
    /// The keys, at the same positions as their tags.
    slots: Vec<Option<LiveKey>>,
    len: usize,
    hasher: S,
}

const EMPTY: u8 = 0;

/// Grown (by a quarter) when an insert would fill more than 7/8.
const MAX_LOAD: (usize, usize) = (7, 8);

/// The smallest table that is allocated.
const MIN_CAPACITY: usize = 16;

impl<S> std::fmt::Debug for KeyTable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable")
            .field("len", &self.len)
            .field("capacity", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// Whether `len` entries fit in `capacity` slots.
fn fits(len: usize, capacity: usize) -> bool {
    len.saturating_mul(MAX_LOAD.1) <= capacity.saturating_mul(MAX_LOAD.0)
}

/// The smallest capacity that holds `len` entries.
fn capacity_for(len: usize) -> usize {
    let wanted = len.saturating_mul(MAX_LOAD.1).div_ceil(MAX_LOAD.0);
    wanted.max(MIN_CAPACITY)
}

fn tag(hash: u64) -> u8 {
    // The low bits: the home uses the high ones.
    (hash as u8) | 0x80
}

impl<S: BuildHasher> KeyTable<S> {
    pub(crate) fn with_hasher(hasher: S) -> Self {
        Self {
            tags: Vec::new(),
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

    /// Where an entry with this hash starts probing: the hash scaled to
    /// the table's length (its high bits decide).
    fn home(&self, hash: u64) -> usize {
        let scaled = (u128::from(hash) * self.tags.len() as u128) >> 64;
        // Below the table's length, so it fits.
        usize::try_from(scaled).unwrap_or(0)
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.tags.len() { 0 } else { i + 1 }
    }

    /// The slot holding `id`, if any.
    fn find(&self, id: &[u8], hash: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let wanted = tag(hash);
        let mut i = self.home(hash);
        // More than half of the keys sit in their home slot (55 to 65% at
        // 87.5 to 70% full): start loading it now, while the tag is read,
        // rather than after it (both are misses in a large table).
        if let Some(key) = &self.slots[i] {
            key.preload();
        }
        // At least one slot is always empty, so this ends.
        loop {
            match self.tags[i] {
                EMPTY => return None,
                t if t == wanted
                    && self.slots[i]
                        .as_ref()
                        .is_some_and(|key| key.id.as_bytes() == id) =>
                {
                    return Some(i);
                }
                _ => i = self.next(i),
            }
        }
    }

    pub(crate) fn get(&self, id: &[u8]) -> Option<&LiveKey> {
        let at = self.find(id, self.hash(id))?;
        self.slots[at].as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: &[u8]) -> Option<&mut LiveKey> {
        let at = self.find(id, self.hash(id))?;
        self.slots[at].as_mut()
    }

    /// Adds `key` under its id, replacing (and returning) a key with the
    /// same id.
    pub(crate) fn insert(&mut self, key: LiveKey) -> Option<LiveKey> {
        let hash = self.hash(key.id.as_bytes());
        if let Some(at) = self.find(key.id.as_bytes(), hash) {
            let old = LiveKey::take_wiping(&mut self.slots[at]);
            self.slots[at] = Some(key);
            return old;
        }
        if !fits(self.len + 1, self.tags.len()) {
            let grown = self.tags.len().saturating_add(self.tags.len() / 4);
            self.resize(grown.max(capacity_for(self.len + 1)));
        }
        self.place(hash, key);
        self.len += 1;
        None
    }

    /// Puts a key whose id is not in the table into the first free slot
    /// of its probe sequence.
    fn place(&mut self, hash: u64, key: LiveKey) {
        let mut i = self.home(hash);
        while self.tags[i] != EMPTY {
            i = self.next(i);
        }
        self.tags[i] = tag(hash);
        self.slots[i] = Some(key);
    }

    /// Grows the table once so that `additional` more entries fit without
    /// growing again (each growth moves every entry, and the old and new
    /// slot arrays exist side by side meanwhile).
    pub(crate) fn reserve(&mut self, additional: usize) {
        if additional == 0 {
            return;
        }
        let wanted = self.len.saturating_add(additional);
        if !fits(wanted, self.tags.len()) {
            self.resize(capacity_for(wanted));
        }
    }

    /// Moves every entry into a table of `capacity` slots.
    fn resize(&mut self, capacity: usize) {
        let mut old = std::mem::take(&mut self.slots);
        self.tags = vec![EMPTY; capacity];
        self.slots = std::iter::repeat_with(|| None).take(capacity).collect();
        for slot in &mut old {
            if let Some(key) = LiveKey::take_wiping(slot) {
                let hash = self.hash(key.id.as_bytes());
                self.place(hash, key);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &[u8]) -> Option<LiveKey> {
        let at = self.find(id, self.hash(id))?;
        let removed = LiveKey::take_wiping(&mut self.slots[at])?;
        self.tags[at] = EMPTY;
        self.len -= 1;
        self.close_gap(at);
        Some(removed)
    }

    /// After `hole` was emptied: moves back each following entry of the
    /// run that may sit there (its home is not after the hole), so every
    /// entry stays reachable from its home without tombstones.
    fn close_gap(&mut self, mut hole: usize) {
        let n = self.tags.len();
        // Distance from `from` forward to `to`, around the end.
        let ahead = |from: usize, to: usize| if to >= from { to - from } else { to + n - from };
        let mut j = hole;
        loop {
            j = self.next(j);
            if self.tags[j] == EMPTY {
                return;
            }
            let Some(key) = &self.slots[j] else {
                return;
            };
            let home = self.home(self.hash(key.id.as_bytes()));
            // The entry at j may move back to the hole if the hole is not
            // before its home (seen from j, the hole is at least as far
            // back as its home).
            if ahead(home, j) >= ahead(hole, j) {
                let moved = LiveKey::take_wiping(&mut self.slots[j]);
                self.slots[hole] = moved;
                self.tags[hole] = self.tags[j];
                self.tags[j] = EMPTY;
                hole = j;
            }
        }
    }

    /// Keeps the keys for which `keep` is true (this runs when an app,
    /// service account or account is deleted). In place: the others are
    /// removed as by `remove`, so that deleting one app among 10^6 keys
    /// moves only the keys near the removed ones, under the index's write
    /// lock, instead of all of them; a table left less than a quarter as
    /// full as it may be is then shrunk (moving only the keys still in it).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&LiveKey) -> bool) {
        let mut i = 0;
        while i < self.slots.len() {
            match &self.slots[i] {
                Some(key) if !keep(key) => {
                    LiveKey::take_wiping(&mut self.slots[i]);
                    self.tags[i] = EMPTY;
                    self.len -= 1;
                    // Moves later entries of the run back, possibly into
                    // `i` itself, which is then looked at again. Entries
                    // only move back towards `i`, so none that is not
                    // looked at yet lands before it.
                    self.close_gap(i);
                }
                _ => i += 1,
            }
        }
        if self.len == 0 {
            self.tags = Vec::new();
            self.slots = Vec::new();
        } else if fits(self.len.saturating_mul(4), self.tags.len()) {
            let smaller = capacity_for(self.len);
            if smaller < self.tags.len() {
                self.resize(smaller);
            }
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &LiveKey> {
        self.slots.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::KeyOwner;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A key whose expiry tells it apart from other keys with its id.
    fn key_version(id: &str, version: i64) -> LiveKey {
        LiveKey::new(
            id.to_string(),
            KeyOwner::App {
                account_id: "acc_A".into(),
                app_id: "ap_1".into(),
            },
            b"secret",
            Some(version),
            None,
        )
    }

    fn key(id: &str) -> LiveKey {
        key_version(id, 1)
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
        // id -> the version of the key under it
        let mut model: HashMap<String, i64> = HashMap::new();
        let mut version = 0;
        for op in ops {
            match op {
                Op::Insert(n) => {
                    version += 1;
                    let id = format!("app_{n}");
                    let old = table.insert(key_version(&id, version));
                    let expected = model.insert(id, version);
                    prop_assert_eq!(old.and_then(|k| k.expires_at()), expected);
                }
                Op::Remove(n) => {
                    let id = format!("app_{n}");
                    let removed = table.remove(id.as_bytes()).and_then(|k| k.expires_at());
                    prop_assert_eq!(removed, model.remove(&id));
                }
                Op::Retain(m) => {
                    // Keeps the ids whose number is not a multiple of m.
                    let keep =
                        |k: &LiveKey| !k.id[4..].parse::<u8>().unwrap_or(0).is_multiple_of(*m);
                    table.retain(keep);
                    model.retain(|id, _| !id[4..].parse::<u8>().unwrap_or(0).is_multiple_of(*m));
                }
                Op::Reserve(n) => {
                    let before = table.slots.len();
                    table.reserve(usize::from(*n));
                    let capacity = table.slots.len();
                    prop_assert!(capacity >= before);
                    // The reserved entries fit without growing again.
                    prop_assert!(fits(
                        table.len() + usize::from(*n),
                        capacity.max(MIN_CAPACITY)
                    ));
                }
            }
            prop_assert_eq!(table.len(), model.len());
            for n in 0u8..40 {
                let id = format!("app_{n}");
                let found = table.get(id.as_bytes());
                prop_assert_eq!(found.is_some(), model.contains_key(&id), "{}", id);
                if let (Some(a), Some(b)) = (found, model.get(&id)) {
                    prop_assert_eq!(a.expires_at(), Some(*b));
                }
                // Every tag is set exactly where a key is.
                prop_assert!(
                    table
                        .tags
                        .iter()
                        .zip(&table.slots)
                        .all(|(t, s)| (*t != EMPTY) == s.is_some())
                );
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
        assert_eq!(capacity, 1143, "the smallest table at most 7/8 full");
        for n in 0..1000 {
            assert!(table.insert(key(&format!("app_{n}"))).is_none());
        }
        assert_eq!(table.slots.len(), capacity, "no growth while filling");
        assert_eq!(table.len(), 1000);
        table.reserve(0);
        assert_eq!(table.slots.len(), capacity);
    }

    #[test]
    fn retain_removes_in_place_and_shrinks_a_mostly_empty_table() {
        let mut table = KeyTable::with_hasher(foldhash::fast::SeedableRandomState::random());
        for n in 0..1000 {
            table.insert(key(&format!("app_{n}")));
        }
        let capacity = table.slots.len();
        table.retain(|k| &*k.id != "app_7");
        assert_eq!(table.len(), 999);
        assert_eq!(table.slots.len(), capacity, "one removal does not rebuild");
        assert!(table.get(b"app_7").is_none());
        table.retain(|k| k.id.ends_with('0'));
        assert_eq!(table.len(), 100);
        assert_eq!(table.slots.len(), capacity_for(100), "shrunk");
        assert!(
            (0..1000).all(|n| table.get(format!("app_{n}").as_bytes()).is_some() == (n % 10 == 0))
        );
        table.retain(|_| false);
        assert_eq!(
            (table.len(), table.slots.len(), table.tags.len()),
            (0, 0, 0)
        );
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
