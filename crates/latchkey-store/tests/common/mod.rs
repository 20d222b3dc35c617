//! What the store test files share: a database of either backend for each
//! test, the macro that runs a test against both, and row fixtures.
//!
//! A conformance test is an `async fn name(db: TestDb)`; listing it in
//! [`conformance!`] generates `sqlite::name` and `postgres::name`. A test
//! that is written but not listed is dead code, which clippy refuses.

// Each test file uses its own part of this module.
#![allow(dead_code, unused_macros)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use latchkey_store::{
    Account, Actor, ApiKey, App, AuditEvent, Backend, ChangeBatch, ChangeEntity, KeyKind,
    NewAccount, Page, SqlStore, Store, UserAccount,
};
use serde_json::Map;

/// Runs each listed `async fn name(db: TestDb)` once on a fresh SQLite file
/// (`sqlite::name`) and once on a fresh PostgreSQL schema
/// (`postgres::name`).
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::common::TestDb::sqlite().await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::common::TestDb::postgres().await).await;
                }
            )+
        }
    };
}
#[allow(unused_imports)] // tests/postgres.rs runs no conformance suite
pub(crate) use conformance;

/// Where a test's database lives.
#[derive(Debug)]
enum Place {
    /// A file in a temporary directory, removed with it.
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    /// A schema of its own (see `latchkey_testdb`).
    Postgres { url: String },
}

/// An empty, migrated database of one backend, and a store open on it.
#[derive(Debug)]
pub struct TestDb {
    pub store: Arc<SqlStore>,
    place: Place,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = SqlStore::open(&path).await.expect("open the SQLite file");
        TestDb {
            store: Arc::new(store),
            place: Place::Sqlite { path, _dir: dir },
        }
    }

    pub async fn postgres() -> Self {
        let schema = latchkey_testdb::fresh_schema().await;
        let store = SqlStore::connect_postgres(&schema.url)
            .await
            .expect("connect to PostgreSQL");
        TestDb {
            store: Arc::new(store),
            place: Place::Postgres { url: schema.url },
        }
    }

    pub fn backend(&self) -> Backend {
        match self.place {
            Place::Sqlite { .. } => Backend::Sqlite,
            Place::Postgres { .. } => Backend::Postgres,
        }
    }

    /// A new store on the same database, the way the server opens it: after
    /// closing `store`, this is reopening; alongside it, a second node.
    pub async fn open_again(&self) -> SqlStore {
        match &self.place {
            Place::Sqlite { path, .. } => SqlStore::open(path).await.expect("reopen the file"),
            Place::Postgres { url } => SqlStore::connect_postgres(url)
                .await
                .expect("connect to PostgreSQL again"),
        }
    }

    /// A URL naming this database, for `SqlStore::connect_url`.
    pub fn url(&self) -> String {
        match &self.place {
            Place::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Place::Postgres { url } => url.clone(),
        }
    }

    /// The PostgreSQL URL, on that backend.
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.place {
            Place::Sqlite { .. } => None,
            Place::Postgres { url } => Some(url),
        }
    }
}

// --- fixtures ----------------------------------------------------------------

/// Account `acc_{n}` with owner `ua_{n}` (`owner{n}@example.com`) and the
/// owner's key `act_{n}`.
pub fn new_account(n: u32) -> NewAccount {
    let account = Account {
        id: format!("acc_{n}"),
        display_name: format!("Account {n}"),
        created_at: 100,
    };
    NewAccount {
        owner: UserAccount {
            id: format!("ua_{n}"),
            account_id: account.id.clone(),
            email: format!("owner{n}@example.com"),
            password_hash: "$argon2id$…".into(),
            created_at: 100,
            role: latchkey_core::policy::Role::Owner,
        },
        key: key(
            &format!("act_{n}"),
            KeyKind::UserAccount,
            &account.id,
            &format!("ua_{n}"),
        ),
        account,
    }
}

pub fn key(id: &str, kind: KeyKind, account: &str, owner: &str) -> ApiKey {
    ApiKey {
        id: id.into(),
        kind,
        account_id: account.into(),
        owner_id: owner.into(),
        display_name: "k".into(),
        secret_sealed: vec![1, 2, 3],
        public_key: None,
        created_at: 100,
        expires_at: None,
        last_used_at: None,
        rotated_from: None,
        replaced_by: None,
        policy: Default::default(),
        credits: None,
    }
}

pub fn app(id: &str, account: &str) -> App {
    App {
        id: id.into(),
        account_id: account.into(),
        display_name: id.into(),
        settings: Map::new(),
        created_at: 100,
    }
}

/// A distinct audit event for each call, at 100.
pub fn ev() -> AuditEvent {
    ev_at(100)
}

/// A distinct audit event for each call, at `at`.
pub fn ev_at(at: i64) -> AuditEvent {
    static N: AtomicU32 = AtomicU32::new(0);
    AuditEvent {
        id: format!("evt_{}", N.fetch_add(1, Ordering::Relaxed)),
        at,
        account_id: Some("acc_1".into()),
        app_id: None,
        action: "test".into(),
        actor: Actor::System,
        address: None,
        target_type: "test".into(),
        target_id: None,
        outcome: "success".into(),
        details: Map::new(),
        notify: None,
        request_id: None,
    }
}

pub fn page(limit: u32, after: Option<&str>) -> Page {
    Page {
        limit,
        after: after.map(str::to_string),
    }
}

/// What a batch of changes names, in order.
pub fn named(batch: &ChangeBatch) -> Vec<(ChangeEntity, String)> {
    batch
        .changes
        .iter()
        .map(|c| (c.entity, c.id.clone()))
        .collect()
}

/// Every change recorded after `seq` (at most 10 000).
pub async fn changes_after(store: &SqlStore, seq: i64) -> ChangeBatch {
    store.changes_since(seq, 10_000).await.expect("changes")
}

/// The newest recorded change number, as a snapshot reports it.
pub async fn change_seq(store: &SqlStore) -> i64 {
    store.snapshot().await.expect("snapshot").change_seq
}
