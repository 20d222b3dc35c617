//! The SQL store: one implementation for SQLite and PostgreSQL.
//!
//! Queries go through sqlx's `Any` driver with `$n` placeholders, which
//! both backends accept; the few places where the dialects differ (JSON
//! functions, random lease names, how a write transaction takes its lock)
//! ask [`Backend`]. Both backends run the same numbered migrations, from
//! `migrations/sqlite` and `migrations/postgres`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{
    Any, AssertSqlSafe, ConnectOptions, Connection, Executor, Row, SqlSafeStr, Transaction,
};

use crate::app_cache::AppCache;
use crate::{
    Account, Actor, ApiKey, App, AppUser, AuditEvent, AuditFilter, Change, ChangeBatch,
    ChangeEntity, ChangeRecord, Initialization, KeyKind, KeyNotice, KeyOwnerRef, NewAccount,
    OperatorToken, Page, PageOf, Result, Rotation, ServiceAccount, Snapshot, SnapshotHead,
    SnapshotKey, Store, StoreError, UserAccount, VerifierToken,
};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Every write transaction on PostgreSQL takes this transaction-level
/// advisory lock first, so writes run one at a time as they do on SQLite:
/// limits checked by counting hold, and change sequence numbers commit in
/// order (a reader that has seen change n has seen every change before n).
const WRITE_LOCK: i64 = 0x6c61_7463_686b_6579; // "latchkey"

const KEY_COLUMNS: &str = "id, kind, account_id, app_id, user_account_id, service_account_id, \
     display_name, secret_sealed, created_at, expires_at, last_used_at, rotated_from, replaced_by";
const AUDIT_COLUMNS: &str = "id, at, account_id, app_id, action, actor_type, actor_id, address, \
     target_type, target_id, outcome, details";
