//! The operator's commands over the real binary: `admin operator-token`
//! and `admin reset-password` (also against a running server, on SQLite and
//! on PostgreSQL), `backup` and `restore`, the configuration file and
//! `config check`, `completions` and `man`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use latchkey_testkit::{field, get, post};
use support::{Finished, Init, Proc, client, init, latchkey, run, serve_cmd};

/// How long a running server may take to honour a token created or
/// revoked by `latchkey admin`. The design is a quarter of a second on
/// SQLite (its poll of the change feed) and a notification on PostgreSQL;
/// the bound leaves room for a machine loaded by other tests.
const HONOURED_WITHIN: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

struct Server {
    proc: Proc,
    url: String,
}

impl Server {
    fn start(cmd: Command) -> Self {
        let mut proc = Proc::spawn(cmd);
        let (url, _) = proc.wait_listening();
        Server { proc, url }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn stop(mut self) {
        self.proc.signal("-TERM");
        let status = self.proc.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "serve exited with {status}");
    }
}

/// `latchkey ARGS… [--database-url URL]` run to its end.
fn latchkey_run(args: &[&str], data: &Path, database_url: Option<&str>) -> Finished {
    let mut cmd = latchkey();
    cmd.args(args).arg("--data-dir").arg(data);
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    run(cmd)
}

/// The one line of JSON a `--json` command printed; panics if it failed.
fn json_of(out: &Finished, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{what} --json printed no JSON ({e}): {:?}", out.stdout))
}

fn serve_on(data: &Path, database_url: Option<&str>) -> Server {
    let mut extra = Vec::new();
    if let Some(url) = database_url {
        extra.extend(["--database-url", url]);
    }
    Server::start(serve_cmd(data, &extra))
}

