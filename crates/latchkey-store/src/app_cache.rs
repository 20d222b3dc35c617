//! Apps by id, kept in memory when this process is the store's only writer
//! (SQLite). Every authenticated request on an app's path reads its app;
//! through SQLite that read was half of `GET /v1/apps/{appId}`'s CPU
//! (docs/BENCHMARKS.md).
//!
//! Correctness rests on one rule: every write that changes or removes an
//! app calls [`AppCache::invalidate`] after it committed. A reader notes the
//! generation before it reads the database and keeps what it read only if
//! no invalidation happened meanwhile, so a row read before a commit is
//! never kept after it. Absent apps are not cached (a creation needs no
//! invalidation).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::App;

/// More apps than this, or more than [`MAX_BYTES`] of them, and the cache
/// starts over: memory stays bounded whatever apps tenants create (a
/// settings object may hold 16 KiB of JSON), and a miss costs one indexed
/// read.
const MAX_APPS: usize = 100_000;
const MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
pub(crate) struct AppCache {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    apps: HashMap<String, Arc<App>>,
    /// Roughly what the cached apps take (see [`approximate_size`]).
    bytes: usize,
}

/// An app's ids and name, plus twice its settings' JSON text (the parsed
/// map takes more than the text).
fn approximate_size(app: &App) -> usize {
    let settings = serde_json::to_vec(&app.settings).map_or(usize::MAX / 4, |v| v.len());
    app.id.len() + app.account_id.len() + app.display_name.len() + 2 * settings + 128
}

impl AppCache {
    /// The cached app, or the generation to pass to [`AppCache::keep`]
    /// after reading it from the database.
    pub(crate) fn get(&self, id: &str) -> Result<App, u64> {
        let Ok(inner) = self.inner.read() else {
            return Err(u64::MAX);
        };
        match inner.apps.get(id) {
            Some(app) => Ok(App::clone(app)),
            None => Err(inner.generation),
        }
    }

    /// Keeps an app read from the database, unless an invalidation happened
    /// since `generation` was read.
    pub(crate) fn keep(&self, generation: u64, app: &App) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if inner.generation != generation {
            return;
        }
        let size = approximate_size(app);
        if inner.apps.len() >= MAX_APPS || inner.bytes.saturating_add(size) > MAX_BYTES {
            inner.apps.clear();
            inner.bytes = 0;
        }
        if size > MAX_BYTES {
            return;
        }
        if let Some(old) = inner.apps.insert(app.id.clone(), Arc::new(app.clone())) {
            inner.bytes = inner.bytes.saturating_sub(approximate_size(&old));
        }
        inner.bytes += size;
    }

    /// Forgets every app: called after a write that changed or removed
    /// apps committed (or failed: forgetting too much is harmless).
    pub(crate) fn invalidate(&self) {
        let mut inner = match self.inner.write() {
            Ok(inner) => inner,
            // A panic while holding the lock: forget everything anyway.
            Err(poisoned) => poisoned.into_inner(),
        };
        inner.generation = inner.generation.wrapping_add(1);
        inner.apps.clear();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, name: &str) -> App {
        App {
            id: id.into(),
            account_id: "acc_1".into(),
            display_name: name.into(),
            settings: serde_json::Map::new(),
            created_at: 1,
        }
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let cache = AppCache::default();
        let Err(generation) = cache.get("ap_1") else {
            panic!("empty cache hit");
        };
        // A write commits and invalidates between the read and the keep.
        cache.invalidate();
        cache.keep(generation, &app("ap_1", "old"));
        assert!(cache.get("ap_1").is_err(), "a stale read was kept");
        let Err(generation) = cache.get("ap_1") else {
            panic!("miss expected");
        };
        cache.keep(generation, &app("ap_1", "new"));
        assert_eq!(cache.get("ap_1").map(|a| a.display_name), Ok("new".into()));
        cache.invalidate();
        assert!(cache.get("ap_1").is_err());
    }

    #[test]
    fn big_apps_do_not_grow_the_cache_past_its_bytes() {
        let cache = AppCache::default();
        let mut big = app("ap_0", "big");
        big.settings
            .insert("blob".into(), serde_json::json!("x".repeat(16 * 1024)));
        for i in 0..5_000 {
            big.id = format!("ap_{i}");
            let Err(generation) = cache.get(&big.id) else {
                panic!("miss expected");
            };
            cache.keep(generation, &big);
            let inner = cache.inner.read().expect("lock");
            assert!(inner.bytes <= MAX_BYTES, "{} bytes cached", inner.bytes);
        }
        let inner = cache.inner.read().expect("lock");
        assert!(!inner.apps.is_empty() && inner.apps.len() < 5_000);
    }
}
