//! The replica: its index, its freshness, and verification from them.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use latchkey_core::http_sig::{NonceCache, ReceivedRequest, SignedRefusal};
use latchkey_core::policy::checks::{self, Demand, Subject};
use latchkey_core::policy::{LivePolicy, RateLimiter};
use latchkey_core::{
    Clock, KeyIndex, Principal, SecretString, SystemClock, Verified, VerifyOptions,
};

use crate::feed;

/// How long a replica answers without hearing from the server, by
/// default. The server sends a heartbeat every 500 ms.
pub const DEFAULT_STALENESS_WINDOW: Duration = Duration::from_secs(5);

/// What a replica shares with its feed task.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) index: KeyIndex,
    pub(crate) limiter: RateLimiter,
    /// The nonces of signed requests this replica verified.
    nonces: NonceCache,
    base: Instant,
    /// When (ms after `base`) the replica last heard the server say it was
    /// current.
    heard_ms: AtomicU64,
    /// The last change applied.
    pub(crate) seq: AtomicI64,
    window: Duration,
    options: VerifyOptions,
    /// `None`: the system's clock, read through `base` and `offset_ms`.
    clock: Option<Arc<dyn Clock>>,
    /// Unix milliseconds minus milliseconds since `base`, taken from the
    /// system's clock when the replica hears from the server: verification
    /// reads one monotonic clock for its freshness and its unix time.
    offset_ms: AtomicI64,
}

/// Unix milliseconds now, from the system's wall clock.
fn unix_ms() -> i64 {
    i64::try_from(SystemClock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl State {
    pub(crate) fn heard(&self) {
        self.heard_at(Instant::now());
    }

    /// Takes the wall clock's offset from the monotonic one again (they
    /// drift apart slowly; the wall clock may also be set).
    fn anchor(&self) {
        let since = i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.offset_ms
            .store(unix_ms().saturating_sub(since), Ordering::Release);
    }

    /// Milliseconds since `base` now, and unix seconds now.
    fn now(&self) -> (u64, i64) {
        let since = self.base.elapsed().as_millis();
        let since_ms = u64::try_from(since).unwrap_or(u64::MAX);
        let unix = match &self.clock {
            Some(clock) => clock.unix(),
            None => i64::try_from(since)
                .unwrap_or(i64::MAX)
                .saturating_add(self.offset_ms.load(Ordering::Acquire))
                .div_euclid(1000),
        };
        (since_ms, unix)
    }

    /// The server said the replica was current as of `at` (never moves
    /// back).
    pub(crate) fn heard_at(&self, at: Instant) {
        let ms =
            u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        self.heard_ms.fetch_max(ms, Ordering::AcqRel);
        if self.clock.is_none() {
            self.anchor();
        }
    }

    pub(crate) fn age(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Acquire));
        self.base.elapsed().saturating_sub(heard)
    }

    /// Whether, at `since_ms` after `base`, the replica has not heard from
    /// the server for longer than its window (to the millisecond).
    fn stale_at(&self, since_ms: u64) -> bool {
        let heard = self.heard_ms.load(Ordering::Acquire);
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        since_ms.saturating_sub(heard) > window_ms
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }
}

/// Ends the feed task when the last [`Replica`] handle goes.
#[derive(Debug)]
struct Handle {
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A live replica of a Latchkey server's key index. Cheap to clone (all
/// clones share one index); the feed is followed until the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct Replica {
    handle: Arc<Handle>,
}

/// How to connect: see [`Replica::builder`].
#[derive(Debug)]
pub struct ReplicaBuilder {
    url: String,
    token: SecretString,
    plain_http: bool,
    window: Duration,
    options: VerifyOptions,
    connect_timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
}

/// Why [`Replica::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not an `http://` or `https://` URL.
    #[error("the server URL is not usable: {0}")]
    Url(String),
    /// The server could not be reached, or the response broke off.
    #[error("could not load the snapshot: {0}")]
    Transport(String),
    /// The server refused: a wrong or deleted token (401), or a node that
    /// cannot serve a current snapshot (503).
    #[error("the server answered {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The response body (the documented JSON error).
        body: String,
    },
    /// The snapshot could not be read: a damaged response, or a replica
    /// token other than the one it was sealed for.
    #[error("the snapshot is not usable: {0}")]
    Snapshot(String),
}

