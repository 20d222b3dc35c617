//! The embedded SQLite store.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use crate::{
    Account, ApiKey, App, AppUser, Initialization, KeyKind, KeyOwnerRef, NewAccount, OperatorToken,
    Page, PageOf, Result, ServiceAccount, Snapshot, Store, StoreError, UserAccount,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const KEY_COLUMNS: &str = "id, kind, account_id, app_id, user_account_id, service_account_id, \
     display_name, secret_sealed, created_at, expires_at, last_used_at";
const APP_COLUMNS: &str = "id, account_id, display_name, settings, created_at";
const USER_COLUMNS: &str =
    "id, app_id, external_id, given_name, surname, email, metadata, created_at";

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    /// A new file is created readable by its owner only; SQLite gives the
    /// -wal and -shm files the same permissions.
    pub async fn open(path: &Path) -> Result<Self> {
        create_private_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every acknowledged write survives a crash or power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::connect(options).await
    }

    /// Closes every connection, checkpointing the WAL into the main file.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: each in-memory connection would be its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    async fn page<T>(
        &self,
        table: &'static str,
        columns: &'static str,
        filter: &'static str,
        args: &[&str],
        page: &Page,
        map: fn(&SqliteRow) -> Result<T>,
    ) -> Result<PageOf<T>> {
        let after_seq: i64 = match &page.after {
            None => 0,
            Some(after) => {
                let sql = format!("SELECT seq FROM {table} WHERE id = ? AND {filter}");
                let mut q = sqlx::query_scalar(AssertSqlSafe(sql)).bind(after.as_str());
                for a in args {
                    q = q.bind(*a);
                }
                q.fetch_optional(&self.pool)
                    .await?
                    .ok_or(StoreError::BadCursor)?
            }
        };
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE {filter} AND seq > ? ORDER BY seq LIMIT ?"
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
        let has_more = rows.len() > page.limit as usize;
        let items = rows
            .iter()
            .take(page.limit as usize)
            .map(map)
            .collect::<Result<Vec<_>>>()?;
        Ok(PageOf { items, has_more })
    }
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
        Err(e) => Err(StoreError::Backend(sqlx::Error::Io(e))),
    }
}

fn json_object(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(StoreError::Corrupt("a JSON column is not an object".into())),
    }
}

