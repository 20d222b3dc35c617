//! Recovery and backups from the command line (`latchkey admin`,
//! `latchkey backup`, `latchkey restore`).
//!
//! These work on the store itself, beside a running node or on a stopped
//! one, with the same data directory or database URL as `serve`. A
//! running node picks up what they change within a second: operator
//! tokens are changes in the feed it follows (`sync.rs`), and passwords are
//! read from the store at every sign-in.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use latchkey_core::crypto::sha256;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, OPERATOR_TOKEN_PREFIX};
use latchkey_core::{Clock, SecretString, password};
use latchkey_store::{Actor, AuditEvent, OperatorToken, SqlStore, Store, StoreError};
use ring::rand::SystemRandom;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::bootstrap::{BootstrapError, normalize_email};
use crate::config::Config;

/// The operator token id recorded as the actor of what these commands do:
/// the command line on the store's host, not a token.
pub const CLI_ACTOR: &str = "cli";

/// The name of the lock file `serve` holds in an SQLite data directory.
pub const LOCK_FILE: &str = "latchkey.lock";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "{0} holds no Latchkey store (no latchkey.db): check --data-dir, or give --database-url for a PostgreSQL store"
    )]
    NoStore(String),
    #[error("{0} is not initialized: run `latchkey init` first")]
    NotInitialized(String),
    #[error("no operator token has the id {0:?} (`latchkey admin operator-token list` shows them)")]
    NoSuchToken(String),
    #[error("no user account has the email {0:?}")]
    NoSuchUser(String),
    #[error(
        "{0} is the only operator token: revoking it would leave no way into the operator API; create another first (`latchkey admin operator-token create`), or pass --force"
    )]
    LastToken(String),
    #[error("backups are of an SQLite store; for PostgreSQL use pg_dump (see the README)")]
    BackupNeedsSqlite,
    #[error("{0} exists already: choose a new file to write the backup to")]
    BackupExists(String),
    #[error(
        "a Latchkey server is running on {0}: stop it before restoring (restore replaces the database under it)"
    )]
    ServerRunning(String),
    #[error("{0} holds a store already: pass --force to replace it (it is kept beside, as {1})")]
    StoreExists(String, String),
    #[error("{file} is not a Latchkey backup: {detail}")]
    NotABackup { file: String, detail: String },
    #[error(
        "{0} was made with another master key than the one in this data directory: restore the master key that belongs with the backup too (master.key, LATCHKEY_MASTER_KEY or LATCHKEY_MASTER_KEY_FILE), or pass --force"
    )]
    OtherMasterKey(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Password(#[from] password::PasswordError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
    move |source| AdminError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Opens the store of `config` for an admin command: it must exist and be
/// initialized (an admin command never creates one). The master key is not
/// needed: nothing here reads or writes a key's secret.
pub async fn open_store(config: &Config) -> Result<SqlStore, AdminError> {
    let (store, name) = match &config.database_url {
        Some(url) => (
            SqlStore::connect_url(url.expose())
                .await
                .map_err(BootstrapError::from)?,
            "the PostgreSQL database of --database-url".to_string(),
        ),
        None => {
            let path = config.database_path();
            if !path.exists() {
                return Err(AdminError::NoStore(config.data_dir.display().to_string()));
            }
            (
                SqlStore::open(&path).await.map_err(BootstrapError::from)?,
                path.display().to_string(),
            )
        }
    };
    if !store.is_initialized().await? {
        store.close().await;
        return Err(AdminError::NotInitialized(name));
    }
    Ok(store)
}

/// An event done by the operator from the command line.
fn cli_event(
    clock: &dyn Clock,
    rng: &SystemRandom,
    action: &str,
    target_type: &str,
    target_id: &str,
) -> AuditEvent {
    let mut details = Map::new();
    details.insert("via".into(), Value::from("latchkey admin"));
    AuditEvent {
        id: new_id(rng, IdKind::Event),
        at: clock.unix(),
        account_id: None,
        app_id: None,
        action: action.to_string(),
        actor: Actor::Operator {
            token_id: CLI_ACTOR.into(),
        },
        address: None,
        target_type: target_type.to_string(),
        target_id: Some(target_id.to_string()),
        outcome: "success".into(),
        details,
        notify: None,
        request_id: None,
    }
}

/// A new operator token, shown once.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    pub id: String,
    pub token: SecretString,
    pub created_at: String,
}

/// An operator token as `list` shows it (never the token).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenListing {
    pub id: String,
    pub created_at: String,
}

