//! Several `latchkey serve` processes over one PostgreSQL database:
//!
//! - a change made on one node (key deleted, app deleted, key rotated with
//!   no grace, verifier token deleted) is in effect on every other node within the revocation bound
//!   (1 s), by LISTEN/NOTIFY, also when several nodes write at once; a key
//!   can be made on one node for an app just created on another;
//! - a starting node's readiness does not flap;
//! - a node whose database connections are killed keeps answering,
//!   reconnects and catches up;
//! - a node cut off from the database (a TCP proxy in the test that closes
//!   its connections, or holds them open and forwards nothing) serves from
//!   its index for the staleness window (`degraded`), refuses management
//!   writes without writing anything, then fails closed (`index_stale`),
//!   and recovers when the database is back;
//! - over a slow link that loses packets (the proxy delays what it forwards;
//!   nftables drops packets on its port), revocation still arrives, and the
//!   staleness window is still honoured;
//! - a restarted node loses nothing, and `lastUsedAt` is flushed on
//!   shutdown without overwriting a newer value written by another node;
//! - webhook deliveries caused on several nodes arrive once each.
//!
//! Each test has its own PostgreSQL schema (`latchkey-testdb`) and its own
//! temporary directory. `init` runs once per test; every node then gets a
//! data directory of its own holding a copy of the `master.key` that init
//! wrote, as separate machines would. Each node's connections carry
//! `application_name=<schema>_<node>`, so a test can find (and kill) that
//! node's backends, and only those, in `pg_stat_activity`.
//!
//! `measure_revocation_latency` is ignored by default; run it with
//! `cargo nextest run -p latchkey --test cluster --run-ignored only --no-capture`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod support;
use latchkey_testkit::{Key, Reply, call, delete, field, get, post};
use support::{Init, Proc, init, serve_cmd};

/// How long a node gets to exit after SIGTERM (it may wait up to 10 s for
/// in-flight requests).
const SHUTDOWN: Duration = Duration::from_secs(20);
/// The revocation bound: a change made on one node is in effect on every
/// other node within this (the issue: 1 s at p99, aiming for 100 ms).
const BOUND: Duration = Duration::from_secs(1);
/// How long a new key may take to reach the other nodes. Not the bound
/// under test, but far below the resync interval of `NOTIFY_ONLY`, so a
/// change notification that got lost still fails.
const CREATE_BOUND: Duration = Duration::from_secs(5);
/// How long a test waits for what it does not time (readiness, deliveries).
const SETTLE: Duration = Duration::from_secs(30);
/// The pause between polls of something not timed tightly.
const PAUSE: Duration = Duration::from_millis(20);

/// Timing for the tests of change propagation: resyncs so rare that a
/// change reaching another node within `BOUND` came by LISTEN/NOTIFY, not by
/// the periodic resync (the safety net).
const NOTIFY_ONLY: [&str; 4] = [
    "--staleness-window-ms",
    "60000",
    "--resync-interval-ms",
    "20000",
];

// ---------------------------------------------------------------------------
// The cluster: one schema, one init, nodes started on demand
// ---------------------------------------------------------------------------

/// `url` with `application_name=<name>` added to its query.
fn with_application_name(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// Splits a `postgres://` URL into what comes before the host (scheme and
/// user), `host:port`, and the rest (database and query).
fn split_url(url: &str) -> (&str, &str, &str) {
    let scheme_end = url.find("://").expect("a postgres:// URL") + 3;
    let after = &url[scheme_end..];
    let authority_end = after.find(['/', '?']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    (
        &url[..scheme_end + host_start],
        &authority[host_start..],
        &after[authority_end..],
    )
}

/// The PostgreSQL server's `host:port` (for the proxy to forward to).
fn upstream_addr(url: &str) -> String {
    let (_, host_port, _) = split_url(url);
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    }
}

/// A `latchkey serve` process, up and listening.
struct Node {
    name: String,
    proc: Proc,
    base: String,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM; the exit status must come within `SHUTDOWN`.
    fn stop(&mut self) -> ExitStatus {
        self.proc.signal("-TERM");
        tokio::task::block_in_place(|| self.proc.wait_exit(SHUTDOWN))
    }

    fn logs(&self) -> String {
        format!(
            "node {} stdout:\n{}\nnode {} stderr:\n{}",
            self.name,
            self.proc.stdout_text(),
            self.name,
            self.proc.stderr_text()
        )
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    schema: latchkey_testdb::TestSchema,
    master_key: Vec<u8>,
    init: Init,
    http: reqwest::Client,
}

impl Cluster {
    /// A fresh schema, initialized once by `latchkey init --database-url`.
    async fn new() -> Self {
        let schema = latchkey_testdb::fresh_schema().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("init");
        let url = with_application_name(&schema.url, &format!("{}_init", schema.name));
        let init = tokio::task::block_in_place(|| init(&data, Some(&url)));
        let master_key = std::fs::read(data.join("master.key")).expect("init wrote master.key");
        let http = latchkey_testkit::client_builder()
            // Longer than any connection-acquire timeout a node may use
            // while its database is unreachable.
            .timeout(Duration::from_secs(90))
            .build()
            .expect("http client");
        Self {
            dir,
            schema,
            master_key,
            init,
            http,
        }
    }

    fn operator(&self) -> String {
        self.init.operator()
    }

    /// The owner's user-account key (Basic).
    fn owner(&self) -> String {
        self.init.owner()
    }

    /// The `application_name` of a node's database connections.
    fn application_name(&self, node: &str) -> String {
        format!("{}_{node}", self.schema.name)
    }

    /// The database URL of a node connecting directly.
    fn direct_url(&self, node: &str) -> String {
        with_application_name(&self.schema.url, &self.application_name(node))
    }

    /// The database URL of a node connecting through `proxy`.
    fn proxied_url(&self, node: &str, proxy: &PgProxy) -> String {
        let (before, _, rest) = split_url(&self.schema.url);
        let url = format!("{before}{}{rest}", proxy.addr);
        with_application_name(&url, &self.application_name(node))
    }

    /// A node's own data directory, holding a copy of the master key.
    fn data_dir(&self, node: &str) -> PathBuf {
        let data = self.dir.path().join(format!("node-{node}"));
        if !data.exists() {
            std::fs::create_dir(&data).expect("create a node's data dir");
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
                .expect("chmod data dir");
            let key = data.join("master.key");
            std::fs::write(&key, &self.master_key).expect("copy master.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod master.key");
        }
        data
    }

    /// Starts `latchkey serve` for `node` over `db_url` and waits until its
    /// `/readyz` says ready.
    async fn start(&self, node: &str, db_url: &str, flags: &[&str]) -> Node {
        let node = self.spawn(node, db_url, flags);
        let ready = wait_ready(&self.http, &node, SETTLE).await;
        assert_eq!(ready["backend"], "postgres", "{ready}");
        node
    }

    /// Starts `latchkey serve` for `node` over `db_url` and waits for its
    /// listening line only.
    fn spawn(&self, node: &str, db_url: &str, flags: &[&str]) -> Node {
        let data = self.data_dir(node);
        let mut cmd = serve_cmd(&data, &["--database-url", db_url]);
        cmd
            // The rounds check deleted credentials from 127.0.0.1 over and
            // over: the throttle on failed credentials stays out of the way.
            .args(["--auth-failures-per-address", "1000000"])
            .args(["--auth-failures-per-key", "1000000"])
            .args(flags);
        // Blocking waits run off the runtime's other workers, which keep
        // serving the test's proxy and webhook receiver.
        let (proc, base, before) = tokio::task::block_in_place(|| {
            let mut p = Proc::spawn(cmd);
            let (url, before) = p.wait_listening();
            (p, url, before)
        });
        let node = Node {
            name: node.to_string(),
            proc,
            base,
        };
        assert!(
            before.is_empty(),
            "node {} printed something before listening on an initialized database \
             (init output?): {before:?}",
            node.name
        );
        node
    }

    /// Starts `node` connecting directly to the database.
    async fn start_direct(&self, node: &str, flags: &[&str]) -> Node {
        let url = self.direct_url(node);
        self.start(node, &url, flags).await
    }
}

// ---------------------------------------------------------------------------
// HTTP, credentials and verification
// ---------------------------------------------------------------------------

/// How these tests present a key.
trait Creds {
    /// The key as Basic and as an app-scope JWT it signed.
    fn creds(&self) -> Vec<String>;
}

impl Creds for Key {
    fn creds(&self) -> Vec<String> {
        vec![self.basic(), self.jwt(json!({"scope": "app"}))]
    }
}

async fn readyz(http: &reqwest::Client, node: &Node) -> Reply {
    call(http, Method::GET, &node.url("/readyz"), None, None).await
}

/// What a node said at one moment: its readyz (status code and `status`)
/// and `/v1/verify` of one credential.
#[derive(Debug, Clone, PartialEq)]
struct Observation {
    readyz: (StatusCode, String),
    verdict: Verdict,
}

/// Watches a node from a task of its own, every few milliseconds, and
/// records every change of what it says with the time since `since`; so
/// the timeline is known however long the test's own requests take.
struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Watched>,
}

/// What a `Watcher` saw: each change with its time, and the longest that
/// one round of its two requests took.
#[derive(Debug)]
struct Watched {
    timeline: Vec<(Duration, Observation)>,
    slowest: Duration,
}

impl Watcher {
    fn start(
        http: &reqwest::Client,
        node: &Node,
        operator: &str,
        cred: &str,
        app: &str,
        since: Instant,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (http, base, operator, cred, app) = (
            http.clone(),
            node.base.clone(),
            operator.to_string(),
            cred.to_string(),
            app.to_string(),
        );
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut timeline: Vec<(Duration, Observation)> = Vec::new();
            let mut slowest = Duration::ZERO;
            while !stopped.load(Ordering::SeqCst) {
                let polled = Instant::now();
                let r = call(&http, Method::GET, &format!("{base}/readyz"), None, None).await;
                let seen = Observation {
                    readyz: (
                        r.status,
                        r.body["status"].as_str().unwrap_or("").to_string(),
                    ),
                    verdict: verify_at(&http, &base, &operator, &cred, &app).await,
                };
                slowest = slowest.max(polled.elapsed());
                if timeline.last().is_none_or(|(_, last)| *last != seen) {
                    timeline.push((since.elapsed(), seen));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Watched { timeline, slowest }
        });
        Watcher { stop, task }
    }

    async fn finish(self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("watcher")
    }
}

async fn create_app(http: &reqwest::Client, node: &Node, owner: &str, name: &str) -> String {
    let r = post(
        http,
        &node.url("/v1/apps"),
        owner,
        json!({"displayName": name}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "node {}: {}",
        node.name,
        r.body
    );
    field(&r.body, "/app/id")
}

async fn create_key(http: &reqwest::Client, node: &Node, owner: &str, app: &str) -> Key {
    let r = post(
        http,
        &node.url(&format!("/v1/apps/{app}/keys")),
        owner,
        json!({"displayName": format!("made on {}", node.name)}),
    )
    .await;
    if r.status != StatusCode::CREATED {
        let ready = readyz(http, node).await;
        let stored = get(http, &node.url(&format!("/v1/apps/{app}/keys")), owner).await;
        panic!(
            "creating a key of app {app} on node {}: {} {}
             its readyz now: {}
the app's keys in the database now: {}
{}",
            node.name,
            r.status,
            r.body,
            ready.body,
            stored.body,
            node.logs()
        );
    }
    let key = Key::from_body(&r.body);
    assert!(key.id.starts_with("app_"), "{}", r.body);
    key
}

/// Deletes an app key; answers when the deleting node has answered 204.
async fn delete_key(http: &reqwest::Client, node: &Node, owner: &str, app: &str, key: &str) {
    let r = delete(
        http,
        &node.url(&format!("/v1/apps/{app}/keys/{key}")),
        owner,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "node {}: {}",
        node.name,
        r.body
    );
}

/// The key's JSON as `node` shows it.
async fn key_json(http: &reqwest::Client, node: &Node, owner: &str, app: &str, key: &str) -> Value {
    let r = get(
        http,
        &node.url(&format!("/v1/apps/{app}/keys/{key}")),
        owner,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "node {}: {}", node.name, r.body);
    r.body["key"].clone()
}

/// What `POST /v1/verify` on a node says about a credential.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Valid,
    /// 200 with `valid: false` and this code.
    Refused(String),
    /// 503 with this error code.
    Unavailable(String),
    Other(StatusCode, Value),
}

async fn verify(
    http: &reqwest::Client,
    node: &Node,
    operator: &str,
    cred: &str,
    app: &str,
) -> Verdict {
    verify_at(http, &node.base, operator, cred, app).await
}

/// `verify` on the node at `base`.
async fn verify_at(
    http: &reqwest::Client,
    base: &str,
    operator: &str,
    cred: &str,
    app: &str,
) -> Verdict {
    let r = post(
        http,
        &format!("{base}/v1/verify"),
        operator,
        json!({"authorization": cred, "appId": app}),
    )
    .await;
    match (r.status, r.body["valid"].as_bool()) {
        (StatusCode::OK, Some(true)) => Verdict::Valid,
        (StatusCode::OK, Some(false)) => {
            Verdict::Refused(r.body["code"].as_str().unwrap_or("").to_string())
        }
        (StatusCode::SERVICE_UNAVAILABLE, _) => Verdict::Unavailable(r.code().to_string()),
        _ => Verdict::Other(r.status, r.body),
    }
}

/// Polls `probe` until it answers `Ok`; returns the value and the time it
/// took. Panics with the last `Err` after `limit`.
async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return (v, started.elapsed()),
            Err(last) => {
                assert!(
                    started.elapsed() < limit,
                    "{what}: not within {limit:?}; last: {last}"
                );
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

/// Waits until the node's `/readyz` answers 200 `ready`; returns its body.
async fn wait_ready(http: &reqwest::Client, node: &Node, limit: Duration) -> Value {
    let what = format!("node {} ready", node.name);
    eventually(&what, limit, async || {
        let r = readyz(http, node).await;
        if r.status == StatusCode::OK && r.body["status"] == "ready" {
            Ok(r.body)
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    })
    .await
    .0
}

/// Polls `node` with no pause until it accepts every credential; returns
/// the time since `since`, or why it gave up after `limit`.
async fn time_to_acceptance(
    http: &reqwest::Client,
    node: &Node,
    operator: &str,
    creds: &[String],
    app: &str,
    since: Instant,
    limit: Duration,
) -> Result<Duration, String> {
    let mut pending: Vec<&String> = creds.iter().collect();
    loop {
        let mut still = Vec::new();
        let mut last = None;
        for cred in pending {
            match verify(http, node, operator, cred, app).await {
                Verdict::Valid => {}
                Verdict::Refused(code) => {
                    still.push(cred);
                    last = Some(code);
                }
                other => {
                    return Err(format!(
                        "node {}: unexpected answer while waiting for acceptance: {other:?}",
                        node.name
                    ));
                }
            }
        }
        if still.is_empty() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            return Err(format!(
                "node {} still refuses {} credential(s) after {:?} ({last:?})",
                node.name,
                still.len(),
                since.elapsed()
            ));
        }
        pending = still;
    }
}

/// Polls `node` with no pause until it refuses every credential; returns
/// the time since `since`, or why it gave up after `limit`. Any answer but
/// valid or refused (a 503, say) ends the wait as a failure.
async fn time_to_refusal(
    http: &reqwest::Client,
    node: &Node,
    operator: &str,
    creds: &[String],
    app: &str,
    since: Instant,
    limit: Duration,
) -> Result<Duration, String> {
    let mut pending: Vec<&String> = creds.iter().collect();
    loop {
        let mut still = Vec::new();
        for cred in pending {
            match verify(http, node, operator, cred, app).await {
                Verdict::Refused(_) => {}
                Verdict::Valid => still.push(cred),
                other => {
                    return Err(format!(
                        "node {}: unexpected answer while waiting for a refusal: {other:?}",
                        node.name
                    ));
                }
            }
        }
        if still.is_empty() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            return Err(format!(
                "node {} still accepts {} credential(s) {:?} after the change",
                node.name,
                still.len(),
                since.elapsed()
            ));
        }
        pending = still;
    }
}

/// Waits (tightly) until every node in `nodes` accepts every credential, and
/// checks that it took at most `limit`.
async fn accepted_on(
    http: &reqwest::Client,
    nodes: &[&Node],
    operator: &str,
    creds: &[String],
    app: &str,
    limit: Duration,
    what: &str,
) -> Vec<Duration> {
    let since = Instant::now();
    let mut tasks = Vec::new();
    for node in nodes {
        tasks.push(time_to_acceptance(
            http, node, operator, creds, app, since, limit,
        ));
    }
    let results = join_all(tasks).await;
    let mut times = Vec::new();
    for (node, result) in nodes.iter().zip(results) {
        match result {
            Ok(t) => times.push(t),
            Err(e) => panic!("{what}: {e}\n{}", node.logs()),
        }
    }
    times
}

/// Waits (tightly, on all nodes at once) until every node in `nodes`
/// refuses every credential, and checks that each did within `BOUND` of
/// `since`. Then checks the refusal directly: `GET /v1/apps/{app}` with
/// each credential answers 401 `unauthorized`.
async fn refused_within_bound(
    http: &reqwest::Client,
    nodes: &[&Node],
    operator: &str,
    creds: &[String],
    app: &str,
    what: &str,
) -> Vec<Duration> {
    let since = Instant::now();
    let mut tasks = Vec::new();
    for node in nodes {
        tasks.push(time_to_refusal(
            http,
            node,
            operator,
            creds,
            app,
            since,
            BOUND * 10,
        ));
    }
    let results = join_all(tasks).await;
    let mut times = Vec::new();
    let mut late = Vec::new();
    for (node, result) in nodes.iter().zip(results) {
        match result {
            Ok(t) => {
                if t > BOUND {
                    late.push(format!("node {} refused after {t:?}", node.name));
                }
                times.push(t);
            }
            Err(e) => late.push(e),
        }
    }
    assert!(
        late.is_empty(),
        "{what}: not refused everywhere within {BOUND:?}: {late:?}"
    );
    eprintln!("{what}: refused after {times:?}");
    for node in nodes {
        for cred in creds {
            let r = get(http, &node.url(&format!("/v1/apps/{app}")), cred).await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
                "{what}: node {}: {}",
                node.name,
                r.body
            );
        }
    }
    times
}