fn account_from(row: &SqliteRow) -> Result<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn app_from(row: &SqliteRow) -> Result<App> {
    Ok(App {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        display_name: row.try_get("display_name")?,
        settings: json_object(row.try_get("settings")?)?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from(row: &SqliteRow) -> Result<ApiKey> {
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
    })
}

fn operator_token_from(row: &SqliteRow) -> Result<OperatorToken> {
    Ok(OperatorToken {
        id: row.try_get("id")?,
        token_hash: row.try_get("token_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

fn service_account_from(row: &SqliteRow) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn user_from(row: &SqliteRow) -> Result<AppUser> {
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
fn classify(e: sqlx::Error, unique: &'static str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict(unique);
        }
        if db.is_foreign_key_violation() {
            return StoreError::MissingParent;
        }
    }
    StoreError::Backend(e)
}

fn owner_columns(key: &ApiKey) -> (Option<&str>, Option<&str>, Option<&str>) {
    match key.owner() {
        KeyOwnerRef::App(id) => (Some(id), None, None),
        KeyOwnerRef::UserAccount(id) => (None, Some(id), None),
        KeyOwnerRef::ServiceAccount(id) => (None, None, Some(id)),
    }
}

async fn insert_key_tx(tx: &mut Transaction<'_, Sqlite>, key: &ApiKey) -> Result<()> {
    let (app, user, sa) = owner_columns(key);
    sqlx::query(
        "INSERT INTO api_keys (id, kind, account_id, app_id, user_account_id, service_account_id, \
         display_name, secret_sealed, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
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
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "a key with this id already exists"))?;
    Ok(())
}

async fn insert_account_tx(tx: &mut Transaction<'_, Sqlite>, new: &NewAccount) -> Result<()> {
    sqlx::query("INSERT INTO accounts (id, display_name, created_at) VALUES (?, ?, ?)")
        .bind(&new.account.id)
        .bind(&new.account.display_name)
        .bind(new.account.created_at)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "an account with this id already exists"))?;
    sqlx::query(
        "INSERT INTO user_accounts (id, account_id, email, password_hash, created_at) \
         VALUES (?, ?, ?, ?, ?)",
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
impl Store for SqliteStore {
    async fn is_initialized(&self) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM meta WHERE name = 'initialized'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn initialize(&self, init: &Initialization) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('initialized', X'01') ON CONFLICT DO NOTHING",
        )
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyInitialized);
        }
        sqlx::query("INSERT INTO meta (name, value) VALUES ('master_key_check', ?)")
            .bind(&init.master_key_check)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO operator_tokens (id, token_hash, created_at) VALUES (?, ?, ?)")
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

    async fn create_account(&self, new: &NewAccount) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_account_tx(&mut tx, new).await?;
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
        let row = sqlx::query("SELECT id, display_name, created_at FROM accounts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_from).transpose()
    }

    async fn delete_account(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM accounts WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_user_account(&self, id: &str) -> Result<Option<UserAccount>> {
        let row = sqlx::query(
            "SELECT id, account_id, email, password_hash, created_at FROM user_accounts WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UserAccount {
                id: r.try_get("id")?,
                account_id: r.try_get("account_id")?,
                email: r.try_get("email")?,
                password_hash: r.try_get("password_hash")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn create_app(&self, app: &App, creator: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO apps (id, account_id, display_name, settings, created_at) VALUES (?, ?, ?, ?, ?)",
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
                "INSERT INTO service_account_apps (service_account_id, app_id, created_at) VALUES (?, ?, ?)",
            )
            .bind(sa)
            .bind(&app.id)
            .bind(app.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "the grant exists already"))?;
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
                    "account_id = ?",
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
                    "account_id = ? AND id IN (SELECT app_id FROM service_account_apps \
                     WHERE service_account_id = ?)",
                    &[account_id, sa],
                    page,
                    app_from,
                )
                .await
            }
        }
    }

    async fn get_app(&self, id: &str) -> Result<Option<App>> {
        let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(app_from).transpose()
    }

    async fn update_app(&self, app: &App) -> Result<bool> {
        let done = sqlx::query("UPDATE apps SET display_name = ?, settings = ? WHERE id = ?")
            .bind(&app.display_name)
            .bind(Value::Object(app.settings.clone()).to_string())
            .bind(&app.id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_app(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM apps WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_key(&self, key: &ApiKey, limit: u32, now: i64) -> Result<()> {
        let (app, user, sa) = owner_columns(key);
        // Count and insert in one statement, so two concurrent creates cannot
        // both pass the limit.
        let done = sqlx::query(
            "INSERT INTO api_keys (id, kind, account_id, app_id, user_account_id, service_account_id, \
             display_name, secret_sealed, created_at, expires_at) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE (SELECT COUNT(*) FROM api_keys \
                    WHERE (app_id = ? OR user_account_id = ? OR service_account_id = ?) \
                      AND (expires_at IS NULL OR expires_at > ?)) < ?",
        )
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
        .bind(app)
        .bind(user)
        .bind(sa)
        .bind(now)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(|e| classify(e, "a key with this id already exists"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LimitReached(limit));
        }
        Ok(())
    }

    async fn list_keys(&self, owner: KeyOwnerRef<'_>, page: &Page) -> Result<PageOf<ApiKey>> {
        let (filter, id) = match owner {
            KeyOwnerRef::App(id) => ("app_id = ?", id),
            KeyOwnerRef::UserAccount(id) => ("user_account_id = ?", id),
            KeyOwnerRef::ServiceAccount(id) => ("service_account_id = ?", id),
        };
        self.page("api_keys", KEY_COLUMNS, filter, &[id], page, key_from)
            .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from).transpose()
    }

    async fn delete_key(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, at) in batch {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_service_account(&self, sa: &ServiceAccount) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_accounts (id, account_id, display_name, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&sa.id)
        .bind(&sa.account_id)
        .bind(&sa.display_name)
        .bind(sa.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| classify(e, "a service account with this id already exists"))?;
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
            "account_id = ?",
            &[account_id],
            page,
            service_account_from,
        )
        .await
    }

    async fn get_service_account(&self, id: &str) -> Result<Option<ServiceAccount>> {
        let row = sqlx::query(
            "SELECT id, account_id, display_name, created_at FROM service_accounts WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(service_account_from).transpose()
    }

    async fn delete_service_account(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM service_accounts WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn grant_app(&self, sa_id: &str, app_id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO service_account_apps (service_account_id, app_id, created_at) \
             VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(sa_id)
        .bind(app_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| classify(e, "the grant exists already"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_app(&self, sa_id: &str, app_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM service_account_apps WHERE service_account_id = ? AND app_id = ?",
        )
        .bind(sa_id)
        .bind(app_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_app_user(&self, user: &AppUser) -> Result<()> {
        sqlx::query(
            "INSERT INTO app_users (id, app_id, external_id, given_name, surname, email, metadata, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.app_id)
        .bind(&user.external_id)
        .bind(&user.given_name)
        .bind(&user.surname)
        .bind(&user.email)
        .bind(Value::Object(user.metadata.clone()).to_string())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| classify(e, "a user with this externalId already exists in this app"))?;
        Ok(())
    }

    async fn list_app_users(&self, app_id: &str, page: &Page) -> Result<PageOf<AppUser>> {
        self.page(
            "app_users",
            USER_COLUMNS,
            "app_id = ?",
            &[app_id],
            page,
            user_from,
        )
        .await
    }

    async fn find_app_user(&self, app_id: &str, id_or_external: &str) -> Result<Option<AppUser>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM app_users WHERE app_id = ? AND (id = ? OR external_id = ?) \
             ORDER BY (id = ?) DESC LIMIT 1"
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

    async fn update_app_user(&self, user: &AppUser) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE app_users SET given_name = ?, surname = ?, email = ?, metadata = ? \
             WHERE id = ? AND app_id = ?",
        )
        .bind(&user.given_name)
        .bind(&user.surname)
        .bind(&user.email)
        .bind(Value::Object(user.metadata.clone()).to_string())
        .bind(&user.id)
        .bind(&user.app_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_app_user(&self, app_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM app_users WHERE app_id = ? AND id = ?")
            .bind(app_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        // One read transaction, so the parts agree with each other.
        let mut tx = self.pool.begin().await?;
        let accounts: Vec<String> = sqlx::query_scalar("SELECT id FROM accounts")
            .fetch_all(&mut *tx)
            .await?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY seq");
        let keys = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(key_from)
            .collect::<Result<Vec<_>>>()?;
        let pairs = |rows: Vec<SqliteRow>| -> Result<Vec<(String, String)>> {
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        };
        let apps = pairs(
            sqlx::query("SELECT id, account_id FROM apps")
                .fetch_all(&mut *tx)
                .await?,
        )?;
        let service_accounts = pairs(
            sqlx::query("SELECT id, account_id FROM service_accounts")
                .fetch_all(&mut *tx)
                .await?,
        )?;
        let grants = pairs(
            sqlx::query("SELECT service_account_id, app_id FROM service_account_apps")
                .fetch_all(&mut *tx)
                .await?,
        )?;
        let operator_tokens = sqlx::query("SELECT id, token_hash, created_at FROM operator_tokens")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(operator_token_from)
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(Snapshot {
            accounts,
            keys,
            apps,
            service_accounts,
            grants,
            operator_tokens,
        })
    }
}
