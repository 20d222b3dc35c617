//! `GET /metrics`: the server's counters, histograms and gauges in the
//! Prometheus text format (prometheus-client's registry and encoder).
//!
//! No label ever holds a key, user, account or app id: labels are the
//! verification's outcome (`valid` or the refusal code), the credential's
//! scope, the way in (`verify`, `forward_auth`, `gateway`, `api`,
//! `introspect`), an HTTP route's template and a status.
//!
//! The verification path pays one atomic add per counter and, for the
//! latency, one atomic add per histogram bucket it falls in plus the sum:
//! the handles of the usual label sets are resolved once, at start
//! ([`Metrics::new`]), so a verification hashes no label set and takes no
//! lock. Gauges that need the store (the webhook queue, the change feed's
//! head) are read when `/metrics` is scraped; none is written per request.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use latchkey_core::Principal;

use crate::state::AppState;

/// The path a verification came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Verify = 0,
    ForwardAuth = 1,
    Gateway = 2,
    Api = 3,
    Introspect = 4,
}

const WAYS: [Way; 5] = [
    Way::Verify,
    Way::ForwardAuth,
    Way::Gateway,
    Way::Api,
    Way::Introspect,
];

impl Way {
    pub const fn as_str(self) -> &'static str {
        match self {
            Way::Verify => "verify",
            Way::ForwardAuth => "forward_auth",
            Way::Gateway => "gateway",
            Way::Api => "api",
            Way::Introspect => "introspect",
        }
    }
}

/// The scope label of a credential that verified.
const SCOPES: [&str; 5] = ["app", "appUser", "account", "operator", "verifier"];

/// The scope label of a refused credential whose principal is not known.
pub const NO_SCOPE: &str = "none";

fn scope_index(p: &Principal) -> usize {
    match p {
        Principal::App { .. } => 0,
        Principal::AppUser { .. } => 1,
        Principal::UserAccount { .. }
        | Principal::Session { .. }
        | Principal::ServiceAccount { .. } => 2,
        Principal::Operator { .. } => 3,
        Principal::Verifier { .. } => 4,
    }
}

/// The scope label of a principal.
pub fn scope_label(p: &Principal) -> &'static str {
    SCOPES[scope_index(p)]
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerificationLabels {
    outcome: &'static str,
    scope: &'static str,
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: Cow<'static, str>,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: &'static str,
}

/// Upper bounds of the latency buckets, in seconds (10 µs to 1 s): a
/// verification from the index takes tens of microseconds, one that
/// leases from PostgreSQL milliseconds.
const LATENCY_BOUNDS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01, 0.05, 0.25,
    1.0,
];

/// The same bounds in nanoseconds, compared against on observation.
const LATENCY_BOUNDS_NS: [u64; 12] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
    50_000_000,
    250_000_000,
    1_000_000_000,
];

