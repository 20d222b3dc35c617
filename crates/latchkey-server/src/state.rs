//! State shared by every handler, passed explicitly (no globals), so tests
//! can run many servers in one process.

use std::sync::Arc;

use latchkey_core::{Clock, KeyIndex, MasterKey, VerifyOptions};
use latchkey_store::Store;
use ring::rand::SystemRandom;

use crate::config::Config;

/// A handle on the server's shared state: one reference count, so that
/// cloning it in every extractor and middleware costs one atomic operation.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler may reach.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub index: Arc<KeyIndex>,
    pub master: Arc<MasterKey>,
    pub clock: Arc<dyn Clock>,
    pub rng: SystemRandom,
    pub config: Arc<Config>,
    /// See [`crate::extract::WriteGuard`].
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
    /// When each key was last recorded as exposed to a browser (unix
    /// seconds), so a leaked key in a busy page is recorded once per window.
    pub exposures: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    /// How fresh the index is (see [`crate::sync`]).
    pub freshness: Arc<crate::sync::Freshness>,
    /// Failed credentials per client address and key id.
    pub throttle: Arc<crate::throttle::AuthThrottle>,
    /// The nonces of signed requests seen (`crate::signed_requests`).
    pub nonces: Arc<crate::signed_requests::Nonces>,
    /// Keys' rate-limit counts on this node (see
    /// `latchkey_core::policy::ratelimit`).
    pub limiter: Arc<latchkey_core::policy::RateLimiter>,
    /// Keys' usage notices on their way to the audit log (see
    /// [`crate::notices`]).
    pub notices: Arc<crate::notices::Notices>,
    /// One rate-limit lease at a time per window (see [`crate::limits`]).
    pub leases: Arc<crate::limits::Leases>,
    /// The series `/metrics` shows (see [`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The rate limit of refusal log lines (see [`crate::refusals`]).
    pub refusals: Arc<crate::refusals::RefusalLog>,
    /// Checks of keys' credentials not yet written (see [`crate::usage`]).
    pub usage: Arc<crate::usage::UsageCounter>,
    /// Bumped whenever the change feed may have moved: a write on this
    /// node released its lock, or the follower applied other nodes'
    /// changes. The replication feed's streams wait on it (see
    /// [`crate::api::replica`]).
    pub feed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Set when the node begins to shut down: long-lived responses (the
    /// replication feed's streams) end, so that shutdown need not wait.
    pub closing: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    pub fn now(&self) -> i64 {
        self.clock.unix()
    }

    /// Whether the node is shutting down (see [`Shared::closing`]).
    pub fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Ends the long-lived responses: shutdown has begun.
    pub fn begin_closing(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.feed_moved();
    }

    /// Wakes whatever waits on [`Shared::feed`].
    pub fn feed_moved(&self) {
        self.feed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            leeway_seconds: self.config.jwt_leeway_seconds,
        }
    }
}
