//! Benchmark tool: fills an initialized SQLite data directory with live app
//! keys, written the way the store writes them (`apps` and `api_keys` rows;
//! each secret sealed under the master key with the key id as associated
//! data, as `latchkey_server::bootstrap::new_account` does), in large
//! transactions so that 10^6 keys take seconds rather than hours.
//!
//! ```sh
//! latchkey init --data-dir /tmp/lk1m --json > /tmp/lk1m.json
//! cargo run --release -p latchkey-server --example bench_seed -- \
//!     --data-dir /tmp/lk1m --keys 1000000 [--keys-per-app 10]
//! ```
//!
//! Keys belong to new apps of the data directory's first account,
//! `--keys-per-app` per app (10, the default `--max-keys-per-owner`). No
//! audit events or change-feed rows are written: the index is built from
//! `apps` and `api_keys` only. Prints one seeded key (id and secret) as
//! JSON, so that a caller can check it verifies.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, KEY_SECRET_PREFIX};
use latchkey_core::{Clock, MasterKey, SystemClock};
use ring::rand::SystemRandom;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};

/// Rows per INSERT statement (7 parameters each; SQLite allows 32,766).
const ROWS_PER_STATEMENT: usize = 1000;
/// Keys per transaction.
const KEYS_PER_TRANSACTION: u64 = 100_000;

struct Args {
    data_dir: PathBuf,
    keys: u64,
    keys_per_app: u64,
}

fn args() -> Args {
    let mut out = Args {
        data_dir: PathBuf::from("latchkey-data"),
        keys: 1_000_000,
        keys_per_app: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("every flag takes a value");
        match flag.as_str() {
            "--data-dir" => out.data_dir = PathBuf::from(value),
            "--keys" => out.keys = value.parse().expect("--keys: a number"),
            "--keys-per-app" => {
                out.keys_per_app = value.parse().expect("--keys-per-app: a number");
            }
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(out.keys_per_app > 0, "--keys-per-app must be at least 1");
    out
}

struct KeyRow {
    id: String,
    app_id: String,
    sealed: Vec<u8>,
}

fn main() {
    let args = args();
    let master_text = std::env::var("LATCHKEY_MASTER_KEY")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string(args.data_dir.join("master.key"))
                .expect("reading master.key (run `latchkey init` first)")
        });
    let master = MasterKey::from_base64(&master_text).expect("a valid master key");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    runtime.block_on(seed(&args, &master));
}

async fn seed(args: &Args, master: &MasterKey) {
    let options = SqliteConnectOptions::new()
        .filename(args.data_dir.join("latchkey.db"))
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("opening latchkey.db (run `latchkey init` first)");
    let account_id: String = sqlx::query_scalar("SELECT id FROM accounts ORDER BY seq LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("the first account (run `latchkey init` first)");
    let rng = SystemRandom::new();
    let now = SystemClock.unix();
    let started = Instant::now();
    let mut sample: Option<(String, String)> = None;
    let mut done = 0u64;
    let mut app_id = String::new();
    while done < args.keys {
        let batch = KEYS_PER_TRANSACTION.min(args.keys - done);
        let mut apps = Vec::new();
        let mut keys = Vec::new();
        for n in done..done + batch {
            if n % args.keys_per_app == 0 {
                app_id = new_id(&rng, IdKind::App);
                apps.push(app_id.clone());
            }
            let id = new_id(&rng, IdKind::AppKey);
            let secret = secret::generate(&rng, KEY_SECRET_PREFIX);
            let sealed = master
                .seal(&rng, &id, secret.expose().as_bytes())
                .expect("sealing a secret");
            if sample.is_none() {
                sample = Some((id.clone(), secret.expose().to_string()));
            }
            keys.push(KeyRow {
                id,
                app_id: app_id.clone(),
                sealed,
            });
        }
        let mut tx = pool.begin().await.expect("a transaction");
        for chunk in apps.chunks(ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO apps (id, account_id, display_name, settings, created_at) ",
            );
            q.push_values(chunk, |mut row, id| {
                row.push_bind(id)
                    .push_bind(&account_id)
                    .push_bind("bench app")
                    .push_bind("{}")
                    .push_bind(now);
            });
            q.build().execute(&mut *tx).await.expect("inserting apps");
        }
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO api_keys (id, kind, account_id, app_id, display_name, \
                 secret_sealed, created_at) ",
            );
            q.push_values(chunk, |mut row, key| {
                row.push_bind(&key.id)
                    .push_bind("app")
                    .push_bind(&account_id)
                    .push_bind(&key.app_id)
                    .push_bind("bench key")
                    .push_bind(&key.sealed)
                    .push_bind(now);
            });
            q.build().execute(&mut *tx).await.expect("inserting keys");
        }
        tx.commit().await.expect("commit");
        done += batch;
        eprintln!("{done} keys in {:.1} s", started.elapsed().as_secs_f64());
    }
    pool.close().await;
    let (key_id, secret) = sample.unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "keys": args.keys,
            "keysPerApp": args.keys_per_app,
            "seconds": started.elapsed().as_secs_f64(),
            "sampleKeyId": key_id,
            "sampleSecret": secret,
        })
    );
}
