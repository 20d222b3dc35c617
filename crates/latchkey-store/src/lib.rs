//! Latchkey's persistence.
//!
//! [`Store`] is everything the server needs from a database; [`SqlStore`]
//! implements it on an embedded SQLite file (WAL, full sync, foreign keys
//! on) or on PostgreSQL, with the migrations in `migrations/`. Writes that
//! affect verification record a [`Change`] in the same transaction, which
//! PostgreSQL announces with NOTIFY so that other nodes reload what
//! changed. The store keeps secrets only sealed under the master key; it
//! never sees a plain secret.

mod app_cache;
mod dashboard;
mod model;
mod sql;
mod teams;
mod usage;
mod webhooks;

pub use dashboard::*;
pub use model::*;
pub use sql::{Backend, SqlStore, delivery_id};
pub use teams::*;
pub use usage::*;
pub use webhooks::*;

use async_trait::async_trait;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the text says which, for the client.
    #[error("{0}")]
    Conflict(&'static str),
    /// The owner already has the maximum number of live keys.
    #[error("the owner already has {0} live keys, the maximum")]
    LimitReached(u32),
    /// A referenced row does not exist (deleted concurrently).
    #[error("a referenced resource does not exist")]
    MissingParent,
    /// The paging cursor names no row of this list.
    #[error("the after cursor does not name an item of this list")]
    BadCursor,
    /// The store was initialized before.
    #[error("the store is already initialized")]
    AlreadyInitialized,
    /// The store holds data it cannot read: a row Latchkey did not write,
    /// or a damaged SQLite file (SQLITE_CORRUPT, SQLITE_NOTADB).
    #[error("the store holds data it cannot read: {0}")]
    Corrupt(String),
    /// The database cannot be reached (connection refused or lost, pool
    /// exhausted): the operation did not happen and may be retried.
    #[error("the database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The disk holding the database is full (SQLite's SQLITE_FULL,
    /// PostgreSQL's `disk_full`): the write did not happen, and may succeed
    /// once space has been freed.
    #[error("the database's disk is full: {0}")]
    Full(sqlx::Error),
    /// The SQLite file cannot be opened or written (SQLITE_READONLY,
    /// SQLITE_CANTOPEN): a read-only file, directory or file system, or
    /// files that belong to another user.
    #[error("the database file cannot be opened for writing: {0}")]
    NotWritable(sqlx::Error),
    /// The store was configured wrongly (for example a bad database URL).
    #[error("{0}")]
    Config(String),
    #[error("file error: {0}")]
    Io(std::io::Error),
    #[error("database error: {0}")]
    Backend(sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(sqlx::migrate::MigrateError),
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    /// A migration that failed because the database is full, damaged or
    /// read-only is that failure, not a problem with the migrations.
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError;
        match e {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _)
                if !matches!(StoreError::from_sqlx_ref(&e), Kind::Other) =>
            {
                StoreError::from_sqlx(e)
            }
            e => StoreError::Migrate(e),
        }
    }
}

/// What [`StoreError::from_sqlx`] makes of a database error.
enum Kind {
    Unavailable,
    Full,
    NotWritable,
    Corrupt,
    Other,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from_sqlx(e)
    }
}

