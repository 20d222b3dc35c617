//! End-to-end tests of the `latchkey` binary: `init`, `serve` (HTTP and
//! HTTPS, shutdown on signals, restarts), `token`, and what ends up on disk
//! and in the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use latchkey_core::secret::REDACTED;
use latchkey_testkit::{Key, Reply, basic, call, field, get, post};
use support::{Finished, Init, LISTENING, Proc, STARTUP, client, init, latchkey, run, serve_cmd};

/// How long a server gets to exit after SIGTERM or SIGINT.
const SHUTDOWN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// `latchkey serve` on 127.0.0.1:0, up and listening.
struct Server {
    proc: Proc,
    url: String,
    /// The stdout lines printed before the listening line.
    before: Vec<String>,
}

fn start(cmd: Command) -> Server {
    let mut proc = Proc::spawn(cmd);
    let (url, before) = proc.wait_listening();
    Server { proc, url, before }
}

fn serve(data: &Path, extra: &[&str]) -> Server {
    start(serve_cmd(data, extra))
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends `signal` and returns the exit status, which must come within
    /// `SHUTDOWN`.
    fn stop_with(&mut self, signal: &str) -> ExitStatus {
        self.proc.signal(signal);
        self.proc.wait_exit(SHUTDOWN)
    }
}

// ---------------------------------------------------------------------------
// Init output
// ---------------------------------------------------------------------------

/// Parses the human-readable report `serve` prints on first start.
fn parse_text_report(lines: &[String]) -> Init {
    let text = lines.join("\n");
    assert!(
        text.contains("Latchkey initialized in"),
        "no init report before the listening line: {text:?}"
    );
    let value = |label: &str| -> String {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {text:?}"))
            .trim()
            .to_string()
    };
    Init {
        operator_token: value("operator token:"),
        account_id: value("account id:"),
        user_id: value("owner user id:"),
        email: value("owner email:"),
        password: value("owner password:"),
        key_id: value("owner key id:"),
        key_secret: value("owner key secret:"),
    }
}

fn assert_secret_format(prefix: &str, s: &str) {
    let body = s
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{s:?} does not start with {prefix}"));
    assert_eq!(body.len(), 43 + 6, "{s:?} has the wrong length");
    assert!(
        body.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{s:?} is not base62"
    );
}

fn assert_init_shape(init: &Init) {
    assert_secret_format("lkop_", &init.operator_token);
    assert_secret_format("lksk_", &init.key_secret);
    assert!(init.key_id.starts_with("act_"), "{init:?}");
    assert!(init.account_id.starts_with("acc_"), "{init:?}");
    assert!(init.user_id.starts_with("ua_"), "{init:?}");
    assert_eq!(init.email, "owner@localhost");
    assert!(init.password.len() >= 16, "{init:?}");
}

// ---------------------------------------------------------------------------
// HTTP and tokens
// ---------------------------------------------------------------------------

