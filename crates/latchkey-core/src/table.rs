//! The index's table of live keys, laid out for lookups in a large index.
//!
//! With 10^6 keys almost every lookup misses the CPU caches, and on this
//! kind of machine each dependent miss costs 200 to 275 ns
//! (docs/BENCHMARKS.md). So the keys live inside the table itself: a lookup
//! reads the slot's tag byte (one byte per slot, 1.3 MB for 10^6 keys, small enough to stay
//! cached when the rest of the work allows), then the key, which holds its id, secret and
//! HMAC state inline. A table of pointers adds a dependent miss (the
//! pointer, then the key), as this table's first version did.
//!
//! Open addressing with linear probing over the tags; a slot's home is its
//! hash scaled to the table's length (any length, not only powers of two).
//! The table grows by a quarter when it would be more than 7/8 full, and is
//! sized 3/4 full when it is sized for a known number of keys (a snapshot,
//! or after many removals), so that memory per key stays within 1.43x of a
//! key's size and the next insert does not move every key. Removal shifts
//! the following entries back (no tombstones). Keys are only inserted by the
//! server (ids are random), and the hasher is keyed per table (see
//! `index/mod.rs`).
//!
//! A slot without a key holds a blank one (no secret, the HMAC state of the
//! empty key), and a key that leaves a slot (moved by growth or removal, or
//! removed) is replaced by a blank in full: the slot arrays, when freed or
//! reused, keep no copy of any secret or HMAC state. (A key in transit may
//! leave a copy on the stack, which the next calls overwrite.)

use std::hash::BuildHasher;

use crate::index::LiveKey;

/// See the module documentation.
pub(crate) struct KeyTable<S> {
    /// One per slot: `EMPTY`, or the top bit and 7 bits of the key's hash.
    /// The tags alone say which slots hold a key.
    tags: Vec<u8>,
    /// The keys, at the positions of their tags; a blank key elsewhere.
    slots: Vec<LiveKey>,
    /// What a slot without a key holds.
    blank: LiveKey,
    len: usize,
    hasher: S,
}

const EMPTY: u8 = 0;

/// Grown (by a quarter) when an insert would fill more than 7/8.
const MAX_LOAD: (usize, usize) = (7, 8);

/// How full a table sized for a known number of keys is.
const TARGET_LOAD: (usize, usize) = (3, 4);

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

