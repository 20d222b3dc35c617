//! The `Authorization` header as `KeyIndex::verify_authorization` reads
//! it (Basic, Bearer operator and verifier tokens, Bearer JWTs), against
//! an index seeded with keys of every kind. Never a panic; the fast path
//! answers as the general one; whitespace around the value changes
//! nothing (`latchkey_fuzz::verify_and_check`).
//!
//! The first byte chooses how the rest becomes a header, so that the
//! fuzzer need not find base64 or a key id by itself:
//! 0: the header as it is; 1: `Basic base64(rest)`; 2: `Basic
//! base64(keyId ":" rest)` with the key chosen by the next byte; 3:
//! `Bearer rest`; 4: `Basic base64(anyone ":" rest)`.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latchkey_core::secret::{KEY_SECRET_PREFIX, check_format};
use latchkey_fuzz::{FIXTURE, verify_and_check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let header = match mode % 5 {
        0 => rest.to_vec(),
        1 => format!("Basic {}", STANDARD.encode(rest)).into_bytes(),
        2 => {
            let Some((&k, secret)) = rest.split_first() else {
                return;
            };
            let key = &FIXTURE.keys[usize::from(k) % FIXTURE.keys.len()];
            let mut pair = format!("{}:", key.id).into_bytes();
            pair.extend_from_slice(secret);
            format!("Basic {}", STANDARD.encode(pair)).into_bytes()
        }
        3 => [b"Bearer ", rest].concat(),
        _ => format!("Basic {}", STANDARD.encode([b"anyone:", rest].concat())).into_bytes(),
    };
    let answer = verify_and_check(&header);
    // The keys' own secrets verify: all but the fixture's expired key, and
    // its key whose stored secret is not in Latchkey's format (Basic
    // refuses such a secret before any lookup: `MalformedSecret`).
    if mode % 5 == 2 && answer.is_err() {
        let key = &FIXTURE.keys[usize::from(rest[0]) % FIXTURE.keys.len()];
        let well_formed = check_format(KEY_SECRET_PREFIX, &key.secret).is_ok();
        assert!(
            &rest[1..] != key.secret.as_bytes() || key.id == FIXTURE.keys[4].id || !well_formed,
            "the secret of {} was refused: {answer:?}",
            key.id
        );
    }
});
