//! The SQL store: one implementation for SQLite and PostgreSQL.
//!
//! Queries go through sqlx's `Any` driver with `$n` placeholders, which
//! both backends accept; the few places where the dialects differ (JSON
//! functions, random lease names, how a write transaction takes its lock)
//! ask [`Backend`]. Both backends run the same numbered migrations, from
//! `migrations/sqlite` and `migrations/postgres`.
//!
//! This file holds what every query shares: [`SqlStore`], opening and
//! connecting, the dialect differences, write transactions, paging and
//! error classification. Each query lives in the file of the entity it
//! touches (`accounts.rs`, `apps.rs`, `keys.rs`, `audit.rs`, ...), and
//! `store.rs` implements [`Store`](crate::Store) by handing each method
//! to that file.

mod accounts;
mod app_users;
mod apps;
mod audit;
mod bootstrap;
mod changes;
mod key_notices;
mod keys;
mod observe;
mod service_accounts;
mod signing_keys;
mod snapshot;
mod store;
mod verifier_tokens;

pub(crate) use accounts::{USER_ACCOUNT_COLUMNS, role_from, user_account_from};
pub use audit::delivery_id;
pub(crate) use audit::insert_audit_tx;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AssertSqlSafe, ConnectOptions, Connection, Executor, SqlSafeStr, Transaction};

use crate::app_cache::AppCache;
use crate::{AuditEvent, Change, Page, PageOf, Result, StoreError};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Every write transaction on PostgreSQL takes this transaction-level
/// advisory lock first, so writes run one at a time as they do on SQLite:
/// limits checked by counting hold, and change sequence numbers commit in
/// order (a reader that has seen change n has seen every change before n).
const WRITE_LOCK: i64 = 0x6c61_7463_686b_6579; // "latchkey"

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The text of JSON object member `member` of column `column`, as SQL.
    pub(crate) fn json_text(self, column: &str, member: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_extract({column}, '$.{member}')"),
            Backend::Postgres => format!("(({column})::jsonb ->> '{member}')"),
        }
    }

    /// SQL that is true when member `member` of JSON column `column` is a
    /// whole number of days `d` with `created + d * 86400 <= limit`.
    fn json_days_elapsed(self, column: &str, member: &str, created: &str, limit: &str) -> String {
        match self {
            Backend::Sqlite => format!(
                "json_type({column}, '$.{member}') = 'integer' \
                 AND {created} + json_extract({column}, '$.{member}') * 86400 <= {limit}"
            ),
            Backend::Postgres => format!(
                "(({column})::jsonb ->> '{member}') ~ '^[0-9]{{1,9}}$' \
                 AND {created} + (({column})::jsonb ->> '{member}')::bigint * 86400 <= {limit}"
            ),
        }
    }

    /// A JSON array (as text) of the values of `expr` over `from_where`.
    pub(crate) fn json_array_of(self, expr: &str, from_where: &str) -> String {
        match self {
            Backend::Sqlite => format!("(SELECT json_group_array({expr}) {from_where})"),
            Backend::Postgres => {
                format!("(SELECT COALESCE(json_agg({expr})::text, '[]') {from_where})")
            }
        }
    }

    /// An expression giving each row its own random 128-bit hex text.
    pub(crate) fn random_hex(self) -> &'static str {
        match self {
            Backend::Sqlite => "lower(hex(randomblob(16)))",
            Backend::Postgres => "replace(gen_random_uuid()::text, '-', '')",
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: sqlx::AnyPool,
    /// Where [`SqlStore::write_tx`] runs. On an SQLite file, a pool of one
    /// connection of its own: SQLite drops a connection's page cache when
    /// another connection has written since its last transaction, so with
    /// writes spread over the read pool every write transaction started by
    /// reading its B-tree pages back from the OS. One writer keeps its cache.
    /// Elsewhere (PostgreSQL, in-memory SQLite) the same pool as `pool`.
    /// Every write goes here: whole transactions through `write_tx`, single
    /// statements that need no lock directly.
    pub(crate) writer: sqlx::AnyPool,
    /// Whether `writer` is a pool of its own (not `pool` again).
    pub(crate) own_writer: bool,
    pub(crate) backend: Backend,
    /// The LISTEN/NOTIFY channel of this database and schema (PostgreSQL).
    pub(crate) channel: Option<String>,
    /// Apps read by id, on SQLite only: there this process is the only
    /// writer, while on PostgreSQL other nodes change apps too.
    apps: Option<Arc<AppCache>>,
}

impl SqlStore {
    /// Opens (creating if needed) an SQLite database file and applies
    /// migrations. A new file is created readable by its owner only; SQLite
    /// gives the -wal and -shm files the same permissions.
    pub async fn open(path: &Path) -> Result<Self> {
        create_private_file(path)?;
        let url = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .to_url_lossy();
        Self::connect_any(url.as_str(), Backend::Sqlite, 8, true).await
    }

