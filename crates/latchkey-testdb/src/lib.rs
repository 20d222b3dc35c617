//! A fresh PostgreSQL schema for each test.
//!
//! Tests that need PostgreSQL call [`fresh_schema`]; it creates an empty
//! schema on the server named by `LATCHKEY_TEST_POSTGRES_URL` (default: the
//! local server of this project's machines) and returns a URL whose
//! connections use that schema only. An unreachable server fails the test
//! with a message saying what to start: PostgreSQL tests never skip.
//!
//! Schemas are named `lkt_<unix seconds>_<random>`; each call drops the
//! schemas older than three hours that earlier runs left behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

pub const URL_ENV: &str = "LATCHKEY_TEST_POSTGRES_URL";
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long a schema is kept before a later test run may drop it.
const KEEP: Duration = Duration::from_secs(3 * 3600);

/// The server tests use, from `LATCHKEY_TEST_POSTGRES_URL` or the default.
pub fn server_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// An empty schema of its own for one test.
#[derive(Debug, Clone)]
pub struct TestSchema {
    /// The schema's name.
    pub name: String,
    /// The server URL with `search_path` set to this schema.
    pub url: String,
}

/// Creates an empty schema; panics (failing the test) when PostgreSQL
/// cannot be reached.
pub async fn fresh_schema() -> TestSchema {
    let server = server_url();
    let mut conn = match PgConnection::connect(&server).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL tests need a server at {server} (set {URL_ENV} to use another): {e}. \
             Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`."
        ),
    };
    #[allow(clippy::disallowed_methods)] // test support: wall-clock schema names
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    drop_old_schemas(&mut conn, now).await;
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .expect("OS random numbers");
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("lkt_{now}_{suffix}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&mut conn)
        .await
        .expect("create the test schema");
    let _ = conn.close().await;
    let sep = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{sep}options[search_path]={name}");
    TestSchema { name, url }
}

async fn drop_old_schemas(conn: &mut PgConnection, now: u64) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'lkt\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if created.saturating_add(KEEP.as_secs()) < now {
            // Another run may be dropping the same schema; ignore errors.
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}