/// A histogram of durations kept in atomics (prometheus-client's own
/// takes a mutex per observation): one add on the bucket a value falls
/// in, one on the sum (nanoseconds) and one on the count.
#[derive(Debug, Default)]
pub struct Timings {
    /// Non-cumulative counts; the last is above every bound (`+Inf`).
    buckets: [AtomicU64; 13],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Timings {
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Timings {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timings {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        buckets.push((f64::INFINITY, self.buckets[12].load(Ordering::Relaxed)));
        // The count as the buckets add up, so that a scrape racing an
        // observation never shows a count below its `+Inf` bucket.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A [`Timings`] shared by the registry and the code that observes it.
#[derive(Debug, Clone, Default)]
pub struct SharedTimings(std::sync::Arc<Timings>);

impl std::ops::Deref for SharedTimings {
    type Target = Timings;

    fn deref(&self) -> &Timings {
        &self.0
    }
}

impl TypedMetric for SharedTimings {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SharedTimings {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The statuses whose counters are resolved at start for the routes
/// answered before the router (`/v1/verify`, `/v1/forward-auth`).
const HOT_STATUSES: [u16; 8] = [200, 400, 401, 403, 404, 413, 429, 503];

/// The routes answered before the router, by the connection's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotRoute {
    Verify = 0,
    ForwardAuth = 1,
}

/// Every series of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    verifications: Family<VerificationLabels, Counter>,
    /// `verifications` with outcome `valid`, by way and scope.
    valid: [[Counter; 5]; 5],
    /// Verification latency by way.
    latency: [SharedTimings; 5],
    http: Family<HttpLabels, Counter>,
    /// `http` for the hot routes and [`HOT_STATUSES`].
    http_hot: [[Counter; 8]; 2],
    webhook_deliveries: Family<OutcomeLabel, Counter>,
    last_used_flush: SharedTimings,
    index_keys: Gauge,
    index_bytes: Gauge,
    feed_lag: Gauge,
    sync_age: Gauge<f64, AtomicU64>,
    webhook_queue: Gauge,
    pool_connections: Family<PoolLabel, Gauge>,
    pool_idle: Family<PoolLabel, Gauge>,
    refusals_suppressed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("latchkey");
        let verifications = Family::<VerificationLabels, Counter>::default();
        registry.register(
            "verifications",
            "Credentials verified, by outcome (valid or the refusal code), scope and path",
            verifications.clone(),
        );
        let valid = WAYS.map(|way| {
            std::array::from_fn(|s| {
                verifications
                    .get_or_create(&VerificationLabels {
                        outcome: "valid",
                        scope: SCOPES[s],
                        path: way.as_str(),
                    })
                    .clone()
            })
        });
        let latency_family = Family::<PathLabel, SharedTimings>::default();
        let latency = WAYS.map(|way| {
            latency_family
                .get_or_create(&PathLabel { path: way.as_str() })
                .clone()
        });
        registry.register_with_unit(
            "verification_duration",
            "Time to verify a credential and answer, by path",
            Unit::Seconds,
            latency_family,
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template and status",
            http.clone(),
        );
        let http_hot = [crate::routes::VERIFY, crate::routes::FORWARD_AUTH].map(|route| {
            HOT_STATUSES.map(|status| {
                http.get_or_create(&HttpLabels {
                    route: Cow::Borrowed(route),
                    status,
                })
                .clone()
            })
        });
        let webhook_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, retry, failed)",
            webhook_deliveries.clone(),
        );
        let last_used_flush = SharedTimings::default();
        registry.register_with_unit(
            "last_used_flush_duration",
            "Time to write keys' lastUsedAt values to the store, per flush",
            Unit::Seconds,
            last_used_flush.clone(),
        );
        let index_keys = Gauge::default();
        registry.register(
            "index_keys",
            "Keys in the in-memory index",
            index_keys.clone(),
        );
        let index_bytes = Gauge::default();
        registry.register_with_unit(
            "index_key_table",
            "Approximate memory of the index's key table",
            Unit::Bytes,
            index_bytes.clone(),
        );
        let feed_lag = Gauge::default();
        registry.register(
            "change_feed_lag",
            "Changes in the store's change feed not yet applied to this node's index",
            feed_lag.clone(),
        );
        let sync_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "index_sync_age",
            "Time since this node's index was last confirmed current (0 on a node alone with its SQLite store)",
            Unit::Seconds,
            sync_age.clone(),
        );
        let webhook_queue = Gauge::default();
        registry.register(
            "webhook_queue_depth",
            "Webhook deliveries waiting to be sent (pending, including retries)",
            webhook_queue.clone(),
        );
        let pool_connections = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Open database connections, by pool (read, write)",
            pool_connections.clone(),
        );
        let pool_idle = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "db_pool_idle_connections",
            "Idle database connections, by pool (read, write)",
            pool_idle.clone(),
        );
        let refusals_suppressed = Counter::default();
        registry.register(
            "refusal_log_suppressed",
            "Refusal log lines not written because their key had one in the last 10 s",
            refusals_suppressed.clone(),
        );
        Self {
            registry,
            verifications,
            valid,
            latency,
            http,
            http_hot,
            webhook_deliveries,
            last_used_flush,
            index_keys,
            index_bytes,
            feed_lag,
            sync_age,
            webhook_queue,
            pool_connections,
            pool_idle,
            refusals_suppressed,
        }
    }

    /// A credential that verified (and was allowed) on `way`.
    #[inline]
    pub fn valid(&self, way: Way, principal: &Principal, started: Instant) {
        self.valid[way as usize][scope_index(principal)].inc();
        self.latency[way as usize].observe(started.elapsed());
    }

    /// A credential refused on `way` with `code`; `scope` is the
    /// principal's when it verified, else [`NO_SCOPE`].
    pub fn refused(&self, way: Way, scope: &'static str, code: &'static str, started: Instant) {
        self.verifications
            .get_or_create(&VerificationLabels {
                outcome: code,
                scope,
                path: way.as_str(),
            })
            .inc();
        self.latency[way as usize].observe(started.elapsed());
    }

    /// A request answered on a route answered before the router.
    #[inline]
    pub fn hot_request(&self, route: HotRoute, status: u16) {
        match HOT_STATUSES.iter().position(|&s| s == status) {
            Some(i) => {
                self.http_hot[route as usize][i].inc();
            }
            None => {
                let route = match route {
                    HotRoute::Verify => crate::routes::VERIFY,
                    HotRoute::ForwardAuth => crate::routes::FORWARD_AUTH,
                };
                self.request(Cow::Borrowed(route), status);
            }
        }
    }

    /// A request answered on `route` (its template, or `unmatched`).
    pub fn request(&self, route: Cow<'static, str>, status: u16) {
        self.http.get_or_create(&HttpLabels { route, status }).inc();
    }

    /// A webhook delivery attempt's outcome.
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// One `lastUsedAt` flush that wrote to the store.
    pub fn last_used_flushed(&self, took: Duration) {
        self.last_used_flush.observe(took);
    }

    /// A refusal log line left out by the rate limit.
    pub fn refusal_line_suppressed(&self) {
        self.refusals_suppressed.inc();
    }

    /// The registry in the Prometheus text format, the gauges set from
    /// `gauges` first.
    pub fn render(&self, gauges: &Gauges) -> Result<String, std::fmt::Error> {
        self.index_keys.set(clamp(gauges.index_keys));
        self.index_bytes.set(clamp(gauges.index_bytes));
        self.feed_lag.set(gauges.feed_lag.max(0));
        self.sync_age.set(gauges.sync_age.as_secs_f64());
        if let Some(depth) = gauges.webhook_queue {
            self.webhook_queue.set(depth);
        }
        for pool in &gauges.pools {
            let label = PoolLabel { pool: pool.name };
            self.pool_connections
                .get_or_create(&label)
                .set(i64::from(pool.size));
            self.pool_idle.get_or_create(&label).set(clamp(pool.idle));
        }
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What the gauges show, read at scrape time.
#[derive(Debug, Default)]
pub struct Gauges {
    pub index_keys: usize,
    pub index_bytes: usize,
    pub feed_lag: i64,
    pub sync_age: Duration,
    /// `None` when the store could not be read (the last value stays).
    pub webhook_queue: Option<i64>,
    pub pools: Vec<latchkey_store::PoolStats>,
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What the gauges show now: the index read in place, the store asked
/// two cheap questions (one count over an index, one `MAX`).
pub async fn gauges(state: &AppState) -> Gauges {
    let latest = state.store.latest_change_seq().await;
    let webhook_queue = state.store.webhook_queue_depth().await;
    if let Err(e) = latest.as_ref().and(webhook_queue.as_ref()) {
        tracing::debug!(error = %e, "metrics: could not read the store");
    }
    Gauges {
        index_keys: state.index.key_count(),
        index_bytes: state.index.key_table_bytes(),
        feed_lag: latest.map_or(0, |latest| latest - state.freshness.seq()),
        sync_age: state.freshness.age(),
        webhook_queue: webhook_queue.ok(),
        pools: state.store.pool_stats(),
    }
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>) -> Response {
    let gauges = gauges(&state).await;
    match state.metrics.render(&gauges) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => crate::error::ApiError::internal().into_response(),
    }
}

/// `GET /metrics`, as a router to merge into the main one.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(crate::routes::METRICS, axum::routing::get(serve))
}

