//! How long verification stops while a node reloads its whole index
//! (`KeyIndex::replace_with`, run when a node fell behind the retained
//! change feed).
//!
//! Builds two indexes of the same N keys (every key used once, so that
//! every key's usage is carried over), then swaps the fresh one in while
//! another thread verifies one key by Basic in a loop, and reports the
//! longest single verification during the swap and how long the swap took.
//!
//! ```text
//! cargo bench -p latchkey-core --bench replace_stall --no-run
//! target/release/deps/replace_stall-<hash> [keys]
//! ```
//!
//! Without arguments it uses 10^6 keys (about 1 GB and half a minute).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{KEY_SECRET_PREFIX, generate};
use latchkey_core::{KeyIndex, KeyOwner, LiveKey, VerifyOptions};
use ring::rand::SystemRandom;

const ACCOUNT: &str = "acc_BenchAccount0000000000";
const NOW: i64 = 1_800_000_000;

fn index_of(keys: &[(String, String)]) -> KeyIndex {
    let index = KeyIndex::new();
    index.insert_account(ACCOUNT);
    for app in 0..keys.len().div_ceil(10) {
        assert!(index.insert_app(&format!("ap_{app:022}"), ACCOUNT));
    }
    let added = index.insert_keys(keys.iter().enumerate().map(|(i, (id, secret))| {
        let owner = KeyOwner::App {
            account_id: ACCOUNT.into(),
            app_id: format!("ap_{:022}", i / 10).into(),
        };
        LiveKey::new(id.clone(), owner, secret.as_bytes(), None, Some(NOW - 60))
    }));
    assert_eq!(added, keys.len());
    index
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rng = SystemRandom::new();
    let keys: Vec<(String, String)> = (0..n)
        .map(|_| {
            let id = new_id(&rng, IdKind::AppKey);
            let secret = generate(&rng, KEY_SECRET_PREFIX).expose().to_string();
            (id, secret)
        })
        .collect();
    let index = index_of(&keys);
    let fresh = index_of(&keys);
    let header = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", keys[0].0, keys[0].1))
    );
    let opts = VerifyOptions::default();
    let ok = |index: &KeyIndex| {
        index
            .verify_authorization(Some(black_box(header.as_bytes())), NOW, opts)
            .is_ok()
    };
    assert!(ok(&index));

    let done = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    let (swap, longest, calls) = std::thread::scope(|s| {
        let verifier = s.spawn(|| {
            let (mut longest, mut calls) = (Duration::ZERO, 0u64);
            started.store(true, Ordering::Release);
            while !done.load(Ordering::Acquire) {
                let t = Instant::now();
                assert!(ok(&index));
                longest = longest.max(t.elapsed());
                calls += 1;
            }
            (longest, calls)
        });
        while !started.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        index.replace_with(fresh);
        let swap = t.elapsed();
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::Release);
        let (longest, calls) = verifier.join().unwrap_or_default();
        (swap, longest, calls)
    });
    assert!(ok(&index));
    eprintln!(
        "{n} keys: replace_with took {:.1} ms; the longest verification meanwhile {:.1} ms ({calls} verifications in all)",
        swap.as_secs_f64() * 1e3,
        longest.as_secs_f64() * 1e3
    );
}
