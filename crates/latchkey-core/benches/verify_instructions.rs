//! A driver for counting instructions per verification with callgrind
//! (deterministic, unlike wall-clock time on a shared machine):
//!
//! ```text
//! cargo bench -p latchkey-core --bench verify_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='*verify_instructions*measured*' \
//!     target/release/deps/verify_instructions-<hash> jwt_app 1000
//! callgrind_annotate /tmp/cg.out | head
//! ```
//!
//! Only `measured` is counted: the total divided by the iterations is the
//! cost of one `verify_authorization` call, dropping its result included.
//! Modes: `basic`, `jwt_app`, `jwt_app_user`; a third argument sets the
//! number of live keys (each iteration then verifies another of 10,000 of
//! them; with `--cache-sim=yes` callgrind also counts the cache misses).
//! Without arguments (as `cargo bench` runs it) each mode runs a few
//! iterations and prints nothing.

mod fixture;

use std::hint::black_box;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fixture::{TTL, add_key, new_index};
use latchkey_core::jwt;
use latchkey_core::{KeyIndex, VerifyOptions};
use ring::rand::SystemRandom;
use serde_json::json;

const NOW: i64 = 1_800_000_000;

#[inline(never)]
fn measured(index: &KeyIndex, headers: &[Vec<u8>], iterations: u64) -> usize {
    let mut ok = 0;
    for header in headers
        .iter()
        .cycle()
        .take(usize::try_from(iterations).unwrap_or(0))
    {
        let v = index.verify_authorization(
            Some(black_box(header)),
            black_box(NOW),
            VerifyOptions::default(),
        );
        ok += usize::from(v.is_ok());
    }
    ok
}

fn header(mode: &str, id: &str, secret: &str) -> String {
    match mode {
        "basic" => format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        "jwt_app" => format!(
            "Bearer {}",
            jwt::sign_hs256(
                secret.as_bytes(),
                id,
                &json!({"scope": "app", "iat": NOW, "exp": NOW + TTL})
            )
        ),
        "jwt_app_user" => format!(
            "Bearer {}",
            jwt::sign_hs256(
                secret.as_bytes(),
                id,
                &json!({"scope": "appUser", "userId": "user-8c1f2e@example.com", "iat": NOW, "exp": NOW + TTL})
            )
        ),
        other => panic!("unknown mode {other}: basic, jwt_app or jwt_app_user"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let modes: Vec<String> = match args.next() {
        Some(mode) => vec![mode],
        None => ["basic", "jwt_app", "jwt_app_user"]
            .map(String::from)
            .to_vec(),
    };
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    // Optional: the number of live keys; each iteration then verifies
    // another of 10,000 keys drawn from all of them.
    let keys: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(17);

    let rng = SystemRandom::new();
    let index = new_index();
    let all: Vec<(String, String)> = (0..keys).map(|_| add_key(&index, &rng)).collect();
    for mode in modes {
        let headers: Vec<Vec<u8>> = if keys == 17 {
            let (id, secret) = &all[keys - 1];
            vec![header(&mode, id, secret).into_bytes()]
        } else {
            // A fixed stride through the keys (inserted in random order
            // of their ids, so the table slots are random).
            (0..10_000)
                .map(|i| {
                    let (id, secret) = &all[i * 7919 % keys];
                    header(&mode, id, secret).into_bytes()
                })
                .collect()
        };
        let ok = measured(&index, &headers, iterations);
        assert_eq!(ok as u64, iterations, "{mode}: the credential was refused");
    }
}