/// `latchkey admin operator-token create`: a new operator token; those
/// already issued keep working.
pub async fn create_operator_token(
    store: &dyn Store,
    clock: &dyn Clock,
) -> Result<IssuedToken, AdminError> {
    let rng = SystemRandom::new();
    let token = secret::generate(&rng, OPERATOR_TOKEN_PREFIX);
    let stored = OperatorToken {
        id: new_id(&rng, IdKind::OperatorToken),
        token_hash: sha256(token.expose().as_bytes()).to_vec(),
        created_at: clock.unix(),
    };
    let event = cli_event(
        clock,
        &rng,
        "operatorToken.created",
        "operatorToken",
        &stored.id,
    );
    store.create_operator_token(&stored, &event).await?;
    Ok(IssuedToken {
        created_at: crate::views::rfc3339(stored.created_at),
        id: stored.id,
        token,
    })
}

/// `latchkey admin operator-token list`.
pub async fn list_operator_tokens(store: &dyn Store) -> Result<Vec<TokenListing>, AdminError> {
    Ok(store
        .operator_tokens()
        .await?
        .into_iter()
        .map(|t| TokenListing {
            created_at: crate::views::rfc3339(t.created_at),
            id: t.id,
        })
        .collect())
}

/// `latchkey admin operator-token revoke ID`. Refuses to revoke the last
/// token unless `force`.
pub async fn revoke_operator_token(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    force: bool,
) -> Result<(), AdminError> {
    let tokens = store.operator_tokens().await?;
    if !tokens.iter().any(|t| t.id == id) {
        return Err(AdminError::NoSuchToken(id.to_string()));
    }
    if tokens.len() == 1 && !force {
        return Err(AdminError::LastToken(id.to_string()));
    }
    let rng = SystemRandom::new();
    let event = cli_event(clock, &rng, "operatorToken.revoked", "operatorToken", id);
    if !store.delete_operator_token(id, &event).await? {
        return Err(AdminError::NoSuchToken(id.to_string()));
    }
    Ok(())
}

/// What `reset-password` did, shown once.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordReset {
    pub user_account_id: String,
    pub account_id: String,
    pub email: String,
    pub password: SecretString,
}

/// `latchkey admin reset-password --email EMAIL`: a new random password
/// for that user account, which ends the user's dashboard sessions.
pub async fn reset_password(
    store: &dyn Store,
    clock: &dyn Clock,
    email: &str,
) -> Result<PasswordReset, AdminError> {
    let normalized =
        normalize_email(email).ok_or_else(|| AdminError::NoSuchUser(email.to_string()))?;
    let user = store
        .find_user_account_by_email(&normalized)
        .await?
        .ok_or_else(|| AdminError::NoSuchUser(email.to_string()))?;
    let rng = SystemRandom::new();
    let mut bytes = Vec::new();
    latchkey_core::ids::fill_base62(&rng, &mut bytes, 24);
    let password = SecretString::new(String::from_utf8(bytes).unwrap_or_default());
    let hash = password::hash(password.expose())?;
    let mut event = cli_event(
        clock,
        &rng,
        "userAccount.passwordReset",
        "userAccount",
        &user.id,
    );
    event.account_id = Some(user.account_id.clone());
    if !store.reset_password(&user.id, &hash, &event).await? {
        return Err(AdminError::NoSuchUser(email.to_string()));
    }
    Ok(PasswordReset {
        user_account_id: user.id,
        account_id: user.account_id,
        email: normalized,
        password,
    })
}

/// What `backup` wrote.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    pub file: PathBuf,
    pub bytes: u64,
}

/// `latchkey backup --to FILE`: a consistent copy of the SQLite store,
/// taken while a server may be writing to it (SQLite's `VACUUM INTO`
/// reads one snapshot). Written to a temporary file beside `to`, synced,
/// then renamed into place, so `to` is never a partial copy. The master
/// key is not in it: keep `master.key` (or wherever the key is) apart.
pub async fn backup(config: &Config, to: &Path) -> Result<BackupReport, AdminError> {
    if config.database_url.is_some() {
        return Err(AdminError::BackupNeedsSqlite);
    }
    if to.exists() {
        return Err(AdminError::BackupExists(to.display().to_string()));
    }
    let store = open_store(config).await?;
    let tmp = sibling(to, ".partial");
    let _ = fs::remove_file(&tmp);
    let copied = store.backup_into(&tmp).await;
    store.close().await;
    copied?;
    let file = fs::File::open(&tmp).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    let bytes = file.metadata().map_err(io_err(&tmp))?.len();
    drop(file);
    // A link fails if `to` appeared meanwhile: never overwrite a file.
    fs::hard_link(&tmp, to).map_err(io_err(to))?;
    let _ = fs::remove_file(&tmp);
    sync_dir(to)?;
    Ok(BackupReport {
        file: to.to_path_buf(),
        bytes,
    })
}