impl ReplicaBuilder {
    /// How long the replica goes on answering without hearing from the
    /// server (default 5 s); after that every verification is refused with
    /// `index_stale` until the feed is back. At least 1 s.
    pub fn staleness_window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_secs(1));
        self
    }

    /// Seconds of clock skew tolerated on JWTs' `exp` and `nbf` (default
    /// 30, the server's default; give the server's `--jwt-leeway-seconds`
    /// if it was changed).
    pub fn jwt_leeway_seconds(mut self, seconds: i64) -> Self {
        self.options.leeway_seconds = seconds.max(0);
        self
    }

    /// The clock JWTs' `exp` and `nbf` and rate-limit windows are read
    /// against (default: the system's). For tests that run a server on a
    /// manual clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Allows a plain `http://` URL to a host that is not this machine. Over
    /// plain HTTP the replica token travels in clear, and with it anyone on
    /// the way could open the key secrets the feed sends, or hold back
    /// deletions: only on a network you trust as you trust this process.
    /// (`http://` to a loopback address is always allowed.)
    pub fn allow_plain_http(mut self) -> Self {
        self.plain_http = true;
        self
    }

    /// How long loading the first snapshot may take (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Loads the snapshot, then follows the feed in a task of the current
    /// Tokio runtime (reconnecting with backoff and resuming from the last
    /// change applied).
    pub async fn connect(self) -> Result<Replica, ConnectError> {
        let client = feed::Client::new(&self.url, self.token, self.plain_http)?;
        // Fresh as of the moment the snapshot was asked for, not when it
        // finished loading.
        let asked = Instant::now();
        let (index, seq) = tokio::time::timeout(self.connect_timeout, client.snapshot())
            .await
            .map_err(|_| {
                ConnectError::Transport(format!(
                    "no complete snapshot within {:?}",
                    self.connect_timeout
                ))
            })??;
        let state = Arc::new(State {
            index,
            limiter: RateLimiter::new(),
            nonces: NonceCache::default(),
            base: asked,
            heard_ms: AtomicU64::new(0),
            seq: AtomicI64::new(seq),
            window: self.window,
            options: self.options,
            clock: self.clock,
            offset_ms: AtomicI64::new(0),
        });
        state.heard_at(asked);
        let task = tokio::spawn(feed::follow(client, state.clone()));
        Ok(Replica {
            handle: Arc::new(Handle { state, task }),
        })
    }
}

/// What a request targets, and what else the key's policy checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    /// The app the request acts on (as `/v1/verify`'s `appId`).
    pub app_id: Option<&'a str>,
    /// The app user the request acts on (as `/v1/verify`'s `userId`).
    pub user_id: Option<&'a str>,
    /// The request's `Origin` header, when it came from a browser.
    pub origin: Option<&'a str>,
    /// The client's address, for keys restricted to some.
    pub ip: Option<IpAddr>,
    /// Permissions the key must carry (as `/v1/verify`'s `permissions`).
    pub permissions: &'a [String],
}

impl<'a> Target<'a> {
    /// A request on no particular app or user.
    pub fn none() -> Self {
        Self::default()
    }

    /// A request on one app.
    pub fn app(app_id: &'a str) -> Self {
        Self {
            app_id: Some(app_id),
            ..Self::default()
        }
    }

    /// A request on one app user of one app.
    pub fn user(app_id: &'a str, user_id: &'a str) -> Self {
        Self {
            app_id: Some(app_id),
            user_id: Some(user_id),
            ..Self::default()
        }
    }
}

/// A request signed with RFC 9421 HTTP Message Signatures (`Signature-Input`
/// and `Signature`, `hmac-sha256` under a key's secret), as your service
/// received it.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The request's method.
    pub method: &'a str,
    /// The URL the client called, absolute: scheme, host (and port), path
    /// and query. Behind a proxy, the client's URL, not your listener's.
    pub url: &'a str,
    /// The request's header fields.
    pub headers: &'a http::HeaderMap,
    /// The body, when you have read it: it must match the request's
    /// `Content-Digest`, which the signature covers. `None`: the body is
    /// not checked here (check `Content-Digest` yourself), and a request
    /// whose method may carry a body must then carry a `nonce`, so that its
    /// signature is used once (on this replica).
    pub body: Option<&'a [u8]>,
}

/// A credential that verified, and what it reached.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Who the credential speaks for (the server's `Principal`).
    pub principal: Principal,
    /// The targeted app when it is not the credential's own.
    app_id: Option<Box<str>>,
    /// The targeted app user when it is not the credential's own.
    user_id: Option<Box<str>>,
    policy: Option<Arc<LivePolicy>>,
}