async fn create_app(http: &reqwest::Client, s: &Server, owner: &str, name: &str) -> String {
    let Reply { status, body, .. } = post(
        http,
        &s.url("/v1/apps"),
        owner,
        json!({"displayName": name}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    field(&body, "/app/id")
}

async fn create_app_key(http: &reqwest::Client, s: &Server, owner: &str, app_id: &str) -> Key {
    let Reply { status, body, .. } = post(
        http,
        &s.url(&format!("/v1/apps/{app_id}/keys")),
        owner,
        json!({"displayName": "cli test key"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = Key::from_body(&body);
    assert!(key.id.starts_with("app_"), "{body}");
    assert_secret_format("lksk_", &key.secret);
    key
}

fn token_cmd(key_id: &str, secret: &str, scope: &str, user_id: Option<&str>) -> Command {
    let mut cmd = latchkey();
    cmd.args([
        "token", "--key-id", key_id, "--secret", secret, "--scope", scope,
    ]);
    if let Some(u) = user_id {
        cmd.args(["--user-id", u]);
    }
    cmd
}

/// Mints a JWT with `latchkey token`.
fn mint(key_id: &str, secret: &str, scope: &str, user_id: Option<&str>) -> String {
    let out = run(token_cmd(key_id, secret, scope, user_id));
    assert!(
        out.status.success(),
        "token failed: {}\nstderr:\n{}",
        out.status,
        out.stderr
    );
    let jwt = out.stdout.trim().to_string();
    assert_eq!(jwt.split('.').count(), 3, "not a JWT: {jwt:?}");
    jwt
}

/// Changes the last character of a secret: same format, wrong checksum.
fn mutate_last(secret: &str) -> String {
    let mut s = secret.to_string();
    let last = s.pop().expect("non-empty secret");
    s.push(if last == 'A' { 'B' } else { 'A' });
    s
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The database and its SQLite companions (-wal, -shm, -journal).
fn database_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data)
        .expect("read data dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("latchkey.db"))
        })
        .collect();
    files.sort();
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
}

/// The names of everything leaked: each needle found in `haystack`.
fn leaks<'a>(haystack: &[u8], needles: &'a BTreeMap<String, String>) -> Vec<&'a str> {
    needles
        .iter()
        .filter(|(_, needle)| contains(haystack, needle))
        .map(|(name, _)| name.as_str())
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn init_prints_json_once_and_refuses_a_second_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    let init = init(&data, None);
    assert_init_shape(&init);

    let master = data.join("master.key");
    assert!(master.is_file(), "no master.key in {}", data.display());
    assert_eq!(mode(&master), 0o600, "master.key mode");
    assert_eq!(mode(&data), 0o700, "data dir mode");
    assert!(data.join("latchkey.db").is_file(), "no latchkey.db");
    let master_before = std::fs::read(&master).expect("read master.key");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("read data dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect()
    };
    let names_before = names(&data);

    let mut cmd = latchkey();
    cmd.arg("init").arg("--data-dir").arg(&data).arg("--json");
    let again = run(cmd);
    again.assert_failed("second init");
    assert!(
        again.stderr.contains("already initialized"),
        "second init should say the store is already initialized: {:?}",
        again.stderr
    );
    assert!(
        !again.stdout.contains("lksk_") && !again.stdout.contains("lkop_"),
        "second init printed secrets: {:?}",
        again.stdout
    );

    // Nothing changed: same master key, same files, and the first init's
    // credentials are still the only ones.
    assert_eq!(
        std::fs::read(&master).expect("read master.key"),
        master_before,
        "the second init changed master.key"
    );
    assert_eq!(names(&data), names_before);
    assert_eq!(mode(&master), 0o600);
    assert_eq!(mode(&data), 0o700);

    let mut s = serve(&data, &[]);
    assert!(
        s.before.is_empty(),
        "serve re-initialized an initialized store: {:?}",
        s.before
    );
    let http = client();
    let Reply { status, body, .. } = get(&http, &s.url("/v1/account"), &init.owner()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accountId"], init.account_id.as_str());
    let Reply { status, body, .. } = get(&http, &s.url("/v1/accounts"), &init.operator()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let accounts = body["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 1, "{body}");
    assert_eq!(accounts[0]["id"], init.account_id.as_str());
    let status = s.stop_with("-TERM");
    assert!(status.success(), "serve exited with {status}");
}

#[tokio::test]
async fn serve_initializes_an_empty_store_and_the_walkthrough_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut s = serve(&data, &[]);

    let init = parse_text_report(&s.before);
    assert_init_shape(&init);
    assert!(
        s.url.starts_with("http://127.0.0.1:"),
        "listening URL: {}",
        s.url
    );
    assert!(
        !s.url.ends_with(":0"),
        "the real port is printed: {}",
        s.url
    );
    assert_eq!(mode(&data.join("master.key")), 0o600);
    assert_eq!(mode(&data), 0o700);

    let http = client();
    let Reply { status, body, .. } = call(&http, Method::GET, &s.url("/healthz"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The owner key (Basic act_) creates an app and an app key.
    let owner = init.owner();
    let app_id = create_app(&http, &s, &owner, "Chat").await;
    assert!(app_id.starts_with("ap_"), "{app_id}");
    let key = create_app_key(&http, &s, &owner, &app_id).await;
    let Reply { status, body, .. } =
        get(&http, &s.url(&format!("/v1/apps/{app_id}")), &key.basic()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An appUser JWT minted by the CLI creates and reads its user.
    let jwt = mint(&key.id, &key.secret, "appUser", Some("alice"));
    let bearer = format!("Bearer {jwt}");
    let alice = s.url(&format!("/v1/apps/{app_id}/users/alice"));
    let Reply { status, body, .. } = get(&http, &alice, &bearer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["externalId"], "alice", "{body}");
    // The user now exists for the app key too.
    let Reply { status, body, .. } = get(&http, &alice, &key.basic()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["externalId"], "alice", "{body}");

    // The verification service accepts the same JWT.
    let Reply { status, body, .. } = post(
        &http,
        &s.url("/v1/verify"),
        &init.operator(),
        json!({"authorization": bearer, "appId": app_id, "userId": "alice"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["valid"], true, "{body}");
    assert_eq!(body["scope"], "appUser", "{body}");
    assert_eq!(body["appId"], app_id.as_str(), "{body}");
    assert_eq!(body["userId"], "alice", "{body}");
    assert_eq!(body["keyId"], key.id.as_str(), "{body}");
    assert_eq!(body["accountId"], init.account_id.as_str(), "{body}");

    let status = s.stop_with("-TERM");
    assert!(status.success(), "serve exited with {status}");
}

#[tokio::test]
async fn sigterm_flushes_last_used_and_a_restart_rebuilds_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Flush lastUsedAt only hourly: only the shutdown can write it here.
    let flags = ["--last-used-flush-seconds", "3600"];
    let mut s = serve(&data, &flags);
    let init = parse_text_report(&s.before);
    let owner = init.owner();
    let http = client();

    let app_id = create_app(&http, &s, &owner, "Durable").await;
    let key = create_app_key(&http, &s, &owner, &app_id).await;
    let key_url = s.url(&format!("/v1/apps/{app_id}/keys/{}", key.id));
    let Reply { status, body, .. } = get(&http, &key_url, &owner).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["key"]["lastUsedAt"].is_null(), "unused yet: {body}");

    let Reply { status, body, .. } =
        get(&http, &s.url(&format!("/v1/apps/{app_id}")), &key.basic()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let Reply { status, body, .. } = get(&http, &key_url, &owner).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let last_used = body["key"]["lastUsedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("lastUsedAt set after use: {body}"))
        .to_string();

    // SIGTERM, with the client's keep-alive connection still open.
    let started = Instant::now();
    let status = s.stop_with("-TERM");
    assert!(
        status.success(),
        "serve exited with {status} after SIGTERM\nstderr:\n{}",
        s.proc.stderr_text()
    );
    assert!(started.elapsed() < SHUTDOWN);
    drop(http);
    // The log's last lines, gathered rather than written one by one, are
    // written before the process exits (the reader thread may still be
    // taking them from the pipe).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.proc.stderr_text().contains("stopped") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = s.proc.stderr_text();
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.contains("stopped") && log.contains("shutting down"),
        "the log does not end with the shutdown's lines:\n{log}"
    );

    // Restart on the same data dir: no init this time.
    let mut s = serve(&data, &flags);
    assert!(
        s.before.is_empty(),
        "a restart printed init output: {:?}",
        s.before
    );
    let http = client();
    let key_url = s.url(&format!("/v1/apps/{app_id}/keys/{}", key.id));
    // Read lastUsedAt before the key is used again.
    let Reply { status, body, .. } = get(&http, &key_url, &owner).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["key"]["lastUsedAt"].as_str(),
        Some(last_used.as_str()),
        "lastUsedAt did not survive the restart (not flushed on shutdown?): {body}"
    );
    // The index was rebuilt from the encrypted store.
    let Reply { status, body, .. } =
        get(&http, &s.url(&format!("/v1/apps/{app_id}")), &key.basic()).await;
    assert_eq!(status, StatusCode::OK, "app key after restart: {body}");
    let jwt = mint(&key.id, &key.secret, "app", None);
    let Reply { status, body, .. } = get(
        &http,
        &s.url(&format!("/v1/apps/{app_id}")),
        &format!("Bearer {jwt}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "app JWT after restart: {body}");

    // SIGINT stops it as cleanly.
    let status = s.stop_with("-INT");
    assert!(
        status.success(),
        "serve exited with {status} after SIGINT\nstderr:\n{}",
        s.proc.stderr_text()
    );
}

#[tokio::test]
async fn secrets_are_neither_stored_nor_logged_in_plain_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = init(&data, None);
    // Started on an initialized store: its stdout has no init report, so
    // nothing secret may appear there at all.
    let mut s = serve(&data, &[]);
    assert!(s.before.is_empty(), "{:?}", s.before);
    let http = client();
    let owner = init.owner();

    let app_id = create_app(&http, &s, &owner, "Secretive").await;
    let k1 = create_app_key(&http, &s, &owner, &app_id).await;
    let k2 = create_app_key(&http, &s, &owner, &app_id).await;

    let Reply { status, body, .. } = post(
        &http,
        &s.url("/v1/serviceAccounts"),
        &owner,
        json!({"displayName": "robot"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sa_id = field(&body, "/serviceAccount/id");
    let Reply { status, body, .. } = post(
        &http,
        &s.url(&format!("/v1/serviceAccounts/{sa_id}/keys")),
        &owner,
        json!({"displayName": "robot key"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let svc = Key::from_body(&body);

    let second_password = "correct horse battery staple 42";
    let Reply { status, body, .. } = post(
        &http,
        &s.url("/v1/accounts"),
        &init.operator(),
        json!({"displayName": "Second", "owner": {"email": "second@example.com", "password": second_password}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second = Key::from_body(&body);

    // Successful requests.
    let app_url = s.url(&format!("/v1/apps/{app_id}"));
    let Reply { status, .. } = get(&http, &app_url, &k1.basic()).await;
    assert_eq!(status, StatusCode::OK);
    let Reply { status, .. } = get(&http, &s.url("/v1/account"), &svc.basic()).await;
    assert_eq!(status, StatusCode::OK);
    let Reply { status, .. } = get(&http, &s.url("/v1/account"), &second.basic()).await;
    assert_eq!(status, StatusCode::OK);
    let jwt = mint(&k2.id, &k2.secret, "appUser", Some("bob"));
    let Reply { status, .. } = get(
        &http,
        &s.url(&format!("/v1/apps/{app_id}/users/bob")),
        &format!("Bearer {jwt}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Failed requests with wrong secrets.
    let bad_checksum = mutate_last(&k1.secret);
    let other_secret = k2.secret.clone(); // well-formed, but not k1's
    let wrong_operator = mutate_last(&init.operator_token);
    for auth in [
        basic(&k1.id, &bad_checksum),
        basic(&k1.id, &other_secret),
        basic(&init.key_id, &k1.secret),
        format!("Bearer {wrong_operator}"),
        format!("Bearer {}", init.key_secret),
        format!("Bearer {}", mint(&k1.id, &k2.secret, "app", None)),
    ] {
        let Reply { status, body, .. } = get(&http, &app_url, &auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth}: {body}");
    }
    let Reply { status, body, .. } = post(
        &http,
        &s.url("/v1/verify"),
        &init.operator(),
        json!({"authorization": basic(&k1.id, &other_secret), "appId": app_id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["valid"], false, "{body}");
    // The operator token where it is not accepted, and an account key on
    // the operator-only endpoint.
    let Reply { status, .. } = get(&http, &app_url, &init.operator()).await;
    assert!(status.is_client_error(), "{status}");
    let Reply { status, .. } = post(
        &http,
        &s.url("/v1/verify"),
        &owner,
        json!({"authorization": k1.basic()}),
    )
    .await;
    assert!(status.is_client_error(), "{status}");

    // What must never appear in plain text. The 43-character random body of
    // each secret is searched too, in case a secret is printed without its
    // prefix; Basic header values carry the secret base64-encoded.
    let mut needles = BTreeMap::new();
    let mut secret = |name: &str, value: &str| {
        needles.insert(name.to_string(), value.to_string());
        let body = value
            .strip_prefix("lksk_")
            .or_else(|| value.strip_prefix("lkop_"))
            .expect("a prefixed secret");
        needles.insert(format!("{name} (body)"), body[..43].to_string());
    };
    secret("operator token", &init.operator_token);
    secret("owner key secret", &init.key_secret);
    secret("app key 1 secret", &k1.secret);
    secret("app key 2 secret", &k2.secret);
    secret("service account key secret", &svc.secret);
    secret("second account key secret", &second.secret);
    secret("mistyped app key secret", &bad_checksum);
    secret("mistyped operator token", &wrong_operator);
    needles.insert("owner password".into(), init.password.clone());
    needles.insert("second owner password".into(), second_password.into());
    let mut secret_headers = BTreeMap::new();
    for (name, key) in [
        (
            "owner key",
            Key {
                id: init.key_id.clone(),
                secret: init.key_secret.clone(),
            },
        ),
        ("app key 1", k1.clone()),
        ("app key 2", k2.clone()),
        ("service account key", svc.clone()),
        ("second account key", second.clone()),
    ] {
        let header = key.basic();
        let encoded = header.strip_prefix("Basic ").expect("basic").to_string();
        secret_headers.insert(format!("{name} Basic header"), encoded);
    }

    // The database while running.
    let files = database_files(&data);
    assert!(
        files.iter().any(|f| f.ends_with("latchkey.db")),
        "no latchkey.db: {files:?}"
    );
    for file in &files {
        let bytes = std::fs::read(file).expect("read database file");
        let found = leaks(&bytes, &needles);
        assert!(
            found.is_empty(),
            "{} (while serving) contains in plain text: {found:?}",
            file.display()
        );
    }

    let status = s.stop_with("-TERM");
    assert!(status.success(), "serve exited with {status}");

    // The database after shutdown (WAL checkpointed or not).
    let files = database_files(&data);
    let total: usize = files
        .iter()
        .map(|f| std::fs::read(f).expect("read database file").len())
        .sum();
    assert!(total > 0, "empty database: {files:?}");
    for file in &files {
        let bytes = std::fs::read(file).expect("read database file");
        let found = leaks(&bytes, &needles);
        assert!(
            found.is_empty(),
            "{} (after shutdown) contains in plain text: {found:?}",
            file.display()
        );
    }

    // The logs.
    let stdout = s.proc.stdout_bytes();
    let stderr = s.proc.stderr_bytes();
    assert!(
        !stderr.is_empty(),
        "the server logged nothing (expected startup and shutdown lines)"
    );
    for (name, bytes) in [("stdout", &stdout), ("stderr", &stderr)] {
        let mut found = leaks(bytes, &needles);
        found.extend(leaks(bytes, &secret_headers));
        assert!(
            found.is_empty(),
            "the server's {name} contains: {found:?}\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// A credential a client puts in a URL never reaches the log. The access
/// log writes each request's path (never its query or headers), so a
/// secret in a path is redacted to its prefix (`lksk_[redacted]`) and a
/// JWT to `eyJ[redacted]`, percent-encoded or not: on the API at INFO, and
/// at DEBUG on forward-auth and the gateway.
#[tokio::test]
async fn credentials_in_urls_are_not_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = init(&data, None);
    // The gateway's upstream is a closed port: its answers are 401 or 502,
    // and its access lines are what counts.
    let mut cmd = serve_cmd(
        &data,
        &[
            "--gateway-listen",
            "127.0.0.1:0",
            "--gateway-upstream",
            "http://127.0.0.1:9",
        ],
    );
    cmd.env("LATCHKEY_LOG", "info,sqlx=warn,latchkey::access=debug");
    let mut s = start(cmd);
    let deadline = Instant::now() + STARTUP;
    let gateway = loop {
        let out = s.proc.stdout_text();
        if let Some(rest) = out.split("latchkey gateway listening on ").nth(1) {
            break rest.lines().next().expect("a line").trim().to_string();
        }
        assert!(Instant::now() < deadline, "no gateway line:\n{out}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let http = client();
    let owner = init.owner();
    let app_id = create_app(&http, &s, &owner, "Logged").await;
    let key = create_app_key(&http, &s, &owner, &app_id).await;
    let jwt = mint(&key.id, &key.secret, "appUser", Some("alice"));
    let Reply { status, body, .. } = post(
        &http,
        &s.url(&format!("/v1/apps/{app_id}/webhooks")),
        &owner,
        json!({"target": "https://hooks.example.com/in", "triggers": ["key:expired"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let webhook_secret = field(&body, "/webhook/secret");
    let Reply { status, body, .. } = post(
        &http,
        &s.url("/v1/verifierTokens"),
        &init.operator(),
        json!({"displayName": "api"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let verifier_token = field(&body, "/verifierToken/token");

    let secrets = [
        ("app key secret", key.secret.clone()),
        ("owner key secret", init.key_secret.clone()),
        ("operator token", init.operator_token.clone()),
        ("verifier token", verifier_token),
        ("webhook secret", webhook_secret),
    ];
    let encoded = |text: &str| -> String { text.bytes().map(|b| format!("%{b:02X}")).collect() };
    // What must not appear: each secret's body, as written and
    // percent-encoded, and the JWT's claims and signature.
    let mut needles = BTreeMap::new();
    for (name, secret) in &secrets {
        let body = &secret[5..];
        needles.insert(format!("{name} (body)"), body[..43].to_string());
        needles.insert(format!("{name} (encoded body)"), encoded(&body[..20]));
    }
    let jwt_tail = &jwt[jwt.find('.').expect("dot")..];
    needles.insert("JWT claims and signature".into(), jwt_tail.to_string());

    let mut requested = 0;
    for (_, secret) in &secrets {
        let half = secret.len() / 2;
        let partly_encoded = format!("{}{}", &secret[..half], encoded(&secret[half..]));
        for path in [
            format!("/v1/apps/{secret}"),
            format!("/v1/apps/{app_id}/users/{secret}"),
            format!("/v1/apps/{secret}/keys?after={secret}"),
            format!("/v1/apps/{partly_encoded}"),
            format!("/v1/apps/{}", encoded(secret)),
            format!("/v1/{secret}/{secret}"),
        ] {
            let Reply { status, .. } = get(&http, &s.url(&path), &owner).await;
            assert!(status.is_client_error(), "{path}: {status}");
            let status = http
                .get(format!("{gateway}{path}"))
                .send()
                .await
                .expect("gateway")
                .status();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "gateway {path}");
            requested += 1;
        }
        let status = http
            .get(s.url("/v1/forward-auth"))
            .header("x-forwarded-uri", format!("/v2/{secret}"))
            .header("x-forwarded-method", "GET")
            .send()
            .await
            .expect("forward-auth")
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for path in [
        format!("/v1/apps/{app_id}/users/{jwt}"),
        format!("/v1/apps/{app_id}/users/{}", jwt.replace('.', "%2E")),
    ] {
        let Reply { status, .. } = get(&http, &s.url(&path), &owner).await;
        assert!(status.is_client_error(), "{path}: {status}");
        let status = http
            .get(format!("{gateway}{path}"))
            .send()
            .await
            .expect("gateway")
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "gateway {path}");
    }
    assert_eq!(requested, secrets.len() * 6);

    let status = s.stop_with("-TERM");
    assert!(status.success(), "serve exited with {status}");
    let log = s.proc.stderr_bytes();
    let text = String::from_utf8_lossy(&log);
    let found = leaks(&log, &needles);
    assert!(found.is_empty(), "the log holds: {found:?}\n{text}");
    // The lines were written, redacted: API (INFO), gateway (DEBUG).
    for written in [
        format!("/v1/apps/lksk_{REDACTED}"),
        format!("/v1/apps/lkop_{REDACTED}"),
        format!("/v1/apps/lkvf_{REDACTED}"),
        format!("/v1/apps/lkwh_{REDACTED}"),
        format!("/v1/apps/{app_id}/users/eyJ{REDACTED}"),
        format!("/v1/apps/{}{REDACTED}", encoded("lksk_")),
    ] {
        assert!(text.contains(&written), "no line with {written}:\n{text}");
    }
    let gateway_lines = text
        .lines()
        .filter(|l| l.contains("latchkey::access") && l.contains("status=401"))
        .filter(|l| l.contains(&format!("/v1/{}{REDACTED}/", "lksk_")))
        .count();
    assert!(gateway_lines >= 1, "no gateway line:\n{text}");
}

#[tokio::test]
async fn serve_refuses_a_wrong_or_missing_master_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = init(&data, None);
    let master_path = data.join("master.key");
    let master = std::fs::read_to_string(&master_path).expect("read master.key");
    let wrong = STANDARD.encode([7u8; 32]);
    assert_ne!(master.trim(), wrong);

    let refused = |out: &Finished, what: &str| {
        out.assert_failed(what);
        assert!(
            !out.stdout.contains(LISTENING),
            "{what}: it served anyway: {:?}",
            out.stdout
        );
        assert!(
            !out.stdout.contains("lksk_") && !out.stdout.contains("lkop_"),
            "{what}: printed secrets (re-initialized?): {:?}",
            out.stdout
        );
    };

    // A different valid key in LATCHKEY_MASTER_KEY.
    let mut cmd = serve_cmd(&data, &[]);
    cmd.env("LATCHKEY_MASTER_KEY", &wrong);
    let out = run(cmd);
    refused(&out, "serve with a wrong LATCHKEY_MASTER_KEY");
    assert!(
        out.stderr.to_lowercase().contains("master key"),
        "the refusal should mention the master key: {:?}",
        out.stderr
    );

    // A different valid key in LATCHKEY_MASTER_KEY_FILE.
    let wrong_file = dir.path().join("wrong.key");
    std::fs::write(&wrong_file, format!("{wrong}\n")).expect("write wrong.key");
    std::fs::set_permissions(&wrong_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod wrong.key");
    let mut cmd = serve_cmd(&data, &[]);
    cmd.env("LATCHKEY_MASTER_KEY_FILE", &wrong_file);
    let out = run(cmd);
    refused(&out, "serve with a wrong LATCHKEY_MASTER_KEY_FILE");
    assert!(
        out.stderr.to_lowercase().contains("master key"),
        "the refusal should mention the master key: {:?}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&master_path).expect("read master.key"),
        master,
        "master.key changed"
    );

    // master.key deleted, no variable.
    std::fs::remove_file(&master_path).expect("delete master.key");
    let out = run(serve_cmd(&data, &[]));
    refused(&out, "serve without master.key");
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("master key") && err.contains("missing"),
        "the refusal should say the master key is missing: {:?}",
        out.stderr
    );
    assert!(
        !master_path.exists(),
        "serve generated a new master.key for an initialized store"
    );

    // The right key through LATCHKEY_MASTER_KEY still opens the store.
    let mut cmd = serve_cmd(&data, &[]);
    cmd.env("LATCHKEY_MASTER_KEY", master.trim());
    let mut s = start(cmd);
    assert!(s.before.is_empty(), "{:?}", s.before);
    let http = client();
    let Reply { status, body, .. } = get(&http, &s.url("/v1/account"), &init.owner()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = s.stop_with("-TERM");
    assert!(status.success(), "serve exited with {status}");
    assert!(!master_path.exists(), "serve wrote master.key");
}

#[tokio::test]
async fn serve_over_https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert_pem = certified.cert.pem();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).expect("write cert.pem");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key.pem");

    let mut cmd = serve_cmd(&data, &[]);
    cmd.arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path);
    let mut s = start(cmd);
    let init = parse_text_report(&s.before);
    let port: u16 = s
        .url
        .strip_prefix("https://127.0.0.1:")
        .unwrap_or_else(|| panic!("not an https URL on 127.0.0.1: {}", s.url))
        .parse()
        .expect("port");
    assert_ne!(port, 0);

    let http = latchkey_testkit::client_builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("cert")])
        .resolve(
            "localhost",
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .expect("https client");
    let base = format!("https://localhost:{port}");
    let Reply { status, body, .. } =
        call(&http, Method::GET, &format!("{base}/healthz"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let Reply { status, body, .. } = get(&http, &format!("{base}/v1/account"), &init.owner()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accountId"], init.account_id.as_str());

    let status = s.stop_with("-TERM");
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn token_refuses_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = init(&dir.path().join("data"), None);
    let app_key_id = "app_0123456789abcdefghijkl";

    // Good input works (the control).
    let jwt = mint(&init.key_id, &init.key_secret, "account", None);
    let header = jwt.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url header"))
            .expect("JSON header");
    assert_eq!(header["kid"], init.key_id.as_str(), "{header}");
    assert_eq!(header["alg"], "HS256", "{header}");
    mint(app_key_id, &init.key_secret, "appUser", Some("alice"));

    let refused = |out: Finished, what: &str, says: &str| {
        out.assert_failed(what);
        assert!(
            out.stdout.trim().is_empty(),
            "{what}: printed a token anyway: {:?}",
            out.stdout
        );
        assert!(
            out.stderr.contains(says),
            "{what}: the message should mention {says:?}: {:?}",
            out.stderr
        );
    };

    let bad = mutate_last(&init.key_secret);
    refused(
        run(token_cmd(&init.key_id, &bad, "account", None)),
        "a secret with a bad checksum",
        "checksum",
    );
    refused(
        run(token_cmd(app_key_id, &init.key_secret, "appUser", None)),
        "--scope appUser without --user-id",
        "--user-id",
    );
    refused(
        run(token_cmd(app_key_id, &init.key_secret, "appUser", Some(""))),
        "--scope appUser with an empty --user-id",
        "--user-id",
    );
    refused(
        run(token_cmd(app_key_id, &init.key_secret, "account", None)),
        "an app_ key with --scope account",
        "act_",
    );
}
