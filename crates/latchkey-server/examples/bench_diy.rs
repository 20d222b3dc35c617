//! Benchmark baseline: the authentication a team would write itself instead
//! of running Latchkey. Per request it parses `Authorization: Basic`,
//! hashes the secret with SHA-256 and looks the hash up with one SQL query
//! in an SQLite database opened with Latchkey's settings (WAL, synchronous
//! FULL, foreign keys, busy timeout 10 s, a pool of 8 connections, sqlx).
//! Same tokio multi-thread runtime as `latchkey serve`.
//!
//! ```sh
//! cargo run --release -p latchkey-server --example bench_diy -- \
//!     --db /tmp/diy.db --listen 127.0.0.1:7402 --credential app_…:lksk_… [--extra-rows N]
//! ```
//!
//! `--credential` is stored (as the SHA-256 of its secret) so that requests
//! with it succeed; `--extra-rows` adds that many random rows, so the
//! lookup runs against a table of realistic size.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

struct Args {
    db: String,
    listen: String,
    credential: String,
    extra_rows: u64,
}

fn args() -> Args {
    let mut out = Args {
        db: "diy.db".into(),
        listen: "127.0.0.1:7402".into(),
        credential: String::new(),
        extra_rows: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("every flag takes a value");
        match flag.as_str() {
            "--db" => out.db = value,
            "--listen" => out.listen = value,
            "--credential" => out.credential = value,
            "--extra-rows" => out.extra_rows = value.parse().expect("--extra-rows: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        out.credential.contains(':'),
        "--credential KEY_ID:SECRET is required"
    );
    out
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

async fn open(path: &str) -> SqlitePool {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
        .expect("the database path")
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .expect("opening the database")
}

async fn seed(pool: &SqlitePool, credential: &str, extra_rows: u64) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS diy_keys (
             secret_hash BLOB PRIMARY KEY,
             key_id      TEXT NOT NULL UNIQUE,
             account_id  TEXT NOT NULL,
             app_id      TEXT NOT NULL
         )",
    )
    .execute(pool)
    .await
    .expect("creating the table");
    let (key_id, secret) = credential.split_once(':').expect("KEY_ID:SECRET");
    sqlx::query(
        "INSERT OR REPLACE INTO diy_keys (secret_hash, key_id, account_id, app_id) \
         VALUES ($1, $2, 'acc_diy', 'ap_diy')",
    )
    .bind(sha256(secret.as_bytes()))
    .bind(key_id)
    .execute(pool)
    .await
    .expect("storing the credential");
    let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM diy_keys")
        .fetch_one(pool)
        .await
        .expect("counting rows");
    let missing = i64::try_from(extra_rows)
        .expect("--extra-rows fits i64")
        .saturating_add(1)
        .saturating_sub(have);
    let rng = SystemRandom::new();
    let mut left = missing;
    while left > 0 {
        let mut tx = pool.begin().await.expect("a transaction");
        let batch = left.min(100_000);
        for _ in 0..batch {
            let mut bytes = [0u8; 48];
            rng.fill(&mut bytes).expect("random bytes");
            sqlx::query(
                "INSERT INTO diy_keys (secret_hash, key_id, account_id, app_id) \
                 VALUES ($1, $2, 'acc_diy', 'ap_diy')",
            )
            .bind(sha256(&bytes))
            .bind(format!("app_{}", hex(&bytes[..16])))
            .execute(&mut *tx)
            .await
            .expect("inserting a row");
        }
        tx.commit().await.expect("commit");
        left -= batch;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unauthorized() -> (StatusCode, Json<Value>) {
    (StatusCode::UNAUTHORIZED, Json(json!({"valid": false})))
}

async fn check(State(pool): State<SqlitePool>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return unauthorized();
    };
    let Ok(decoded) = STANDARD.decode(encoded) else {
        return unauthorized();
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return unauthorized();
    };
    let (key_id, secret) = (&decoded[..colon], &decoded[colon + 1..]);
    let row = sqlx::query("SELECT key_id, account_id, app_id FROM diy_keys WHERE secret_hash = $1")
        .bind(sha256(secret))
        .fetch_optional(&pool)
        .await;
    match row {
        Ok(Some(row)) => {
            let stored: String = row.get(0);
            if stored.as_bytes() != key_id {
                return unauthorized();
            }
            let account_id: String = row.get(1);
            let app_id: String = row.get(2);
            (
                StatusCode::OK,
                Json(json!({
                    "valid": true,
                    "scope": "app",
                    "accountId": account_id,
                    "appId": app_id,
                    "keyId": stored,
                })),
            )
        }
        Ok(None) => unauthorized(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"valid": false})),
        ),
    }
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    runtime.block_on(async move {
        let pool = open(&args.db).await;
        seed(&pool, &args.credential, args.extra_rows).await;
        let app = Router::new().route("/", get(check)).with_state(pool);
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .expect("binding the listen address");
        let local = listener.local_addr().expect("the bound address");
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "diy listening on http://{local}").expect("stdout");
            out.flush().expect("stdout");
        }
        axum::serve(listener, app).await.expect("serving");
    });
}