impl Verification {
    /// The targeted app, or the credential's own (as `/v1/verify`'s
    /// `appId`).
    pub fn app_id(&self) -> Option<&str> {
        self.app_id.as_deref().or(match &self.principal {
            Principal::App { app_id, .. } | Principal::AppUser { app_id, .. } => Some(app_id),
            _ => None,
        })
    }

    /// The targeted app user, or the appUser credential's own (as
    /// `/v1/verify`'s `userId`).
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref().or(match &self.principal {
            Principal::AppUser { external_id, .. } => Some(external_id),
            _ => None,
        })
    }

    /// The key's permissions, when it has a list.
    pub fn permissions(&self) -> Option<&[Box<str>]> {
        self.policy.as_deref().and_then(LivePolicy::permissions)
    }
}

/// Why a credential was refused: the code and title `/v1/verify` gives,
/// and the HTTP status Latchkey's own API would answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403, 404, 429 or 503.
    pub status: u16,
    /// `unauthorized`, `forbidden`, `not_found`, `ip_not_allowed`,
    /// `rate_limited`, `index_stale`, … (the server's codes).
    pub code: &'static str,
    /// What to fix, for a person.
    pub title: String,
    /// For `rate_limited`: when to try again.
    pub retry_after_seconds: Option<i64>,
}

impl Refusal {
    fn new(status: u16, code: &'static str, title: impl Into<String>) -> Self {
        Self {
            status,
            code,
            title: title.into(),
            retry_after_seconds: None,
        }
    }

    /// The documented error body: `{"errors":[{"code","title"}]}`.
    pub fn body(&self) -> String {
        serde_json::json!({"errors": [{"code": self.code, "title": self.title}]}).to_string()
    }
}

impl Replica {
    /// Connects with the defaults (see [`Replica::builder`]).
    pub async fn connect(url: &str, replica_token: &str) -> Result<Replica, ConnectError> {
        Self::builder(url, replica_token).connect().await
    }

    /// A replica of the server at `url` (its main listener, e.g.
    /// `https://latchkey.internal:8080`), authorized by a replica token
    /// from `POST /v1/replicaTokens`.
    pub fn builder(url: &str, replica_token: &str) -> ReplicaBuilder {
        ReplicaBuilder {
            url: url.to_string(),
            token: SecretString::new(replica_token.to_string()),
            plain_http: false,
            window: DEFAULT_STALENESS_WINDOW,
            options: VerifyOptions::default(),
            connect_timeout: Duration::from_secs(30),
            clock: None,
        }
    }

    fn state(&self) -> &State {
        &self.handle.state
    }

    /// The last change of the server's feed this replica has applied.
    pub fn seq(&self) -> i64 {
        self.state().seq.load(Ordering::Acquire)
    }

    /// Whether the replica heard from the server within its staleness
    /// window (when not, every verification is refused).
    pub fn is_fresh(&self) -> bool {
        let since_ms = u64::try_from(self.state().base.elapsed().as_millis()).unwrap_or(u64::MAX);
        !self.state().stale_at(since_ms)
    }

    /// How many keys the replica holds.
    pub fn key_count(&self) -> usize {
        self.state().index.key_count()
    }

    /// Verifies a request's `Authorization` header value (Basic or a
    /// Bearer JWT, as the server takes them) for `target`, from memory.
    pub fn verify(
        &self,
        authorization: Option<&str>,
        target: &Target<'_>,
    ) -> Result<Verification, Refusal> {
        let state = self.state();
        let now = self.fresh_now()?;
        let verified = state
            .index
            .verify_authorization(authorization.map(str::as_bytes), now, state.options)
            .map_err(|e| Refusal::new(401, e.code(), e.to_string()))?;
        self.reach(verified, target, now)
    }

