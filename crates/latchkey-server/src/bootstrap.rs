//! Opening a data directory: the store, the master key, the first-run
//! initialization and the in-memory key index.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_core::crypto::sha256;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, KEY_SECRET_PREFIX, OPERATOR_TOKEN_PREFIX};
use latchkey_core::{Clock, KeyIndex, KeyOwner, LiveKey, MasterKey, SecretString, password};
use latchkey_store::{
    Account, ApiKey, Initialization, KeyKind, NewAccount, OperatorToken, SnapshotHead, SnapshotKey,
    SqlStore, Store, StoreError, UserAccount, VerifierToken,
};
use ring::rand::SystemRandom;
use serde::Serialize;

use crate::config::Config;
use crate::state::{AppState, Shared};

const MASTER_CHECK_AAD: &str = "latchkey-master-key-check";
const MASTER_CHECK_TEXT: &[u8] = b"latchkey";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("the store is already initialized in {0}")]
    AlreadyInitialized(String),
    #[error(
        "the store in {0} is initialized but its master key is missing: restore master.key, or give the key with LATCHKEY_MASTER_KEY or LATCHKEY_MASTER_KEY_FILE"
    )]
    MissingMasterKey(String),
    #[error(
        "the master key does not match this store (a different master.key or LATCHKEY_MASTER_KEY?): start with the master key the store was initialized with (master.key, LATCHKEY_MASTER_KEY or LATCHKEY_MASTER_KEY_FILE)"
    )]
    WrongMasterKey,
    #[error(
        "the PostgreSQL database is not initialized: run `latchkey init --database-url ...` once, then start the nodes with the master key it wrote"
    )]
    NotInitialized,
    #[error("the master key is malformed: it must be 32 bytes, base64-encoded")]
    BadMasterKey,
    #[error(
        "{0} holds master.key but no latchkey.db: the database is missing. Restore latchkey.db from a backup; to start a new store with this master key instead, run `latchkey init` on this directory first"
    )]
    MissingDatabase(String),
    #[error(
        "{store} is damaged or is not a Latchkey database ({detail}): restore it from a backup (with its -wal file, if there is one), or move it away to start a new store"
    )]
    CorruptDatabase { store: String, detail: String },
    #[error(
        "{store} cannot be opened for writing ({detail}): the data directory and the files in it must belong to the user running latchkey and be writable, on a file system mounted read-write"
    )]
    NotWritable { store: String, detail: String },
    #[error("the disk holding {store} is full: free some space, then start latchkey again")]
    DiskFull { store: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the owner email {0:?} is not a valid email address")]
    BadEmail(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("a stored key could not be decrypted: {0}")]
    Crypto(#[from] latchkey_core::crypto::CryptoError),
    #[error("{0}")]
    Password(#[from] password::PasswordError),
    /// The runtime shut down while the index was being built.
    #[error("building the key index was interrupted")]
    Interrupted,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What `init` created, shown once.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitReport {
    pub operator_token: SecretString,
    pub account: IdOnly,
    pub user: InitUser,
    pub key: InitKey,
}

#[derive(Debug, Serialize)]
pub struct IdOnly {
    pub id: String,
}

#[derive(Debug, Serialize)]
pub struct InitUser {
    pub id: String,
    pub email: String,
    pub password: SecretString,
}

#[derive(Debug, Serialize)]
pub struct InitKey {
    pub id: String,
    pub secret: SecretString,
}

/// An opened data directory, ready to serve.
#[derive(Debug)]
pub struct Opened {
    pub state: AppState,
    /// Set when opening initialized an empty store.
    pub init_report: Option<InitReport>,
}

/// Opens the data directory; with `init_if_empty`, initializes an empty
/// store first (what `latchkey serve` does on first start).
pub async fn open(
    config: Config,
    clock: Arc<dyn Clock>,
    init_if_empty: bool,
) -> Result<Opened, BootstrapError> {
    let store = database_name(&config);
    open_inner(config, clock, init_if_empty)
        .await
        .map_err(|e| explain(&store, e))
}

async fn open_inner(
    config: Config,
    clock: Arc<dyn Clock>,
    init_if_empty: bool,
) -> Result<Opened, BootstrapError> {
    let rng = SystemRandom::new();
    if init_if_empty {
        check_database_present(&config)?;
    }
    create_data_dir(&config.data_dir)?;
    let store: Arc<dyn Store> = Arc::new(open_store(&config).await?);
    let initialized = store.is_initialized().await?;
    // Nodes sharing a database must share one master key, so a shared
    // database is initialized once, explicitly, never by whichever node
    // starts first.
    if !initialized && init_if_empty && config.database_url.is_some() {
        return Err(BootstrapError::NotInitialized);
    }
    let master = load_master_key(&config, &rng, initialized)?;
    let init_report = if initialized {
        check_master_key(store.as_ref(), &master).await?;
        None
    } else if init_if_empty {
        Some(
            initialize(
                store.as_ref(),
                &master,
                &rng,
                clock.as_ref(),
                &config.owner_email,
            )
            .await?,
        )
    } else {
        None
    };
    // The snapshot holds every change committed before it was taken.
    let snapshot_started = std::time::Instant::now();
    let master = Arc::new(master);
    let (index, change_seq) = build_index(store.as_ref(), &master).await?;
    let freshness = if config.database_url.is_some() {
        crate::sync::Freshness::shared(config.staleness_window, change_seq, snapshot_started)
    } else {
        crate::sync::Freshness::standalone()
    };
    Ok(Opened {
        state: AppState::new(Shared {
            store,
            index: Arc::new(index),
            master,
            clock,
            rng,
            throttle: Arc::new(crate::throttle::AuthThrottle::new(config.auth_throttle)),
            config: Arc::new(config),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            exposures: Arc::default(),
            freshness: Arc::new(freshness),
        }),
        init_report,
    })
}

/// `latchkey init`: initializes an empty store, failing if it is not empty.
pub async fn init(config: Config, clock: Arc<dyn Clock>) -> Result<InitReport, BootstrapError> {
    let store = database_name(&config);
    init_inner(config, clock)
        .await
        .map_err(|e| explain(&store, e))
}

async fn init_inner(config: Config, clock: Arc<dyn Clock>) -> Result<InitReport, BootstrapError> {
    let rng = SystemRandom::new();
    create_data_dir(&config.data_dir)?;
    let store = open_store(&config).await?;
    if store.is_initialized().await? {
        return Err(BootstrapError::AlreadyInitialized(store_name(&config)));
    }
    let master = load_master_key(&config, &rng, false)?;
    let report = initialize(&store, &master, &rng, clock.as_ref(), &config.owner_email).await;
    store.close().await;
    report
}

/// The PostgreSQL database of `database_url`, or `latchkey.db` in the
/// data directory.
async fn open_store(config: &Config) -> Result<SqlStore, BootstrapError> {
    match &config.database_url {
        Some(url) => Ok(SqlStore::connect_url(url.expose()).await?),
        None => Ok(SqlStore::open(&config.database_path()).await?),
    }
}

/// Where the store is, for messages (never the URL, which may hold a
/// password).
fn store_name(config: &Config) -> String {
    match &config.database_url {
        Some(_) => "the PostgreSQL database of --database-url".into(),
        None => config.data_dir.display().to_string(),
    }
}

/// The database, for messages: the SQLite file, or the PostgreSQL
/// database (never its URL).
fn database_name(config: &Config) -> String {
    match &config.database_url {
        Some(_) => "the PostgreSQL database of --database-url".into(),
        None => config.database_path().display().to_string(),
    }
}

/// Says what a store that cannot be opened or read needs (`store` names
/// it); other errors pass unchanged.
fn explain(store: &str, e: BootstrapError) -> BootstrapError {
    let store = store.to_string();
    match e {
        BootstrapError::Store(StoreError::Corrupt(detail)) => {
            BootstrapError::CorruptDatabase { store, detail }
        }
        BootstrapError::Store(StoreError::NotWritable(e)) => BootstrapError::NotWritable {
            store,
            detail: e.to_string(),
        },
        BootstrapError::Store(StoreError::Full(_)) => BootstrapError::DiskFull { store },
        e => e,
    }
}

/// Refuses to start `serve` on a data directory that holds the master key
/// written by a first start but not the database: the database was lost
/// (deleted, or not restored with the key), and starting would silently
/// initialize an empty store in its place, under the old key. `init` may
/// still start a new store there, on purpose.
fn check_database_present(config: &Config) -> Result<(), BootstrapError> {
    if config.database_url.is_some() {
        return Ok(());
    }
    let missing = |path: &Path| {
        fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    };
    if missing(&config.database_path()) && !missing(&config.master_key_path()) {
        return Err(BootstrapError::MissingDatabase(
            config.data_dir.display().to_string(),
        ));
    }
    Ok(())
}

fn create_data_dir(dir: &Path) -> Result<(), BootstrapError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// The master key from LATCHKEY_MASTER_KEY, LATCHKEY_MASTER_KEY_FILE or
/// `master.key` in the data directory, generating the latter for a new store.
fn load_master_key(
    config: &Config,
    rng: &SystemRandom,
    initialized: bool,
) -> Result<MasterKey, BootstrapError> {
    if let Some(text) = &config.master_key {
        return MasterKey::from_base64(text.expose()).map_err(|_| BootstrapError::BadMasterKey);
    }
    let path = config
        .master_key_file
        .clone()
        .unwrap_or_else(|| config.master_key_path());
    match fs::read_to_string(&path) {
        Ok(text) => {
            if let Ok(meta) = fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "the master key file is readable by other users; chmod 600 it");
            }
            MasterKey::from_base64(&text).map_err(|_| BootstrapError::BadMasterKey)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if initialized || config.master_key_file.is_some() {
                return Err(BootstrapError::MissingMasterKey(
                    config.data_dir.display().to_string(),
                ));
            }
            let key = MasterKey::generate(rng)?;
            write_key_file(&path, key.to_base64())?;
            Ok(key)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Writes the key to a temporary file (0600), syncs it, then renames it into
/// place and syncs the directory, so a crash never leaves an empty or partial
/// `master.key`.
fn write_key_file(path: &Path, text: &str) -> Result<(), BootstrapError> {
    let tmp = path.with_extension("key.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err(&tmp))?;
    drop(file);
    // hard_link fails if master.key appeared meanwhile; never overwrite one.
    fs::hard_link(&tmp, path).map_err(io_err(path))?;
    let _ = fs::remove_file(&tmp);
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

async fn check_master_key(store: &dyn Store, master: &MasterKey) -> Result<(), BootstrapError> {
    let check = store
        .master_key_check()
        .await?
        .ok_or(BootstrapError::WrongMasterKey)?;
    master
        .open(MASTER_CHECK_AAD, &check)
        .map_err(|_| BootstrapError::WrongMasterKey)?;
    Ok(())
}

/// Everything a new account needs: the account, its owner user account and
/// the owner's first `act_` key (its secret sealed). Returns the plain
/// secret for the one response that shows it.
pub fn new_account(
    rng: &SystemRandom,
    master: &MasterKey,
    now: i64,
    display_name: &str,
    email: &str,
    password_hash: String,
) -> Result<(NewAccount, SecretString), BootstrapError> {
    let account = Account {
        id: new_id(rng, IdKind::Account),
        display_name: display_name.to_string(),
        created_at: now,
    };
    let owner = UserAccount {
        id: new_id(rng, IdKind::UserAccount),
        account_id: account.id.clone(),
        email: email.to_string(),
        password_hash,
        created_at: now,
    };
    let key_id = new_id(rng, IdKind::UserAccountKey);
    let secret = secret::generate(rng, KEY_SECRET_PREFIX);
    let key = ApiKey {
        secret_sealed: master.seal(rng, &key_id, secret.expose().as_bytes())?,
        id: key_id,
        kind: KeyKind::UserAccount,
        account_id: account.id.clone(),
        owner_id: owner.id.clone(),
        display_name: "owner key".into(),
        created_at: now,
        expires_at: None,
        last_used_at: None,
        rotated_from: None,
        replaced_by: None,
    };
    Ok((
        NewAccount {
            account,
            owner,
            key,
        },
        secret,
    ))
}

/// Normalizes and checks an email address (lower-cased, trimmed).
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(email)
}

async fn initialize(
    store: &dyn Store,
    master: &MasterKey,
    rng: &SystemRandom,
    clock: &dyn Clock,
    owner_email: &str,
) -> Result<InitReport, BootstrapError> {
    let now = clock.unix();
    let email = normalize_email(owner_email)
        .ok_or_else(|| BootstrapError::BadEmail(owner_email.to_string()))?;
    let operator_token = secret::generate(rng, OPERATOR_TOKEN_PREFIX);
    let mut password_bytes = Vec::new();
    latchkey_core::ids::fill_base62(rng, &mut password_bytes, 24);
    let password = SecretString::new(String::from_utf8(password_bytes).unwrap_or_default());
    let hash = password::hash(password.expose())?;
    let (first_account, key_secret) =
        new_account(rng, master, now, "Default account", &email, hash)?;
    let init = Initialization {
        master_key_check: master.seal(rng, MASTER_CHECK_AAD, MASTER_CHECK_TEXT)?,
        operator_token: OperatorToken {
            id: new_id(rng, IdKind::OperatorToken),
            token_hash: sha256(operator_token.expose().as_bytes()).to_vec(),
            created_at: now,
        },
        first_account,
    };
    store.initialize(&init).await?;
    Ok(InitReport {
        operator_token,
        account: IdOnly {
            id: init.first_account.account.id.clone(),
        },
        user: InitUser {
            id: init.first_account.owner.id.clone(),
            email,
            password,
        },
        key: InitKey {
            id: init.first_account.key.id.clone(),
            secret: key_secret,
        },
    })
}

/// Keys per batch from the store to the threads that open them: large
/// enough that the per-batch costs (a query, a channel message, a lock of
/// the index) vanish, small enough that only a few batches are in flight.
const INDEX_BATCH: usize = 1024;

/// Builds the verification index from the store, decrypting every secret;
/// also returns the last change the snapshot includes.
///
/// The keys are opened and prepared (AES-GCM, the HMAC key schedule, the
/// Basic encoding) as the store hands them out, on as many threads as
/// there are cores, while the store reads the next batch: no copy of every
/// stored key exists at once, and with 10^6 keys start-up is bound by the
/// reading, not by the cryptography.
pub async fn build_index(
    store: &dyn Store,
    master: &Arc<MasterKey>,
) -> Result<(KeyIndex, i64), BootstrapError> {
    build_index_in_batches(store, master, INDEX_BATCH).await
}

async fn build_index_in_batches(
    store: &dyn Store,
    master: &Arc<MasterKey>,
    batch: usize,
) -> Result<(KeyIndex, i64), BootstrapError> {
    let index = Arc::new(KeyIndex::new());
    let failed = Arc::new(AtomicBool::new(false));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let (sender, receiver) = tokio::sync::mpsc::channel(2 * workers);
    let receiver = Arc::new(Mutex::new(receiver));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (receiver, index, master, failed) = (
                receiver.clone(),
                index.clone(),
                master.clone(),
                failed.clone(),
            );
            tokio::task::spawn_blocking(move || open_keys(&receiver, &index, &master, &failed))
        })
        .collect();
    // Only the workers hold the receiver now: if they all stop, the store
    // stops sending.
    drop(receiver);
    let mut change_seq = 0;
    let read = {
        let mut head = |head: SnapshotHead| {
            change_seq = head.change_seq;
            index_head(&index, head);
        };
        store.snapshot_into(batch, &mut head, sender).await
    };
    let mut opened = Ok(());
    for handle in handles {
        match handle.await {
            Ok(result) => opened = opened.and(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => opened = opened.and(Err(BootstrapError::Interrupted)),
        }
    }
    read?;
    opened?;
    let index = Arc::try_unwrap(index).map_err(|_| BootstrapError::Interrupted)?;
    Ok((index, change_seq))
}

/// Everything but the keys, which need it in place: a key enters the
/// index only if its owner is there.
fn index_head(index: &KeyIndex, head: SnapshotHead) {
    for account_id in &head.accounts {
        index.insert_account(account_id);
    }
    for app in &head.apps {
        index.insert_app(&app.id, &app.account_id);
        index.set_app_policy(&app.id, crate::api::policy::app_policy(&app.settings));
    }
    for (sa_id, account_id) in &head.service_accounts {
        index.insert_service_account(sa_id, account_id);
    }
    for (sa_id, app_id) in &head.grants {
        index.grant(sa_id, app_id);
    }
    for token in &head.operator_tokens {
        let mut hash = [0u8; 32];
        if token.token_hash.len() == 32 {
            hash.copy_from_slice(&token.token_hash);
            index.insert_operator_token(&token.id, hash);
        }
    }
    for token in &head.verifier_tokens {
        index_verifier_token(index, token);
    }
    index.reserve_keys(usize::try_from(head.key_count).unwrap_or(0));
}

/// Adds a stored verifier token to the index (a stored hash of the wrong
/// length matches nothing and is left out).
pub fn index_verifier_token(index: &KeyIndex, token: &VerifierToken) {
    if let Ok(hash) = <[u8; 32]>::try_from(token.token_hash.as_slice()) {
        index.insert_verifier_token(&token.id, hash);
    }
}

/// One worker of [`build_index`]: opens batches of keys and adds them to
/// the index until the store has sent every key or a worker failed.
fn open_keys(
    receiver: &Mutex<tokio::sync::mpsc::Receiver<Vec<SnapshotKey>>>,
    index: &KeyIndex,
    master: &MasterKey,
    failed: &AtomicBool,
) -> Result<(), BootstrapError> {
    while !failed.load(Ordering::Relaxed) {
        // The lock only orders the workers' turns at the queue; a worker
        // that panicked left nothing half-done in it.
        let batch = receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blocking_recv();
        let Some(batch) = batch else {
            return Ok(());
        };
        let opened = batch
            .iter()
            .map(|key| {
                prepare_key(
                    key.id.clone(),
                    key.kind,
                    &key.account_id,
                    &key.owner_id,
                    &key.secret_sealed,
                    key.expires_at,
                    key.last_used_at,
                    master,
                )
            })
            .collect::<Result<Vec<_>, _>>();
        drop(batch);
        match opened {
            // Foreign keys guarantee every owner is in the snapshot.
            Ok(keys) => {
                index.insert_keys(keys);
            }
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The index entry of a stored key.
pub fn live_key(key: &ApiKey, master: &MasterKey) -> Result<LiveKey, BootstrapError> {
    prepare_key(
        key.id.clone(),
        key.kind,
        &key.account_id,
        &key.owner_id,
        &key.secret_sealed,
        key.expires_at,
        key.last_used_at,
        master,
    )
}

#[allow(clippy::too_many_arguments)]
fn prepare_key(
    id: String,
    kind: KeyKind,
    account_id: &str,
    owner_id: &str,
    secret_sealed: &[u8],
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    master: &MasterKey,
) -> Result<LiveKey, BootstrapError> {
    let secret = master.open(&id, secret_sealed)?;
    Ok(LiveKey::new(
        id,
        owner(kind, account_id, owner_id),
        &secret,
        expires_at,
        last_used_at,
    ))
}

pub fn key_owner(key: &ApiKey) -> KeyOwner {
    owner(key.kind, &key.account_id, &key.owner_id)
}

fn owner(kind: KeyKind, account_id: &str, owner_id: &str) -> KeyOwner {
    let account_id = account_id.into();
    match kind {
        KeyKind::App => KeyOwner::App {
            account_id,
            app_id: owner_id.into(),
        },
        KeyKind::UserAccount => KeyOwner::UserAccount {
            account_id,
            user_account_id: owner_id.into(),
        },
        KeyKind::ServiceAccount => KeyOwner::ServiceAccount {
            account_id,
            service_account_id: owner_id.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::SecretString;
    use latchkey_store::{Actor, App, AuditEvent, ServiceAccount};
    use serde_json::{Map, Value, json};

    use super::*;

    fn ev(n: &mut u32) -> AuditEvent {
        *n += 1;
        AuditEvent {
            id: format!("evt_{n}"),
            at: 100,
            account_id: None,
            app_id: None,
            action: "test".into(),
            actor: Actor::System,
            address: None,
            target_type: "test".into(),
            target_id: None,
            outcome: "success".into(),
            details: Map::new(),
            notify: None,
        }
    }

    async fn test_store() -> (SqlStore, Option<tempfile::TempDir>) {
        if std::env::var("LATCHKEY_TEST_BACKEND").as_deref() == Ok("postgres") {
            let schema = latchkey_testdb::fresh_schema().await;
            let store = SqlStore::connect_postgres(&schema.url)
                .await
                .expect("connect to PostgreSQL");
            (store, None)
        } else {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqlStore::open(&dir.path().join("t.db"))
                .await
                .expect("open");
            (store, Some(dir))
        }
    }

    /// The index as it was built before keys were streamed: every row of
    /// `Store::snapshot` first, then one key after the other.
    fn reference_index(snapshot: &latchkey_store::Snapshot, master: &MasterKey) -> KeyIndex {
        let index = KeyIndex::new();
        for account_id in &snapshot.accounts {
            index.insert_account(account_id);
        }
        for app in &snapshot.apps {
            index.insert_app(&app.id, &app.account_id);
            index.set_app_policy(&app.id, crate::api::policy::app_policy(&app.settings));
        }
        for (sa_id, account_id) in &snapshot.service_accounts {
            index.insert_service_account(sa_id, account_id);
        }
        for (sa_id, app_id) in &snapshot.grants {
            index.grant(sa_id, app_id);
        }
        for token in &snapshot.operator_tokens {
            let hash: [u8; 32] = token.token_hash.as_slice().try_into().expect("32 bytes");
            index.insert_operator_token(&token.id, hash);
        }
        for token in &snapshot.verifier_tokens {
            index_verifier_token(&index, token);
        }
        for key in &snapshot.keys {
            assert!(index.insert_key(live_key(key, master).expect("opens")));
        }
        index
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_streamed_index_equals_the_one_built_from_the_whole_snapshot() {
        let (store, _dir) = test_store().await;
        let rng = SystemRandom::new();
        let master = Arc::new(MasterKey::generate(&rng).expect("master key"));
        let clock = latchkey_core::ManualClock::fixed();
        let report = initialize(&store, &master, &rng, &clock, "owner@example.com")
            .await
            .expect("initialize");
        let account = report.account.id.clone();
        let mut n = 0;
        let mut secrets: Vec<(String, SecretString)> = Vec::new();
        secrets.push((report.key.id.clone(), report.key.secret));
        let mut apps = Vec::new();
        for (i, settings) in [json!({}), json!({"maxTokenTtlSeconds": 300})]
            .into_iter()
            .enumerate()
        {
            let Value::Object(settings) = settings else {
                unreachable!()
            };
            let app = App {
                id: new_id(&rng, IdKind::App),
                account_id: account.clone(),
                display_name: format!("app {i}"),
                settings,
                created_at: 100,
            };
            store
                .create_app(&app, None, &ev(&mut n))
                .await
                .expect("app");
            apps.push(app.id);
        }
        let sa = ServiceAccount {
            id: new_id(&rng, IdKind::ServiceAccount),
            account_id: account.clone(),
            display_name: "robot".into(),
            created_at: 100,
        };
        store
            .create_service_account(&sa, &ev(&mut n))
            .await
            .expect("sa");
        assert!(
            store
                .grant_app(&sa.id, &apps[1], 100, &ev(&mut n))
                .await
                .expect("grant")
        );
        for i in 0..40i64 {
            let (kind, id_kind, owner) = match i % 4 {
                3 => (KeyKind::ServiceAccount, IdKind::ServiceAccountKey, &sa.id),
                k => (KeyKind::App, IdKind::AppKey, &apps[usize::from(k == 1)]),
            };
            let id = new_id(&rng, id_kind);
            let secret = secret::generate(&rng, KEY_SECRET_PREFIX);
            let key = ApiKey {
                secret_sealed: master
                    .seal(&rng, &id, secret.expose().as_bytes())
                    .expect("seal"),
                id: id.clone(),
                kind,
                account_id: account.clone(),
                owner_id: owner.clone(),
                display_name: "k".into(),
                created_at: 100,
                expires_at: (i % 3 == 0).then_some(10_000 + i),
                last_used_at: None,
                rotated_from: None,
                replaced_by: None,
            };
            store
                .create_key(&key, 1000, 100, &ev(&mut n))
                .await
                .expect("key");
            secrets.push((id, secret));
        }
        store
            .record_last_used(&[(secrets[5].0.clone(), 777)])
            .await
            .expect("last used");
        // A gap in the keys' sequence numbers.
        let (gone, _) = secrets.remove(7);
        assert!(store.delete_key(&gone, &ev(&mut n)).await.expect("delete"));
        // Verifier tokens: one live, one deleted.
        let mut verifier_tokens = Vec::new();
        for name in ["live", "deleted"] {
            let token = secret::generate(&rng, latchkey_core::secret::VERIFIER_TOKEN_PREFIX);
            let stored = VerifierToken {
                id: new_id(&rng, IdKind::VerifierToken),
                display_name: name.into(),
                token_hash: sha256(token.expose().as_bytes()).to_vec(),
                created_at: 100,
            };
            store
                .create_verifier_token(&stored, &ev(&mut n))
                .await
                .expect("verifier token");
            verifier_tokens.push((stored.id, token));
        }
        assert!(
            store
                .delete_verifier_token(&verifier_tokens[1].0, &ev(&mut n))
                .await
                .expect("delete")
        );

        let snapshot = store.snapshot().await.expect("snapshot");
        let reference = reference_index(&snapshot, &master);
        assert_eq!(reference.key_count(), secrets.len());
        for batch in [1, 3, 8, secrets.len() - 1, secrets.len(), secrets.len() + 1] {
            let (index, seq) = build_index_in_batches(&store, &master, batch)
                .await
                .expect("build");
            assert_eq!(seq, snapshot.change_seq, "batch {batch}");
            assert_eq!(index.key_count(), reference.key_count(), "batch {batch}");
            assert!(index.key(&gone).is_none());
            for (id, secret) in &secrets {
                let (got, want) = (
                    index.key(id).expect("streamed"),
                    reference.key(id).expect("reference"),
                );
                assert_eq!(got.owner, want.owner, "{id}");
                assert_eq!(got.expires_at(), want.expires_at(), "{id}");
                assert_eq!(got.last_used_at(), want.last_used_at(), "{id}");
                assert_eq!(got.app_token_ttl(), want.app_token_ttl(), "{id}");
                assert!(got.secret_matches(secret.expose().as_bytes()), "{id}");
            }
            for app in &apps {
                assert_eq!(index.app_policy(app), reference.app_policy(app));
                assert_eq!(index.app_account(app), reference.app_account(app));
                assert_eq!(
                    index.service_account_reaches(&sa.id, app),
                    reference.service_account_reaches(&sa.id, app)
                );
            }
            let (live, deleted) = (&verifier_tokens[0], &verifier_tokens[1]);
            assert_eq!(
                index.verifier_token_id(live.1.expose()).as_deref(),
                Some(live.0.as_str())
            );
            assert_eq!(
                reference.verifier_token_id(live.1.expose()).as_deref(),
                Some(live.0.as_str())
            );
            assert_eq!(index.verifier_token_id(deleted.1.expose()), None);
            assert_eq!(reference.verifier_token_id(deleted.1.expose()), None);
            let token = report.operator_token.expose();
            assert!(index.operator_token_id(token).is_some());
            assert_eq!(
                index.operator_token_id(token),
                reference.operator_token_id(token)
            );
        }
        assert_eq!(
            reference.key(&secrets[5].0).and_then(|k| k.last_used_at()),
            Some(777)
        );
        assert_eq!(
            reference.key(&secrets[2].0).and_then(|k| k.app_token_ttl()),
            Some(300)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_that_does_not_open_fails_the_build() {
        let (store, _dir) = test_store().await;
        let rng = SystemRandom::new();
        let master = Arc::new(MasterKey::generate(&rng).expect("master key"));
        let clock = latchkey_core::ManualClock::fixed();
        initialize(&store, &master, &rng, &clock, "owner@example.com")
            .await
            .expect("initialize");
        let other = Arc::new(MasterKey::generate(&rng).expect("master key"));
        for batch in [1, 1024] {
            assert!(matches!(
                build_index_in_batches(&store, &other, batch).await,
                Err(BootstrapError::Crypto(_))
            ));
        }
        // The store is still usable afterwards.
        assert!(build_index_in_batches(&store, &master, 1).await.is_ok());
    }
}
