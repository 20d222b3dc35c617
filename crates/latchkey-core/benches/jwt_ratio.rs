//! Latchkey's HS256 verification against the jsonwebtoken crate, as a
//! ratio that the machine's drift does not decide (issue 6's "at least 4x").
//!
//! Criterion measures one benchmark after the other; on a shared machine
//! the speed changes between them, and the ratio of two such medians moved
//! by ±15% from run to run. Here the two calls alternate in short blocks
//! (each block runs both, in alternating order) and the figure is the
//! median of the blocks' ratios.
//!
//! ```text
//! cargo bench -p latchkey-core --bench jwt_ratio --no-run
//! taskset -c 1 target/release/deps/jwt_ratio-<hash> [blocks]
//! ```
//!
//! Without arguments (as `cargo bench` runs it: `--bench`) it runs 301
//! blocks of 2,000 calls of each per scope, a few seconds in all; the
//! table goes to stderr.

mod fixture;

use std::hint::black_box;
use std::time::{Duration, Instant};

use fixture::{TTL, add_key, new_index};
use latchkey_core::jwt;
use latchkey_core::{Clock, SystemClock, VerifyOptions};
use ring::rand::SystemRandom;
use serde::Deserialize;
use serde_json::json;

const CALLS: u32 = 2_000;

/// The claims jsonwebtoken deserializes: the ones Latchkey reads.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Claims {
    scope: String,
    #[serde(default, rename = "userId")]
    user_id: Option<String>,
    exp: i64,
    iat: i64,
}

fn per_call(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e9 / f64::from(CALLS)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let blocks: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(301);
    let rng = SystemRandom::new();
    let now = SystemClock.unix();
    let index = new_index();
    let (id, secret) = add_key(&index, &rng);
    let decoding_key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 30;
    validation.set_required_spec_claims(&["exp"]);
    let opts = VerifyOptions::default();

    eprintln!(
        "| scope | Latchkey ns/call | jsonwebtoken ns/call | ratio: median of {blocks} blocks (10th–90th percentile) |"
    );
    eprintln!("|---|---|---|---|");
    for (scope, claims) in [
        ("app", json!({"scope": "app", "iat": now, "exp": now + TTL})),
        (
            "appUser",
            json!({"scope": "appUser", "userId": "user-8c1f2e@example.com", "iat": now, "exp": now + TTL}),
        ),
    ] {
        let token = jwt::sign_hs256(secret.as_bytes(), &id, &claims);
        let bearer = format!("Bearer {token}");
        let ours = || {
            let started = Instant::now();
            for _ in 0..CALLS {
                let v = index.verify_authorization(Some(black_box(bearer.as_bytes())), now, opts);
                black_box(v.is_ok());
            }
            per_call(started.elapsed())
        };
        let theirs = || {
            let started = Instant::now();
            for _ in 0..CALLS {
                let v =
                    jsonwebtoken::decode::<Claims>(black_box(&token), &decoding_key, &validation);
                black_box(v.is_ok());
            }
            per_call(started.elapsed())
        };
        assert!(
            index
                .verify_authorization(Some(bearer.as_bytes()), now, opts)
                .is_ok()
        );
        assert!(jsonwebtoken::decode::<Claims>(&token, &decoding_key, &validation).is_ok());
        // Warm-up, then the blocks.
        ours();
        theirs();
        let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for block in 0..blocks {
            let (x, y) = if block % 2 == 0 {
                let x = ours();
                (x, theirs())
            } else {
                let y = theirs();
                (ours(), y)
            };
            a.push(x);
            b.push(y);
            ratios.push(y / x);
        }
        let ratio = median(&mut ratios);
        let (p10, p90) = (ratios[blocks / 10], ratios[blocks * 9 / 10]);
        eprintln!(
            "| {scope} | {:.0} | {:.0} | {ratio:.2}x ({p10:.2}–{p90:.2}) |",
            median(&mut a),
            median(&mut b)
        );
    }
}