    /// Connects to PostgreSQL and applies migrations (under sqlx's
    /// migration lock, so several nodes may start at once).
    pub async fn connect_postgres(url: &str) -> Result<Self> {
        Self::connect_any(url, Backend::Postgres, 16, false).await
    }

    /// Opens the database a URL names: `postgres://` or `postgresql://`
    /// for PostgreSQL, `sqlite:` for an SQLite file.
    pub async fn connect_url(url: &str) -> Result<Self> {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("postgres" | "postgresql") => Self::connect_postgres(url).await,
            Some("sqlite") => Self::connect_any(url, Backend::Sqlite, 8, true).await,
            _ => Err(StoreError::Config(
                "the database URL must start with postgres:// or sqlite:".into(),
            )),
        }
    }

    /// `own_writer`: give write transactions a connection of their own (an
    /// SQLite file; see [`SqlStore::writer`]).
    async fn connect_any(url: &str, backend: Backend, max: u32, own_writer: bool) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Config(format!("the database URL is not valid: {e}")))?;
        let options = options.log_statements(tracing::log::LevelFilter::Trace);
        if backend == Backend::Sqlite {
            // The pool retries a connection that fails to open until its
            // acquire timeout and then reports only the timeout; one
            // connection opened first fails at once, with the cause (not a
            // database, damaged, read-only).
            let mut probe = sqlx::AnyConnection::connect_with(&options)
                .await
                .map_err(StoreError::from_sqlx)?;
            probe.execute(SQLITE_PRAGMAS).await?;
            // A damaged file can open and still fail at its first read.
            probe.execute("SELECT count(*) FROM sqlite_master").await?;
            // SQLite opens a file it may not write read-only, and on a
            // read-only file system with its -wal and -shm files present
            // that open succeeds (so does BEGIN IMMEDIATE): the server
            // would start and fail every write. A write, rolled back,
            // fails at once instead (SQLITE_READONLY).
            probe.execute("BEGIN IMMEDIATE").await?;
            let wrote = probe
                .execute("CREATE TABLE latchkey_write_probe (x INTEGER)")
                .await;
            probe.execute("ROLLBACK").await?;
            wrote?;
            probe.close().await?;
        }
        let pool = pool_options(backend, max)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::from_sqlx)?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&pool).await?,
        }
        let own_writer = own_writer && backend == Backend::Sqlite;
        let writer = if own_writer {
            pool_options(backend, 1)
                // Writers queue here rather than in SQLite's busy handler;
                // wait as long as that would have.
                .acquire_timeout(Duration::from_secs(10))
                // Kept open for good: closing it would throw its cache away.
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .map_err(StoreError::from_sqlx)?
        } else {
            pool.clone()
        };
        let channel = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&pool)
                    .await?;
                Some(channel_name(&schema))
            }
        };
        let apps = (backend == Backend::Sqlite).then(Arc::default);
        Ok(Self {
            pool,
            writer,
            own_writer,
            backend,
            channel,
            apps,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Writes a consistent copy of an SQLite store to `dest` (a file that
    /// must not exist) with `VACUUM INTO`, which reads one snapshot while
    /// other connections, of this process or another, go on writing.
    pub async fn backup_into(&self, dest: &Path) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Config(
                "only an SQLite store is copied this way; use pg_dump for PostgreSQL".into(),
            ));
        }
        let dest = dest
            .to_str()
            .ok_or_else(|| StoreError::Config("the backup's path must be valid UTF-8".into()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// SQLite's `PRAGMA integrity_check`: `ok`, or what is wrong.
    pub async fn integrity_check(&self) -> Result<String> {
        if self.backend != Backend::Sqlite {
            return Ok("ok".into());
        }
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.join("; "))
    }

    /// A transaction that holds the store's write lock from its start:
    /// BEGIN IMMEDIATE on SQLite (a deferred transaction that reads and
    /// then writes fails with SQLITE_BUSY_SNAPSHOT when another connection
    /// wrote in between, and the busy timeout cannot help; an immediate one
    /// waits its turn), the advisory lock [`WRITE_LOCK`] on PostgreSQL.
    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => Ok(Transaction::begin(
                self.writer_connection().await?,
                Some("BEGIN IMMEDIATE".into_sql_str()),
            )
            .await?),
            Backend::Postgres => {
                let mut tx = Transaction::begin(self.writer_connection().await?, None).await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// A transaction for writes that commute with every other write
    /// (usage counts that add): on PostgreSQL without the store's write
    /// lock, so that a large batch does not hold up the API's writes; on
    /// SQLite as [`SqlStore::write_tx`] (one writer connection either way).
    pub(crate) async fn usage_tx(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => self.write_tx().await,
            Backend::Postgres => {
                Ok(Transaction::begin(self.writer_connection().await?, None).await?)
            }
        }
    }

    /// A connection of the writer pool that is in no transaction. When a
    /// COMMIT fails (SQLITE_FULL on a full disk, an I/O error), SQLite has
    /// already rolled the transaction back, so the ROLLBACK sqlx sends when
    /// the transaction is dropped fails too, and sqlx goes on counting a
    /// transaction on that connection: every later BEGIN on it would fail,
    /// and on SQLite it is the only writer, so no write would succeed again
    /// until a restart. Such a connection is closed and replaced.
    async fn writer_connection(&self) -> Result<PoolConnection<Any>> {
        let conn = self.writer.acquire().await?;
        if !conn.is_in_transaction() {
            return Ok(conn);
        }
        tracing::warn!("closing a database connection left in a failed transaction");
        // An error closing it leaves nothing to clean up: the connection is
        // gone either way, and its slot in the pool is free again.
        let _ = conn.close().await;
        Ok(self.writer.acquire().await?)
    }

    /// Closes every connection (on SQLite, checkpointing the WAL into the
    /// main file).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// A private in-memory SQLite database, for tests.
    pub async fn in_memory() -> Result<Self> {
        // One connection: each in-memory connection would be its own database.
        Self::connect_any("sqlite::memory:", Backend::Sqlite, 1, false).await
    }

    /// Runs a DELETE and, if it removed anything, records `audit` and the
    /// `change` in the same transaction.
    async fn delete_audited(
        &self,
        sql: &'static str,
        args: &[&str],
        audit: &AuditEvent,
        change: Option<Change<'_>>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(*a);
        }
        let done = q.execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        if let Some(change) = change {
            self.record_change_tx(&mut tx, audit.at, change).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// `filter` uses `$1..$n` for its `args`.
    pub(crate) async fn page<T>(
        &self,
        table: &'static str,
        columns: &'static str,
        filter: &'static str,
        args: &[&str],
        page: &Page,
        map: fn(&AnyRow) -> Result<T>,
    ) -> Result<PageOf<T>> {
        let next = args.len() + 1;
        let after_seq: i64 = match &page.after {
            None => 0,
            Some(after) => {
                let sql = format!("SELECT seq FROM {table} WHERE {filter} AND id = ${next}");
                let mut q = sqlx::query_scalar(AssertSqlSafe(sql));
                for a in args {
                    q = q.bind(*a);
                }
                q.bind(after.as_str())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or(StoreError::BadCursor)?
            }
        };
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE {filter} AND seq > ${next} ORDER BY seq LIMIT ${}",
            next + 1
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in args {
            q = q.bind(*a);
        }
        let rows = q
            .bind(after_seq)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        page_of(&rows, page.limit, map)
    }
}

/// Every connection to an SQLite file: every acknowledged write survives a
/// crash or power loss; writers wait their turn.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";

/// Every session with PostgreSQL: a node whose link to the database
/// freezes in the middle of a transaction (or that drops a transaction's
/// future before its ROLLBACK is sent) would otherwise keep that
/// transaction's locks, the advisory write lock among them, until TCP gave
/// up on the connection, minutes or hours later, and every other node's
/// writes would wait that long. The server ends such a session instead:
/// no transaction of ours waits on its client between statements for more
/// than milliseconds.
const POSTGRES_SESSION: &str = "SET idle_in_transaction_session_timeout = '10s'";

/// The options of a pool of at most `max` connections to `backend`.
fn pool_options(backend: Backend, max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        // A node that cannot reach its database answers 503 quickly
        // instead of holding requests.
        .acquire_timeout(Duration::from_secs(5))
        // A connection to an SQLite file cannot drop the way a network
        // connection can; pinging it at every checkout was a round trip to
        // its worker thread for nothing.
        .test_before_acquire(backend == Backend::Postgres)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => conn.execute(SQLITE_PRAGMAS).await?,
                    Backend::Postgres => conn.execute(POSTGRES_SESSION).await?,
                };
                Ok(())
            })
        })
}

/// The notification channel for a schema: identifiers are at most 63
/// bytes, and schema names may not be valid unquoted identifiers.
fn channel_name(schema: &str) -> String {
    let digest = latchkey_core::crypto::sha256(schema.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("latchkey_changes_{hex}")
}

fn create_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// A page of at most `limit` items from rows fetched with `LIMIT limit + 1`:
/// the extra row only tells that there are more.
pub(crate) fn page_of<T>(
    rows: &[AnyRow],
    limit: u32,
    map: impl Fn(&AnyRow) -> Result<T>,
) -> Result<PageOf<T>> {
    let limit = limit as usize;
    Ok(PageOf {
        items: rows.iter().take(limit).map(map).collect::<Result<_>>()?,
        has_more: rows.len() > limit,
    })
}

pub(crate) fn json_object(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(StoreError::Corrupt("a JSON column is not an object".into())),
    }
}

/// Maps constraint violations to what they mean for the client.
pub(crate) fn classify(e: sqlx::Error, unique: &'static str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict(unique);
        }
        if db.is_foreign_key_violation() {
            return StoreError::MissingParent;
        }
    }
    StoreError::from_sqlx(e)
}