/// The router of a separate metrics listener: `/metrics` only.
pub fn router(state: AppState) -> axum::Router {
    routes().fallback(crate::api::no_route).with_state(state)
}

/// A running metrics listener.
#[derive(Debug)]
pub struct MetricsListener {
    pub local_addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsListener {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the separate metrics listener on `addr`.
pub async fn start(
    state: AppState,
    addr: std::net::SocketAddr,
) -> std::io::Result<MetricsListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let app = router(state);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(MetricsListener {
        local_addr,
        stop,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_fall_in_their_buckets() {
        let t = Timings::default();
        t.observe(Duration::from_micros(5));
        t.observe(Duration::from_micros(10));
        t.observe(Duration::from_micros(11));
        t.observe(Duration::from_secs(2));
        let n = |i: usize| t.buckets[i].load(Ordering::Relaxed);
        assert_eq!((n(0), n(1), n(12)), (2, 1, 1));
        assert_eq!(t.count(), 4);
    }

    #[test]
    fn the_text_has_the_series() {
        let m = Metrics::new();
        let p = Principal::Operator {
            token_id: "tok_1".into(),
        };
        m.valid(Way::Verify, &p, Instant::now());
        m.refused(Way::Gateway, NO_SCOPE, "unauthorized", Instant::now());
        m.hot_request(HotRoute::Verify, 200);
        m.request(Cow::Borrowed("/v1/apps/{app_id}"), 404);
        let text = m.render(&Gauges::default()).expect("render");
        assert!(text.contains(
            r#"latchkey_verifications_total{outcome="valid",scope="operator",path="verify"} 1"#
        ));
        assert!(text.contains(
            r#"latchkey_verifications_total{outcome="unauthorized",scope="none",path="gateway"} 1"#
        ));
        assert!(
            text.contains(r#"latchkey_http_requests_total{route="/v1/verify",status="200"} 1"#)
        );
        assert!(text.contains("latchkey_verification_duration_seconds_bucket"));
        assert!(!text.contains("tok_1"));
    }
}
