//! Benchmark tool: the commit rate of SQLite with Latchkey's settings (WAL,
//! synchronous FULL) on this disk, one small row per transaction, through
//! sqlx like the store. Latchkey commits one transaction per key created,
//! so this is the ceiling of key creation over HTTP.
//!
//! ```sh
//! cargo run --release -p latchkey-server --example bench_commits -- --db /tmp/commits.db [--count 1000]
//! ```
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

fn main() {
    let mut db = String::from("commits.db");
    let mut count = 1000u32;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("every flag takes a value");
        match flag.as_str() {
            "--db" => db = value,
            "--count" => count = value.parse().expect("--count: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    runtime.block_on(async move {
        let options = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("opening the database");
        sqlx::query("CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .execute(&pool)
            .await
            .expect("creating the table");
        let started = Instant::now();
        for _ in 0..count {
            let mut tx = pool.begin().await.expect("a transaction");
            sqlx::query("INSERT INTO t (body) VALUES (randomblob(200))")
                .execute(&mut *tx)
                .await
                .expect("inserting");
            tx.commit().await.expect("commit");
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "commits": count,
                "seconds": seconds,
                "commitsPerSecond": f64::from(count) / seconds,
            })
        );
        pool.close().await;
    });
}