const APP_COLUMNS: &str = "id, account_id, display_name, settings, created_at";
const VERIFIER_TOKEN_COLUMNS: &str = "id, display_name, token_hash, created_at";
const USER_COLUMNS: &str =
    "id, app_id, external_id, given_name, surname, email, metadata, created_at";

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
        let writer = if own_writer && backend == Backend::Sqlite {
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
            backend,
            channel,
            apps,
        })
    }

    /// Forgets the cached apps; after every write that changes or removes
    /// apps (see [`AppCache`]).
    fn forget_apps(&self) {
        if let Some(cache) = &self.apps {
            cache.invalidate();
        }
    }

    /// Runs a write that changes or removes apps, then forgets the cached
    /// apps. With a cache, both run in a task of their own: a caller's
    /// future can be dropped (a client that went away) after the COMMIT was
    /// sent, and the commit then still happens; the invalidation must
    /// follow it all the same.
    async fn then_forget_apps<T: Send + 'static>(
        &self,
        write: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        if self.apps.is_none() {
            return write.await;
        }
        let store = self.clone();
        let done = tokio::spawn(async move {
            let done = write.await;
            store.forget_apps();
            done
        })
        .await;
        done.unwrap_or_else(|_| {
            // The write panicked; whatever it did, forget.
            self.forget_apps();
            Err(StoreError::Backend(sqlx::Error::WorkerCrashed))
        })
    }

    async fn update_app_tx(&self, app: &App, audit: &AuditEvent) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE apps SET display_name = $1, settings = $2 WHERE id = $3")
            .bind(&app.display_name)
            .bind(Value::Object(app.settings.clone()).to_string())
            .bind(&app.id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::App(&app.id))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub fn backend(&self) -> Backend {
        self.backend
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

    /// Records a change in the caller's transaction; on PostgreSQL also
    /// queues its NOTIFY, which is sent when the transaction commits.
    pub(crate) async fn record_change_tx(
        &self,
        tx: &mut Transaction<'_, Any>,
        at: i64,
        change: Change<'_>,
    ) -> Result<()> {
        let (entity, id) = change.entity();
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO changes (entity, entity_id, at) VALUES ($1, $2, $3) RETURNING seq",
        )
        .bind(entity.as_str())
        .bind(id)
        .bind(at)
        .fetch_one(&mut **tx)
        .await?;
        if let Some(channel) = &self.channel {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel.as_str())
                .bind(seq.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// `filter` uses `$1..$n` for its `args`.
    async fn page<T>(
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

/// The options of a pool of at most `max` connections to `backend`.
/// Every connection to an SQLite file: every acknowledged write survives a
/// crash or power loss; writers wait their turn.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";

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
                if backend == Backend::Sqlite {
                    conn.execute(SQLITE_PRAGMAS).await?;
                }
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

/// Rows per query when [`Store::snapshot`] reads a large table.
const SNAPSHOT_PAGE: i64 = 10_000;

/// Every row of `table` in `seq` order, read a page at a time inside the
/// snapshot's transaction: only one page of driver rows exists at once,
/// instead of the whole table as driver rows next to its converted copy
/// (with 10^6 keys that copy cost about a gigabyte at start-up).
async fn snapshot_table<T>(
    tx: &mut Transaction<'_, Any>,
    table: &str,
    columns: &str,
    from: fn(&AnyRow) -> Result<T>,
) -> Result<Vec<T>> {
    let sql = format!("SELECT seq, {columns} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2");
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(after)
            .bind(SNAPSHOT_PAGE)
            .fetch_all(&mut **tx)
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get("seq")?;
        out.reserve(rows.len());
        for row in &rows {
            out.push(from(row)?);
        }
        if rows.len() < usize::try_from(SNAPSHOT_PAGE).unwrap_or(usize::MAX) {
            break;
        }
    }
    Ok(out)
}

/// Sends every key to `keys` in `seq` order, one page of `batch` keys at a
/// time, inside the snapshot's transaction. The receiver prepares a page
/// while the next one is read. Returns early if the receiver is gone.
///
/// Each page comes back as ONE row holding a JSON array of the keys (the
/// secrets in hex): through sqlx's `Any` driver every row and every value
/// is copied twice and handed between threads one row at a time, which
/// with 10^6 keys cost more than everything else at start-up together.
async fn snapshot_keys(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    batch: usize,
    keys: &tokio::sync::mpsc::Sender<Vec<SnapshotKey>>,
) -> Result<()> {
    // The CHECK constraint on api_keys sets exactly the owner column of
    // the key's kind, so COALESCE picks it.
    let page = "SELECT seq, id, kind, account_id, \
         COALESCE(app_id, user_account_id, service_account_id) AS owner_id, \
         secret_sealed, expires_at, last_used_at \
         FROM api_keys WHERE seq > $1 ORDER BY seq LIMIT $2";
    let sql = match backend {
        Backend::Sqlite => format!(
            "SELECT MAX(seq), COUNT(*), json_group_array(json_array(id, kind, account_id, \
             owner_id, hex(secret_sealed), expires_at, last_used_at)) FROM ({page})"
        ),
        Backend::Postgres => format!(
            "SELECT MAX(seq), COUNT(*), COALESCE(json_agg(json_build_array(id, kind, \
             account_id, owner_id, encode(secret_sealed, 'hex'), expires_at, last_used_at))::text, \
             '[]') FROM ({page}) AS page"
        ),
    };
    let batch = batch.max(1);
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let mut after = 0i64;
    loop {
        let row = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(after)
            .bind(limit)
            .fetch_one(&mut **tx)
            .await?;
        let last: Option<i64> = row.try_get(0)?;
        let count: i64 = row.try_get(1)?;
        let Some(last) = last else {
            return Ok(());
        };
        after = last;
        let page = snapshot_keys_from_json(row.try_get(2)?)?;
        if i64::try_from(page.len()).ok() != Some(count) {
            return Err(StoreError::Corrupt("a snapshot page lost keys".into()));
        }
        let full = page.len() >= batch;
        if keys.send(page).await.is_err() || !full {
            return Ok(());
        }
    }
}

/// One key of a snapshot page: id, kind, account id, owner id, sealed
/// secret (hex), expiry, last use.
type PageKey = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<i64>,
    Option<i64>,
);

fn snapshot_keys_from_json(text: &str) -> Result<Vec<SnapshotKey>> {
    let rows: Vec<PageKey> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a snapshot page is not readable: {e}")))?;
    rows.into_iter()
        .map(
            |(id, kind, account_id, owner_id, sealed, expires_at, last_used_at)| {
                let kind = KeyKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown key kind {kind:?}")))?;
                Ok(SnapshotKey {
                    id,
                    kind,
                    account_id,
                    owner_id: owner_id
                        .ok_or_else(|| StoreError::Corrupt("a key has no owner".into()))?,
                    secret_sealed: from_hex(&sealed)?,
                    expires_at,
                    last_used_at,
                })
            },
        )
        .collect()
}

/// Hex of either case (SQLite's `hex` writes upper case, PostgreSQL's
/// `encode` lower case).
fn from_hex(text: &str) -> Result<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bad = || StoreError::Corrupt("a sealed secret is not hex".into());
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(bad());
    }
    // A plain loop into a vector of the right size: an iterator collected
    // into a `Result` does not know the size and grows the vector as it
    // goes (10^6 secrets at start-up).
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => out.push(high << 4 | low),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// Everything but the keys, in the snapshot's transaction; the change
/// number first, so that the snapshot holds every change up to it.
async fn snapshot_head(tx: &mut Transaction<'_, Any>, count_keys: bool) -> Result<SnapshotHead> {
    let change_seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
        .fetch_one(&mut **tx)
        .await?;
    let accounts: Vec<String> = sqlx::query_scalar("SELECT id FROM accounts")
        .fetch_all(&mut **tx)
        .await?;
    let pairs = |rows: Vec<AnyRow>| -> Result<Vec<(String, String)>> {
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    };
    let apps = snapshot_table(tx, "apps", APP_COLUMNS, app_from).await?;
    let service_accounts = pairs(
        sqlx::query("SELECT id, account_id FROM service_accounts")
            .fetch_all(&mut **tx)
            .await?,
    )?;
    let grants = pairs(
        sqlx::query("SELECT service_account_id, app_id FROM service_account_apps")
            .fetch_all(&mut **tx)
            .await?,
    )?;
    let operator_tokens = sqlx::query("SELECT id, token_hash, created_at FROM operator_tokens")
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(operator_token_from)
        .collect::<Result<Vec<_>>>()?;
    let verifier_tokens = snapshot_table(
        tx,
        "verifier_tokens",
        VERIFIER_TOKEN_COLUMNS,
        verifier_token_from,
    )
    .await?;
    let key_count: i64 = if count_keys {
        sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&mut **tx)
            .await?
    } else {
        0
    };
    Ok(SnapshotHead {
        accounts,
        apps,
        service_accounts,
        grants,
        operator_tokens,
        verifier_tokens,
        key_count: u64::try_from(key_count).unwrap_or(0),
        change_seq,
    })
}

