//! Public-key JWT verification (issue 22): Latchkey's EdDSA and ES256
//! verification against the raw signature check of the crypto library it
//! uses (the floor: the signature dominates; ed25519-dalek's
//! `verify_strict` for Ed25519, ring's fixed-size ECDSA for ES256) and
//! against the jsonwebtoken crate on the same tokens. Target: within 1.2x
//! of the floor.
//!
//! As in `jwt_ratio.rs`, the three calls alternate in short blocks (each
//! block runs each, in rotating order) and each figure is the median of
//! the blocks, so that the machine's drift does not decide the ratios.
//!
//! ```text
//! cargo bench -p latchkey-core --bench public_key_ratio --no-run
//! taskset -c 1 target/release/deps/public_key_ratio-<hash> [blocks]
//! ```
//!
//! Without arguments (as `cargo bench` runs it: `--bench`) it runs 101
//! blocks of 100 calls of each per algorithm, a few seconds in all; the
//! table goes to stderr.

#[allow(dead_code)]
mod fixture;

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fixture::{ACCOUNT, APP, TTL, new_index};
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::jwt::PublicKey;
use latchkey_core::{Clock, KeyOwner, LiveKey, SystemClock, VerifyOptions};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, UnparsedPublicKey,
};
use serde::Deserialize;
use serde_json::json;

const CALLS: u32 = 100;

/// The claims jsonwebtoken deserializes: the ones Latchkey reads.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Claims {
    scope: String,
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

/// A compact JWS of `claims` under `header`, signed by `sign`.
fn token(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn main() {
    let blocks: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(101);
    let rng = SystemRandom::new();
    let now = SystemClock.unix();
    let index = new_index();
    let opts = VerifyOptions::default();
    let claims = json!({"scope": "app", "iat": now, "exp": now + TTL});

    let ed =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).expect("key").as_ref())
            .expect("key");
    let ed_x = URL_SAFE_NO_PAD.encode(ed.public_key().as_ref());
    let es_alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
    let es_pkcs8 = EcdsaKeyPair::generate_pkcs8(es_alg, &rng).expect("key");
    let es = EcdsaKeyPair::from_pkcs8(es_alg, es_pkcs8.as_ref(), &rng).expect("key");
    let point = es.public_key().as_ref().to_vec();
    let (es_x, es_y) = (
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..]),
    );

    eprintln!(
        "| alg | the library's signature check ns/call | Latchkey ns/call | jsonwebtoken ns/call | Latchkey / the library: median of {blocks} blocks (10th–90th percentile) | jsonwebtoken / Latchkey |"
    );
    eprintln!("|---|---|---|---|---|---|");
    let cases = [
        (
            "EdDSA",
            json!({"kty": "OKP", "crv": "Ed25519", "x": ed_x}),
            jsonwebtoken::DecodingKey::from_ed_components(&ed_x).expect("jwk"),
            jsonwebtoken::Algorithm::EdDSA,
            ed.public_key().as_ref().to_vec(),
        ),
        (
            "ES256",
            json!({"kty": "EC", "crv": "P-256", "x": es_x, "y": es_y}),
            jsonwebtoken::DecodingKey::from_ec_components(&es_x, &es_y).expect("jwk"),
            jsonwebtoken::Algorithm::ES256,
            point.clone(),
        ),
    ];
    for (alg, jwk, decoding_key, jwt_alg, raw_public) in cases {
        let id = new_id(&rng, IdKind::AppKey);
        let owner = KeyOwner::App {
            account_id: ACCOUNT.into(),
            app_id: APP.into(),
        };
        let public = PublicKey::from_jwk(&jwk).expect("jwk");
        assert!(index.insert_key(LiveKey::with_public_key(
            id.clone(),
            owner,
            public,
            None,
            None
        )));
        let header = json!({"alg": alg, "typ": "JWT", "kid": id});
        let token = match alg {
            "EdDSA" => token(&header, &claims, |m| ed.sign(m).as_ref().to_vec()),
            _ => token(&header, &claims, |m| {
                es.sign(&rng, m).expect("sign").as_ref().to_vec()
            }),
        };
        let bearer = format!("Bearer {token}");
        let (input, sig) = token.rsplit_once('.').expect("dot");
        let sig = URL_SAFE_NO_PAD.decode(sig).expect("sig");
        let ring_alg: &'static dyn ring::signature::VerificationAlgorithm = match alg {
            "EdDSA" => &ED25519,
            _ => &ECDSA_P256_SHA256_FIXED,
        };
        let mut validation = jsonwebtoken::Validation::new(jwt_alg);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp"]);

        let floor = || {
            let started = Instant::now();
            for _ in 0..CALLS {
                let key = UnparsedPublicKey::new(ring_alg, black_box(&raw_public));
                black_box(
                    key.verify(black_box(input.as_bytes()), black_box(&sig))
                        .is_ok(),
                );
            }
            per_call(started.elapsed())
        };
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
            UnparsedPublicKey::new(ring_alg, &raw_public)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        );
        assert!(
            index
                .verify_authorization(Some(bearer.as_bytes()), now, opts)
                .is_ok()
        );
        assert!(jsonwebtoken::decode::<Claims>(&token, &decoding_key, &validation).is_ok());
        floor();
        ours();
        theirs();
        let (mut f, mut a, mut b, mut ratios, mut theirs_ratio) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for block in 0..blocks {
            let (x, y, z) = match block % 3 {
                0 => {
                    let x = floor();
                    let y = ours();
                    (x, y, theirs())
                }
                1 => {
                    let y = ours();
                    let z = theirs();
                    (floor(), y, z)
                }
                _ => {
                    let z = theirs();
                    let x = floor();
                    (x, ours(), z)
                }
            };
            f.push(x);
            a.push(y);
            b.push(z);
            ratios.push(y / x);
            theirs_ratio.push(z / y);
        }
        let ratio = median(&mut ratios);
        let (p10, p90) = (ratios[blocks / 10], ratios[blocks * 9 / 10]);
        eprintln!(
            "| {alg} | {:.0} | {:.0} | {:.0} | {ratio:.3}x ({p10:.3}–{p90:.3}) | {:.2}x |",
            median(&mut f),
            median(&mut a),
            median(&mut b),
            median(&mut theirs_ratio)
        );
    }
}