/// The capacity for `len` entries, `TARGET_LOAD` full.
fn capacity_for(len: usize) -> usize {
    let wanted = len.saturating_mul(TARGET_LOAD.1).div_ceil(TARGET_LOAD.0);
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
            blank: LiveKey::blank(),
            len: 0,
            hasher,
        }
    }

    /// Memory held by the table itself: its tags and slots (not what
    /// keys point to, such as shared policies).
    pub(crate) fn bytes(&self) -> usize {
        self.tags.capacity() + self.slots.capacity() * std::mem::size_of::<LiveKey>()
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
        // At least one slot is always empty, so this ends.
        loop {
            match self.tags[i] {
                EMPTY => return None,
                t if t == wanted && self.slots[i].id.as_bytes() == id => return Some(i),
                _ => i = self.next(i),
            }
        }
    }

    pub(crate) fn get(&self, id: &[u8]) -> Option<&LiveKey> {
        let at = self.find(id, self.hash(id))?;
        Some(&self.slots[at])
    }

    pub(crate) fn get_mut(&mut self, id: &[u8]) -> Option<&mut LiveKey> {
        let at = self.find(id, self.hash(id))?;
        Some(&mut self.slots[at])
    }

    /// The key in slot `at`, leaving a blank one there (and the tag as it
    /// is: callers set it).
    fn take(&mut self, at: usize) -> LiveKey {
        let blank = self.blank.snapshot();
        std::mem::replace(&mut self.slots[at], blank)
    }

    /// Adds `key` under its id, replacing (and returning) a key with the
    /// same id.
    pub(crate) fn insert(&mut self, key: LiveKey) -> Option<LiveKey> {
        let hash = self.hash(key.id.as_bytes());
        if let Some(at) = self.find(key.id.as_bytes(), hash) {
            return Some(std::mem::replace(&mut self.slots[at], key));
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
        self.slots[i] = key;
    }

    /// Sizes the table once for `additional` more entries (each growth
    /// moves every entry, and the old and new slot arrays exist side by
    /// side meanwhile), leaving room beyond them.
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
        // Allocated before anything moves: if this fails, the table is
        // still whole.
        let tags = vec![EMPTY; capacity];
        let slots = std::iter::repeat_with(|| self.blank.snapshot())
            .take(capacity)
            .collect();
        let old_tags = std::mem::replace(&mut self.tags, tags);
        let mut old_slots = std::mem::replace(&mut self.slots, slots);
        for (at, tag) in old_tags.into_iter().enumerate() {
            if tag != EMPTY {
                let key = std::mem::replace(&mut old_slots[at], self.blank.snapshot());
                let hash = self.hash(key.id.as_bytes());
                self.place(hash, key);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &[u8]) -> Option<LiveKey> {
        let at = self.find(id, self.hash(id))?;
        Some(self.remove_at(at))
    }

    fn remove_at(&mut self, at: usize) -> LiveKey {
        let removed = self.take(at);
        self.tags[at] = EMPTY;
        self.len -= 1;
        self.close_gap(at);
        removed
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
            let home = self.home(self.hash(self.slots[j].id.as_bytes()));
            // The entry at j may move back to the hole if the hole is not
            // before its home (seen from j, the hole is at least as far
            // back as its home).
            if ahead(home, j) >= ahead(hole, j) {
                let moved = self.take(j);
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
            if self.tags[i] != EMPTY && !keep(&self.slots[i]) {
                // Moves later entries of the run back, possibly into `i`
                // itself, which is then looked at again. Entries only move
                // back towards `i`, so none that is not looked at yet lands
                // before it.
                self.remove_at(i);
            } else {
                i += 1;
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
        self.tags
            .iter()
            .zip(&self.slots)
            .filter(|(tag, _)| **tag != EMPTY)
            .map(|(_, key)| key)
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

    /// Homes at the first slot, the middle one and the last one: runs from
    /// the last slot wrap onto keys whose home is slot 0, so a hole left at
    /// the end meets, after the wrap, entries that must stay where they are.
    #[derive(Clone, Default)]
    struct WrapColliding;

    impl BuildHasher for WrapColliding {
        type Hasher = WrapCollidingHasher;
        fn build_hasher(&self) -> WrapCollidingHasher {
            WrapCollidingHasher(CollidingHasher(0))
        }
    }

    struct WrapCollidingHasher(CollidingHasher);

    impl std::hash::Hasher for WrapCollidingHasher {
        fn finish(&self) -> u64 {
            match self.0.0 % 3 {
                0 => 0,
                1 => 1 << 63,
                _ => u64::MAX,
            }
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.write(bytes);
        }
    }

    #[test]
    fn a_hole_at_the_end_leaves_a_key_at_home_in_slot_zero() {
        let mut table = KeyTable::with_hasher(WrapColliding);
        let ids: Vec<String> = (0..40).map(|n| format!("app_{n}")).collect();
        let last = ids
            .iter()
            .find(|id| WrapColliding.hash_one(id.as_bytes()) == u64::MAX);
        let first = ids
            .iter()
            .find(|id| WrapColliding.hash_one(id.as_bytes()) == 0);
        let (Some(last), Some(first)) = (last, first) else {
            panic!("ids with homes at both ends");
        };
        assert!(table.insert(key(last)).is_none());
        assert!(table.insert(key(first)).is_none());
        assert!(table.remove(last.as_bytes()).is_some());
        assert!(table.get(first.as_bytes()).is_some(), "{first} lost");
    }

    #[test]
    fn a_table_sized_for_its_keys_has_room_for_more() {
        let mut table = KeyTable::with_hasher(foldhash::fast::SeedableRandomState::random());
        table.reserve(1000);
        for n in 0..1000 {
            assert!(table.insert(key(&format!("app_{n}"))).is_none());
        }
        let capacity = table.slots.len();
        assert!(table.insert(key("app_new")).is_none());
        assert_eq!(table.slots.len(), capacity, "one more key moved all 1000");
        table.retain(|k| &*k.id != "app_0");
        assert!(table.insert(key("app_newer")).is_none());
        assert_eq!(table.slots.len(), capacity, "nor after a removal");
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
                // Every tag is set exactly where a key is; blanks elsewhere.
                prop_assert!(
                    table
                        .tags
                        .iter()
                        .zip(&table.slots)
                        .all(|(t, s)| (*t == EMPTY) == s.id.is_empty())
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
        fn behaves_as_a_map_with_runs_wrapping_onto_slot_zero(ops in proptest::collection::vec(op(), 0..200)) {
            check(&ops, &mut KeyTable::with_hasher(WrapColliding))?;
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
        assert_eq!(capacity, 1334, "3/4 full when filled");
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