/// The snapshot's one read transaction (on PostgreSQL, one view of the
/// database for all its statements).
async fn snapshot_tx(store: &SqlStore) -> Result<Transaction<'static, Any>> {
    Ok(match store.backend {
        Backend::Sqlite => store.pool.begin().await?,
        Backend::Postgres => {
            store
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?
        }
    })
}

/// A value bound to a numbered placeholder of a query built at run time.
#[derive(Debug, Clone, Copy)]
enum SqlValue<'a> {
    Text(&'a str),
    Int(i64),
}

/// Binds `values` to `$1`, `$2`, ... of `query`.
fn bind_all<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    values: &[SqlValue<'q>],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    values.iter().fold(query, |q, v| match *v {
        SqlValue::Text(t) => q.bind(t),
        SqlValue::Int(n) => q.bind(n),
    })
}

/// The audit list's conditions, with only the filters given (numbered
/// `$1`, `$2`, ... in the order of the values returned). Conditions of the
/// form `($1 IS NULL OR account_id = $1)` would keep the planner from
/// using the `(account_id, seq)` and `(app_id, seq)` indexes, so that a
/// page of one account's events would scan every account's.
fn audit_where<'a>(filter: &'a AuditFilter, owner: &str) -> (String, Vec<SqlValue<'a>>) {
    let mut conditions = vec!["TRUE".to_string()];
    let mut values = Vec::new();
    if let Some(account) = &filter.account_id {
        values.push(SqlValue::Text(account));
        conditions.push(format!("account_id = ${}", values.len()));
    }
    if let Some(app) = &filter.app_id {
        values.push(SqlValue::Text(app));
        conditions.push(format!("app_id = ${}", values.len()));
    }
    if let Some(sa) = &filter.reachable_by {
        values.push(SqlValue::Text(sa));
        let n = values.len();
        conditions.push(format!(
            "(app_id IN (SELECT app_id FROM service_account_apps \
             WHERE service_account_id = ${n}) OR target_id = ${n} OR {owner} = ${n})"
        ));
    }
    if let Some(action) = &filter.action {
        values.push(SqlValue::Text(action));
        conditions.push(format!("action = ${}", values.len()));
    }
    if let Some(since) = filter.since {
        values.push(SqlValue::Int(since));
        conditions.push(format!("at >= ${}", values.len()));
    }
    if let Some(until) = filter.until {
        values.push(SqlValue::Int(until));
        conditions.push(format!("at <= ${}", values.len()));
    }
    (conditions.join(" AND "), values)
}

/// A page of the audit list: the events under `where_sql` (with `n`
/// values bound) before the sequence number `$n+1`, newest first, at most
/// `$n+2` of them.
fn audit_page_sql(where_sql: &str, n: usize) -> String {
    format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {where_sql} AND seq < ${} \
         ORDER BY seq DESC LIMIT ${}",
        n + 1,
        n + 2
    )
}

