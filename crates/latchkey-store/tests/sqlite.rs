//! The SQLite store against a real database file: limits, cascades, paging,
//! uniqueness and initialization.

use latchkey_store::{
    Account, Actor, ApiKey, App, AppUser, AuditEvent, Initialization, KeyKind, KeyOwnerRef,
    NewAccount, OperatorToken, Page, ServiceAccount, SqlStore, Store, StoreError, UserAccount,
};
use serde_json::Map;

struct Fixture {
    store: SqlStore,
    _dir: tempfile::TempDir,
}

async fn store() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::open(&dir.path().join("t.db"))
        .await
        .expect("open");
    Fixture { store, _dir: dir }
}

fn new_account(n: u32) -> NewAccount {
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

fn key(id: &str, kind: KeyKind, account: &str, owner: &str) -> ApiKey {
    ApiKey {
        id: id.into(),
        kind,
        account_id: account.into(),
        owner_id: owner.into(),
        display_name: "k".into(),
        secret_sealed: vec![1, 2, 3],
        created_at: 100,
        expires_at: None,
        last_used_at: None,
        rotated_from: None,
        replaced_by: None,
    }
}

/// A distinct audit event for each call.
fn ev() -> AuditEvent {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    AuditEvent {
        id: format!("evt_{}", N.fetch_add(1, Ordering::Relaxed)),
        at: 100,
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
    }
}

fn app(id: &str, account: &str) -> App {
    App {
        id: id.into(),
        account_id: account.into(),
        display_name: id.into(),
        settings: Map::new(),
        created_at: 100,
    }
}

fn page(limit: u32, after: Option<&str>) -> Page {
    Page {
        limit,
        after: after.map(str::to_string),
    }
}

#[tokio::test]
async fn initialize_happens_once() {
    let f = store().await;
    let init = Initialization {
        master_key_check: vec![9],
        operator_token: OperatorToken {
            id: "op_1".into(),
            token_hash: vec![7; 32],
            created_at: 1,
        },
        first_account: new_account(1),
    };
    assert!(!f.store.is_initialized().await.expect("query"));
    f.store.initialize(&init).await.expect("first");
    assert!(f.store.is_initialized().await.expect("query"));
    assert!(matches!(
        f.store.initialize(&init).await,
        Err(StoreError::AlreadyInitialized)
    ));
    assert_eq!(
        f.store.master_key_check().await.expect("check"),
        Some(vec![9])
    );
    assert_eq!(f.store.operator_tokens().await.expect("tokens").len(), 1);
}

#[tokio::test]
async fn key_limit_counts_only_live_keys_of_the_owner() {
    let f = store().await;
    f.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    f.store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    f.store
        .create_app(&app("ap_2", "acc_1"), None, &ev())
        .await
        .expect("app");
    for i in 0..3 {
        f.store
            .create_key(
                &key(&format!("app_{i}"), KeyKind::App, "acc_1", "ap_1"),
                3,
                200,
                &ev(),
            )
            .await
            .expect("under the limit");
    }
    let err = f
        .store
        .create_key(&key("app_x", KeyKind::App, "acc_1", "ap_1"), 3, 200, &ev())
        .await;
    assert!(matches!(err, Err(StoreError::LimitReached(3))));
    // Another owner is not affected.
    f.store
        .create_key(&key("app_y", KeyKind::App, "acc_1", "ap_2"), 3, 200, &ev())
        .await
        .expect("other app");
    // An expired key does not count.
    let mut expired = key("app_e", KeyKind::App, "acc_1", "ap_2");
    expired.expires_at = Some(150);
    f.store
        .create_key(&expired, 3, 100, &ev())
        .await
        .expect("expiring");
    f.store
        .create_key(&key("app_z", KeyKind::App, "acc_1", "ap_2"), 2, 200, &ev())
        .await
        .expect("the expired key is not live at 200");
    // A key for a missing owner is refused by the foreign key.
    let orphan = f
        .store
        .create_key(
            &key("app_o", KeyKind::App, "acc_1", "ap_missing"),
            3,
            200,
            &ev(),
        )
        .await;
    assert!(matches!(orphan, Err(StoreError::MissingParent)));
}

#[tokio::test]
async fn deleting_cascades_and_snapshot_agrees() {
    let f = store().await;
    f.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    f.store
        .create_account(&new_account(2), &ev())
        .await
        .expect("account");
    let sa = ServiceAccount {
        id: "sa_1".into(),
        account_id: "acc_1".into(),
        display_name: "robot".into(),
        created_at: 100,
    };
    f.store
        .create_service_account(&sa, &ev())
        .await
        .expect("sa");
    f.store
        .create_app(&app("ap_1", "acc_1"), Some("sa_1"), &ev())
        .await
        .expect("app");
    f.store
        .create_app(&app("ap_2", "acc_2"), None, &ev())
        .await
        .expect("app");
    f.store
        .create_key(&key("app_1", KeyKind::App, "acc_1", "ap_1"), 10, 100, &ev())
        .await
        .expect("key");
    f.store
        .create_key(
            &key("svc_1", KeyKind::ServiceAccount, "acc_1", "sa_1"),
            10,
            100,
            &ev(),
        )
        .await
        .expect("key");
    f.store
        .create_app_user(
            &AppUser {
                id: "usr_1".into(),
                app_id: "ap_1".into(),
                external_id: "alice".into(),
                given_name: None,
                surname: None,
                email: None,
                metadata: Map::new(),
                created_at: 100,
            },
            &ev(),
        )
        .await
        .expect("user");
    let snap = f.store.snapshot().await.expect("snapshot");
    assert_eq!(snap.keys.len(), 4);
    assert_eq!(snap.grants, vec![("sa_1".to_string(), "ap_1".to_string())]);

    assert!(f.store.delete_app("ap_1", &ev()).await.expect("delete"));
    assert!(f.store.get_key("app_1").await.expect("get").is_none());
    assert!(
        f.store
            .find_app_user("ap_1", "alice")
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        f.store
            .snapshot()
            .await
            .expect("snapshot")
            .grants
            .is_empty()
    );

    assert!(
        f.store
            .delete_account("acc_1", &ev())
            .await
            .expect("delete")
    );
    let snap = f.store.snapshot().await.expect("snapshot");
    let ids: Vec<&str> = snap.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, vec!["act_2"]);
    let apps: Vec<(&str, &str)> = snap
        .apps
        .iter()
        .map(|a| (a.id.as_str(), a.account_id.as_str()))
        .collect();
    assert_eq!(apps, vec![("ap_2", "acc_2")]);
    assert!(snap.service_accounts.is_empty());
    assert!(!f.store.delete_account("acc_1", &ev()).await.expect("again"));
}