/// What `restore` did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub database: PathBuf,
    /// Where the store that was replaced went (with `--force`).
    pub replaced: Option<PathBuf>,
}

/// Holds `latchkey.lock` in an SQLite data directory while `serve` runs,
/// so that `restore` (and a second `serve`) can tell.
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
}

/// Takes the data directory's lock, or says that a server holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<DirLock, AdminError> {
    let path = data_dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => {
            Err(AdminError::ServerRunning(data_dir.display().to_string()))
        }
        Err(fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

/// `latchkey restore --from FILE`: puts a backup back as the data
/// directory's store, on a stopped node. The backup is checked first (an
/// SQLite database that passes `PRAGMA integrity_check`, initialized by
/// Latchkey, sealed with this directory's master key when one is there);
/// an existing store is replaced only with `force`, and is kept beside as
/// `latchkey.db.replaced-<unix time>`.
pub async fn restore(
    config: &Config,
    from: &Path,
    force: bool,
    clock: &dyn Clock,
) -> Result<RestoreReport, AdminError> {
    if config.database_url.is_some() {
        return Err(AdminError::BackupNeedsSqlite);
    }
    if !config.data_dir.exists() {
        fs::create_dir_all(&config.data_dir).map_err(io_err(&config.data_dir))?;
    }
    let _lock = lock_data_dir(&config.data_dir)?;
    let database = config.database_path();
    let replaced_name = database.with_extension(format!("db.replaced-{}", clock.unix()));
    if database.exists() && !force {
        return Err(AdminError::StoreExists(
            database.display().to_string(),
            replaced_name.display().to_string(),
        ));
    }
    // Checked on a copy: opening an SQLite file can write to it (its
    // journal), and the backup itself stays as it was.
    let staged = sibling(&database, ".restoring");
    let _ = fs::remove_file(&staged);
    fs::copy(from, &staged).map_err(io_err(from))?;
    if let Err(e) = check_backup(config, &staged, from, force).await {
        let _ = fs::remove_file(&staged);
        remove_sidecars(&staged);
        return Err(e);
    }
    remove_sidecars(&staged);
    fs::File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(io_err(&staged))?;
    let replaced = if database.exists() {
        fs::rename(&database, &replaced_name).map_err(io_err(&database))?;
        for suffix in ["-wal", "-shm"] {
            let side = sidecar(&database, suffix);
            if side.exists() {
                fs::rename(&side, sidecar(&replaced_name, suffix)).map_err(io_err(&side))?;
            }
        }
        Some(replaced_name)
    } else {
        remove_sidecars(&database);
        None
    };
    fs::rename(&staged, &database).map_err(io_err(&staged))?;
    sync_dir(&database)?;
    Ok(RestoreReport { database, replaced })
}

async fn check_backup(
    config: &Config,
    staged: &Path,
    from: &Path,
    force: bool,
) -> Result<(), AdminError> {
    let not_a_backup = |detail: String| AdminError::NotABackup {
        file: from.display().to_string(),
        detail,
    };
    let store = SqlStore::open(staged)
        .await
        .map_err(|e| not_a_backup(e.to_string()))?;
    let checked = async {
        let integrity = store
            .integrity_check()
            .await
            .map_err(|e| not_a_backup(e.to_string()))?;
        if integrity != "ok" {
            return Err(not_a_backup(format!("PRAGMA integrity_check: {integrity}")));
        }
        if !store
            .is_initialized()
            .await
            .map_err(|e| not_a_backup(e.to_string()))?
        {
            return Err(not_a_backup(
                "it holds no initialized Latchkey store".into(),
            ));
        }
        if !force
            && let Some(master) = crate::bootstrap::master_key_if_present(config)?
            && !crate::bootstrap::master_key_matches(&store, &master).await?
        {
            return Err(AdminError::OtherMasterKey(from.display().to_string()));
        }
        Ok(())
    }
    .await;
    store.close().await;
    checked
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn sidecar(database: &Path, suffix: &str) -> PathBuf {
    sibling(database, suffix)
}

fn remove_sidecars(database: &Path) {
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = fs::remove_file(sidecar(database, suffix));
    }
}

fn sync_dir(file: &Path) -> Result<(), AdminError> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}
