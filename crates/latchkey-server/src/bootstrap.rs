//! Opening a data directory: the store, the master key, the first-run
//! initialization and the in-memory key index.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use latchkey_core::crypto::sha256;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, KEY_SECRET_PREFIX, OPERATOR_TOKEN_PREFIX};
use latchkey_core::{Clock, MasterKey, SecretString, password};
use latchkey_store::{
    Account, ApiKey, Initialization, KeyKind, NewAccount, OperatorToken, SqlStore, Store,
    StoreError, UserAccount,
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
    #[error(transparent)]
    Index(#[from] crate::indexing::IndexError),
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
    let (index, change_seq) =
        crate::indexing::build_index(store.as_ref(), &master, config.database_url.is_some())
            .await?;
    let freshness = if config.database_url.is_some() {
        crate::sync::Freshness::shared(config.staleness_window, change_seq, snapshot_started)
    } else {
        crate::sync::Freshness::standalone(change_seq)
    };
    Ok(Opened {
        state: AppState::new(Shared {
            store,
            index: Arc::new(index),
            master,
            clock,
            rng,
            throttle: Arc::new(crate::throttle::AuthThrottle::new(config.auth_throttle)),
            nonces: Arc::default(),
            // Nodes that share a store lease their rate-limit counts from
            // it, so that a limit holds for the cluster.
            limiter: Arc::new(if config.database_url.is_some() {
                latchkey_core::policy::RateLimiter::leased()
            } else {
                latchkey_core::policy::RateLimiter::new()
            }),
            notices: Arc::default(),
            leases: Arc::default(),
            metrics: Arc::default(),
            refusals: Arc::default(),
            usage: Arc::default(),
            feed: Arc::new(tokio::sync::watch::Sender::new(0)),
            closing: Arc::default(),
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

/// The master key `config` names, if there is one (`restore` checks a
/// backup against it); None when no key is given and `master.key` is absent.
pub(crate) fn master_key_if_present(config: &Config) -> Result<Option<MasterKey>, BootstrapError> {
    if config.master_key.is_none()
        && config.master_key_file.is_none()
        && !config.master_key_path().exists()
    {
        return Ok(None);
    }
    let rng = SystemRandom::new();
    load_master_key(config, &rng, true).map(Some)
}

/// Whether `master` is the key the store was initialized with.
pub(crate) async fn master_key_matches(
    store: &dyn Store,
    master: &MasterKey,
) -> Result<bool, BootstrapError> {
    match check_master_key(store, master).await {
        Ok(()) => Ok(true),
        Err(BootstrapError::WrongMasterKey) => Ok(false),
        Err(e) => Err(e),
    }
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
        role: latchkey_core::policy::Role::Owner,
    };
    let key_id = new_id(rng, IdKind::UserAccountKey);
    let secret = secret::generate(rng, KEY_SECRET_PREFIX);
    let key = ApiKey {
        secret_sealed: master.seal(rng, &key_id, secret.expose().as_bytes())?,
        public_key: None,
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
        policy: Default::default(),
        credits: None,
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

pub(crate) async fn initialize(
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
