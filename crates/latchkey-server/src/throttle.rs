//! The throttle on failed credentials presented to Latchkey's own API.
//!
//! # What it counts
//!
//! A failure is a credential presented in the `Authorization` header of a
//! request to the API (Basic, a JWT, an operator or a verifier token, in
//! the `Caller` and `VerifyCaller` extractors) that does not verify before
//! its secret is proven: an unknown key id, a wrong secret, a bad
//! signature, an unknown token, a malformed header or token. A request
//! with no credential at all is not a guess and is not counted, nor is a
//! JWT whose signature verified but whose time claims, lifetime or scope
//! are refused (its sender holds the secret).
//!
//! Not counted either: the credential that `POST /v1/verify` and
//! `/v1/introspect` are asked about (an operator's API asking about its
//! own clients' credentials, answered `valid:false` in a 200, is not an
//! attack on Latchkey; only a failing *caller* of those endpoints is
//! counted), and forward-auth and the gateway, which answer for the
//! operator's API (out of scope for now).
//!
//! # The two bounds
//!
//! Failures are counted in fixed windows of `window_seconds`, each
//! starting at the first failure after the previous one ended:
//!
//! - per client address (the connection's peer address, never
//!   `X-Forwarded-For`, which the client writes; IPv6 addresses by their
//!   /64, which one host usually holds whole): after `per_address`
//!   failures in a window, every request with a credential from that
//!   address is answered 429 until the window ends, valid credentials
//!   included. It has to be so: if a valid credential still got through,
//!   a 200 among the 429s would tell the guesser which guess was right,
//!   and the throttle would not slow guessing at all.
//! - per key id, across addresses (a Basic user name or a JWT's `kid`
//!   naming a key in the index, so that made-up ids cannot crowd out the
//!   real ones): after `per_key` failures in a window, a credential for
//!   that key id is answered 429 *only from an address that has itself
//!   failed in its current window*. An address with no recent failure is
//!   never refused by this bound, so a key's owner, whose servers present
//!   the right secret, cannot be locked out by an attacker hammering the
//!   key from elsewhere; a distributed guesser gets one failure per address
//!   per window on that key (and then `per_address` on others). Refusing
//!   only the failed attempts instead would not do: as above, a request
//!   must be refused before its secret is checked, or the answer tells.
//!
//! What an attacker can still do: lock out an address it shares with the
//! key's owner (a NAT), and fill the tables (see below). Secrets have 256
//! random bits, so guessing one is hopeless with or without a throttle;
//! the throttle is there to keep floods of bad credentials cheap to
//! refuse, and to say so in the log: one WARN per address, and one per key
//! id, in each window where the bound is reached (never the credential).
//!
//! # Cost and memory
//!
//! A request whose credential verifies touches the throttle only through
//! [`AuthThrottle::admit`]: when no failure at all is in an open window
//! (the usual state) that is one atomic load; otherwise one lookup under a
//! mutex. The direct path of `/v1/verify` (`lane.rs`) asks only
//! [`AuthThrottle::is_throttled`] (the same atomic load, then one lookup).
//! Failures take the locks to count.
//!
//! Each table holds at most [`MAX_TRACKED`] entries. When one is full,
//! entries whose window has ended are dropped, then (if still more than
//! seven eighths full) those below their bound, then arbitrary ones, so
//! that each sweep frees an eighth of the table: an attacker with many
//! addresses cannot grow it, and can at worst make it forget addresses
//! that were not yet throttled.
//!
//! A hand-written window counter rather than a rate-limiting crate: it
//! reads the server's injected clock (so tests step through windows
//! without sleeping), it knows the "has this address failed" state that
//! the per-key bound needs, and it says when a window first reaches its
//! bound, for the once-per-window warning.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use latchkey_core::secret::{OPERATOR_TOKEN_PREFIX, VERIFIER_TOKEN_PREFIX};
use latchkey_core::{AuthError, KeyIndex};
use zeroize::Zeroizing;

/// Entries per table (addresses, key ids) at most: a few MiB each.
pub const MAX_TRACKED: usize = 100_000;

/// The bounds of the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Length of a counting window, in seconds (at least 1).
    pub window_seconds: u32,
    /// Failures per client address in a window before it is refused.
    pub per_address: u32,
    /// Failures per key id, over all addresses, in a window before the
    /// key id is refused from addresses that have failed themselves.
    pub per_key: u32,
}

/// 20 failures per address and 100 per key id, per minute.
pub const DEFAULT_THROTTLE: ThrottleConfig = ThrottleConfig {
    window_seconds: 60,
    per_address: 20,
    per_key: 100,
};

impl Default for ThrottleConfig {
    fn default() -> Self {
        DEFAULT_THROTTLE
    }
}