impl StoreError {
    /// Tells a lost or refused connection ([`StoreError::Unavailable`]), a
    /// full disk, a file that cannot be written and a damaged SQLite file
    /// from every other database error.
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        match Self::from_sqlx_ref(&e) {
            Kind::Unavailable => StoreError::Unavailable(e),
            Kind::Full => StoreError::Full(e),
            Kind::NotWritable => StoreError::NotWritable(e),
            Kind::Corrupt => StoreError::Corrupt(e.to_string()),
            Kind::Other => StoreError::Backend(e),
        }
    }

    fn from_sqlx_ref(e: &sqlx::Error) -> Kind {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Kind::Unavailable,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // The extended result code; its low byte is the
                    // primary code.
                    match code.parse::<i32>().map(|c| c & 0xff) {
                        Ok(13) => Kind::Full,            // SQLITE_FULL
                        Ok(8 | 14) => Kind::NotWritable, // SQLITE_READONLY, SQLITE_CANTOPEN
                        Ok(11 | 26) => Kind::Corrupt,    // SQLITE_CORRUPT, SQLITE_NOTADB
                        _ => Kind::Other,
                    }
                } else if code.starts_with("08") || code.starts_with("57P") {
                    // SQLSTATE class 08 (connection exception), 57P01..57P05
                    // (administrator shutdown, crash shutdown, cannot
                    // connect now, idle session timeout, ...).
                    Kind::Unavailable
                } else if code == "53100" {
                    Kind::Full // disk_full
                } else {
                    Kind::Other
                }
            }
            _ => Kind::Other,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Everything the server persists.