fn account_from(row: &AnyRow) -> Result<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn app_from(row: &AnyRow) -> Result<App> {
    Ok(App {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        display_name: row.try_get("display_name")?,
        settings: json_object(row.try_get("settings")?)?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from(row: &AnyRow) -> Result<ApiKey> {
    let kind_text: &str = row.try_get("kind")?;
    let kind = KeyKind::parse(kind_text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown key kind {kind_text:?}")))?;
    let owner_column = match kind {
        KeyKind::App => "app_id",
        KeyKind::UserAccount => "user_account_id",
        KeyKind::ServiceAccount => "service_account_id",
    };
    let owner_id: Option<String> = row.try_get(owner_column)?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        kind,
        account_id: row.try_get("account_id")?,
        owner_id: owner_id.ok_or_else(|| StoreError::Corrupt("a key has no owner".into()))?,
        display_name: row.try_get("display_name")?,
        secret_sealed: row.try_get("secret_sealed")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        rotated_from: row.try_get("rotated_from")?,
        replaced_by: row.try_get("replaced_by")?,
    })
}

fn audit_from(row: &AnyRow) -> Result<AuditEvent> {
    let actor_type: String = row.try_get("actor_type")?;
    let actor_id: Option<String> = row.try_get("actor_id")?;
    let actor = match (actor_type.as_str(), actor_id) {
        ("operator", Some(token_id)) => Actor::Operator { token_id },
        ("key", Some(key_id)) => Actor::Key { key_id },
        ("verifierToken", Some(token_id)) => Actor::VerifierToken { token_id },
        ("userAccount", Some(user_account_id)) => Actor::UserAccount { user_account_id },
        ("system", _) => Actor::System,
        _ => {
            return Err(StoreError::Corrupt(
                "an audit event has an unknown actor".into(),
            ));
        }
    };
    Ok(AuditEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        account_id: row.try_get("account_id")?,
        app_id: row.try_get("app_id")?,
        action: row.try_get("action")?,
        actor,
        address: row.try_get("address")?,
        target_type: row.try_get("target_type")?,
        target_id: row.try_get("target_id")?,
        outcome: row.try_get("outcome")?,
        details: json_object(row.try_get("details")?)?,
        notify: None,
    })
}

/// Appends an audit event and enqueues its webhook deliveries, inside the
/// caller's transaction. A delivery's id is derived from the event and the
/// webhook, so it is stable across retries and nodes.
pub(crate) async fn insert_audit_tx(
    tx: &mut Transaction<'_, Any>,
    audit: &AuditEvent,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (id, at, account_id, app_id, action, actor_type, actor_id, \
         address, target_type, target_id, outcome, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&audit.id)
    .bind(audit.at)
    .bind(&audit.account_id)
    .bind(&audit.app_id)
    .bind(&audit.action)
    .bind(audit.actor.kind())
    .bind(audit.actor.id())
    .bind(&audit.address)
    .bind(&audit.target_type)
    .bind(&audit.target_id)
    .bind(&audit.outcome)
    .bind(Value::Object(audit.details.clone()).to_string())
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "an audit event with this id already exists"))?;
    let (Some(notify), Some(app_id)) = (&audit.notify, &audit.app_id) else {
        return Ok(());
    };
    let webhooks: Vec<String> = sqlx::query_scalar(
        "SELECT w.id FROM webhooks w JOIN webhook_triggers t ON t.webhook_id = w.id \
         WHERE w.app_id = $1 AND t.trigger = $2 ORDER BY w.seq",
    )
    .bind(app_id)
    .bind(notify.trigger)
    .fetch_all(&mut **tx)
    .await?;
    for webhook_id in webhooks {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_id, trigger, payload, \
             next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(delivery_id(&audit.id, &webhook_id))
        .bind(&webhook_id)
        .bind(&audit.id)
        .bind(notify.trigger)
        .bind(&notify.payload)
        .bind(audit.at)
        .bind(audit.at)
        .bind(audit.at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `dlv_` + the random parts of the event id and the webhook id.
pub fn delivery_id(event_id: &str, webhook_id: &str) -> String {
    let body = |id: &str| id.split_once('_').map_or(id, |(_, b)| b).to_string();
    format!("dlv_{}{}", body(event_id), body(webhook_id))
}

fn operator_token_from(row: &AnyRow) -> Result<OperatorToken> {
    Ok(OperatorToken {
        id: row.try_get("id")?,
        token_hash: row.try_get("token_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

fn verifier_token_from(row: &AnyRow) -> Result<VerifierToken> {
    Ok(VerifierToken {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        token_hash: row.try_get("token_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn user_account_from(row: &AnyRow) -> Result<UserAccount> {
    Ok(UserAccount {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

fn service_account_from(row: &AnyRow) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn user_from(row: &AnyRow) -> Result<AppUser> {
    Ok(AppUser {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        external_id: row.try_get("external_id")?,
        given_name: row.try_get("given_name")?,
        surname: row.try_get("surname")?,
        email: row.try_get("email")?,
        metadata: json_object(row.try_get("metadata")?)?,
        created_at: row.try_get("created_at")?,
    })
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

fn owner_columns(key: &ApiKey) -> (Option<&str>, Option<&str>, Option<&str>) {
    match key.owner() {
        KeyOwnerRef::App(id) => (Some(id), None, None),
        KeyOwnerRef::UserAccount(id) => (None, Some(id), None),
        KeyOwnerRef::ServiceAccount(id) => (None, None, Some(id)),
    }
}

/// The columns a new key is inserted with, bound as `$1`…`$11` by
/// [`bind_key`].
const KEY_INSERT_COLUMNS: &str = "id, kind, account_id, app_id, user_account_id, \
     service_account_id, display_name, secret_sealed, created_at, expires_at, rotated_from";

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// Binds a new key's values as `$1`…`$11`, in the order of
/// [`KEY_INSERT_COLUMNS`].
fn bind_key<'q>(query: AnyQuery<'q>, key: &'q ApiKey) -> AnyQuery<'q> {
    let (app, user, sa) = owner_columns(key);
    query
        .bind(&key.id)
        .bind(key.kind.as_str())
        .bind(&key.account_id)
        .bind(app)
        .bind(user)
        .bind(sa)
        .bind(&key.display_name)
        .bind(&key.secret_sealed)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(&key.rotated_from)
}

async fn insert_key_tx(tx: &mut Transaction<'_, Any>, key: &ApiKey) -> Result<()> {
    let sql = format!(
        "INSERT INTO api_keys ({KEY_INSERT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    bind_key(sqlx::query(AssertSqlSafe(sql)), key)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "a key with this id already exists"))?;
    Ok(())
}

async fn insert_account_tx(tx: &mut Transaction<'_, Any>, new: &NewAccount) -> Result<()> {
    sqlx::query("INSERT INTO accounts (id, display_name, created_at) VALUES ($1, $2, $3)")
        .bind(&new.account.id)
        .bind(&new.account.display_name)
        .bind(new.account.created_at)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "an account with this id already exists"))?;
    sqlx::query(
        "INSERT INTO user_accounts (id, account_id, email, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&new.owner.id)
    .bind(&new.owner.account_id)
    .bind(&new.owner.email)
    .bind(&new.owner.password_hash)
    .bind(new.owner.created_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "a user account with this email already exists"))?;
    insert_key_tx(tx, &new.key).await
}

#[async_trait]
impl Store for SqlStore {
    async fn is_initialized(&self) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM meta WHERE name = 'initialized'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn initialize(&self, init: &Initialization) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('initialized', $1) ON CONFLICT DO NOTHING",
        )
        .bind(vec![1u8])
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyInitialized);
        }
        sqlx::query("INSERT INTO meta (name, value) VALUES ('master_key_check', $1)")
            .bind(&init.master_key_check)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO operator_tokens (id, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(&init.operator_token.id)
            .bind(&init.operator_token.token_hash)
            .bind(init.operator_token.created_at)
            .execute(&mut *tx)
            .await?;
        insert_account_tx(&mut tx, &init.first_account).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn master_key_check(&self) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'master_key_check'")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn operator_tokens(&self) -> Result<Vec<OperatorToken>> {
        let rows =
            sqlx::query("SELECT id, token_hash, created_at FROM operator_tokens ORDER BY seq")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(operator_token_from).collect()
    }

    async fn create_verifier_token(&self, token: &VerifierToken, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO verifier_tokens (id, display_name, token_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&token.id)
        .bind(&token.display_name)
        .bind(&token.token_hash)
        .bind(token.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "a verifier token with this id or hash already exists"))?;
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::VerifierToken(&token.id))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_verifier_tokens(&self, page: &Page) -> Result<PageOf<VerifierToken>> {
        self.page(
            "verifier_tokens",
            VERIFIER_TOKEN_COLUMNS,
            "1 = 1",
            &[],
            page,
            verifier_token_from,
        )
        .await
    }

    async fn get_verifier_token(&self, id: &str) -> Result<Option<VerifierToken>> {
        let sql = format!("SELECT {VERIFIER_TOKEN_COLUMNS} FROM verifier_tokens WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(verifier_token_from).transpose()
    }

    async fn delete_verifier_token(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        self.delete_audited(
            "DELETE FROM verifier_tokens WHERE id = $1",
            &[id],
            audit,
            Some(Change::VerifierToken(id)),
        )
        .await
    }

    async fn create_account(&self, new: &NewAccount, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_account_tx(&mut tx, new).await?;
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::Account(&new.account.id))
            .await?;
        self.record_change_tx(&mut tx, audit.at, Change::Key(&new.key.id))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_accounts(&self, page: &Page) -> Result<PageOf<Account>> {
        self.page(
            "accounts",
            "id, display_name, created_at",
            "1 = 1",
            &[],
            page,
            account_from,
        )
        .await
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>> {
        let row = sqlx::query("SELECT id, display_name, created_at FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_from).transpose()
    }

    async fn delete_account(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        // Deletes the account's apps too (foreign keys cascade).
        let (store, id, audit) = (self.clone(), id.to_string(), audit.clone());
        self.then_forget_apps(async move {
            store
                .delete_audited(
                    "DELETE FROM accounts WHERE id = $1",
                    &[&id],
                    &audit,
                    Some(Change::Account(&id)),
                )
                .await
        })
        .await
    }

    async fn get_user_account(&self, id: &str) -> Result<Option<UserAccount>> {
        let row = sqlx::query(
            "SELECT id, account_id, email, password_hash, created_at FROM user_accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_account_from).transpose()
    }

    async fn create_app(&self, app: &App, creator: Option<&str>, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO apps (id, account_id, display_name, settings, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&app.id)
        .bind(&app.account_id)
        .bind(&app.display_name)
        .bind(Value::Object(app.settings.clone()).to_string())
        .bind(app.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "an app with this id already exists"))?;
        if let Some(sa) = creator {
            sqlx::query(
                "INSERT INTO service_account_apps (service_account_id, app_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(sa)
            .bind(&app.id)
            .bind(app.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "the grant exists already"))?;
        }
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::App(&app.id))
            .await?;
        if let Some(sa) = creator {
            self.record_change_tx(&mut tx, audit.at, Change::ServiceAccount(sa))
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_apps(
        &self,
        account_id: &str,
        only_reachable_by: Option<&str>,
        page: &Page,
    ) -> Result<PageOf<App>> {
        match only_reachable_by {
            None => {
                self.page(
                    "apps",
                    APP_COLUMNS,
                    "account_id = $1",
                    &[account_id],
                    page,
                    app_from,
                )
                .await
            }
            Some(sa) => {
                self.page(
                    "apps",
                    APP_COLUMNS,
                    "account_id = $1 AND id IN (SELECT app_id FROM service_account_apps \
                     WHERE service_account_id = $2)",
                    &[account_id, sa],
                    page,
                    app_from,
                )
                .await
            }
        }
    }

    async fn get_app(&self, id: &str) -> Result<Option<App>> {
        let generation = match self.apps.as_deref().map(|cache| cache.get(id)) {
            Some(Ok(app)) => return Ok(Some(app)),
            Some(Err(generation)) => Some(generation),
            None => None,
        };
        let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let app = row.as_ref().map(app_from).transpose()?;
        if let (Some(cache), Some(generation), Some(app)) = (&self.apps, generation, &app) {
            cache.keep(generation, app);
        }
        Ok(app)
    }

    async fn update_app(&self, app: &App, audit: &AuditEvent) -> Result<bool> {
        let (store, app, audit) = (self.clone(), app.clone(), audit.clone());
        self.then_forget_apps(async move { store.update_app_tx(&app, &audit).await })
            .await
    }

    async fn delete_app(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        let (store, id, audit) = (self.clone(), id.to_string(), audit.clone());
        self.then_forget_apps(async move {
            store
                .delete_audited(
                    "DELETE FROM apps WHERE id = $1",
                    &[&id],
                    &audit,
                    Some(Change::App(&id)),
                )
                .await
        })
        .await
    }

    async fn create_key(
        &self,
        key: &ApiKey,
        limit: u32,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<()> {
        // Only the owner's column: the owner's live keys are then counted
        // from its `*_live` index alone (migration 0007). An OR across the
        // three columns made it read the table row of every key the owner
        // ever had.
        let (owner_column, owner_id) = match key.owner() {
            KeyOwnerRef::App(id) => ("app_id", id),
            KeyOwnerRef::UserAccount(id) => ("user_account_id", id),
            KeyOwnerRef::ServiceAccount(id) => ("service_account_id", id),
        };
        let sql = format!(
            "INSERT INTO api_keys ({KEY_INSERT_COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 \
             WHERE (SELECT COUNT(*) FROM api_keys \
                    WHERE {owner_column} = $12 AND replaced_by IS NULL \
                      AND (expires_at IS NULL OR expires_at > $13)) < $14"
        );
        let mut tx = self.write_tx().await?;
        // Count and insert in one statement, so two concurrent creates cannot
        // both pass the limit.
        let done = bind_key(sqlx::query(AssertSqlSafe(sql)), key)
            .bind(owner_id)
            .bind(now)
            .bind(i64::from(limit))
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "a key with this id already exists"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LimitReached(limit));
        }
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::Key(&key.id))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_key(&self, rotation: &Rotation, now: i64, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let (app, user, sa) = owner_columns(&rotation.new_key);
        let working: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys \
             WHERE (app_id = $1 OR user_account_id = $2 OR service_account_id = $3) \
               AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(app)
        .bind(user)
        .bind(sa)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if working >= i64::from(rotation.max_working) {
            return Err(StoreError::LimitReached(rotation.max_working));
        }
        let done = sqlx::query(
            "UPDATE api_keys SET replaced_by = $1, expires_at = $2 \
             WHERE id = $3 AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(&rotation.new_key.id)
        .bind(rotation.old_expires_at)
        .bind(&rotation.old_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the key has already been rotated or has expired",
            ));
        }
        insert_key_tx(&mut tx, &rotation.new_key).await?;
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::Key(&rotation.old_id))
            .await?;
        self.record_change_tx(&mut tx, audit.at, Change::Key(&rotation.new_key.id))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_keys(&self, owner: KeyOwnerRef<'_>, page: &Page) -> Result<PageOf<ApiKey>> {
        let (filter, id) = match owner {
            KeyOwnerRef::App(id) => ("app_id = $1", id),
            KeyOwnerRef::UserAccount(id) => ("user_account_id = $1", id),
            KeyOwnerRef::ServiceAccount(id) => ("service_account_id = $1", id),
        };
        self.page("api_keys", KEY_COLUMNS, filter, &[id], page, key_from)
            .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from).transpose()
    }

    async fn delete_key(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        self.delete_audited(
            "DELETE FROM api_keys WHERE id = $1",
            &[id],
            audit,
            Some(Change::Key(id)),
        )
        .await
    }

    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (id, at) in batch {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_service_account(&self, sa: &ServiceAccount, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO service_accounts (id, account_id, display_name, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&sa.id)
        .bind(&sa.account_id)
        .bind(&sa.display_name)
        .bind(sa.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "a service account with this id already exists"))?;
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::ServiceAccount(&sa.id))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_service_accounts(
        &self,
        account_id: &str,
        page: &Page,
    ) -> Result<PageOf<ServiceAccount>> {
        self.page(
            "service_accounts",
            "id, account_id, display_name, created_at",
            "account_id = $1",
            &[account_id],
            page,
            service_account_from,
        )
        .await
    }

    async fn get_service_account(&self, id: &str) -> Result<Option<ServiceAccount>> {
        let row = sqlx::query(
            "SELECT id, account_id, display_name, created_at FROM service_accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(service_account_from).transpose()
    }

    async fn delete_service_account(&self, id: &str, audit: &AuditEvent) -> Result<bool> {
        self.delete_audited(
            "DELETE FROM service_accounts WHERE id = $1",
            &[id],
            audit,
            Some(Change::ServiceAccount(id)),
        )
        .await
    }

    async fn grant_app(
        &self,
        sa_id: &str,
        app_id: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "INSERT INTO service_account_apps (service_account_id, app_id, created_at) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(sa_id)
        .bind(app_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "the grant exists already"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        self.record_change_tx(&mut tx, audit.at, Change::ServiceAccount(sa_id))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_app(&self, sa_id: &str, app_id: &str, audit: &AuditEvent) -> Result<bool> {
        self.delete_audited(
            "DELETE FROM service_account_apps WHERE service_account_id = $1 AND app_id = $2",
            &[sa_id, app_id],
            audit,
            Some(Change::ServiceAccount(sa_id)),
        )
        .await
    }

    async fn create_app_user(&self, user: &AppUser, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO app_users (id, app_id, external_id, given_name, surname, email, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&user.id)
        .bind(&user.app_id)
        .bind(&user.external_id)
        .bind(&user.given_name)
        .bind(&user.surname)
        .bind(&user.email)
        .bind(Value::Object(user.metadata.clone()).to_string())
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "a user with this externalId already exists in this app"))?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_app_users(&self, app_id: &str, page: &Page) -> Result<PageOf<AppUser>> {
        self.page(
            "app_users",
            USER_COLUMNS,
            "app_id = $1",
            &[app_id],
            page,
            user_from,
        )
        .await
    }

    async fn find_app_user(&self, app_id: &str, id_or_external: &str) -> Result<Option<AppUser>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM app_users WHERE app_id = $1 AND (id = $2 OR external_id = $3) \
             ORDER BY (id = $4) DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(app_id)
            .bind(id_or_external)
            .bind(id_or_external)
            .bind(id_or_external)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn update_app_user(&self, user: &AppUser, audit: &AuditEvent) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE app_users SET given_name = $1, surname = $2, email = $3, metadata = $4 \
             WHERE id = $5 AND app_id = $6",
        )
        .bind(&user.given_name)
        .bind(&user.surname)
        .bind(&user.email)
        .bind(Value::Object(user.metadata.clone()).to_string())
        .bind(&user.id)
        .bind(&user.app_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_app_user(&self, app_id: &str, id: &str, audit: &AuditEvent) -> Result<bool> {
        self.delete_audited(
            "DELETE FROM app_users WHERE app_id = $1 AND id = $2",
            &[app_id, id],
            audit,
            None,
        )
        .await
    }

    async fn record_audit(&self, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &Page) -> Result<PageOf<AuditEvent>> {
        let owner = self.backend.json_text("details", "owner");
        let (where_sql, values) = audit_where(filter, &owner);
        let n = values.len();
        let before: i64 = match &page.after {
            None => i64::MAX,
            Some(after) => {
                let sql = format!(
                    "SELECT seq FROM audit_events WHERE {where_sql} AND id = ${}",
                    n + 1
                );
                bind_all(sqlx::query(AssertSqlSafe(sql)), &values)
                    .bind(after)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or(StoreError::BadCursor)?
                    .try_get("seq")?
            }
        };
        let rows = bind_all(
            sqlx::query(AssertSqlSafe(audit_page_sql(&where_sql, n))),
            &values,
        )
        .bind(before)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        page_of(&rows, page.limit, audit_from)
    }

    async fn keys_due_notice(
        &self,
        notice: KeyNotice,
        now: i64,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        let max_age =
            self.backend
                .json_days_elapsed("a.settings", "maxKeyAgeDays", "k.created_at", "$1");
        let condition = match notice {
            KeyNotice::Expiring7d => {
                "k.expires_at > $1 + 86400 AND k.expires_at <= $1 + 604800 \
                 AND k.notified_expiring_7d IS NULL"
            }
            KeyNotice::Expiring1d => {
                "k.expires_at > $1 AND k.expires_at <= $1 + 86400 AND k.notified_expiring_1d IS NULL"
            }
            KeyNotice::Expired => "k.expires_at <= $1 AND k.notified_expired IS NULL",
            KeyNotice::RotationDue => &format!(
                "k.kind = 'app' AND k.replaced_by IS NULL AND k.notified_rotation_due IS NULL \
                 AND (k.expires_at IS NULL OR k.expires_at > $1) \
                 AND EXISTS (SELECT 1 FROM apps a WHERE a.id = k.app_id AND {max_age})"
            ),
        };
        let columns = KEY_COLUMNS
            .split(", ")
            .map(|c| format!("k.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("SELECT {columns} FROM api_keys k WHERE {condition} ORDER BY k.seq LIMIT $2");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from).collect()
    }

    async fn mark_key_notice(
        &self,
        key_id: &str,
        notice: KeyNotice,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let col = notice.column();
        let sql = format!("UPDATE api_keys SET {col} = $1 WHERE id = $2 AND {col} IS NULL");
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(audit.at)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        // One read transaction, so the parts agree with each other (and
        // with the change number read first).
        let mut tx = snapshot_tx(self).await?;
        let head = snapshot_head(&mut tx, false).await?;
        let keys = snapshot_table(&mut tx, "api_keys", KEY_COLUMNS, key_from).await?;
        tx.commit().await?;
        Ok(Snapshot {
            accounts: head.accounts,
            keys,
            apps: head.apps,
            service_accounts: head.service_accounts,
            grants: head.grants,
            operator_tokens: head.operator_tokens,
            verifier_tokens: head.verifier_tokens,
            change_seq: head.change_seq,
        })
    }

    async fn snapshot_into(
        &self,
        batch: usize,
        head: &mut (dyn FnMut(SnapshotHead) + Send),
        keys: tokio::sync::mpsc::Sender<Vec<SnapshotKey>>,
    ) -> Result<()> {
        let mut tx = snapshot_tx(self).await?;
        head(snapshot_head(&mut tx, true).await?);
        snapshot_keys(&mut tx, self.backend, batch, &keys).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn changes_since(&self, seq: i64, limit: u32) -> Result<ChangeBatch> {
        let rows = sqlx::query(
            "SELECT seq, entity, entity_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let changes = rows
            .iter()
            .map(|row| {
                let entity: String = row.try_get("entity")?;
                Ok(ChangeRecord {
                    seq: row.try_get("seq")?,
                    entity: ChangeEntity::parse(&entity).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown change entity {entity:?}"))
                    })?,
                    id: row.try_get("entity_id")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pruned_through: Option<i64> =
            sqlx::query_scalar("SELECT value FROM change_watermark WHERE name = 'pruned_through'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(ChangeBatch {
            changes,
            pruned_through: pruned_through.unwrap_or(0),
        })
    }

    async fn prune_changes(&self, before: i64) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        // Keep the newest change whatever its age: it tells new readers
        // where the sequence stands.
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(seq) FROM changes WHERE at < $1 \
             AND seq < (SELECT MAX(seq) FROM changes)",
        )
        .bind(before)
        .fetch_one(&mut *tx)
        .await?;
        let Some(through) = through else {
            return Ok(0);
        };
        let done = sqlx::query("DELETE FROM changes WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO change_watermark (name, value) VALUES ('pruned_through', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(through)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    fn backend_name(&self) -> &'static str {
        self.backend.as_str()
    }

    fn change_channel(&self) -> Option<&str> {
        self.channel.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for a page of the audit list under `filter`.
    async fn audit_plan(filter: &AuditFilter) -> String {
        let store = SqlStore::in_memory().await.expect("store");
        let owner = store.backend.json_text("details", "owner");
        let (where_sql, values) = audit_where(filter, &owner);
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            audit_page_sql(&where_sql, values.len())
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), &values)
            .bind(i64::MAX)
            .bind(51i64)
            .fetch_all(&store.pool)
            .await
            .expect("plan");
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[tokio::test]
    async fn audit_pages_of_one_account_or_app_use_their_index() {
        let account = AuditFilter {
            account_id: Some("acc_A".into()),
            action: Some("key.created".into()),
            ..AuditFilter::default()
        };
        let plan = audit_plan(&account).await;
        assert!(plan.contains("audit_events_account"), "{plan}");
        let app = AuditFilter {
            app_id: Some("ap_1".into()),
            since: Some(1),
            until: Some(2),
            ..AuditFilter::default()
        };
        let plan = audit_plan(&app).await;
        assert!(plan.contains("audit_events_app"), "{plan}");
    }

    #[test]
    fn audit_conditions_number_only_the_filters_given() {
        let filter = AuditFilter {
            app_id: Some("ap_1".into()),
            reachable_by: Some("sa_1".into()),
            until: Some(7),
            ..AuditFilter::default()
        };
        let (sql, values) = audit_where(&filter, "owner");
        assert_eq!(values.len(), 3);
        assert!(sql.contains("app_id = $1"), "{sql}");
        assert!(
            sql.contains("service_account_id = $2) OR target_id = $2 OR owner = $2"),
            "{sql}"
        );
        assert!(sql.contains("at <= $3"), "{sql}");
        assert!(!sql.contains("AND account_id"), "{sql}");
        assert_eq!(audit_where(&AuditFilter::default(), "owner").0, "TRUE");
    }
}