/// Waits until every node knows a new app (created on `nodes[0]`), so that
/// keys can be made for it on any node: a key of it made on the first node
/// is accepted everywhere (and then deleted). See
/// `a_key_made_on_another_node_right_after_its_app_works` for why.
async fn app_known_everywhere(
    http: &reqwest::Client,
    nodes: &[&Node],
    operator: &str,
    owner: &str,
    app: &str,
) {
    let probe = create_key(http, nodes[0], owner, app).await;
    accepted_on(
        http,
        nodes,
        operator,
        &probe.creds(),
        app,
        CREATE_BOUND,
        "a key of a new app",
    )
    .await;
    delete_key(http, nodes[0], owner, app, &probe.id).await;
}

/// Awaits all futures concurrently (on this task), in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

// ---------------------------------------------------------------------------
// PostgreSQL: the nodes' backends, and a proxy that can cut one node off
// ---------------------------------------------------------------------------

async fn admin_connection() -> PgConnection {
    let url = latchkey_testdb::server_url();
    PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// How many backends a node has open.
async fn backends(application_name: &str) -> i64 {
    let mut conn = admin_connection().await;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(application_name)
            .fetch_one(&mut conn)
            .await
            .expect("count backends");
    let _ = conn.close().await;
    n
}

/// Terminates every backend of a node; returns how many were terminated.
async fn terminate_backends(application_name: &str) -> usize {
    let mut conn = admin_connection().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(application_name)
    .fetch_all(&mut conn)
    .await
    .expect("terminate backends");
    let _ = conn.close().await;
    killed.into_iter().filter(|k| *k).count()
}

/// A TCP proxy to PostgreSQL on 127.0.0.1 that can cut its clients off:
/// `cut` closes every open connection and closes new ones as soon as they
/// are accepted, until `restore`; `freeze` keeps every connection open (and
/// accepts new ones) but forwards nothing, as a database that has stopped
/// answering, until `thaw`; `slow_down` delays every chunk it forwards,
/// each way.
struct PgProxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    latency_ms: Arc<AtomicU64>,
    generation: watch::Sender<u64>,
    frozen: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

/// Copies `from` to `to`, holding each chunk while the proxy is frozen and
/// delaying each by the proxy's latency (read anew for every chunk).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    latency_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = latency_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let thawed = frozen.wait_for(|f| !*f).await.is_ok();
        if !thawed || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl PgProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let open = Arc::new(AtomicBool::new(true));
        let (generation, watch_gen) = watch::channel(0u64);
        let (frozen, watch_frozen) = watch::channel(false);
        let latency_ms = Arc::new(AtomicU64::new(0));
        let accept = {
            let open = Arc::clone(&open);
            let latency_ms = Arc::clone(&latency_ms);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    // The generation is read before the switch: `cut` turns
                    // the switch off before it bumps the generation, so a
                    // connection let through here is closed by that bump.
                    let born = *watch_gen.borrow();
                    if !open.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut cut = watch_gen.clone();
                    let frozen = watch_frozen.clone();
                    let upstream = upstream.clone();
                    let latency_ms = Arc::clone(&latency_ms);
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::select! {
                            _ = pump(client_read, server_write, frozen.clone(), Arc::clone(&latency_ms)) => {}
                            _ = pump(server_read, client_write, frozen, latency_ms) => {}
                            _ = cut.wait_for(|g| *g != born) => {}
                        }
                    });
                }
            })
        };
        PgProxy {
            addr,
            open,
            latency_ms,
            generation,
            frozen,
            accept,
        }
    }

    /// Closes every connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Lets new connections through again.
    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding, leaving every connection open.
    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again.
    fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Holds every chunk for `latency` before forwarding it, each way.
    fn slow_down(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).expect("a latency in range");
        self.latency_ms.store(ms, Ordering::SeqCst);
    }
}

/// Packets to and from one loopback port dropped at random by the kernel
/// (an nftables table of our own, removed on drop), so TCP between a node
/// and the proxy loses segments and retransmits them as over a bad link.
/// This kernel has no netem qdisc; nftables' `numgen random` drops real
/// packets all the same. Needs root and `nft` (Debian's nftables, which
/// .ci/run installs).
struct PacketLoss {
    table: String,
}

impl PacketLoss {
    /// Drops `per_mille`/1000 of the packets whose source or destination
    /// port is `port`.
    fn on_port(port: u16, per_mille: u32) -> Self {
        let table = format!("latchkey_loss_{}_{port}", std::process::id());
        let rules = format!(
            "table inet {table} {{
chain out {{
type filter hook output priority 0; policy accept;
tcp dport {port} numgen random mod 1000 < {per_mille} counter drop
tcp sport {port} numgen random mod 1000 < {per_mille} counter drop
}}
}}
"
        );
        let out = nft(&["-f", "-"], Some(&rules));
        assert!(
            out.status.success(),
            "nft refused the packet-loss table ({}); these tests need root and nftables: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        PacketLoss { table }
    }

    /// How many packets the kernel has dropped so far (the rules'
    /// counters), so a test knows its link did lose packets.
    fn dropped(&self) -> u64 {
        let out = nft(&["list", "table", "inet", &self.table], None);
        assert!(out.status.success(), "nft list: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "packets")
            .map(|w| w[1].parse::<u64>().expect("a packet count"))
            .sum()
    }
}