/// A refusal: how long until the window that caused it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_seconds: u64,
    /// Refused by the per-key-id bound rather than the address's own.
    pub by_key: bool,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    failures: u32,
    warned: bool,
}

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    /// The open window of `key` at `now`, if any.
    fn open(&self, key: &K, now: i64, length: i64) -> Option<Window> {
        self.entries
            .get(key)
            .copied()
            .filter(|w| now < w.start + length)
    }

    /// Counts one failure; the window after it.
    fn count(&mut self, key: K, now: i64, length: i64, bound: u32) -> Window {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_TRACKED {
            self.make_room(now, length, bound);
        }
        let window = self.entries.entry(key).or_insert(Window {
            start: now,
            failures: 0,
            warned: false,
        });
        if now >= window.start + length {
            *window = Window {
                start: now,
                failures: 0,
                warned: false,
            };
        }
        window.failures = window.failures.saturating_add(1);
        *window
    }

    fn set_warned(&mut self, key: &K) {
        if let Some(w) = self.entries.get_mut(key) {
            w.warned = true;
        }
    }

    fn make_room(&mut self, now: i64, length: i64, bound: u32) {
        let target = MAX_TRACKED - MAX_TRACKED / 8;
        self.entries.retain(|_, w| now < w.start + length);
        if self.entries.len() > target {
            self.entries.retain(|_, w| w.failures >= bound);
        }
        if self.entries.len() > target {
            let excess = self.entries.len() - target;
            let doomed: Vec<K> = self.entries.keys().take(excess).cloned().collect();
            for k in doomed {
                self.entries.remove(&k);
            }
        }
    }
}

/// The address a peer is counted under: itself for IPv4 (and IPv4-mapped
/// IPv6), its /64 for IPv6.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

fn address_text(key: IpAddr) -> String {
    match key {
        IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
    }
}

/// Whether a verification error counts as a failed credential.
pub fn counts(error: &AuthError) -> bool {
    !matches!(
        error,
        AuthError::Missing
            | AuthError::TokenExpired
            | AuthError::NotYetValid
            | AuthError::TokenTooLong(_)
            | AuthError::MissingScope
            | AuthError::ScopeNotAllowed(_)
    )
}

/// The key id a credential names, unverified: a Basic user name or a JWT's
/// `kid`. `None` for tokens and for what does not parse.
pub fn claimed_key_id(header: &[u8]) -> Option<String> {
    use base64::Engine;
    let header = std::str::from_utf8(latchkey_core::verify::trim_ows(header)).ok()?;
    let (scheme, rest) = header.split_once(' ')?;
    let credentials = rest.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()?,
        );
        let colon = decoded.iter().position(|&b| b == b':')?;
        String::from_utf8(decoded[..colon].to_vec()).ok()
    } else if scheme.eq_ignore_ascii_case("bearer")
        && !credentials.starts_with(OPERATOR_TOKEN_PREFIX)
        && !credentials.starts_with(VERIFIER_TOKEN_PREFIX)
    {
        latchkey_core::jwt::parse(credentials)
            .ok()
            .map(|jwt| jwt.kid().to_string())
    } else {
        None
    }
}

/// Failed credentials per client address and per key id, in memory.
#[derive(Debug)]
pub struct AuthThrottle {
    config: ThrottleConfig,
    addresses: Mutex<Table<IpAddr>>,
    keys: Mutex<Table<String>>,
    /// Unix second from which no counted failure is in an open window:
    /// before it, the tables are worth a look.
    quiet_from: AtomicI64,
}