/// Polls `GET /v1/accounts` with `token` until it answers `want`; the time
/// that took. Fails the test after `HONOURED_WITHIN`.
async fn until_status(
    http: &reqwest::Client,
    s: &Server,
    token: &str,
    want: StatusCode,
) -> Duration {
    let start = Instant::now();
    let auth = format!("Bearer {token}");
    loop {
        let r = get(http, &s.url("/v1/accounts"), &auth).await;
        if r.status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < HONOURED_WITHIN,
            "the running server still answers {} (want {want}) {:?} after the command: {}",
            r.status,
            start.elapsed(),
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A fresh, empty PostgreSQL schema's URL.
async fn pg_url() -> String {
    latchkey_testdb::fresh_schema().await.url
}

// ---------------------------------------------------------------------------
// admin operator-token
// ---------------------------------------------------------------------------

async fn operator_tokens_reach_a_running_server(database_url: Option<&str>) {
    let dir = tempdir();
    let data = dir.path();
    let first: Init = init(data, database_url);
    let server = serve_on(data, database_url);
    let http = client();

    // A new token, while the server runs: honoured without a restart.
    let created = json_of(
        &latchkey_run(
            &["admin", "operator-token", "create", "--json"],
            data,
            database_url,
        ),
        "operator-token create",
    );
    let new_id = field(&created, "/id");
    let new_token = field(&created, "/token");
    assert!(new_id.starts_with("op_"), "{created}");
    assert!(new_token.starts_with("lkop_"), "{created}");
    let took = until_status(&http, &server, &new_token, StatusCode::OK).await;
    eprintln!("a created operator token was honoured after {took:?}");
    // The old one keeps working.
    let r = get(&http, &server.url("/v1/accounts"), &first.operator()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Listed: ids and times, never the tokens.
    let list = latchkey_run(
        &["admin", "operator-token", "list", "--json"],
        data,
        database_url,
    );
    let listed = json_of(&list, "operator-token list");
    let ids: Vec<String> = listed["operatorTokens"]
        .as_array()
        .expect("operatorTokens")
        .iter()
        .map(|t| field(t, "/id"))
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    assert!(ids.contains(&new_id), "{listed}");
    assert!(!list.stdout.contains(&new_token), "list printed a token");
    assert!(
        !list.stdout.contains(&first.operator_token),
        "list printed a token"
    );
    let old_id = ids
        .iter()
        .find(|i| **i != new_id)
        .expect("the first token")
        .clone();

    // Revoking the first one: refused by the running server.
    let revoked = json_of(
        &latchkey_run(
            &["admin", "operator-token", "revoke", &old_id, "--json"],
            data,
            database_url,
        ),
        "operator-token revoke",
    );
    assert_eq!(revoked["revoked"], old_id.as_str(), "{revoked}");
    let took = until_status(
        &http,
        &server,
        &first.operator_token,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    eprintln!("a revoked operator token was refused after {took:?}");
    let r = get(
        &http,
        &server.url("/v1/accounts"),
        &format!("Bearer {new_token}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // The last token is kept unless --force; an unknown id is an error.
    let last = latchkey_run(
        &["admin", "operator-token", "revoke", &new_id],
        data,
        database_url,
    );
    last.assert_failed("revoking the last operator token");
    assert!(last.stderr.contains("--force"), "{}", last.stderr);
    let r = get(
        &http,
        &server.url("/v1/accounts"),
        &format!("Bearer {new_token}"),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the refused revoke changed something: {}",
        r.body
    );
    let unknown = latchkey_run(
        &["admin", "operator-token", "revoke", "op_doesnotexist"],
        data,
        database_url,
    );
    unknown.assert_failed("revoking an unknown token");
    assert!(
        unknown.stderr.contains("op_doesnotexist"),
        "{}",
        unknown.stderr
    );
    server.stop();
}

#[tokio::test]
async fn admin_operator_tokens_reach_a_running_sqlite_server() {
    operator_tokens_reach_a_running_server(None).await;
}

#[tokio::test]
async fn admin_operator_tokens_reach_a_running_postgres_server() {
    let url = pg_url().await;
    operator_tokens_reach_a_running_server(Some(&url)).await;
}

/// action, actor_type, actor_id, target_id, details
type AuditRow = (String, String, Option<String>, Option<String>, String);

#[tokio::test]
async fn admin_commands_are_audited_as_the_operator() {
    let dir = tempdir();
    let data = dir.path();
    let first = init(data, None);
    let created = json_of(
        &latchkey_run(&["admin", "operator-token", "create", "--json"], data, None),
        "operator-token create",
    );
    let reset = json_of(
        &latchkey_run(
            &["admin", "reset-password", "--email", &first.email, "--json"],
            data,
            None,
        ),
        "reset-password",
    );
    assert_eq!(field(&reset, "/userAccountId"), first.user_id, "{reset}");

    let db = format!("sqlite://{}", data.join("latchkey.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .expect("open the store");
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT action, actor_type, actor_id, target_id, details FROM audit_events \
         WHERE action IN ('operatorToken.created', 'userAccount.passwordReset') ORDER BY seq",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read the audit log");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "operatorToken.created");
    assert_eq!(rows[0].3.as_deref(), Some(field(&created, "/id").as_str()));
    assert_eq!(rows[1].0, "userAccount.passwordReset");
    assert_eq!(rows[1].3.as_deref(), Some(first.user_id.as_str()));
    for row in &rows {
        assert_eq!(row.1, "operator", "{row:?}");
        assert!(row.4.contains("latchkey admin"), "{row:?}");
        assert!(
            !row.4.contains(&field(&reset, "/password")),
            "a password in the audit log"
        );
    }
}

// ---------------------------------------------------------------------------
// admin reset-password
// ---------------------------------------------------------------------------

/// Signs in to the dashboard; whether the password was accepted (a
/// redirect to the dashboard) or refused (the form again).
async fn signs_in(s: &Server, email: &str, password: &str) -> bool {
    let http = support::client_no_redirects();
    let form = http
        .get(s.url("/dashboard/signin"))
        .send()
        .await
        .expect("sign-in form");
    let cookies: Vec<String> = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect();
    let body = form.text().await.expect("form body");
    let marker = r#"name="csrf" value=""#;
    let start = body.find(marker).expect("a csrf field") + marker.len();
    let csrf = &body[start..start + body[start..].find('"').expect("end of value")];
    let resp = http
        .post(s.url("/dashboard/signin"))
        .header("cookie", cookies.join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(url_form(&[
            ("csrf", csrf),
            ("email", email),
            ("password", password),
        ]))
        .send()
        .await
        .expect("sign in");
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    status == StatusCode::SEE_OTHER && location == "/dashboard"
}

fn url_form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn reset_password_gives_a_working_one_time_password() {
    let dir = tempdir();
    let data = dir.path();
    let first = init(data, None);
    let server = serve_on(data, None);
    assert!(
        signs_in(&server, &first.email, &first.password).await,
        "the first password"
    );

    let out = latchkey_run(
        &["admin", "reset-password", "--email", &first.email],
        data,
        None,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let reset = json_of(
        &latchkey_run(
            &["admin", "reset-password", "--email", &first.email, "--json"],
            data,
            None,
        ),
        "reset-password",
    );
    let password = field(&reset, "/password");
    assert_eq!(field(&reset, "/email"), first.email);
    assert!(
        !signs_in(&server, &first.email, &first.password).await,
        "the old password still works"
    );
    assert!(
        signs_in(&server, &first.email, &password).await,
        "the new password is refused"
    );

    // An unknown email: a clear error, nothing changed.
    let unknown = latchkey_run(
        &["admin", "reset-password", "--email", "nobody@example.com"],
        data,
        None,
    );
    unknown.assert_failed("reset-password for an unknown email");
    assert!(
        unknown.stderr.contains("nobody@example.com"),
        "{}",
        unknown.stderr
    );
    assert!(signs_in(&server, &first.email, &password).await);
    server.stop();
}

#[tokio::test]
async fn admin_needs_an_initialized_store() {
    let dir = tempdir();
    let out = latchkey_run(&["admin", "operator-token", "list"], dir.path(), None);
    out.assert_failed("admin on an empty data directory");
    assert!(
        out.stderr.contains("no Latchkey store") && out.stderr.contains("--data-dir"),
        "the error should say what is missing: {}",
        out.stderr
    );
    assert!(
        !dir.path().join("latchkey.db").exists(),
        "admin created a store where there was none"
    );
}

// ---------------------------------------------------------------------------
// backup and restore
// ---------------------------------------------------------------------------

#[tokio::test]
async fn backup_under_write_load_restores_every_acknowledged_write() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let first = init(&data, None);
    let server = serve_on(&data, None);
    let http = client();

    // Writers: create apps as fast as the server acknowledges them.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, apps, acked, stop) = (
            http.clone(),
            server.url("/v1/apps"),
            Arc::clone(&acked),
            Arc::clone(&stop),
        );
        let owner = first.owner();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = post(
                    &http,
                    &apps,
                    &owner,
                    json!({"displayName": format!("load {w}-{n}")}),
                )
                .await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                acked.lock().expect("acked").push(field(&r.body, "/app/id"));
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_backup: Vec<String> = acked.lock().expect("acked").clone();
    assert!(!before_backup.is_empty(), "no write was acknowledged");
    let file = dir.path().join("backup.db");
    let file_arg = file.to_str().expect("utf-8 path").to_string();
    let data_arg = data.clone();
    let backed_up = tokio::task::spawn_blocking(move || {
        latchkey_run(&["backup", "--to", &file_arg, "--json"], &data_arg, None)
    })
    .await
    .expect("backup");
    let after_backup: Vec<String> = acked.lock().expect("acked").clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let report = json_of(&backed_up, "backup");
    assert!(report["bytes"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(
        after_backup.len() > before_backup.len(),
        "no write was acknowledged while the backup ran: the test did not load it"
    );

    // A second backup to the same file is refused and leaves it alone.
    let size = std::fs::metadata(&file).expect("backup file").len();
    let again = latchkey_run(
        &["backup", "--to", file.to_str().expect("path")],
        &data,
        None,
    );
    again.assert_failed("a backup over an existing file");
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    assert_eq!(std::fs::metadata(&file).expect("backup file").len(), size);

    // Restore into a new data directory holding the same master key.
    server.stop();
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).expect("mkdir");
    std::fs::copy(data.join("master.key"), restored.join("master.key")).expect("copy master.key");
    let out = json_of(
        &latchkey_run(
            &["restore", "--from", file.to_str().expect("path"), "--json"],
            &restored,
            None,
        ),
        "restore",
    );
    assert!(out["replaced"].is_null(), "{out}");
    let server = serve_on(&restored, None);
    let mut present: Vec<String> = Vec::new();
    loop {
        let mut url = server.url("/v1/apps?limit=100");
        if let Some(last) = present.last() {
            url.push_str(&format!("&after={last}"));
        }
        let r = get(&http, &url, &first.owner()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let page: Vec<String> = r.body["apps"]
            .as_array()
            .expect("apps")
            .iter()
            .map(|a| field(a, "/id"))
            .collect();
        let done = page.len() < 100;
        present.extend(page);
        if done {
            break;
        }
    }
    for id in &before_backup {
        assert!(
            present.contains(id),
            "app {id}, acknowledged before the backup, is missing"
        );
    }
    // Consistent: nothing that was never acknowledged (every app the backup
    // holds was acknowledged by the time the writers stopped).
    let all = acked.lock().expect("acked").clone();
    for id in &present {
        assert!(
            all.contains(id),
            "the backup holds {id}, which no writer created"
        );
    }
    eprintln!(
        "{} writes before the backup, {} when it returned, {} in the backup",
        before_backup.len(),
        after_backup.len(),
        present.len()
    );
    // Every key works after the restore: the owner's key verified above.
    server.stop();
}

#[tokio::test]
async fn restore_refuses_a_running_server_an_existing_store_and_a_bad_file() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let first = init(&data, None);
    let file = dir.path().join("backup.db");
    let file_arg = file.to_str().expect("path");
    json_of(
        &latchkey_run(&["backup", "--to", file_arg, "--json"], &data, None),
        "backup",
    );

    // While serve runs on the directory.
    let server = serve_on(&data, None);
    let out = latchkey_run(&["restore", "--from", file_arg, "--force"], &data, None);
    out.assert_failed("restore under a running server");
    assert!(out.stderr.contains("running"), "{}", out.stderr);
    server.stop();

    // Over an existing store without --force.
    let out = latchkey_run(&["restore", "--from", file_arg], &data, None);
    out.assert_failed("restore over a store without --force");
    assert!(out.stderr.contains("--force"), "{}", out.stderr);

    // Not a SQLite database: refused, the store untouched.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not a database").expect("write");
    let before = std::fs::read(data.join("latchkey.db")).expect("read store");
    let out = latchkey_run(
        &["restore", "--from", junk.to_str().expect("path"), "--force"],
        &data,
        None,
    );
    out.assert_failed("restore of a file that is not a store");
    assert_eq!(
        std::fs::read(data.join("latchkey.db")).expect("read"),
        before
    );

    // A backup made under another master key.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).expect("random");
    let mut cmd = latchkey();
    cmd.args(["restore", "--from", file_arg, "--data-dir"])
        .arg(&other)
        .env("LATCHKEY_MASTER_KEY", STANDARD.encode(key));
    let out = run(cmd);
    out.assert_failed("restore with another master key");
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
    assert!(
        !other.join("latchkey.db").exists(),
        "a refused restore left a store behind"
    );

    // With --force: the old store is kept beside, the restored one serves.
    let out = json_of(
        &latchkey_run(
            &["restore", "--from", file_arg, "--force", "--json"],
            &data,
            None,
        ),
        "restore --force",
    );
    let replaced = PathBuf::from(field(&out, "/replaced"));
    assert!(replaced.exists(), "{out}");
    let server = serve_on(&data, None);
    let r = get(&client(), &server.url("/v1/account"), &first.owner()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    server.stop();
}

#[tokio::test]
async fn backup_of_a_postgres_store_points_at_pg_dump() {
    let dir = tempdir();
    let url = pg_url().await;
    init(dir.path(), Some(&url));
    let file = dir.path().join("b.db");
    let out = latchkey_run(
        &["backup", "--to", file.to_str().expect("path")],
        dir.path(),
        Some(&url),
    );
    out.assert_failed("backup of a PostgreSQL store");
    assert!(out.stderr.contains("pg_dump"), "{}", out.stderr);
    assert!(!file.exists());
}

// ---------------------------------------------------------------------------
// The configuration file
// ---------------------------------------------------------------------------

fn config_check(config: &Path, env: &[(&str, &str)], flags: &[&str]) -> Finished {
    let mut cmd = latchkey();
    cmd.args(["config", "check", "--config"])
        .arg(config)
        .args(flags);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd)
}

/// The line `key = …` of `config check`'s output.
fn setting<'a>(out: &'a Finished, key: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{}", out.stdout))
}

#[test]
fn config_file_is_layered_under_variables_and_flags() {
    let dir = tempdir();
    let file = dir.path().join("latchkey.toml");
    std::fs::write(
        &file,
        "header_timeout_seconds = 7\n\
         idle_timeout_seconds = 61\n\
         max_connections = 300\n\
         target_routes = [\"/v2/apps/{appId}/users/{userId}\", \"/v2/apps/{appId}\"]\n\
         allow_private_webhook_targets = true\n",
    )
    .expect("write");
    let out = config_check(
        &file,
        &[
            ("LATCHKEY_IDLE_TIMEOUT_SECONDS", "62"),
            ("LATCHKEY_MAX_CONNECTIONS", "400"),
        ],
        &["--max-connections", "500"],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(setting(&out, "header_timeout_seconds").contains("= 7  # from the configuration file"));
    assert!(setting(&out, "idle_timeout_seconds").contains("= 62  # from the environment"));
    assert!(setting(&out, "max_connections").contains("= 500  # from a flag"));
    assert!(setting(&out, "jwt_leeway_seconds").contains("# from the default"));
    assert!(setting(&out, "allow_private_webhook_targets").contains("= true"));
    let routes = setting(&out, "target_routes");
    assert!(
        routes.contains("/v2/apps/{appId}/users/{userId}"),
        "{routes}"
    );

    // What config check prints loads again as a configuration file.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out.stdout).expect("write");
    let again = config_check(&printed, &[], &[]);
    assert!(again.status.success(), "{}", again.stderr);
    assert!(setting(&again, "max_connections").contains("= 500"));
    assert!(setting(&again, "idle_timeout_seconds").contains("= 62"));
}

#[test]
fn the_public_url_is_checked() {
    let dir = tempdir();
    let file = dir.path().join("latchkey.toml");
    std::fs::write(&file, "public_url = \"https://auth.example.com/\"\n").expect("write");
    let out = config_check(&file, &[], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(setting(&out, "public_url").contains("https://auth.example.com"));
    for (bad, why) in [
        ("auth.example.com", "https://"),
        ("https://", "not a URL"),
        ("ftp://auth.example.com", "https://"),
        ("https://auth.example.com/?x=1", "query"),
    ] {
        let out = config_check(&file, &[], &["--public-url", bad]);
        out.assert_failed(bad);
        assert!(
            out.stderr.contains("--public-url") && out.stderr.contains(why),
            "{bad}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn serve_reads_its_settings_from_the_file() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let file = dir.path().join("latchkey.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {}\nlisten = \"127.0.0.1:0\"\nowner_email = \"ops@example.com\"\n",
            toml_string(data.to_str().expect("path"))
        ),
    )
    .expect("write");
    let mut cmd = latchkey();
    cmd.arg("serve").env("LATCHKEY_CONFIG", &file);
    let server = Server::start(cmd);
    assert!(
        data.join("latchkey.db").exists(),
        "the file's data_dir was not used"
    );
    let out = latchkey_run(&["admin", "operator-token", "list", "--json"], &data, None);
    json_of(&out, "operator-token list");
    let r = client()
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), StatusCode::OK);
    server.stop();
    let db = format!("sqlite://{}", data.join("latchkey.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .expect("open the store");
    let (email,): (String,) = sqlx::query_as("SELECT email FROM user_accounts LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .expect("the owner");
    assert_eq!(email, "ops@example.com");
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn config_file_errors_name_the_key() {
    let dir = tempdir();
    let file = dir.path().join("latchkey.toml");
    let cases: &[(&str, &str)] = &[
        ("listen_adress = \"127.0.0.1:1\"\n", "listen_adress"),
        ("header_timeout_seconds = 0\n", "header_timeout_seconds"),
        (
            "header_timeout_seconds = \"soon\"\n",
            "header_timeout_seconds",
        ),
        ("listen = \"not an address\"\n", "listen"),
        (
            "allow_private_webhook_targets = \"yes\"\n",
            "allow_private_webhook_targets",
        ),
        ("log_format = \"xml\"\n", "log_format"),
        ("this is not toml\n", "not valid TOML"),
    ];
    for (text, named) in cases {
        std::fs::write(&file, text).expect("write");
        let out = config_check(&file, &[], &[]);
        out.assert_failed(text);
        assert!(
            out.stderr.contains(named) && out.stderr.contains("latchkey.toml"),
            "{text:?}: the error should name {named:?} and the file: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    let missing = config_check(&dir.path().join("nope.toml"), &[], &[]);
    missing.assert_failed("a missing file");
    assert!(missing.stderr.contains("nope.toml"), "{}", missing.stderr);
}

#[test]
fn config_check_redacts_secrets() {
    let dir = tempdir();
    let url_file = dir.path().join("db-url");
    std::fs::write(
        &url_file,
        "postgres://latchkey:hunter2-url-file@db.internal/latchkey\n",
    )
    .expect("write");
    let file = dir.path().join("latchkey.toml");
    std::fs::write(
        &file,
        "master_key = \"c2VjcmV0LW1hc3Rlci1rZXktaW4tdGhlLWZpbGUtMzI=\"\n",
    )
    .expect("write");
    let out = config_check(
        &file,
        &[(
            "LATCHKEY_DATABASE_URL",
            "postgres://latchkey:hunter2@db.internal/latchkey",
        )],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    assert!(!out.stdout.contains("c2VjcmV0"), "{}", out.stdout);
    assert!(setting(&out, "database_url").contains("<redacted>"));
    assert!(setting(&out, "master_key").contains("<redacted>"));

    // The _FILE form: the file's name is shown, never what it holds.
    let mut cmd = latchkey();
    cmd.args(["config", "check", "--database-url-file"])
        .arg(&url_file);
    let out = run(cmd);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    assert!(setting(&out, "database_url_file").contains("db-url"));

    // Both forms at once is a mistake.
    let mut cmd = latchkey();
    cmd.args(["config", "check", "--database-url-file"])
        .arg(&url_file)
        .env("LATCHKEY_DATABASE_URL", "postgres://x@y/z");
    run(cmd).assert_failed("both the database URL and its file");
}

#[test]
fn the_example_configuration_file_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/latchkey.toml");
    let text = std::fs::read_to_string(&example).expect("deploy/latchkey.toml");
    let table: toml::Table = text.parse().expect("valid TOML");
    assert!(!table.is_empty(), "the example sets nothing");
    let out = config_check(&example, &[], &[]);
    assert!(out.status.success(), "{}", out.stderr);
    for key in table.keys() {
        let line = setting(&out, key);
        assert!(line.contains("# from the configuration file"), "{line}");
    }
}

// ---------------------------------------------------------------------------
// completions and man
// ---------------------------------------------------------------------------

#[test]
fn completions_and_man_page_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = latchkey();
        cmd.args(["completions", shell]);
        let out = run(cmd);
        assert!(out.status.success(), "{shell}: {}", out.stderr);
        for word in ["serve", "admin", "backup", "restore", "data-dir"] {
            assert!(out.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    // The bash script is valid bash.
    let mut cmd = latchkey();
    cmd.args(["completions", "bash"]);
    let script = run(cmd).stdout;
    let dir = tempdir();
    let path = dir.path().join("latchkey.bash");
    std::fs::write(&path, script).expect("write");
    let status = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .expect("bash");
    assert!(status.success(), "bash -n refused the completion script");

    let mut cmd = latchkey();
    cmd.arg("man");
    let out = run(cmd);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH latchkey"),
        "not roff"
    );
    for page in [
        "latchkey-serve",
        "latchkey-admin",
        "latchkey-backup",
        "latchkey-restore",
    ] {
        assert!(out.stdout.contains(page), "the man page lacks {page}");
    }
    let bad = {
        let mut cmd = latchkey();
        cmd.args(["completions", "tcsh"]);
        run(cmd)
    };
    bad.assert_failed("an unknown shell");
}