#[async_trait]
pub trait Store:
    WebhookStore + DashboardStore + TeamStore + UsageStore + Send + Sync + std::fmt::Debug + 'static
{
    // --- bootstrap -------------------------------------------------------
    async fn is_initialized(&self) -> Result<bool>;
    /// Writes the first operator token, the master-key check value and the
    /// first account in one transaction. Fails with
    /// [`StoreError::AlreadyInitialized`] if that was done before.
    async fn initialize(&self, init: &Initialization) -> Result<()>;
    /// The master-key check value written by `initialize`.
    async fn master_key_check(&self) -> Result<Option<Vec<u8>>>;
    async fn operator_tokens(&self) -> Result<Vec<OperatorToken>>;
    /// Adds an operator token (recovery: `latchkey admin operator-token
    /// create`); the tokens already issued keep working.
    async fn create_operator_token(&self, token: &OperatorToken, audit: &AuditEvent) -> Result<()>;
    /// Revokes an operator token; false if there was no such token.
    async fn delete_operator_token(&self, id: &str, audit: &AuditEvent) -> Result<bool>;

    // --- verifier tokens -------------------------------------------------
    async fn create_verifier_token(&self, token: &VerifierToken, audit: &AuditEvent) -> Result<()>;
    /// The tokens of one kind (verifier or replica).
    async fn list_verifier_tokens(
        &self,
        kind: TokenKind,
        page: &Page,
    ) -> Result<PageOf<VerifierToken>>;
    async fn get_verifier_token(&self, id: &str) -> Result<Option<VerifierToken>>;
    /// Returns false if there was no such token.
    async fn delete_verifier_token(&self, id: &str, audit: &AuditEvent) -> Result<bool>;

    // --- accounts --------------------------------------------------------
    /// Creates an account with its owner user account and a first key.
    async fn create_account(&self, new: &NewAccount, audit: &AuditEvent) -> Result<()>;
    async fn list_accounts(&self, page: &Page) -> Result<PageOf<Account>>;
    async fn get_account(&self, id: &str) -> Result<Option<Account>>;
    async fn delete_account(&self, id: &str, audit: &AuditEvent) -> Result<bool>;
    async fn get_user_account(&self, id: &str) -> Result<Option<UserAccount>>;

    // --- apps ------------------------------------------------------------
    /// Creates an app; when a service account creates it, also records
    /// that the service account reaches it.
    async fn create_app(&self, app: &App, creator: Option<&str>, audit: &AuditEvent) -> Result<()>;
    /// Apps of an account; with `only_reachable_by`, only those that service
    /// account created or was granted.
    async fn list_apps(
        &self,
        account_id: &str,
        only_reachable_by: Option<&str>,
        page: &Page,
    ) -> Result<PageOf<App>>;
    async fn get_app(&self, id: &str) -> Result<Option<App>>;
    async fn update_app(&self, app: &App, audit: &AuditEvent) -> Result<bool>;
    async fn delete_app(&self, id: &str, audit: &AuditEvent) -> Result<bool>;

    // --- apps' signing keys (issue 22) --------------------------------------
    /// An app's signing keys, the current one first (at most two).
    async fn signing_keys(&self, app_id: &str) -> Result<Vec<SigningKey>>;
    /// Makes `key` its app's current signing key, as `how` says (false:
    /// [`NewSigningKey::First`] and the app already has a current key,
    /// nothing written).
    async fn create_signing_key(
        &self,
        key: &SigningKey,
        how: NewSigningKey,
        audit: &AuditEvent,
    ) -> Result<bool>;

    // --- keys ------------------------------------------------------------
    /// Inserts a key unless its owner already has `limit` live keys at
    /// `now` ([`StoreError::LimitReached`]). Keys already replaced by a
    /// rotation do not count.
    async fn create_key(
        &self,
        key: &ApiKey,
        limit: u32,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<()>;
    /// Replaces a key: inserts the new one and shortens the old one's life,
    /// in one transaction. Fails with [`StoreError::Conflict`] if the old
    /// key was rotated or expired meanwhile.
    async fn rotate_key(&self, rotation: &Rotation, now: i64, audit: &AuditEvent) -> Result<()>;
    async fn list_keys(&self, owner: KeyOwnerRef<'_>, page: &Page) -> Result<PageOf<ApiKey>>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    async fn delete_key(&self, id: &str, audit: &AuditEvent) -> Result<bool>;
    /// Stores `lastUsedAt` values, keeping the later of stored and given.
    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<()>;
    /// Writes a key's display name and policy, and its credit balance when
    /// `credits_set` (the balance's version is raised); false if the key
    /// is gone.
    async fn update_key(&self, key: &ApiKey, credits_set: bool, audit: &AuditEvent)
    -> Result<bool>;
    /// Leases up to `want` counts of a key's rate-limit window for this
    /// node (see `sql/keys.rs`); returns (granted, taken by all nodes).
    #[allow(clippy::too_many_arguments)]
    async fn lease_ratelimit(
        &self,
        key_id: &str,
        subject: &str,
        window_start: i64,
        window_end: i64,
        limit: u32,
        want: u32,
    ) -> Result<(u32, u32)>;
    /// Leases up to `want` credits of a key's balance to this node (the
    /// balance refilled to `refill_amount` first when `period` is later
    /// than the stored one); returns (granted, left, period).
    async fn lease_credits(
        &self,
        key_id: &str,
        want: i64,
        refill_amount: Option<i64>,
        period: i64,
    ) -> Result<(i64, i64, i64)>;
    /// Gives back leased credits as `(key id, amount, period, version)`.
    async fn return_credits(&self, batch: &[(String, i64, i64, i64)]) -> Result<()>;
    /// Deletes rate-limit leases of windows that ended before `before`.
    async fn prune_ratelimit_leases(&self, before: i64) -> Result<u64>;
    /// Stores credit balances as `(key id, remaining, refill period,
    /// version)`; a balance whose version is no longer the stored one (set
    /// through the API meanwhile, maybe on another node) is not written.
    async fn record_credits(&self, batch: &[(String, i64, i64, i64)]) -> Result<()>;

    // --- service accounts ------------------------------------------------
    async fn create_service_account(&self, sa: &ServiceAccount, audit: &AuditEvent) -> Result<()>;
    async fn list_service_accounts(
        &self,
        account_id: &str,
        page: &Page,
    ) -> Result<PageOf<ServiceAccount>>;
    async fn get_service_account(&self, id: &str) -> Result<Option<ServiceAccount>>;
    async fn delete_service_account(&self, id: &str, audit: &AuditEvent) -> Result<bool>;
    /// Returns false if the grant existed already.
    async fn grant_app(
        &self,
        sa_id: &str,
        app_id: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<bool>;
    /// Returns false if there was no such grant.
    async fn revoke_app(&self, sa_id: &str, app_id: &str, audit: &AuditEvent) -> Result<bool>;

    // --- app users -------------------------------------------------------
    async fn create_app_user(&self, user: &AppUser, audit: &AuditEvent) -> Result<()>;
    async fn list_app_users(&self, app_id: &str, page: &Page) -> Result<PageOf<AppUser>>;
    /// By `usr_` id first, then by external id.
    async fn find_app_user(&self, app_id: &str, id_or_external: &str) -> Result<Option<AppUser>>;
    async fn update_app_user(&self, user: &AppUser, audit: &AuditEvent) -> Result<bool>;
    async fn delete_app_user(&self, app_id: &str, id: &str, audit: &AuditEvent) -> Result<bool>;

    // --- audit log and key notices ---------------------------------------------
    /// Records an event on its own (failed actions); successful actions
    /// record theirs in the same transaction as the change.
    async fn record_audit(&self, audit: &AuditEvent) -> Result<()>;
    /// Newest first; `page.after` is the id of the last event already seen.
    async fn list_audit(&self, filter: &AuditFilter, page: &Page) -> Result<PageOf<AuditEvent>>;
    /// Keys not yet noticed for which `notice` is due at `now`: expiring
    /// within 7 days (but not within 1 day, which has its own notice) or
    /// within 1 day, expired (keys in a rotation's grace period included),
    /// or (app keys not replaced) older than their app's `maxKeyAgeDays`.
    async fn keys_due_notice(&self, notice: KeyNotice, now: i64, limit: u32)
    -> Result<Vec<ApiKey>>;
    /// Marks a notice as recorded and records its event, once: returns
    /// false (and records nothing) if it was marked already.
    async fn mark_key_notice(
        &self,
        key_id: &str,
        notice: KeyNotice,
        audit: &AuditEvent,
    ) -> Result<bool>;

    // --- loading and following the index ------------------------------------
    async fn snapshot(&self) -> Result<Snapshot>;
    /// The same snapshot (one read transaction, the change number read
    /// first) handed out as it is read, so that no copy of every key
    /// exists at once: `head` gets everything but the keys, then the keys
    /// go to `keys` in batches of at most `batch` (each key exactly once,
    /// in no particular order). Stops early, without an error, if `keys`'
    /// receiver is gone: the receiver knows why.
    async fn snapshot_into(
        &self,
        batch: usize,
        head: &mut (dyn FnMut(SnapshotHead) + Send),
        keys: tokio::sync::mpsc::Sender<Vec<SnapshotKey>>,
    ) -> Result<()>;
    /// Up to `limit` changes recorded after `seq`, oldest first.
    async fn changes_since(&self, seq: i64, limit: u32) -> Result<ChangeBatch>;
    /// Deletes changes recorded before `before` (Unix seconds), keeping
    /// the newest; returns how many went.
    async fn prune_changes(&self, before: i64) -> Result<u64>;
    /// Which database this is (`sqlite` or `postgres`).
    fn backend_name(&self) -> &'static str;
    /// The PostgreSQL NOTIFY channel on which changes are announced.
    fn change_channel(&self) -> Option<&str>;

    // What `/metrics` shows (latchkey-server/src/metrics.rs), read at
    // scrape time.

    /// The database pools' connections, open and idle.
    fn pool_stats(&self) -> Vec<PoolStats> {
        Vec::new()
    }
    /// Webhook deliveries waiting to be sent (pending, retries included).
    async fn webhook_queue_depth(&self) -> Result<i64> {
        Ok(0)
    }
    /// The newest change in the change feed (0 when there is none).
    async fn latest_change_seq(&self) -> Result<i64> {
        Ok(0)
    }
}

/// One database pool's connections (see [`Store::pool_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// `read` or `write` (one pool that does both is `read`).
    pub name: &'static str,
    /// Open connections.
    pub size: u32,
    /// Open connections not in use.
    pub idle: usize,
}
