//! Refused credentials, logged at INFO under the `latchkey::refusals`
//! target: the refusal's code, the key id the credential names (when it
//! names one), the way it came in and the request id. Never the secret or
//! the token.
//!
//! At most one line per key id per [`WINDOW`]: a client retrying a
//! revoked key in a loop writes one line every ten seconds, and the next
//! line says how many were left out (`suppressed`). Refusals that name no
//! key share one such budget. The table of recent lines holds at most
//! [`MAX_TRACKED`] key ids; when full, those older than the window are
//! dropped, and if none is, lines for new key ids are left out (counted in
//! `latchkey_refusal_log_suppressed_total`) until the window has passed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Way;
use crate::state::AppState;

/// One line per key id per this long.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Key ids remembered at most.
pub const MAX_TRACKED: usize = 10_000;

/// Longest key id written or remembered (a claimed id is the client's
/// text).
const MAX_KEY_ID: usize = 64;

#[derive(Debug)]
struct Seen {
    last: Instant,
    suppressed: u64,
}

/// The rate limit of refusal lines.
#[derive(Debug, Default)]
pub struct RefusalLog {
    seen: Mutex<HashMap<Box<str>, Seen>>,
}

impl RefusalLog {
    /// Whether a line for `key` is due now, and how many were left out
    /// since the last one.
    fn due(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = seen.get_mut(key) {
            if now.duration_since(entry.last) < WINDOW {
                entry.suppressed += 1;
                return None;
            }
            let suppressed = entry.suppressed;
            *entry = Seen {
                last: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, e| now.duration_since(e.last) < WINDOW);
            if seen.len() >= MAX_TRACKED {
                return None;
            }
        }
        seen.insert(
            key.into(),
            Seen {
                last: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Key ids remembered now.
    pub fn tracked(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.len())
    }
}

/// Whether refusal lines are written at all.
fn enabled() -> bool {
    tracing::enabled!(target: "latchkey::refusals", tracing::Level::INFO)
}

/// A credential refused on `way` with `code`: counted, and logged unless
/// its key had a line in the last [`WINDOW`]. `scope` is the principal's
/// when the credential verified (see [`crate::metrics::NO_SCOPE`]).
pub fn refused(
    state: &AppState,
    way: Way,
    scope: &'static str,
    code: &'static str,
    key_id: Option<&str>,
    started: Instant,
) {
    state.metrics.refused(way, scope, code, started);
    crate::usage::refused(state, key_id, code);
    if !enabled() {
        return;
    }
    let key_id = key_id.map(|id| match id.char_indices().nth(MAX_KEY_ID) {
        Some((end, _)) => &id[..end],
        None => id,
    });
    let Some(suppressed) = state.refusals.due(key_id.unwrap_or(""), Instant::now()) else {
        state.metrics.refusal_line_suppressed();
        return;
    };
    let request_id = crate::request_id::current();
    tracing::info!(
        target: "latchkey::refusals",
        code,
        key_id = key_id.unwrap_or("-"),
        path = way.as_str(),
        request_id = request_id.as_deref().unwrap_or("-"),
        suppressed,
        "credential refused"
    );
}

/// The key id a presented `Authorization` value names, unverified.
pub fn claimed_key_id(header: Option<&[u8]>) -> Option<String> {
    header.and_then(crate::throttle::claimed_key_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_window_with_the_count_left_out() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.due("key_a", t0), Some(0));
        assert_eq!(log.due("key_a", t0 + Duration::from_secs(1)), None);
        assert_eq!(log.due("key_a", t0 + Duration::from_secs(2)), None);
        assert_eq!(log.due("key_b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(log.due("key_a", t0 + Duration::from_secs(11)), Some(2));
    }

    #[test]
    fn the_table_is_bounded() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            assert!(log.due(&format!("k{i}"), t0).is_some());
        }
        assert_eq!(log.due("new", t0 + Duration::from_secs(1)), None);
        assert_eq!(log.tracked(), MAX_TRACKED);
        // Once the window has passed, old entries make room.
        assert_eq!(log.due("new", t0 + Duration::from_secs(11)), Some(0));
        assert_eq!(log.tracked(), 1);
    }
}