impl AuthThrottle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config: ThrottleConfig {
                window_seconds: config.window_seconds.max(1),
                ..config
            },
            addresses: Mutex::new(Table::new()),
            keys: Mutex::new(Table::new()),
            quiet_from: AtomicI64::new(i64::MIN),
        }
    }

    pub fn config(&self) -> ThrottleConfig {
        self.config
    }

    fn length(&self) -> i64 {
        i64::from(self.config.window_seconds)
    }

    fn quiet(&self, now: i64) -> bool {
        now >= self.quiet_from.load(Ordering::Relaxed)
    }

    fn retry_after(&self, window: Window, now: i64, by_key: bool) -> Throttled {
        let seconds = (window.start + self.length() - now).max(1);
        Throttled {
            retry_after_seconds: u64::try_from(seconds).unwrap_or(1),
            by_key,
        }
    }

    /// Whether `peer`'s address has reached its bound in its open window.
    pub fn is_throttled(&self, peer: IpAddr, now: i64) -> bool {
        !self.quiet(now)
            && self
                .address_refusal(peer, now)
                .is_some_and(|(_, refused)| refused)
    }

    /// The address's open window, if it has one, and whether it reached
    /// its bound.
    fn address_refusal(&self, peer: IpAddr, now: i64) -> Option<(Window, bool)> {
        let table = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let window = table.open(&address_key(peer), now, self.length())?;
        Some((window, window.failures >= self.config.per_address))
    }

    /// Before a credential is verified: `Err` if it must be refused.
    pub fn admit(
        &self,
        peer: Option<IpAddr>,
        header: Option<&[u8]>,
        index: &KeyIndex,
        now: i64,
    ) -> Result<(), Throttled> {
        let (Some(peer), Some(header)) = (peer, header) else {
            return Ok(());
        };
        if self.quiet(now) {
            return Ok(());
        }
        let Some((window, throttled)) = self.address_refusal(peer, now) else {
            return Ok(());
        };
        if throttled {
            return Err(self.retry_after(window, now, false));
        }
        // The address has failed in its open window: the key id's bound
        // applies to it.
        let Some(key_id) = claimed_key_id(header).filter(|id| index.contains_key(id)) else {
            return Ok(());
        };
        let table = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        match table.open(&key_id, now, self.length()) {
            Some(w) if w.failures >= self.config.per_key => Err(self.retry_after(w, now, true)),
            _ => Ok(()),
        }
    }

    /// After a credential failed to verify (and [`counts`] said it counts).
    pub fn failed(&self, peer: Option<IpAddr>, header: Option<&[u8]>, index: &KeyIndex, now: i64) {
        let Some(peer) = peer else {
            return;
        };
        let length = self.length();
        let address = address_key(peer);
        {
            let mut table = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
            let window = table.count(address, now, length, self.config.per_address);
            self.quiet_from
                .fetch_max(window.start + length, Ordering::Relaxed);
            if window.failures >= self.config.per_address && !window.warned {
                table.set_warned(&address);
                tracing::warn!(
                    address = %address_text(address),
                    failures = window.failures,
                    window_seconds = length,
                    "failed credentials from this address reached the limit; \
                     its requests are refused (429) until the window ends"
                );
            }
        }
        let Some(key_id) = header
            .and_then(claimed_key_id)
            .filter(|id| index.contains_key(id))
        else {
            return;
        };
        let mut table = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let window = table.count(key_id.clone(), now, length, self.config.per_key);
        if window.failures >= self.config.per_key && !window.warned {
            table.set_warned(&key_id);
            tracing::warn!(
                key_id = %key_id,
                failures = window.failures,
                window_seconds = length,
                "failed credentials for this key id reached the limit; \
                 addresses that failed are refused (429) for it until the window ends"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> AuthThrottle {
        AuthThrottle::new(ThrottleConfig {
            window_seconds: 10,
            per_address: 3,
            per_key: 5,
        })
    }

    #[test]
    fn an_address_is_refused_after_its_bound_until_the_window_ends() {
        let t = small();
        let index = KeyIndex::new();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let h: &[u8] = b"Bearer lkop_x";
        for _ in 0..3 {
            assert_eq!(t.admit(Some(ip), Some(h), &index, 100), Ok(()));
            t.failed(Some(ip), Some(h), &index, 100);
        }
        let refused = t
            .admit(Some(ip), Some(h), &index, 104)
            .expect_err("throttled");
        assert_eq!(refused.retry_after_seconds, 6);
        assert!(t.is_throttled(ip, 109));
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(t.admit(Some(other), Some(h), &index, 104), Ok(()));
        assert!(!t.is_throttled(ip, 110));
        assert_eq!(t.admit(Some(ip), Some(h), &index, 110), Ok(()));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::ffff:2".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(
            address_key(mapped),
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn the_tables_stay_bounded() {
        let t = AuthThrottle::new(ThrottleConfig {
            window_seconds: 60,
            per_address: 2,
            per_key: 5,
        });
        let index = KeyIndex::new();
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            t.failed(Some(ip), None, &index, 0);
        }
        let len = t.addresses.lock().expect("lock").entries.len();
        assert!(len <= MAX_TRACKED, "{len}");
    }

    #[test]
    fn the_claimed_key_id_is_read_without_verifying() {
        use base64::Engine;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("app_abc:lksk_wrong")
        );
        assert_eq!(claimed_key_id(basic.as_bytes()).as_deref(), Some("app_abc"));
        let jwt = latchkey_core::jwt::sign_hs256(b"s", "app_kid", &serde_json::json!({}));
        assert_eq!(
            claimed_key_id(format!("Bearer {jwt}").as_bytes()).as_deref(),
            Some("app_kid")
        );
        assert_eq!(claimed_key_id(b"Bearer lkop_abc"), None);
    }
}
