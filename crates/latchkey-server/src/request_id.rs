//! `X-Request-Id`: every response of both listeners carries one. A
//! client's (or a proxy's) own id is kept when it is well-formed (1 to 128
//! characters of `A-Z a-z 0-9 . _ : -`, sent once); anything else is
//! replaced by a generated id, 32 hex digits.
//!
//! The id is the current request's while its future runs (a task-local
//! value): audit events take it from there ([`current`]), and the request's
//! span carries it into log lines.
//!
//! Generating costs no system call: each thread draws a random 64-bit
//! prefix once, then numbers its ids, each number mixed by a bijection so
//! that ids of one thread never repeat and do not read as a sequence.

use std::cell::Cell;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ring::rand::SecureRandom;

/// The header's name.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a request.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: HeaderValue;
}

/// Whether `id` may be kept as a request id.
pub fn is_well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The id of a request with these headers: its own when it sent exactly
/// one well-formed id, else a new one.
pub fn of_request(headers: &HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(HEADER).iter();
    match (values.next(), values.next()) {
        (Some(id), None) if is_well_formed(id.as_bytes()) => id.clone(),
        _ => generate(),
    }
}

thread_local! {
    /// This thread's two random words and its next number: an id is the
/// number mixed with each word (each half a bijection of the number, so
/// a thread never repeats an id).
    static NEXT: Cell<Option<((u64, u64), u64)>> = const { Cell::new(None) };
}

/// A bijection on u64 (SplitMix64's finalizer).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn seed() -> (u64, u64) {
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No system randomness: the standard library's per-process
        // random hash keys instead.
        use std::hash::{BuildHasher, Hasher};
        let word = || {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            h.finish()
        };
        bytes[..8].copy_from_slice(&word().to_le_bytes());
        bytes[8..].copy_from_slice(&word().to_le_bytes());
    }
    let (a, b) = bytes.split_at(8);
    let word = |s: &[u8]| s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    (word(a), word(b))
}

/// A new id: 32 lowercase hex digits.
pub fn generate() -> HeaderValue {
    let (prefix, n) = NEXT.with(|next| {
        let (prefix, n) = next.get().unwrap_or_else(|| (seed(), 0));
        next.set(Some((prefix, n.wrapping_add(1))));
        (prefix, n)
    });
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    let (a, b) = prefix;
    for (i, word) in [mix(a ^ n), mix(b ^ n)].into_iter().enumerate() {
        for j in 0..16 {
            let nibble = (word >> (60 - 4 * j)) & 0xf;
            out[i * 16 + j] = HEX[nibble as usize];
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
}

/// Runs `future` with `id` as the current request's id.
pub async fn scope<F: std::future::Future>(id: HeaderValue, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// The current request's id, when there is one.
pub fn current() -> Option<String> {
    CURRENT
        .try_with(|id| id.to_str().ok().map(str::to_string))
        .ok()
        .flatten()
}

/// The current request's id for a log line's field: `-` outside a
/// request.
pub fn for_log() -> String {
    current().unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_are_kept_and_others_replaced() {
        assert!(is_well_formed(b"abc-123_x.y:z"));
        assert!(is_well_formed(&[b'a'; 128]));
        assert!(!is_well_formed(&[b'a'; 129]));
        assert!(!is_well_formed(b""));
        assert!(!is_well_formed(b"a b"));
        assert!(!is_well_formed(b"a\"b"));
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("req-1"));
        assert_eq!(of_request(&h), "req-1");
        h.append(HEADER, HeaderValue::from_static("req-2"));
        assert_ne!(of_request(&h), "req-1");
        let mut bad = HeaderMap::new();
        bad.insert(HEADER, HeaderValue::from_static("no spaces please"));
        let id = of_request(&bad);
        assert_eq!(id.len(), 32);
        assert!(is_well_formed(id.as_bytes()));
    }

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
