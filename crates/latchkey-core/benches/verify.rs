//! The verification hot path, measured in process (issue 6).
//!
//! Run on one core, as in docs/BENCHMARKS.md:
//!
//! ```text
//! taskset -c 1 cargo bench -p latchkey-core --bench verify -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Groups:
//! - `basic`: `verify_authorization` with a Basic app key.
//! - `jwt_hs256`: `verify_authorization` with an HS256 JWT (scope `app` and
//!   `appUser`), next to the jsonwebtoken crate decoding and validating the
//!   same token and a bare ring HMAC-SHA256 over its signing input (the
//!   floor: the one operation verification cannot avoid).
//! - `policy` (issue 18): Basic verification and then the key's policy
//!   checks as `/v1/verify` runs them (`policy::checks::verification`),
//!   for a key without a policy and for one with a rate limit and credits
//!   (each verification counts against the limit and spends a credit).
//! - `keys`: Basic and JWT verification with 10^3 to 10^6 live keys, each
//!   iteration verifying a key drawn uniformly from all of them (so the
//!   bigger indexes pay their cache misses; building the header and
//!   freeing it are not timed: `iter_batched_ref`, since freeing a string
//!   the harness allocated is no part of verification and cost 60 to
//!   several hundred ns here).

mod fixture;

use std::hint::black_box;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fixture::{TTL, add_key, add_key_with, new_index};
use latchkey_core::jwt;
use latchkey_core::{Clock, KeyIndex, SystemClock, VerifyOptions};
use ring::hmac;
use ring::rand::SystemRandom;
use serde::Deserialize;
use serde_json::json;

fn basic_header(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn app_claims(now: i64) -> serde_json::Value {
    json!({"scope": "app", "iat": now, "exp": now + TTL})
}

fn app_user_claims(now: i64) -> serde_json::Value {
    json!({"scope": "appUser", "userId": "user-8c1f2e@example.com", "iat": now, "exp": now + TTL})
}

/// The claims the jsonwebtoken side deserializes: the same ones Latchkey
/// reads, so both do comparable work.
#[derive(Deserialize)]
#[allow(dead_code)]
struct JwtCrateClaims {
    scope: String,
    #[serde(default, rename = "userId")]
    user_id: Option<String>,
    exp: i64,
    iat: i64,
}

fn verify_ok(index: &KeyIndex, header: &str, now: i64) {
    let v = index.verify_authorization(Some(header.as_bytes()), now, VerifyOptions::default());
    assert!(v.is_ok(), "benchmark credential refused: {v:?}");
}

fn single_key(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let now = SystemClock.unix();
    let index = new_index();
    // A few neighbours so the map is not trivially small.
    for _ in 0..16 {
        add_key(&index, &rng);
    }
    let (id, secret) = add_key(&index, &rng);
    let opts = VerifyOptions::default();

    let basic = basic_header(&id, &secret);
    verify_ok(&index, &basic, now);
    c.bench_function("basic/verify", |b| {
        b.iter(|| {
            index.verify_authorization(Some(black_box(basic.as_bytes())), black_box(now), opts)
        })
    });

    let mut group = c.benchmark_group("jwt_hs256");
    let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let decoding_key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 30;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    for (scope, claims) in [("app", app_claims(now)), ("appUser", app_user_claims(now))] {
        let token = jwt::sign_hs256(secret.as_bytes(), &id, &claims);
        let bearer = format!("Bearer {token}");
        verify_ok(&index, &bearer, now);
        group.bench_function(format!("latchkey/{scope}"), |b| {
            b.iter(|| {
                index.verify_authorization(Some(black_box(bearer.as_bytes())), black_box(now), opts)
            })
        });

        let decoded = jsonwebtoken::decode::<JwtCrateClaims>(&token, &decoding_key, &validation);
        assert!(decoded.is_ok(), "jsonwebtoken refused the token");
        group.bench_function(format!("jsonwebtoken/{scope}"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<JwtCrateClaims>(
                    black_box(&token),
                    &decoding_key,
                    &validation,
                )
            })
        });

        let dot = token.rfind('.').expect("signature part");
        let signing_input = &token[..dot];
        let tag = URL_SAFE_NO_PAD
            .decode(&token[dot + 1..])
            .expect("signature base64");
        group.bench_function(format!("ring_hmac_floor/{scope}"), |b| {
            b.iter(|| hmac::verify(&hmac_key, black_box(signing_input.as_bytes()), &tag))
        });
        // The HMAC Latchkey uses (RustCrypto's, on the CPU's SHA extensions).
        let hs256_key = latchkey_core::hs256::Hs256Key::new(secret.as_bytes());
        group.bench_function(format!("hs256_floor/{scope}"), |b| {
            b.iter(|| hs256_key.verify(black_box(signing_input.as_bytes()), &tag))
        });
    }
    group.finish();
    eprintln!(
        "token lengths: app {} bytes, appUser {} bytes",
        jwt::sign_hs256(secret.as_bytes(), &id, &app_claims(now)).len(),
        jwt::sign_hs256(secret.as_bytes(), &id, &app_user_claims(now)).len()
    );
}