    /// Verifies a signed request (RFC 9421, `hmac-sha256` under the key's
    /// secret, as the server takes them) for `target`, from memory: the
    /// signature must cover the method, the URL and (for a method that may
    /// carry a body) `Content-Digest`, be made within the last 5 minutes,
    /// and its nonce, if any, is accepted once.
    pub fn verify_signed_request(
        &self,
        request: &SignedRequest<'_>,
        target: &Target<'_>,
    ) -> Result<Verification, Refusal> {
        let state = self.state();
        let now = self.fresh_now()?;
        let refused =
            |why: String| Refusal::new(401, "unauthorized", format!("signed request: {why}"));
        let url: http::Uri = request
            .url
            .parse()
            .map_err(|_| refused("the request's URL must be absolute".into()))?;
        let (Some(scheme), Some(authority)) = (url.scheme_str(), url.authority()) else {
            return Err(refused(
                "the request's URL must be absolute: scheme, host, path and query".into(),
            ));
        };
        let received = ReceivedRequest::new(
            request.method,
            scheme,
            authority.as_str().to_string(),
            url.path(),
            url.query(),
            request
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        if let Some(body) = request.body {
            received
                .check_body(body)
                .map_err(|e| refused(e.to_string()))?;
        }
        let verified = received
            .verify(&state.index, &state.nonces, request.body.is_some(), now)
            .map_err(|e| match e {
                SignedRefusal::NoncesFull => Refusal::new(503, "unavailable", e.to_string()),
                e => refused(e.to_string()),
            })?;
        self.reach(verified, target, now)
    }

    /// Unix seconds now, unless the replica is stale (then every
    /// credential is refused).
    fn fresh_now(&self) -> Result<i64, Refusal> {
        let state = self.state();
        let (since_ms, now) = state.now();
        if state.stale_at(since_ms) {
            return Err(Refusal::new(
                503,
                "index_stale",
                format!(
                    "the replica has not heard from the server for more than {} ms; credentials are refused until it catches up",
                    state.window.as_millis()
                ),
            ));
        }
        Ok(now)
    }

    /// What a verified credential reaches of `target`, and its policy's
    /// checks (permissions, addresses, origins, rate limit).
    fn reach(
        &self,
        verified: Verified,
        target: &Target<'_>,
        now: i64,
    ) -> Result<Verification, Refusal> {
        let state = self.state();
        let p = &verified.principal;
        let reached = state
            .index
            .reach(p, target.app_id, target.user_id, target.origin.is_some())
            .map_err(|(code, title)| {
                Refusal::new(if code == "not_found" { 404 } else { 403 }, code, title)
            })?;
        if p.scope().is_none() {
            return Err(Refusal::new(
                403,
                "forbidden",
                "the credential has no scope",
            ));
        }
        // Only what differs from the principal's own is copied.
        let own_app = match p {
            Principal::App { app_id, .. } | Principal::AppUser { app_id, .. } => Some(&**app_id),
            _ => None,
        };
        let own_user = match p {
            Principal::AppUser { external_id, .. } => Some(external_id.as_str()),
            _ => None,
        };
        let app_id = reached
            .app_id
            .filter(|a| Some(*a) != own_app)
            .map(Box::from);
        let user_id = reached
            .user_id
            .filter(|u| Some(*u) != own_user)
            .map(Box::from);
        if let Some(key_id) = p.key_id()
            && (verified.policy.is_some() || verified.ratelimit.is_some())
        {
            if verified
                .policy
                .as_deref()
                .is_some_and(|policy| policy.credits().is_some())
            {
                return Err(Refusal::new(
                    403,
                    "credits_not_replicated",
                    "the key has credits, which only the server can spend: verify it with POST /v1/verify",
                ));
            }
            let subject = Subject {
                key_id,
                user: match p {
                    Principal::AppUser { external_id, .. } => Some(external_id.as_str()),
                    _ => None,
                },
                policy: verified.policy.as_deref(),
                now,
            };
            let demand = Demand {
                permissions: target.permissions,
                ip: target.ip,
                origin: target.origin,
                cost: 1,
            };
            if let Err(refusal) =
                checks::verification(&subject, &demand, &state.limiter, verified.ratelimit)
            {
                let status = match refusal {
                    checks::Refusal::RateLimited(_) | checks::Refusal::UsageExceeded { .. } => 429,
                    _ => 403,
                };
                let mut r = Refusal::new(status, refusal.code(), refusal.title(now));
                if let checks::Refusal::RateLimited(l) = &refusal {
                    r.retry_after_seconds = Some(l.retry_after(now));
                }
                return Err(r);
            }
        }
        Ok(Verification {
            principal: verified.principal,
            app_id,
            user_id,
            policy: verified.policy,
        })
    }

    /// The CORS origin to allow on a response to an appUser credential of
    /// `app_id` (the app's allowed origins, as the server answers).
    pub fn allows_origin(&self, app_id: &str, origin: &str) -> bool {
        self.state()
            .index
            .app_policy(app_id)
            .is_some_and(|p| p.allows_origin(origin))
    }
}