impl Drop for PacketLoss {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table], None);
    }
}

/// Runs `nft` with `args`, feeding it `stdin`.
fn nft(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run nft ({e}): the packet-loss tests need nftables \
                 (apt-get install nftables) and root"
            )
        });
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("nft's stdin")
            .write_all(text.as_bytes())
            .expect("write nft's rules");
    }
    child.wait_with_output().expect("nft's exit")
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.frozen.send_replace(false);
        self.generation.send_modify(|g| *g += 1);
    }
}

// ---------------------------------------------------------------------------
// A webhook receiver that records every delivery and answers 200
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    event: String,
    signature: String,
    body: String,
}

struct WebhookReceiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn record(
    axum::extract::State(got): axum::extract::State<Arc<Mutex<Vec<Received>>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    got.lock().expect("lock").push(Received {
        delivery: header("latchkey-delivery"),
        event: header("latchkey-event"),
        signature: header("latchkey-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::OK
}

impl WebhookReceiver {
    async fn start() -> Self {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .fallback(record)
            .with_state(Arc::clone(&got));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("receiver");
        });
        WebhookReceiver { addr, got, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks `Latchkey-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.
fn signature_ok(r: &Received, secret: &str) -> bool {
    latchkey_testkit::webhook_signature_ok(&r.signature, &r.body, secret)
}

/// Checks what a node said (a `Watcher`'s record, times since the outage
/// began) from the start of a database outage until the database came
/// back (`restored`): ready or degraded, verifying from its index, until
/// its staleness `window` had passed (give or take a `resync` interval and
/// `slack`: the index may have last been confirmed fresh that long before
/// the outage began); from then on stale, refusing every check with
/// index_stale. Failing closed early is allowed that much; late, never
/// more than 2 s.
fn check_outage(
    outage: &str,
    watched: &Watched,
    restored: Duration,
    window: Duration,
    resync: Duration,
    slack: Duration,
) {
    let timeline = &watched.timeline;
    eprintln!(
        "the node from {outage} on (time since, readyz, verify of a live key; \
         slowest poll {:?}):",
        watched.slowest
    );
    for (t, seen) in timeline {
        eprintln!("  {t:?}: {:?} {:?}", seen.readyz, seen.verdict);
    }
    // A node that cannot reach its database answers at once all the same.
    assert!(
        watched.slowest < Duration::from_secs(2),
        "readyz and verify took up to {:?} during {outage}",
        watched.slowest
    );
    let stale = Verdict::Unavailable("index_stale".into());
    let first = |what: &str, pred: &dyn Fn(&Observation) -> bool| -> Duration {
        timeline
            .iter()
            .find(|(_, seen)| pred(seen))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("the node never {what} during {outage}: {timeline:?}"))
    };
    let verify_stale_at = first("refused to verify (index_stale)", &|seen| {
        seen.verdict == stale
    });
    let readyz_stale_at = first("said stale", &|seen| {
        seen.readyz == (StatusCode::SERVICE_UNAVAILABLE, "stale".to_string())
    });
    let degraded_at = first("said anything but ready", &|seen| seen.readyz.1 != "ready");
    let earliest = window.saturating_sub(resync + slack);
    let latest = window + Duration::from_secs(2);
    for (what, at) in [
        ("verify answered 503 index_stale", verify_stale_at),
        ("readyz answered 503 stale", readyz_stale_at),
    ] {
        assert!(
            at >= earliest && at <= latest,
            "{what} {at:?} after {outage}; the window is {window:?} (resync every \
             {resync:?}): expected between {earliest:?} and {latest:?}"
        );
    }
    for (t, seen) in timeline.iter().filter(|(t, _)| *t < restored) {
        // Degraded, not stale, first; then stale until the database is back.
        if *t >= degraded_at && *t < readyz_stale_at {
            assert_eq!(
                seen.readyz,
                (StatusCode::OK, "degraded".to_string()),
                "readyz {t:?} after {outage}"
            );
        }
        if *t >= readyz_stale_at {
            assert_eq!(
                seen.readyz,
                (StatusCode::SERVICE_UNAVAILABLE, "stale".to_string()),
                "readyz {t:?} after {outage}, once stale"
            );
        }
        // The live key verifies until the node fails closed, then every
        // check is refused with index_stale.
        if *t < verify_stale_at {
            assert_eq!(seen.verdict, Verdict::Valid, "verify {t:?} after {outage}");
        } else {
            assert_eq!(
                seen.verdict, stale,
                "verify {t:?} after {outage}, once stale"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// The `q` quantile (nearest rank) of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    assert!(!sorted.is_empty());
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    format!(
        "n={} p50={} p90={} p99={} max={}",
        sorted.len(),
        ms(quantile(&sorted, 0.50)),
        ms(quantile(&sorted, 0.90)),
        ms(quantile(&sorted, 0.99)),
        ms(*sorted.last().expect("samples"))
    )
}

fn parse_time(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

fn last_used(key: &Value) -> Option<time::OffsetDateTime> {
    key["lastUsedAt"].as_str().map(parse_time)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Create on one node, use on the others; delete, delete the app, rotate
/// with no grace: refused on the other nodes within the bound, by Basic and
/// by JWT, through `/v1/verify` and directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_on_one_node_reach_the_others_within_the_bound() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b = cluster.start_direct("b", &NOTIFY_ONLY).await;
    let c = cluster.start_direct("c", &NOTIFY_ONLY).await;

    for node in [&a, &b, &c] {
        // (Whether readiness holds steady from the start is
        // `readiness_does_not_flap_at_startup`'s business.)
        let ready = wait_ready(http, node, SETTLE).await;
        assert_eq!(ready["backend"], "postgres", "{ready}");
        assert!(ready["changeSeq"].is_number(), "{ready}");
        assert!(ready["syncAgeMs"].is_number(), "{ready}");
        // Every node serves the same account.
        let r = get(http, &node.url("/v1/account"), &owner).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["accountId"], cluster.init.account_id.as_str());
    }

    // Created on A, used on B and C (Basic and a JWT it signed).
    let app = create_app(http, &a, &owner, "Shared").await;
    let k1 = create_key(http, &a, &owner, &app).await;
    let times = accepted_on(
        http,
        &[&b, &c],
        &operator,
        &k1.creds(),
        &app,
        CREATE_BOUND,
        "a key created on A",
    )
    .await;
    eprintln!("created on A, accepted on B and C after {times:?}");
    for node in [&a, &b, &c] {
        for cred in k1.creds() {
            let r = get(http, &node.url(&format!("/v1/apps/{app}")), &cred).await;
            assert_eq!(r.status, StatusCode::OK, "node {}: {}", node.name, r.body);
        }
    }
    // And the other way: created on B, used on A and C.
    let k2 = create_key(http, &b, &owner, &app).await;
    accepted_on(
        http,
        &[&a, &c],
        &operator,
        &k2.creds(),
        &app,
        CREATE_BOUND,
        "a key created on B",
    )
    .await;

    // Deleted on A: refused on B and C within the bound.
    delete_key(http, &a, &owner, &app, &k1.id).await;
    refused_within_bound(
        http,
        &[&b, &c],
        &operator,
        &k1.creds(),
        &app,
        "a key deleted on A",
    )
    .await;
    // At once on A itself; the other key is untouched everywhere.
    for node in [&a, &b, &c] {
        for cred in k1.creds() {
            assert_eq!(
                verify(http, node, &operator, &cred, &app).await,
                Verdict::Refused("unauthorized".into()),
                "node {}",
                node.name
            );
        }
        for cred in k2.creds() {
            assert_eq!(
                verify(http, node, &operator, &cred, &app).await,
                Verdict::Valid,
                "node {}",
                node.name
            );
        }
    }

    // Deleted on C: refused on A and B.
    delete_key(http, &c, &owner, &app, &k2.id).await;
    refused_within_bound(
        http,
        &[&a, &b],
        &operator,
        &k2.creds(),
        &app,
        "a key deleted on C",
    )
    .await;

    // An app deleted on A: its key is refused on B and C.
    let doomed = create_app(http, &a, &owner, "Doomed").await;
    let k3 = create_key(http, &a, &owner, &doomed).await;
    accepted_on(
        http,
        &[&b, &c],
        &operator,
        &k3.creds(),
        &doomed,
        CREATE_BOUND,
        "a key of the app to delete",
    )
    .await;
    let r = delete(http, &a.url(&format!("/v1/apps/{doomed}")), &owner).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    refused_within_bound(
        http,
        &[&b, &c],
        &operator,
        &k3.creds(),
        &doomed,
        "the key of an app deleted on A",
    )
    .await;
    for node in [&b, &c] {
        let r = get(http, &node.url(&format!("/v1/apps/{doomed}")), &owner).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "node {}: {}",
            node.name,
            r.body
        );
    }

    // A key rotated on A with no grace: the old one is refused on B and C,
    // the new one accepted there.
    let old = create_key(http, &a, &owner, &app).await;
    accepted_on(
        http,
        &[&b, &c],
        &operator,
        &old.creds(),
        &app,
        CREATE_BOUND,
        "the key to rotate",
    )
    .await;
    let r = post(
        http,
        &a.url(&format!("/v1/apps/{app}/keys/{}/rotate", old.id)),
        &owner,
        json!({"graceSeconds": 0}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let new = Key::from_body(&r.body);
    assert_eq!(r.body["previousKey"]["id"], old.id.as_str(), "{}", r.body);
    refused_within_bound(
        http,
        &[&b, &c],
        &operator,
        &old.creds(),
        &app,
        "a key rotated on A with no grace",
    )
    .await;
    accepted_on(
        http,
        &[&b, &c],
        &operator,
        &new.creds(),
        &app,
        CREATE_BOUND,
        "the rotated key's successor",
    )
    .await;
}

/// From its listening line on, a node's `/readyz` goes to `ready` and
/// stays there while the database is fine: it does not say ready and then,
/// once its change notifications are set up, degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_does_not_flap_at_startup() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    for name in ["a", "b", "c", "d"] {
        let node = cluster.spawn(name, &cluster.direct_url(name), &NOTIFY_ONLY);
        let started = Instant::now();
        let mut timeline: Vec<(Duration, StatusCode, String)> = Vec::new();
        while started.elapsed() < Duration::from_millis(1500) {
            let r = readyz(http, &node).await;
            let status = r.body["status"].as_str().unwrap_or("").to_string();
            if timeline
                .last()
                .is_none_or(|(_, code, last)| (*code, last) != (r.status, &status))
            {
                timeline.push((started.elapsed(), r.status, status));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let first_ready = timeline
            .iter()
            .position(|(_, code, status)| *code == StatusCode::OK && status == "ready")
            .unwrap_or_else(|| panic!("node {name} never ready: {timeline:?}"));
        assert_eq!(
            timeline.len(),
            first_ready + 1,
            "node {name}'s readiness after its listening line changed after it said ready \
             (time, code, status): {timeline:?}"
        );
        drop(node);
    }
}

/// Keys deleted at the same moment on all three nodes (so that the
/// database's change sequence numbers may commit out of order): every node
/// refuses every one of them within the bound; keys created at the same
/// moment on all three nodes reach every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_on_every_node_reach_every_node() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b = cluster.start_direct("b", &NOTIFY_ONLY).await;
    let c = cluster.start_direct("c", &NOTIFY_ONLY).await;
    let nodes = [&a, &b, &c];
    let app = create_app(http, &a, &owner, "Busy").await;
    app_known_everywhere(http, &nodes, &operator, &owner, &app).await;

    for round in 0..8 {
        // Two keys created on each node at once.
        let mut creating = Vec::new();
        for node in nodes {
            for _ in 0..2 {
                creating.push(create_key(http, node, &owner, &app));
            }
        }
        let keys = join_all(creating).await;
        let creds: Vec<String> = keys.iter().flat_map(Key::creds).collect();
        accepted_on(
            http,
            &nodes,
            &operator,
            &creds,
            &app,
            CREATE_BOUND,
            &format!("round {round}: keys created at once on A, B and C"),
        )
        .await;

        // Each key deleted on another node than the one that made it, all
        // at once.
        let mut deleting = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let node = nodes[(i / 2 + 1) % 3];
            deleting.push(delete_key(http, node, &owner, &app, &key.id));
        }
        join_all(deleting).await;
        refused_within_bound(
            http,
            &nodes,
            &operator,
            &creds,
            &app,
            &format!("round {round}: keys deleted at once on A, B and C"),
        )
        .await;
    }
}

/// An app created on A, and at once a key for it created on B (a client
/// behind a load balancer): B answers 201 and the key works everywhere; a
/// refusal would have to leave nothing behind (no key in the database that
/// nobody has the secret of).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_made_on_another_node_right_after_its_app_works() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b = cluster.start_direct("b", &NOTIFY_ONLY).await;
    let c = cluster.start_direct("c", &NOTIFY_ONLY).await;

    for round in 0..50 {
        let app = create_app(http, &a, &owner, &format!("Fresh {round}")).await;
        let r = post(
            http,
            &b.url(&format!("/v1/apps/{app}/keys")),
            &owner,
            json!({"displayName": "right after the app"}),
        )
        .await;
        let stored = get(http, &a.url(&format!("/v1/apps/{app}/keys")), &owner).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "round {round}: a key for an app just created on A, made on B: {}
             the app's keys as A sees them: {}",
            r.body,
            stored.body
        );
        let key = Key::from_body(&r.body);
        for cred in key.creds() {
            assert_eq!(
                verify(http, &b, &operator, &cred, &app).await,
                Verdict::Valid,
                "round {round}: the new key on the node that made it"
            );
        }
        accepted_on(
            http,
            &[&a, &c],
            &operator,
            &key.creds(),
            &app,
            CREATE_BOUND,
            &format!("round {round}: a key made on B"),
        )
        .await;
    }
}

/// How `node` answers `POST /v1/verify` of the owner's key when the
/// caller is `caller` (a verifier token or the operator token).
async fn verify_as(http: &reqwest::Client, node: &Node, caller: &str, owner: &str) -> Reply {
    post(
        http,
        &node.url("/v1/verify"),
        caller,
        json!({"authorization": owner}),
    )
    .await
}

/// Polls `node` with no pause until it refuses the verifier token `caller`
/// (401 `unauthorized`); returns the time since `since`, or why it gave up
/// after `limit`.
async fn time_to_caller_refusal(
    http: &reqwest::Client,
    node: &Node,
    caller: &str,
    owner: &str,
    since: Instant,
    limit: Duration,
) -> Result<Duration, String> {
    loop {
        let r = verify_as(http, node, caller, owner).await;
        match (r.status, r.body["valid"].as_bool()) {
            (StatusCode::UNAUTHORIZED, _) if r.code() == "unauthorized" => {
                return Ok(since.elapsed());
            }
            (StatusCode::OK, Some(true)) => {}
            _ => {
                return Err(format!(
                    "node {}: unexpected answer while waiting for a refusal: {} {}",
                    node.name, r.status, r.body
                ));
            }
        }
        if since.elapsed() > limit {
            return Err(format!(
                "node {} still accepts the verifier token {:?} after its deletion",
                node.name,
                since.elapsed()
            ));
        }
    }
}

/// A verifier token created on one node works on the others once they
/// have the change; deleted on A, it is refused on B and C within the
/// revocation bound (by LISTEN/NOTIFY: resyncs are rarer than that), for
/// `/v1/verify` and `/v1/introspect`, while the operator token and another
/// verifier token keep working everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verifier_token_deleted_on_one_node_is_refused_on_the_others_within_the_bound() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b = cluster.start_direct("b", &NOTIFY_ONLY).await;
    let c = cluster.start_direct("c", &NOTIFY_ONLY).await;
    for node in [&a, &b, &c] {
        wait_ready(http, node, SETTLE).await;
    }

    let mut tokens = Vec::new();
    for (node, name) in [(&a, "doomed"), (&c, "kept")] {
        let r = post(
            http,
            &node.url("/v1/verifierTokens"),
            &operator,
            json!({"displayName": name}),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "node {}: {}",
            node.name,
            r.body
        );
        tokens.push((
            field(&r.body, "/verifierToken/id"),
            format!("Bearer {}", field(&r.body, "/verifierToken/token")),
        ));
    }
    let (doomed_id, doomed) = &tokens[0];
    let (_, kept) = &tokens[1];
    for node in [&a, &b, &c] {
        for token in [doomed, kept] {
            let what = format!("node {}: a new verifier token", node.name);
            eventually(&what, CREATE_BOUND, async || {
                let r = verify_as(http, node, token, &owner).await;
                if r.status == StatusCode::OK && r.body["valid"] == true {
                    Ok(())
                } else {
                    Err(format!("{} {}", r.status, r.body))
                }
            })
            .await;
        }
    }

    let r = delete(
        http,
        &a.url(&format!("/v1/verifierTokens/{doomed_id}")),
        &operator,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let since = Instant::now();
    // At once on A.
    assert_eq!(
        verify_as(http, &a, doomed, &owner).await.status,
        StatusCode::UNAUTHORIZED
    );
    let results = join_all(
        [&b, &c]
            .iter()
            .map(|node| time_to_caller_refusal(http, node, doomed, &owner, since, BOUND * 10))
            .collect(),
    )
    .await;
    let mut late = Vec::new();
    for result in &results {
        match result {
            Ok(t) if *t <= BOUND => {}
            Ok(t) => late.push(format!("refused after {t:?}")),
            Err(e) => late.push(e.clone()),
        }
    }
    assert!(
        late.is_empty(),
        "a verifier token deleted on A: not refused everywhere within {BOUND:?}: {late:?}\n{}\n{}",
        b.logs(),
        c.logs()
    );
    eprintln!("a verifier token deleted on A: refused on B and C after {results:?}");
    for node in [&a, &b, &c] {
        let r = call(
            http,
            Method::POST,
            &node.url("/v1/introspect"),
            Some(doomed),
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "node {}: introspection: {}",
            node.name,
            r.body
        );
        for caller in [kept, &operator] {
            let r = verify_as(http, node, caller, &owner).await;
            assert_eq!(r.status, StatusCode::OK, "node {}: {}", node.name, r.body);
            assert_eq!(r.body["valid"], true, "node {}: {}", node.name, r.body);
        }
    }
}

/// A key's policy changed on A reaches B and C within the bound (a
/// permission taken away is refused there), and a credit balance set on A
/// is not overwritten by what B and C had spent and write back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_policy_changed_on_one_node_reaches_the_others() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b = cluster.start_direct("b", &NOTIFY_ONLY).await;
    let c = cluster.start_direct("c", &NOTIFY_ONLY).await;
    for node in [&a, &b, &c] {
        wait_ready(http, node, SETTLE).await;
    }
    let app = create_app(http, &a, &owner, "policies").await;
    let r = post(
        http,
        &a.url(&format!("/v1/apps/{app}/keys")),
        &owner,
        json!({"displayName": "k", "permissions": ["messages:read", "messages:write"],
               "credits": {"remaining": 1000}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let key = Key::from_body(&r.body);
    let asks = |node: &Node| {
        let base = node.base.clone();
        let operator = operator.clone();
        let cred = key.basic();
        async move {
            let r = post(
                http,
                &format!("{base}/v1/verify"),
                &operator,
                json!({"authorization": cred, "permissions": "messages:write"}),
            )
            .await;
            (
                r.body["valid"].clone(),
                r.body["code"].clone(),
                r.body["credits"]["remaining"].clone(),
            )
        }
    };
    for node in [&b, &c] {
        eventually(
            &format!("node {}: the new key", node.name),
            CREATE_BOUND,
            async || match asks(node).await {
                (v, _, _) if v == true => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
    // B and C spend; A takes messages:write away and sets the balance.
    for _ in 0..5 {
        for node in [&b, &c] {
            assert_eq!(asks(node).await.0, true);
        }
    }
    let r = latchkey_testkit::call(
        http,
        Method::PATCH,
        &a.url(&format!("/v1/apps/{app}/keys/{}", key.id)),
        Some(&owner),
        Some(json!({"permissions": ["messages:read"], "credits": {"remaining": 50}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for node in [&b, &c] {
        eventually(
            &format!("node {}: the permission taken away", node.name),
            BOUND * 5,
            async || match asks(node).await {
                (_, code, _) if code == "insufficient_permissions" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
    // Their flushes (every second) must not write their older balances
    // over A's.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = get(
        http,
        &a.url(&format!("/v1/apps/{app}/keys/{}", key.id)),
        &owner,
    )
    .await;
    assert_eq!(r.body["key"]["credits"]["remaining"], 50, "{}", r.body);
    // Each node spends from A's balance now (leased from the store, so
    // what they report is what the store and they hold together).
    let mut shown = Vec::new();
    for node in [&b, &c] {
        let r = post(
            http,
            &node.url("/v1/verify"),
            &operator,
            json!({"authorization": key.basic()}),
        )
        .await;
        assert_eq!(r.body["valid"], true, "node {}: {}", node.name, r.body);
        shown.push(r.body["credits"]["remaining"].as_i64().expect("remaining"));
    }
    assert!(shown.iter().all(|&n| (40..=49).contains(&n)), "{shown:?}");
}

/// Waits for the next window of `window` seconds (aligned to the epoch, as
/// rate limits are) when less than half of the current one is left, so
/// that a run (a few seconds) does not straddle two.
async fn wait_for_a_fresh_window(window: i64) {
    use latchkey_core::Clock;
    let left = window - latchkey_core::SystemClock.unix().rem_euclid(window);
    if left < window / 2 {
        tokio::time::sleep(Duration::from_secs(u64::try_from(left + 1).unwrap_or(1))).await;
    }
}

/// Verifications of `key` spread over `nodes` as `plan` says (node index
/// per request, run `concurrency` at a time); how many were admitted.
async fn admitted(
    http: &reqwest::Client,
    nodes: &[&Node],
    operator: &str,
    key: &Key,
    plan: &[usize],
) -> usize {
    let mut admitted = 0;
    for chunk in plan.chunks(10) {
        let answers = join_all(
            chunk
                .iter()
                .map(|&i| {
                    let url = nodes[i].url("/v1/verify");
                    let body = json!({"authorization": key.basic()});
                    async move { post(http, &url, operator, body).await }
                })
                .collect(),
        )
        .await;
        for r in answers {
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            match r.body["valid"].as_bool() {
                Some(true) => admitted += 1,
                _ => assert_eq!(r.body["code"], "rate_limited", "{}", r.body),
            }
        }
    }
    admitted
}

/// A rate limit holds for the cluster, not per node: with three nodes and
/// a limit of 100 per window, driven evenly, all on one node, and moved
/// from one node to the others, at most 100 requests are admitted in the
/// window (the issue allows 110), and at least 100 less what the other
/// nodes leased and did not use (a slice of 10 each).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_across_three_nodes() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b = cluster.start_direct("b", &NOTIFY_ONLY).await;
    let c = cluster.start_direct("c", &NOTIFY_ONLY).await;
    for node in [&a, &b, &c] {
        wait_ready(http, node, SETTLE).await;
    }
    let nodes = [&a, &b, &c];
    // The issue's limit: 100 per minute. The test waits for a fresh
    // window when less than half of this one is left, so that no run
    // straddles two.
    const WINDOW: i64 = 60;
    wait_for_a_fresh_window(WINDOW).await;
    let app = create_app(http, &a, &owner, "limits").await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        let r = post(
            http,
            &a.url(&format!("/v1/apps/{app}/keys")),
            &owner,
            // A permission list, so that a probe asking for another
            // permission is refused before the limit counts it.
            json!({"displayName": "limited", "permissions": ["x"],
                   "ratelimit": {"limit": 100, "windowSeconds": WINDOW}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        keys.push(Key::from_body(&r.body));
    }
    // Every node knows the keys before the runs (checked with a key that
    // is not limited, so no count is spent).
    let probe = create_key(http, &a, &owner, &app).await;
    for node in nodes {
        eventually(
            &format!("node {}: new keys", node.name),
            CREATE_BOUND,
            async || match verify(http, node, &operator, &probe.basic(), &app).await {
                Verdict::Valid => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
        for key in &keys {
            eventually(&format!("node {}: a limited key", node.name), CREATE_BOUND, async || {
                let r = post(http, &node.url("/v1/verify"), &operator, json!({"authorization": key.basic(), "permissions": "not-carried-by-anyone"})).await;
                // Refused before the rate limit: the key is known, nothing spent.
                if r.body["code"] == "insufficient_permissions" {
                    Ok(())
                } else {
                    Err(format!("{}", r.body))
                }
            })
            .await;
        }
    }
    let evenly: Vec<usize> = (0..300).map(|i| i % 3).collect();
    let n = admitted(http, &nodes, &operator, &keys[0], &evenly).await;
    eprintln!("evenly over three nodes: {n} of 300 admitted (limit 100)");
    assert!((80..=100).contains(&n), "evenly: {n} admitted");

    let on_a: Vec<usize> = vec![0; 150];
    let then_spread: Vec<usize> = (0..150).map(|i| 1 + i % 2).collect();
    let first = admitted(http, &nodes, &operator, &keys[1], &on_a).await;
    let second = admitted(http, &nodes, &operator, &keys[1], &then_spread).await;
    eprintln!("all on one node, then spread: {first} + {second} admitted (limit 100)");
    assert_eq!(first, 100, "one node alone can use the whole limit");
    assert_eq!(second, 0);

    let some_on_a: Vec<usize> = vec![0; 45];
    let first = admitted(http, &nodes, &operator, &keys[2], &some_on_a).await;
    let second = admitted(http, &nodes, &operator, &keys[2], &then_spread).await;
    eprintln!("45 on one node, then moved to the others: {first} + {second} admitted (limit 100)");
    assert_eq!(first, 45);
    assert!(
        (90..=100).contains(&(first + second)),
        "moved: {} admitted\n{}\n{}",
        first + second,
        b.logs(),
        c.logs()
    );
}

/// A node cut off from the database keeps enforcing what it holds: it
/// admits the counts it leased and not one more, while the node that can
/// still reach the store has the rest of the cluster's budget; after the
/// cut heals it leases again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_admits_only_the_rate_limit_it_holds() {
    const WINDOW: i64 = 60;
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    wait_for_a_fresh_window(WINDOW).await;
    // A long staleness window: the cut node keeps verifying from its
    // index for the whole test.
    let flags = ["--staleness-window-ms", "60000"];
    let proxy = PgProxy::start(upstream_addr(&cluster.schema.url)).await;
    let a = cluster.start_direct("a", &flags).await;
    let c_url = cluster.proxied_url("c", &proxy);
    let c = cluster.start("c", &c_url, &flags).await;
    let app = create_app(http, &a, &owner, "cut").await;
    let r = post(
        http,
        &a.url(&format!("/v1/apps/{app}/keys")),
        &owner,
        json!({"displayName": "limited", "permissions": ["x"],
               "ratelimit": {"limit": 100, "windowSeconds": WINDOW}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let key = Key::from_body(&r.body);
    eventually("node c: the key", CREATE_BOUND, async || {
        let r = post(
            http,
            &c.url("/v1/verify"),
            &operator,
            json!({"authorization": key.basic(), "permissions": "y"}),
        )
        .await;
        if r.body["code"] == "insufficient_permissions" {
            Ok(())
        } else {
            Err(format!("{}", r.body))
        }
    })
    .await;
    let nodes = [&a, &c];
    // C leases two slices of 10 and uses 15 of them.
    assert_eq!(admitted(http, &nodes, &operator, &key, &[1; 15]).await, 15);
    proxy.cut();
    assert_eq!(
        admitted(http, &nodes, &operator, &key, &[1; 30]).await,
        5,
        "cut off, C admits what it holds and no more\n{}",
        c.logs()
    );
    // A has what is left of the budget: 100 less the 20 C leased.
    assert_eq!(admitted(http, &nodes, &operator, &key, &[0; 100]).await, 80);
    proxy.restore();
    // Healed: the cluster's budget is spent, so C gets no more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(admitted(http, &nodes, &operator, &key, &[1; 10]).await, 0);
}

/// Credits hold for the cluster: nodes lease slices of the stored balance,
/// so three nodes together never admit more than it (the balance never goes
/// below zero), and what a stopped node leased and did not spend goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credits_hold_across_three_nodes() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b = cluster.start_direct("b", &NOTIFY_ONLY).await;
    let mut c = cluster.start_direct("c", &NOTIFY_ONLY).await;
    for node in [&a, &b, &c] {
        wait_ready(http, node, SETTLE).await;
    }
    let app = create_app(http, &a, &owner, "credits").await;
    let r = post(
        http,
        &a.url(&format!("/v1/apps/{app}/keys")),
        &owner,
        json!({"displayName": "metered", "permissions": ["x"], "credits": {"remaining": 100}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let key = Key::from_body(&r.body);
    for node in [&a, &b, &c] {
        eventually(
            &format!("node {}: the key", node.name),
            CREATE_BOUND,
            async || {
                let r = post(
                    http,
                    &node.url("/v1/verify"),
                    &operator,
                    json!({"authorization": key.basic(), "permissions": "y"}),
                )
                .await;
                if r.body["code"] == "insufficient_permissions" {
                    Ok(())
                } else {
                    Err(format!("{}", r.body))
                }
            },
        )
        .await;
    }
    let nodes = [&a, &b, &c];
    let mut admitted_total = 0;
    let mut refused = 0;
    for chunk in (0..300).collect::<Vec<usize>>().chunks(15) {
        let answers = join_all(
            chunk
                .iter()
                .map(|&i| {
                    let url = nodes[i % 3].url("/v1/verify");
                    let body = json!({"authorization": key.basic()});
                    let operator = operator.clone();
                    async move { post(http, &url, &operator, body).await }
                })
                .collect(),
        )
        .await;
        for r in answers {
            match r.body["valid"].as_bool() {
                Some(true) => admitted_total += 1,
                _ => {
                    assert_eq!(r.body["code"], "usage_exceeded", "{}", r.body);
                    refused += 1;
                }
            }
        }
    }
    eprintln!(
        "credits over three nodes: {admitted_total} of 300 admitted, {refused} refused (balance 100)"
    );
    // Each node leases 5 at a time: at most 2 x 5 stranded on the others.
    assert!(
        (90..=100).contains(&admitted_total),
        "{admitted_total} admitted"
    );
    let stored = |r: &Reply| {
        r.body["key"]["credits"]["remaining"]
            .as_i64()
            .expect("remaining")
    };
    let path = format!("/v1/apps/{app}/keys/{}", key.id);
    let seen = get(http, &a.url(&path), &owner).await;
    assert!(
        stored(&seen) >= 0 && stored(&seen) <= 100 - admitted_total as i64 + 10,
        "{}",
        seen.body
    );
    // C stops: what it leased and did not spend goes back to the store.
    assert!(c.stop().success(), "{}", c.logs());
    let seen = get(http, &b.url(&path), &owner).await;
    eprintln!(
        "after C stopped: {} shown on B",
        seen.body["key"]["credits"]
    );
    assert!(stored(&seen) >= 0, "{}", seen.body);
}

/// 200 rounds of: create a key on A, wait until B and C accept it, delete
/// it on A, and time from A's answer to the first refusal on B and on C.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run with --run-ignored only --no-capture"]
async fn measure_revocation_latency() {
    const ROUNDS: usize = 200;
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b = cluster.start_direct("b", &NOTIFY_ONLY).await;
    let c = cluster.start_direct("c", &NOTIFY_ONLY).await;
    let app = create_app(http, &a, &owner, "Measured").await;

    let mut created = [Vec::new(), Vec::new()];
    let mut revoked = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let key = create_key(http, &a, &owner, &app).await;
        let creds = vec![key.basic()];
        let since = Instant::now();
        let (tb, tc) = tokio::join!(
            time_to_acceptance(http, &b, &operator, &creds, &app, since, SETTLE),
            time_to_acceptance(http, &c, &operator, &creds, &app, since, SETTLE),
        );
        created[0].push(tb.unwrap_or_else(|e| panic!("round {round}: {e}")));
        created[1].push(tc.unwrap_or_else(|e| panic!("round {round}: {e}")));

        delete_key(http, &a, &owner, &app, &key.id).await;
        let since = Instant::now();
        let (tb, tc) = tokio::join!(
            time_to_refusal(http, &b, &operator, &creds, &app, since, SETTLE),
            time_to_refusal(http, &c, &operator, &creds, &app, since, SETTLE),
        );
        revoked[0].push(tb.unwrap_or_else(|e| panic!("round {round}: {e}")));
        revoked[1].push(tc.unwrap_or_else(|e| panic!("round {round}: {e}")));
    }

    let both: Vec<Duration> = revoked.iter().flatten().copied().collect();
    eprintln!("revocation latency, {ROUNDS} rounds (from A's 204 to the first refusal):");
    eprintln!("  B:    {}", summary(&revoked[0]));
    eprintln!("  C:    {}", summary(&revoked[1]));
    eprintln!("  both: {}", summary(&both));
    eprintln!(
        "  over {BOUND:?}: {}",
        both.iter().filter(|t| **t > BOUND).count()
    );
    eprintln!("creation latency (from A's 201 to the first acceptance):");
    eprintln!("  B:    {}", summary(&created[0]));
    eprintln!("  C:    {}", summary(&created[1]));
    let mut sorted = both;
    sorted.sort();
    assert!(
        quantile(&sorted, 0.99) <= BOUND,
        "p99 revocation latency over {BOUND:?}: {}",
        summary(&sorted)
    );
}

/// `pg_terminate_backend` on all of C's connections: C keeps answering from
/// its index, reconnects, catches up on a key deleted meanwhile, is ready
/// again, and then follows changes within the bound as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_connections_are_killed_reconnects_and_catches_up() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let flags = [
        "--staleness-window-ms",
        "10000",
        "--resync-interval-ms",
        "1000",
    ];
    let a = cluster.start_direct("a", &flags).await;
    let c = cluster.start_direct("c", &flags).await;
    let c_name = cluster.application_name("c");

    let app = create_app(http, &a, &owner, "Resilient").await;
    let k1 = create_key(http, &a, &owner, &app).await;
    let k2 = create_key(http, &a, &owner, &app).await;
    let k3 = create_key(http, &a, &owner, &app).await;
    let all: Vec<String> = [&k1, &k2, &k3].iter().flat_map(|k| k.creds()).collect();
    accepted_on(
        http,
        &[&c],
        &operator,
        &all,
        &app,
        CREATE_BOUND,
        "keys created on A",
    )
    .await;

    // C holds connections (at least the one it listens on).
    let (held, _) = eventually("node c has database connections", SETTLE, async || {
        let n = backends(&c_name).await;
        if n >= 1 {
            Ok(n)
        } else {
            Err(format!("{n} backends"))
        }
    })
    .await;

    // Kill them all; delete k1 on A right away.
    let killed = terminate_backends(&c_name).await;
    assert!(
        killed >= 1,
        "no backend of node c terminated (it had {held})"
    );
    for cred in k3.creds() {
        assert_eq!(
            verify(http, &c, &operator, &cred, &app).await,
            Verdict::Valid,
            "node c right after its connections were killed"
        );
    }
    delete_key(http, &a, &owner, &app, &k1.id).await;
    let since = Instant::now();
    // C answers throughout (never a 503) and refuses k1 once it has
    // reconnected and resynced.
    let caught_up = time_to_refusal(
        http,
        &c,
        &operator,
        &k1.creds(),
        &app,
        since,
        Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|e| panic!("a key deleted while c reconnects: {e}\n{}", c.logs()));
    eprintln!(
        "a key deleted on A while c's connections were down: refused on c after {caught_up:?}"
    );
    let ready = wait_ready(http, &c, SETTLE).await;
    assert_eq!(ready["backend"], "postgres", "{ready}");
    let (n, _) = eventually("node c reconnected", SETTLE, async || {
        let n = backends(&c_name).await;
        if n >= 1 {
            Ok(n)
        } else {
            Err(format!("{n} backends"))
        }
    })
    .await;
    eprintln!("node c has {n} backend(s) again");
    for cred in k2.creds().iter().chain(k3.creds().iter()) {
        assert_eq!(
            verify(http, &c, &operator, cred, &app).await,
            Verdict::Valid
        );
    }

    // After the reconnection, changes reach C as before (it listens again).
    delete_key(http, &a, &owner, &app, &k2.id).await;
    refused_within_bound(
        http,
        &[&c],
        &operator,
        &k2.creds(),
        &app,
        "a key deleted on A after c reconnected",
    )
    .await;

    // Killed again, with a write on C itself right after: it either
    // succeeds (a fresh connection) or answers 503 database_unavailable,
    // never a 500, and C stays ready or degraded, never stale.
    let killed = terminate_backends(&c_name).await;
    assert!(
        killed >= 1,
        "no backend of node c terminated the second time"
    );
    let r = post(
        http,
        &c.url("/v1/apps"),
        &owner,
        json!({"displayName": "right after the kill"}),
    )
    .await;
    assert!(
        r.status == StatusCode::CREATED
            || (r.status == StatusCode::SERVICE_UNAVAILABLE && r.code() == "database_unavailable"),
        "a write on c right after its connections were killed: {} {}",
        r.status,
        r.body
    );
    let r = readyz(http, &c).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    wait_ready(http, &c, SETTLE).await;
    assert_eq!(
        verify(http, &c, &operator, &k3.basic(), &app).await,
        Verdict::Valid
    );
}

/// C cut off from PostgreSQL by a proxy: it verifies from its index and
/// says `degraded` for the staleness window, refuses management writes
/// with 503 `database_unavailable` without writing anything, then fails
/// closed (503 `index_stale`, readyz 503 `stale`); once the database is
/// back it resyncs, is ready, refuses the key deleted during the outage
/// and accepts the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_database_degrades_then_fails_closed_then_recovers() {
    const WINDOW: Duration = Duration::from_millis(3000);
    const RESYNC: Duration = Duration::from_millis(200);
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let window = WINDOW.as_millis().to_string();
    let resync = RESYNC.as_millis().to_string();
    let flags = [
        "--staleness-window-ms",
        window.as_str(),
        "--resync-interval-ms",
        resync.as_str(),
    ];
    let proxy = PgProxy::start(upstream_addr(&cluster.schema.url)).await;
    let a = cluster.start_direct("a", &flags).await;
    let c_url = cluster.proxied_url("c", &proxy);
    let c = cluster.start("c", &c_url, &flags).await;

    let app = create_app(http, &a, &owner, "Islanded").await;
    let doomed = create_key(http, &a, &owner, &app).await;
    let live = create_key(http, &a, &owner, &app).await;
    let both: Vec<String> = doomed.creds().into_iter().chain(live.creds()).collect();
    accepted_on(
        http,
        &[&c],
        &operator,
        &both,
        &app,
        CREATE_BOUND,
        "keys created on A",
    )
    .await;
    let keys_before = get(http, &a.url(&format!("/v1/apps/{app}/keys")), &owner).await;
    assert_eq!(keys_before.status, StatusCode::OK, "{}", keys_before.body);

    // Cut. C notices and says degraded, still verifying from its index.
    proxy.cut();
    let cut_at = Instant::now();
    let watcher = Watcher::start(http, &c, &operator, &live.basic(), &app, cut_at);
    let (degraded, noticed) = eventually("node c notices the cut", WINDOW, async || {
        let r = readyz(http, &c).await;
        if r.body["status"] == "ready" {
            Err(format!("{} {}", r.status, r.body))
        } else {
            Ok(r)
        }
    })
    .await;
    assert_eq!(
        (degraded.status, degraded.body["status"].as_str()),
        (StatusCode::OK, Some("degraded")),
        "readyz {noticed:?} after the cut: {}",
        degraded.body
    );
    assert_eq!(degraded.body["backend"], "postgres", "{}", degraded.body);
    assert!(
        degraded.body["syncAgeMs"]
            .as_u64()
            .is_some_and(|age| age < WINDOW.as_millis() as u64),
        "{}",
        degraded.body
    );
    eprintln!(
        "node c degraded {noticed:?} after the cut: {}",
        degraded.body
    );
    for cred in &both {
        assert_eq!(
            verify(http, &c, &operator, cred, &app).await,
            Verdict::Valid,
            "node c while degraded"
        );
    }
    // An endpoint that reads the database authenticates from the index but
    // cannot answer: 503 database_unavailable (not a 401, not a 500).
    let r = get(http, &c.url(&format!("/v1/apps/{app}")), &live.basic()).await;
    assert!(
        r.status == StatusCode::OK
            || (r.status == StatusCode::SERVICE_UNAVAILABLE && r.code() == "database_unavailable"),
        "reading an app on c while degraded: {} {}",
        r.status,
        r.body
    );

    // Management writes on C: 503 database_unavailable, nothing written.
    let started = Instant::now();
    let r = post(
        http,
        &c.url("/v1/apps"),
        &owner,
        json!({"displayName": "written during the outage"}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
        "creating an app on c without a database ({took:?}): {}",
        r.body
    );
    eprintln!("a write on c without a database answered in {took:?}");
    let r = delete(
        http,
        &c.url(&format!("/v1/apps/{app}/keys/{}", live.id)),
        &owner,
    )
    .await;
    let code = r.code().to_string();
    assert!(
        r.status == StatusCode::SERVICE_UNAVAILABLE
            && (code == "database_unavailable" || code == "index_stale"),
        "deleting a key on c without a database: {} {}",
        r.status,
        r.body
    );
    // Not half-done in C's own index: the key still verifies there (or C
    // has failed closed by now), and never as refused.
    for cred in live.creds() {
        let v = verify(http, &c, &operator, &cred, &app).await;
        assert!(
            v == Verdict::Valid || v == Verdict::Unavailable("index_stale".into()),
            "the key whose deletion failed on c: {v:?}"
        );
    }
    // Nor in the database, as A sees it.
    let r = get(http, &a.url("/v1/apps?limit=100"), &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let names: Vec<&str> = r.body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|app| app["displayName"].as_str())
        .collect();
    assert!(
        !names.contains(&"written during the outage"),
        "an app created on c without a database exists: {names:?}"
    );
    let keys_now = get(http, &a.url(&format!("/v1/apps/{app}/keys")), &owner).await;
    assert_eq!(keys_now.body, keys_before.body, "keys changed");
    for cred in live.creds() {
        assert_eq!(
            verify(http, &a, &operator, &cred, &app).await,
            Verdict::Valid
        );
    }

    // A key deleted on A during the outage.
    delete_key(http, &a, &owner, &app, &doomed.id).await;

    // After the window, C fails closed: every credential check is 503
    // index_stale, and readyz 503 stale.
    // (When it did is read from the watcher's timeline below.)
    eventually("node c fails closed", SETTLE, async || {
        match verify(http, &c, &operator, &live.basic(), &app).await {
            Verdict::Unavailable(code) if code == "index_stale" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let r = readyz(http, &c).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.body["status"], "stale", "{}", r.body);
    for cred in both.iter() {
        assert_eq!(
            verify(http, &c, &operator, cred, &app).await,
            Verdict::Unavailable("index_stale".into()),
            "node c after the window"
        );
        let r = get(http, &c.url(&format!("/v1/apps/{app}")), cred).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "index_stale"),
            "node c after the window: {}",
            r.body
        );
    }
    let r = get(http, &c.url("/v1/account"), &owner).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "index_stale"),
        "{}",
        r.body
    );
    // Forward-auth fails closed too, with a status a proxy passes on.
    let r = http
        .get(c.url("/v1/forward-auth"))
        .header("authorization", live.basic())
        .header("x-forwarded-uri", format!("/v2/apps/{app}"))
        .send()
        .await
        .expect("forward-auth");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.headers().get("x-latchkey-error").map(|v| v.as_bytes()),
        Some(&b"index_stale"[..])
    );
    // A is unaffected.
    let r = readyz(http, &a).await;
    assert_eq!(r.body["status"], "ready", "{}", r.body);
    assert_eq!(
        verify(http, &a, &operator, &live.basic(), &app).await,
        Verdict::Valid
    );

    // Back: C reconnects, resyncs and is ready; then it refuses the key
    // deleted during the outage at once and accepts the live one.
    let restored = cut_at.elapsed();
    proxy.restore();
    let ready = wait_ready(http, &c, SETTLE).await;
    let recovered = cut_at.elapsed() - restored;
    eprintln!("node c ready {recovered:?} after the database came back: {ready}");
    check_outage(
        "the cut",
        &watcher.finish().await,
        restored,
        WINDOW,
        RESYNC,
        Duration::from_millis(250),
    );
    for cred in doomed.creds() {
        assert_eq!(
            verify(http, &c, &operator, &cred, &app).await,
            Verdict::Refused("unauthorized".into()),
            "the key deleted during the outage, on c once ready"
        );
    }
    for cred in live.creds() {
        assert_eq!(
            verify(http, &c, &operator, &cred, &app).await,
            Verdict::Valid,
            "a live key on c once ready"
        );
    }
    // And writes on C work again, visible on A.
    let id = create_app(http, &c, &owner, "written after the outage").await;
    let r = get(http, &a.url(&format!("/v1/apps/{id}")), &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// C's database stops answering (the proxy holds every connection open and
/// forwards nothing, as a hung server or a network that drops packets):
/// C answers at once all the same, verifies from its index for the
/// staleness window, then fails closed; a management write on C does not
/// hang and does not take effect later; once the database answers again C
/// is ready and refuses the key deleted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_database_stops_answering_fails_closed_then_recovers() {
    const WINDOW: Duration = Duration::from_millis(3000);
    const RESYNC: Duration = Duration::from_millis(200);
    /// How long a write on C may take to give up.
    const WRITE_LIMIT: Duration = Duration::from_secs(30);
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let window = WINDOW.as_millis().to_string();
    let resync = RESYNC.as_millis().to_string();
    let flags = [
        "--staleness-window-ms",
        window.as_str(),
        "--resync-interval-ms",
        resync.as_str(),
    ];
    let proxy = PgProxy::start(upstream_addr(&cluster.schema.url)).await;
    let a = cluster.start_direct("a", &flags).await;
    let c_url = cluster.proxied_url("c", &proxy);
    let c = cluster.start("c", &c_url, &flags).await;

    let app = create_app(http, &a, &owner, "Hung").await;
    let doomed = create_key(http, &a, &owner, &app).await;
    let live = create_key(http, &a, &owner, &app).await;
    let both: Vec<String> = doomed.creds().into_iter().chain(live.creds()).collect();
    accepted_on(
        http,
        &[&c],
        &operator,
        &both,
        &app,
        CREATE_BOUND,
        "keys created on A",
    )
    .await;

    proxy.freeze();
    let frozen_at = Instant::now();
    let watcher = Watcher::start(http, &c, &operator, &live.basic(), &app, frozen_at);

    // A write on C while its database hangs: an answer (503), in time.
    let started = Instant::now();
    let write = tokio::time::timeout(
        WRITE_LIMIT,
        post(
            http,
            &c.url("/v1/apps"),
            &owner,
            json!({"displayName": "written while the database hung"}),
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("a write on c hung for {WRITE_LIMIT:?} while its database did not answer")
    });
    let took = started.elapsed();
    eprintln!(
        "a write on c while its database hung answered {} {} in {took:?}",
        write.status, write.body
    );
    assert!(
        write.status == StatusCode::SERVICE_UNAVAILABLE
            && (write.code() == "database_unavailable" || write.code() == "index_stale"),
        "a write on c while its database hung ({took:?}): {} {}",
        write.status,
        write.body
    );

    delete_key(http, &a, &owner, &app, &doomed.id).await;
    eventually("node c fails closed", SETTLE, async || {
        match verify(http, &c, &operator, &live.basic(), &app).await {
            Verdict::Unavailable(code) if code == "index_stale" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for cred in &both {
        assert_eq!(
            verify(http, &c, &operator, cred, &app).await,
            Verdict::Unavailable("index_stale".into()),
            "node c after the window"
        );
    }

    let restored = frozen_at.elapsed();
    proxy.thaw();
    let ready = wait_ready(http, &c, SETTLE).await;
    eprintln!(
        "node c ready {:?} after its database answered again: {ready}",
        frozen_at.elapsed() - restored
    );
    check_outage(
        "the freeze",
        &watcher.finish().await,
        restored,
        WINDOW,
        RESYNC,
        Duration::from_millis(250),
    );
    for cred in doomed.creds() {
        assert_eq!(
            verify(http, &c, &operator, &cred, &app).await,
            Verdict::Refused("unauthorized".into()),
            "the key deleted while c's database hung, on c once ready"
        );
    }
    for cred in live.creds() {
        assert_eq!(
            verify(http, &c, &operator, &cred, &app).await,
            Verdict::Valid,
            "a live key on c once ready"
        );
    }
    // The refused write did not happen late, once the held bytes went
    // through.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = get(http, &a.url("/v1/apps?limit=100"), &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let names: Vec<&str> = r.body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|app| app["displayName"].as_str())
        .collect();
    assert!(
        !names.contains(&"written while the database hung"),
        "a write that c answered {} exists after all: {names:?}",
        write.status
    );
    let id = create_app(http, &c, &owner, "written after the freeze").await;
    let r = get(http, &a.url(&format!("/v1/apps/{id}")), &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// The link of a node to the database in the bad-link tests: every chunk
/// the proxy forwards waits this long, each way...
const LINK_LATENCY: Duration = Duration::from_millis(20);
/// ...and the kernel drops this many packets in a thousand, each way.
const LINK_LOSS_PER_MILLE: u32 = 50;
/// How long a change made on another node may take to arrive over that
/// link: the 1 s bound plus TCP's retransmissions (on loopback at least
/// 200 ms each, doubling when the resent segment is lost too).
const LOSSY_BOUND: Duration = Duration::from_secs(5);

/// B reaches the database over a slow link that loses packets
/// (`LINK_LATENCY`, `LINK_LOSS_PER_MILLE`): round after round, a key
/// created on A is accepted on B and, once deleted on A, refused on B
/// within `LOSSY_BOUND`, by LISTEN/NOTIFY over that link (resyncs are too
/// rare to help); B never answers anything but valid or refused meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_reaches_a_node_on_a_slow_lossy_link() {
    const ROUNDS: usize = 10;
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let proxy = PgProxy::start(upstream_addr(&cluster.schema.url)).await;
    let a = cluster.start_direct("a", &NOTIFY_ONLY).await;
    let b_url = cluster.proxied_url("b", &proxy);
    let b = cluster.start("b", &b_url, &NOTIFY_ONLY).await;
    let app = create_app(http, &a, &owner, "Over a bad link").await;

    proxy.slow_down(LINK_LATENCY);
    let loss = PacketLoss::on_port(proxy.addr.port(), LINK_LOSS_PER_MILLE);
    let mut arrived = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..ROUNDS {
        let key = create_key(http, &a, &owner, &app).await;
        arrived.extend(
            accepted_on(
                http,
                &[&b],
                &operator,
                &key.creds(),
                &app,
                LOSSY_BOUND,
                "a key created on A, on B over the bad link",
            )
            .await,
        );
        delete_key(http, &a, &owner, &app, &key.id).await;
        let since = Instant::now();
        match time_to_refusal(http, &b, &operator, &key.creds(), &app, since, LOSSY_BOUND).await {
            Ok(t) => refused.push(t),
            Err(e) => panic!(
                "a key deleted on A, on B over the bad link: {e}\n{}",
                b.logs()
            ),
        }
    }
    let dropped = loss.dropped();
    drop(loss);
    assert!(dropped > 0, "the bad link lost no packet");
    arrived.sort();
    refused.sort();
    eprintln!(
        "over a link of {LINK_LATENCY:?} per chunk and {LINK_LOSS_PER_MILLE}/1000 packets lost, \
         {ROUNDS} rounds ({dropped} packets dropped): created keys accepted on B after {}; \
         deleted keys refused on B after {}",
        summary(&arrived),
        summary(&refused)
    );
    let r = readyz(http, &b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// C reaches the database over the same slow, lossy link, with a short
/// staleness window: while the link works, however badly, C keeps
/// verifying and never fails closed; once the link stops forwarding
/// altogether, C fails closed within its window (early by at most the age
/// its index had when the link stopped), and recovers when it forwards
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_on_a_lossy_link_stays_fresh_then_honours_its_window() {
    const WINDOW: Duration = Duration::from_millis(3000);
    const RESYNC: Duration = Duration::from_millis(200);
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let window = WINDOW.as_millis().to_string();
    let resync = RESYNC.as_millis().to_string();
    let flags = [
        "--staleness-window-ms",
        window.as_str(),
        "--resync-interval-ms",
        resync.as_str(),
    ];
    let proxy = PgProxy::start(upstream_addr(&cluster.schema.url)).await;
    let a = cluster.start_direct("a", &flags).await;
    let c_url = cluster.proxied_url("c", &proxy);
    let c = cluster.start("c", &c_url, &flags).await;
    let app = create_app(http, &a, &owner, "Lossy, then gone").await;
    let live = create_key(http, &a, &owner, &app).await;
    accepted_on(
        http,
        &[&c],
        &operator,
        &live.creds(),
        &app,
        CREATE_BOUND,
        "a key created on A",
    )
    .await;

    proxy.slow_down(LINK_LATENCY);
    let loss = PacketLoss::on_port(proxy.addr.port(), LINK_LOSS_PER_MILLE);
    let lossy_at = Instant::now();
    let watcher = Watcher::start(http, &c, &operator, &live.basic(), &app, lossy_at);
    tokio::time::sleep(WINDOW * 2).await;
    let lossy = watcher.finish().await;
    let dropped = loss.dropped();
    assert!(dropped > 0, "the bad link lost no packet");
    let degraded = lossy
        .timeline
        .iter()
        .filter(|(_, seen)| seen.readyz.1 == "degraded")
        .count();
    eprintln!(
        "c over the bad link for {:?} ({dropped} packets dropped): {} change(s) of what it \
         said, {degraded} of them to degraded; slowest poll {:?}",
        WINDOW * 2,
        lossy.timeline.len(),
        lossy.slowest
    );
    for (t, seen) in &lossy.timeline {
        assert_eq!(
            seen.verdict,
            Verdict::Valid,
            "verify on c {t:?} into the bad link: {:?}\n{}",
            lossy.timeline,
            c.logs()
        );
        assert_eq!(
            seen.readyz.0,
            StatusCode::OK,
            "readyz on c {t:?} into the bad link: {:?}",
            lossy.timeline
        );
    }

    proxy.freeze();
    let frozen_at = Instant::now();
    let watcher = Watcher::start(http, &c, &operator, &live.basic(), &app, frozen_at);
    eventually("node c fails closed", SETTLE, async || {
        match verify(http, &c, &operator, &live.basic(), &app).await {
            Verdict::Unavailable(code) if code == "index_stale" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let restored = frozen_at.elapsed();
    proxy.thaw();
    drop(loss);
    let ready = wait_ready(http, &c, SETTLE).await;
    eprintln!(
        "node c ready {:?} after the link forwarded again: {ready}",
        frozen_at.elapsed() - restored
    );
    // Over this link a resync takes several slowed round trips, some of
    // them resent: the index may be that much older than the freeze.
    check_outage(
        "the freeze of the bad link",
        &watcher.finish().await,
        restored,
        WINDOW,
        RESYNC,
        Duration::from_millis(1500),
    );
    assert_eq!(
        verify(http, &c, &operator, &live.basic(), &app).await,
        Verdict::Valid,
        "the live key on c once ready again"
    );
}

/// B restarted: keys used through B have `lastUsedAt` flushed on SIGTERM;
/// changes made while B was down are in effect on B once it is ready again;
/// what was written through B is all still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_loses_nothing() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let flags = [
        "--staleness-window-ms",
        "10000",
        "--resync-interval-ms",
        "1000",
    ];
    // B writes lastUsedAt only hourly: only its shutdown can write it here.
    let b_flags = [&flags[..], &["--last-used-flush-seconds", "3600"]].concat();
    let a = cluster.start_direct("a", &flags).await;
    let mut b = cluster.start_direct("b", &b_flags).await;
    let c = cluster.start_direct("c", &flags).await;

    let app = create_app(http, &a, &owner, "Durable").await;
    app_known_everywhere(http, &[&a, &b, &c], &operator, &owner, &app).await;
    let k1 = create_key(http, &a, &owner, &app).await;
    let k2 = create_key(http, &a, &owner, &app).await;
    // Written through B.
    let app_b = create_app(http, &b, &owner, "Made on B").await;
    let k3 = create_key(http, &b, &owner, &app_b).await;
    let r = post(
        http,
        &b.url(&format!("/v1/apps/{app_b}/users")),
        &k3.basic(),
        json!({"externalId": "alice", "profile": {"givenName": "Alice"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Used through B only.
    for (key, app) in [(&k1, &app), (&k2, &app), (&k3, &app_b)] {
        accepted_on(
            http,
            &[&b],
            &operator,
            &key.creds(),
            app,
            CREATE_BOUND,
            "keys on b",
        )
        .await;
        for cred in key.creds() {
            let r = get(http, &b.url(&format!("/v1/apps/{app}")), &cred).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    }
    for (key, app) in [(&k1, &app), (&k2, &app), (&k3, &app_b)] {
        let v = key_json(http, &a, &owner, app, &key.id).await;
        assert!(v["lastUsedAt"].is_null(), "not flushed yet: {v}");
    }

    let status = b.stop();
    assert!(status.success(), "b exited with {status}\n{}", b.logs());
    for (key, app) in [(&k1, &app), (&k2, &app), (&k3, &app_b)] {
        let v = key_json(http, &a, &owner, app, &key.id).await;
        assert!(
            v["lastUsedAt"].is_string(),
            "lastUsedAt of a key used on b, after b's shutdown: {v}"
        );
    }

    // Changes while B is down.
    delete_key(http, &a, &owner, &app, &k2.id).await;
    let k4 = create_key(http, &c, &owner, &app).await;

    let b = cluster.start_direct("b", &b_flags).await;
    // B shows the lastUsedAt it flushed (before the keys are used again).
    for (key, app) in [(&k1, &app), (&k3, &app_b)] {
        let on_a = key_json(http, &a, &owner, app, &key.id).await;
        let on_b = key_json(http, &b, &owner, app, &key.id).await;
        assert_eq!(on_a["lastUsedAt"], on_b["lastUsedAt"], "{on_a} {on_b}");
    }
    // Ready means synced: no waiting from here on.
    for (key, app) in [(&k1, &app), (&k3, &app_b), (&k4, &app)] {
        for cred in key.creds() {
            assert_eq!(
                verify(http, &b, &operator, &cred, app).await,
                Verdict::Valid,
                "a live key on b after its restart"
            );
            let r = get(http, &b.url(&format!("/v1/apps/{app}")), &cred).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    }
    for cred in k2.creds() {
        assert_eq!(
            verify(http, &b, &operator, &cred, &app).await,
            Verdict::Refused("unauthorized".into()),
            "a key deleted while b was down, on b after its restart"
        );
    }
    let r = get(http, &b.url("/v1/apps?limit=100"), &owner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ids: BTreeSet<&str> = r.body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|app| app["id"].as_str())
        .collect();
    assert!(
        ids.contains(app.as_str()) && ids.contains(app_b.as_str()),
        "{}",
        r.body
    );
    let r = get(
        http,
        &b.url(&format!("/v1/apps/{app_b}/users/alice")),
        &k3.basic(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["user"]["externalId"], "alice", "{}", r.body);
}

/// Write-behind `lastUsedAt` with several nodes: an older value flushed
/// later by one node does not overwrite a newer one flushed by another, and
/// a newer one does replace an older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_used_at_is_not_lost_between_nodes() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let owner = cluster.owner();
    let base = [
        "--staleness-window-ms",
        "10000",
        "--resync-interval-ms",
        "1000",
    ];
    let hourly = [&base[..], &["--last-used-flush-seconds", "3600"]].concat();
    let often = [&base[..], &["--last-used-flush-seconds", "1"]].concat();
    let a = cluster.start_direct("a", &hourly).await;
    let mut b = cluster.start_direct("b", &hourly).await;
    let c = cluster.start_direct("c", &often).await;
    let operator = cluster.operator();

    let app = create_app(http, &a, &owner, "Used").await;
    let older_on_b = create_key(http, &a, &owner, &app).await;
    let newer_on_b = create_key(http, &a, &owner, &app).await;
    let creds: Vec<String> = [&older_on_b, &newer_on_b]
        .iter()
        .flat_map(|k| k.creds())
        .collect();
    accepted_on(
        http,
        &[&b, &c],
        &operator,
        &creds,
        &app,
        CREATE_BOUND,
        "keys created on A",
    )
    .await;
    let use_on = async |node: &Node, key: &Key| {
        let r = get(http, &node.url(&format!("/v1/apps/{app}")), &key.basic()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    };

    // older_on_b: used on B, then (a second later) on C, which flushes.
    // newer_on_b: used on C, which flushes, then a second later on B.
    // The whole second each use on C was made in: C's flush of that use
    // is awaited (the checks that the keys had reached B and C may have
    // used them on C already, and C may have flushed that first).
    let second = || {
        use latchkey_core::Clock;
        time::OffsetDateTime::from_unix_timestamp(latchkey_core::SystemClock.unix())
            .expect("a time")
    };
    use_on(&b, &older_on_b).await;
    let c_newer_from = second();
    use_on(&c, &newer_on_b).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c_older_from = second();
    use_on(&c, &older_on_b).await;
    use_on(&b, &newer_on_b).await;
    let flushed_by_c = async |key: &Key, from: time::OffsetDateTime| {
        let what = format!("lastUsedAt of {} flushed by c", key.id);
        eventually(&what, SETTLE, async || {
            let v = key_json(http, &a, &owner, &app, &key.id).await;
            last_used(&v)
                .filter(|t| *t >= from)
                .ok_or_else(|| v.to_string())
        })
        .await
        .0
    };
    let c_older = flushed_by_c(&older_on_b, c_older_from).await;
    let c_newer = flushed_by_c(&newer_on_b, c_newer_from).await;

    // B flushes on shutdown: its value of older_on_b is older than C's,
    // its value of newer_on_b newer.
    let status = b.stop();
    assert!(status.success(), "b exited with {status}\n{}", b.logs());
    let after = last_used(&key_json(http, &a, &owner, &app, &older_on_b.id).await);
    assert_eq!(
        after,
        Some(c_older),
        "an older lastUsedAt flushed by b replaced c's newer one"
    );
    let after =
        last_used(&key_json(http, &a, &owner, &app, &newer_on_b.id).await).expect("lastUsedAt");
    assert!(
        after > c_newer,
        "b's newer lastUsedAt ({after}) was lost; still c's {c_newer}"
    );
}

/// Key events caused on A, B and C (some at the same moment): every event
/// is delivered, each once, with one delivery id per event, though all
/// three nodes run a dispatcher over the same queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_events_from_several_nodes_are_delivered_once_each() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let owner = cluster.owner();
    let flags = [
        "--allow-private-webhook-targets",
        "--staleness-window-ms",
        "10000",
        "--resync-interval-ms",
        "1000",
    ];
    let receiver = WebhookReceiver::start().await;
    let a = cluster.start_direct("a", &flags).await;
    let b = cluster.start_direct("b", &flags).await;
    let c = cluster.start_direct("c", &flags).await;
    let nodes = [&a, &b, &c];

    let app = create_app(http, &a, &owner, "Hooked").await;
    app_known_everywhere(http, &nodes, &cluster.operator(), &owner, &app).await;
    let r = post(
        http,
        &a.url(&format!("/v1/apps/{app}/webhooks")),
        &owner,
        json!({"target": receiver.url("/hook"), "triggers": ["key:created", "key:deleted"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let webhook = field(&r.body, "/webhook/id");
    let secret = field(&r.body, "/webhook/secret");
    for node in [&b, &c] {
        let r = get(
            http,
            &node.url(&format!("/v1/apps/{app}/webhooks/{webhook}")),
            &owner,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    // Sequentially: two keys created on each node, each deleted on the
    // next node.
    let mut created = Vec::new();
    for node in nodes {
        for _ in 0..2 {
            created.push(create_key(http, node, &owner, &app).await.id);
        }
    }
    for (i, id) in created.iter().enumerate() {
        delete_key(http, nodes[(i / 2 + 1) % 3], &owner, &app, id).await;
    }
    // At the same moment on all three nodes.
    let mut creating = Vec::new();
    for node in nodes {
        creating.push(create_key(http, node, &owner, &app));
    }
    let at_once: Vec<String> = join_all(creating).await.into_iter().map(|k| k.id).collect();
    let mut deleting = Vec::new();
    for (i, id) in at_once.iter().enumerate() {
        deleting.push(delete_key(http, nodes[(i + 2) % 3], &owner, &app, id));
    }
    join_all(deleting).await;
    created.extend(at_once);
    let events = created.len() * 2;

    // Wait for every event, then a while longer for duplicates (each node
    // polls its queue every second).
    eventually("every event delivered", SETTLE, async || {
        let got = receiver.received();
        let ids: BTreeSet<String> = got.iter().map(|r| r.delivery.clone()).collect();
        if ids.len() >= events {
            Ok(())
        } else {
            Err(format!("{} distinct deliveries of {events}", ids.len()))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = receiver.received();

    let mut per_delivery: BTreeMap<&str, usize> = BTreeMap::new();
    let mut event_of_delivery: BTreeMap<&str, String> = BTreeMap::new();
    let mut by_type: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &got {
        assert!(
            r.delivery.starts_with("dlv_"),
            "delivery id {:?}",
            r.delivery
        );
        assert!(signature_ok(r, &secret), "bad signature: {r:?}");
        let body: Value = serde_json::from_str(&r.body).expect("a JSON body");
        assert_eq!(body["type"], r.event.as_str(), "{body}");
        assert_eq!(body["appId"], app.as_str(), "{body}");
        let event_id = field(&body, "/id");
        *per_delivery.entry(r.delivery.as_str()).or_default() += 1;
        // A delivery id names one event, on every attempt.
        if let Some(seen) = event_of_delivery.insert(r.delivery.as_str(), event_id.clone()) {
            assert_eq!(seen, event_id, "delivery {} names two events", r.delivery);
        }
        by_type
            .entry(r.event.clone())
            .or_default()
            .insert(field(&body, "/data/key/id"));
    }
    let duplicated: Vec<_> = per_delivery.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "deliveries received more than once: {duplicated:?}"
    );
    assert_eq!(per_delivery.len(), events, "distinct delivery ids");
    let distinct_events: BTreeSet<&String> = event_of_delivery.values().collect();
    assert_eq!(distinct_events.len(), events, "distinct event ids");
    let keys: BTreeSet<String> = created.into_iter().collect();
    assert_eq!(
        by_type.get("key:created"),
        Some(&keys),
        "key:created events"
    );
    assert_eq!(
        by_type.get("key:deleted"),
        Some(&keys),
        "key:deleted events"
    );
    assert_eq!(got.len(), events, "requests received");
}

/// The helpers that cut URLs apart.
#[test]
fn urls_are_split_and_rewritten() {
    let url = "postgres://postgres@127.0.0.1:5432/test?options[search_path]=lkt_1_ab";
    assert_eq!(
        split_url(url),
        (
            "postgres://postgres@",
            "127.0.0.1:5432",
            "/test?options[search_path]=lkt_1_ab"
        )
    );
    assert_eq!(upstream_addr(url), "127.0.0.1:5432");
    assert_eq!(upstream_addr("postgres://db/x"), "db:5432");
    assert_eq!(
        with_application_name(url, "n"),
        format!("{url}&application_name=n")
    );
    assert_eq!(
        with_application_name("postgres://h/db", "n"),
        "postgres://h/db?application_name=n"
    );
    let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    assert_eq!(quantile(&sorted, 0.5), Duration::from_millis(50));
    assert_eq!(quantile(&sorted, 0.99), Duration::from_millis(99));
    assert_eq!(quantile(&sorted, 1.0), Duration::from_millis(100));
}

/// Usage analytics on a cluster: each node counts the checks it made and
/// adds them to the shared store, so the app's usage read on any node is
/// the sum of all nodes' counts, each counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_counted_on_every_node_adds_up() {
    let cluster = Cluster::new().await;
    let http = &cluster.http;
    let operator = cluster.operator();
    let owner = cluster.owner();
    let flags = [&NOTIFY_ONLY[..], &["--last-used-flush-seconds", "1"]].concat();
    let a = cluster.start_direct("a", &flags).await;
    let b = cluster.start_direct("b", &flags).await;
    let app = create_app(http, &a, &owner, "counted").await;
    let key = create_key(http, &a, &owner, &app).await;
    let verify = async |node: &Node, authorization: &str| {
        post(
            http,
            &node.url("/v1/verify"),
            &operator,
            json!({ "authorization": authorization }),
        )
        .await
    };
    eventually("node b: the key", CREATE_BOUND, async || {
        let r = verify(&b, &key.basic()).await;
        if r.body["valid"] == true {
            Ok(())
        } else {
            Err(format!("{}", r.body))
        }
    })
    .await;
    // B has counted one valid check already (the probe above).
    for _ in 0..7 {
        assert_eq!(verify(&a, &key.basic()).await.body["valid"], true);
    }
    for _ in 0..4 {
        assert_eq!(verify(&b, &key.basic()).await.body["valid"], true);
    }
    let wrong = latchkey_testkit::basic(&key.id, "lksk_not_the_secret");
    for node in [&a, &b, &a] {
        assert_eq!(verify(node, &wrong).await.body["valid"], false);
    }
    let path = format!("/v1/apps/{app}/usage?granularity=minute");
    let read = async |node: &Node| {
        let r = get(http, &node.url(&path), &owner).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["totals"].clone()
    };
    eventually(
        "the usage of both nodes",
        Duration::from_secs(15),
        async || {
            let totals = read(&b).await;
            let refused: i64 = totals["refused"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_i64).sum())
                .unwrap_or(0);
            if totals["valid"] == 12 && refused == 3 {
                Ok(())
            } else {
                Err(format!("{totals}"))
            }
        },
    )
    .await;
    // Two more flushes of both nodes: nothing is counted twice.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for node in [&a, &b] {
        let totals = read(node).await;
        assert_eq!(totals["valid"], 12, "node {}: {totals}", node.name);
    }
}