/// A small, fast generator for picking keys (xorshift64*); not for secrets.
struct Pick(u64);

impl Pick {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        usize::try_from(r % n as u64).expect("fits")
    }
}

fn key_sweep(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let now = SystemClock.unix();
    let opts = VerifyOptions::default();
    let mut group = c.benchmark_group("keys");
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        // Built on first use, so a filter that skips this size skips the
        // setup too; dropped before the next size is built.
        let mut built: Option<(KeyIndex, Vec<(String, String)>)> = None;
        let mut build = || {
            let started = std::time::Instant::now();
            let index = new_index();
            let keys: Vec<(String, String)> = (0..n).map(|_| add_key(&index, &rng)).collect();
            assert_eq!(index.key_count(), n);
            eprintln!("keys/{n}: index built in {:?}", started.elapsed());
            // Every drawn key must verify, or the sweep measures refusals.
            let mut pick = Pick(1);
            for _ in 0..100 {
                let (id, secret) = &keys[pick.below(n)];
                verify_ok(&index, &basic_header(id, secret), now);
            }
            (index, keys)
        };
        let mut pick = Pick(0x9E37_79B9_7F4A_7C15);

        group.bench_function(format!("basic/{n}"), |b| {
            let (index, keys) = built.get_or_insert_with(&mut build);
            b.iter_batched_ref(
                || {
                    let (id, secret) = &keys[pick.below(n)];
                    basic_header(id, secret)
                },
                |header: &mut String| {
                    index.verify_authorization(Some(header.as_bytes()), now, opts)
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("jwt_app/{n}"), |b| {
            let (index, keys) = built.get_or_insert_with(&mut build);
            b.iter_batched_ref(
                || {
                    let (id, secret) = &keys[pick.below(n)];
                    format!(
                        "Bearer {}",
                        jwt::sign_hs256(secret.as_bytes(), id, &app_claims(now))
                    )
                },
                |header: &mut String| {
                    index.verify_authorization(Some(header.as_bytes()), now, opts)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Basic verification followed by the policy checks, as `/v1/verify`
/// answers it (no HTTP), without and with a rate limit and credits.
fn policy(c: &mut Criterion) {
    use latchkey_core::policy::checks::{self, Demand, Subject};
    use latchkey_core::policy::{
        CreditSeed, CreditState, CreditsPolicy, KeyPolicy, RateLimit, RateLimiter,
    };
    let rng = SystemRandom::new();
    let now = SystemClock.unix();
    let index = new_index();
    for _ in 0..16 {
        add_key(&index, &rng);
    }
    let plain = add_key(&index, &rng);
    let limited_policy = KeyPolicy {
        ratelimit: Some(RateLimit {
            limit: u32::MAX,
            window_seconds: 86_400,
        }),
        credits: Some(CreditsPolicy::default()),
        ..KeyPolicy::default()
    };
    let seed = CreditSeed {
        state: CreditState {
            remaining: i64::MAX / 2,
            period: 0,
        },
        version: 0,
        leased: false,
    };
    let limited = add_key_with(&index, &rng, |key| {
        key.with_policy(&limited_policy, Some(seed))
    });
    let only_limit = KeyPolicy {
        credits: None,
        ..limited_policy.clone()
    };
    let only_credits = KeyPolicy {
        ratelimit: None,
        ..limited_policy.clone()
    };
    let limit_only = add_key_with(&index, &rng, |key| key.with_policy(&only_limit, None));
    let credits_only = add_key_with(&index, &rng, |key| {
        key.with_policy(&only_credits, Some(seed))
    });
    let limiter = RateLimiter::new();
    let opts = VerifyOptions::default();
    let mut group = c.benchmark_group("policy");
    for (name, (id, secret)) in [
        ("none", &plain),
        ("ratelimit", &limit_only),
        ("credits", &credits_only),
        ("ratelimit_and_credits", &limited),
    ] {
        let header = basic_header(id, secret);
        group.bench_function(format!("basic_then_checks/{name}"), |b| {
            b.iter(|| {
                let v = index
                    .verify_authorization(Some(black_box(header.as_bytes())), now, opts)
                    .expect("verifies");
                let key_id = v.principal.key_id().unwrap_or("");
                let subject = Subject {
                    key_id,
                    user: None,
                    policy: v.policy.as_deref(),
                    now,
                };
                let demand = Demand {
                    cost: 1,
                    ..Demand::default()
                };
                black_box(checks::verification(
                    &subject,
                    &demand,
                    &limiter,
                    v.ratelimit,
                ))
                .expect("admitted");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, single_key, policy, key_sweep);
criterion_main!(benches);