#[tokio::test]
async fn paging_is_in_creation_order_and_refuses_foreign_cursors() {
    let f = store().await;
    f.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    f.store
        .create_account(&new_account(2), &ev())
        .await
        .expect("account");
    for i in 0..5 {
        f.store
            .create_app(&app(&format!("ap_{i}"), "acc_1"), None, &ev())
            .await
            .expect("app");
    }
    f.store
        .create_app(&app("ap_other", "acc_2"), None, &ev())
        .await
        .expect("app");
    let first = f
        .store
        .list_apps("acc_1", None, &page(2, None))
        .await
        .expect("page");
    assert!(first.has_more);
    let ids: Vec<&str> = first.items.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["ap_0", "ap_1"]);
    let rest = f
        .store
        .list_apps("acc_1", None, &page(10, Some("ap_1")))
        .await
        .expect("page");
    assert!(!rest.has_more);
    assert_eq!(rest.items.len(), 3);
    // A cursor from another account's list is not a cursor of this list.
    let foreign = f
        .store
        .list_apps("acc_1", None, &page(10, Some("ap_other")))
        .await;
    assert!(matches!(foreign, Err(StoreError::BadCursor)));
    let exact = f
        .store
        .list_apps("acc_1", None, &page(5, None))
        .await
        .expect("page");
    assert!(!exact.has_more);
    let keys = f
        .store
        .list_keys(KeyOwnerRef::UserAccount("ua_1"), &page(10, None))
        .await
        .expect("keys");
    assert_eq!(keys.items.len(), 1);
}

#[tokio::test]
async fn uniqueness_and_last_used() {
    let f = store().await;
    f.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    let mut dup = new_account(2);
    dup.owner.email = "owner1@example.com".into();
    assert!(matches!(
        f.store.create_account(&dup, &ev()).await,
        Err(StoreError::Conflict(_))
    ));
    // The failed transaction left nothing behind.
    assert!(f.store.get_account("acc_2").await.expect("get").is_none());

    f.store
        .record_last_used(&[("act_1".to_string(), 500)])
        .await
        .expect("record");
    f.store
        .record_last_used(&[("act_1".to_string(), 400)])
        .await
        .expect("record");
    let k = f.store.get_key("act_1").await.expect("get").expect("key");
    assert_eq!(k.last_used_at, Some(500), "an older value never wins");
}
