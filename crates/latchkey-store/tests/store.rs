//! The store against a real database, on both backends: limits, cascades,
//! paging, uniqueness, rotation, initialization, opening by URL, and
//! writes from two stores (two nodes) on one database at once.

mod common;

use std::sync::Arc;

use common::{TestDb, app, conformance, ev, key, new_account, page};
use latchkey_store::{
    AppUser, Backend, Initialization, KeyKind, KeyOwnerRef, OperatorToken, Rotation,
    ServiceAccount, SqlStore, Store, StoreError,
};
use serde_json::Map;

conformance!(
    initialize_happens_once,
    key_limit_counts_only_live_keys_of_the_owner,
    deleting_cascades_and_snapshot_agrees,
    paging_is_in_creation_order_and_refuses_foreign_cursors,
    uniqueness_and_last_used,
    rotation_replaces_a_key_once,
    connect_url_opens_the_same_database,
    data_survives_closing_and_reopening_the_store,
    concurrent_key_creation_on_two_nodes_never_passes_the_limit,
    last_used_from_two_nodes_keeps_the_latest,
    concurrent_writes_are_all_read_back,
);

async fn initialize_happens_once(db: TestDb) {
    let init = Initialization {
        master_key_check: vec![9],
        operator_token: OperatorToken {
            id: "op_1".into(),
            token_hash: vec![7; 32],
            created_at: 1,
        },
        first_account: new_account(1),
    };
    assert!(!db.store.is_initialized().await.expect("query"));
    db.store.initialize(&init).await.expect("first");
    assert!(db.store.is_initialized().await.expect("query"));
    assert!(matches!(
        db.store.initialize(&init).await,
        Err(StoreError::AlreadyInitialized)
    ));
    assert_eq!(
        db.store.master_key_check().await.expect("check"),
        Some(vec![9])
    );
    assert_eq!(db.store.operator_tokens().await.expect("tokens").len(), 1);
}

async fn key_limit_counts_only_live_keys_of_the_owner(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    db.store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    db.store
        .create_app(&app("ap_2", "acc_1"), None, &ev())
        .await
        .expect("app");
    for i in 0..3 {
        db.store
            .create_key(
                &key(&format!("app_{i}"), KeyKind::App, "acc_1", "ap_1"),
                3,
                200,
                &ev(),
            )
            .await
            .expect("under the limit");
    }
    let err = db
        .store
        .create_key(&key("app_x", KeyKind::App, "acc_1", "ap_1"), 3, 200, &ev())
        .await;
    assert!(matches!(err, Err(StoreError::LimitReached(3))));
    // Another owner is not affected.
    db.store
        .create_key(&key("app_y", KeyKind::App, "acc_1", "ap_2"), 3, 200, &ev())
        .await
        .expect("other app");
    // An expired key does not count.
    let mut expired = key("app_e", KeyKind::App, "acc_1", "ap_2");
    expired.expires_at = Some(150);
    db.store
        .create_key(&expired, 3, 100, &ev())
        .await
        .expect("expiring");
    db.store
        .create_key(&key("app_z", KeyKind::App, "acc_1", "ap_2"), 2, 200, &ev())
        .await
        .expect("the expired key is not live at 200");
    // A key for a missing owner is refused by the foreign key.
    let orphan = db
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

async fn deleting_cascades_and_snapshot_agrees(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    db.store
        .create_account(&new_account(2), &ev())
        .await
        .expect("account");
    let sa = ServiceAccount {
        id: "sa_1".into(),
        account_id: "acc_1".into(),
        display_name: "robot".into(),
        created_at: 100,
    };
    db.store
        .create_service_account(&sa, &ev())
        .await
        .expect("sa");
    db.store
        .create_app(&app("ap_1", "acc_1"), Some("sa_1"), &ev())
        .await
        .expect("app");
    db.store
        .create_app(&app("ap_2", "acc_2"), None, &ev())
        .await
        .expect("app");
    db.store
        .create_key(&key("app_1", KeyKind::App, "acc_1", "ap_1"), 10, 100, &ev())
        .await
        .expect("key");
    db.store
        .create_key(
            &key("svc_1", KeyKind::ServiceAccount, "acc_1", "sa_1"),
            10,
            100,
            &ev(),
        )
        .await
        .expect("key");
    db.store
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
    let snap = db.store.snapshot().await.expect("snapshot");
    assert_eq!(snap.keys.len(), 4);
    assert_eq!(snap.grants, vec![("sa_1".to_string(), "ap_1".to_string())]);

    assert!(db.store.delete_app("ap_1", &ev()).await.expect("delete"));
    assert!(db.store.get_key("app_1").await.expect("get").is_none());
    assert!(
        db.store
            .find_app_user("ap_1", "alice")
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        db.store
            .snapshot()
            .await
            .expect("snapshot")
            .grants
            .is_empty()
    );

    assert!(
        db.store
            .delete_account("acc_1", &ev())
            .await
            .expect("delete")
    );
    let snap = db.store.snapshot().await.expect("snapshot");
    let ids: Vec<&str> = snap.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, vec!["act_2"]);
    let apps: Vec<(&str, &str)> = snap
        .apps
        .iter()
        .map(|a| (a.id.as_str(), a.account_id.as_str()))
        .collect();
    assert_eq!(apps, vec![("ap_2", "acc_2")]);
    assert!(snap.service_accounts.is_empty());
    assert!(
        !db.store
            .delete_account("acc_1", &ev())
            .await
            .expect("again")
    );
}

async fn paging_is_in_creation_order_and_refuses_foreign_cursors(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    db.store
        .create_account(&new_account(2), &ev())
        .await
        .expect("account");
    for i in 0..5 {
        db.store
            .create_app(&app(&format!("ap_{i}"), "acc_1"), None, &ev())
            .await
            .expect("app");
    }
    db.store
        .create_app(&app("ap_other", "acc_2"), None, &ev())
        .await
        .expect("app");
    let first = db
        .store
        .list_apps("acc_1", None, &page(2, None))
        .await
        .expect("page");
    assert!(first.has_more);
    let ids: Vec<&str> = first.items.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["ap_0", "ap_1"]);
    let rest = db
        .store
        .list_apps("acc_1", None, &page(10, Some("ap_1")))
        .await
        .expect("page");
    assert!(!rest.has_more);
    assert_eq!(rest.items.len(), 3);
    // A cursor from another account's list is not a cursor of this list.
    let foreign = db
        .store
        .list_apps("acc_1", None, &page(10, Some("ap_other")))
        .await;
    assert!(matches!(foreign, Err(StoreError::BadCursor)));
    let exact = db
        .store
        .list_apps("acc_1", None, &page(5, None))
        .await
        .expect("page");
    assert!(!exact.has_more);
    let keys = db
        .store
        .list_keys(KeyOwnerRef::UserAccount("ua_1"), &page(10, None))
        .await
        .expect("keys");
    assert_eq!(keys.items.len(), 1);
}

async fn uniqueness_and_last_used(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    let mut dup = new_account(2);
    dup.owner.email = "owner1@example.com".into();
    assert!(matches!(
        db.store.create_account(&dup, &ev()).await,
        Err(StoreError::Conflict(_))
    ));
    // The failed transaction left nothing behind.
    assert!(db.store.get_account("acc_2").await.expect("get").is_none());

    db.store
        .record_last_used(&[("act_1".to_string(), 500)])
        .await
        .expect("record");
    db.store
        .record_last_used(&[("act_1".to_string(), 400)])
        .await
        .expect("record");
    let k = db.store.get_key("act_1").await.expect("get").expect("key");
    assert_eq!(k.last_used_at, Some(500), "an older value never wins");
}

async fn rotation_replaces_a_key_once(db: TestDb) {
    let s = &db.store;
    s.create_account(&new_account(1), &ev())
        .await
        .expect("account");
    s.create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    s.create_key(&key("app_1", KeyKind::App, "acc_1", "ap_1"), 3, 200, &ev())
        .await
        .expect("key");
    let rotation = |old: &str, new: &str, max_working: u32| {
        let mut new_key = key(new, KeyKind::App, "acc_1", "ap_1");
        new_key.rotated_from = Some(old.into());
        Rotation {
            old_id: old.into(),
            old_expires_at: 500,
            new_key,
            max_working,
            old_policy: None,
        }
    };
    s.rotate_key(&rotation("app_1", "app_2", 3), 200, &ev())
        .await
        .expect("rotate");
    let old = s.get_key("app_1").await.expect("get").expect("old key");
    assert_eq!(old.replaced_by.as_deref(), Some("app_2"));
    assert_eq!(old.expires_at, Some(500));
    let new = s.get_key("app_2").await.expect("get").expect("new key");
    assert_eq!(new.rotated_from.as_deref(), Some("app_1"));
    assert_eq!((new.replaced_by, new.expires_at), (None, None));

    // A key is replaced once; the losing rotation leaves nothing behind.
    let again = s
        .rotate_key(&rotation("app_1", "app_3", 3), 200, &ev())
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(s.get_key("app_3").await.expect("get").is_none());
    // The old key still works in its grace period, so it counts towards
    // the keys that may work at once.
    let piled = s
        .rotate_key(&rotation("app_2", "app_3", 2), 200, &ev())
        .await;
    assert!(
        matches!(piled, Err(StoreError::LimitReached(2))),
        "{piled:?}"
    );
    assert!(s.get_key("app_3").await.expect("get").is_none());
    assert_eq!(
        s.get_key("app_2")
            .await
            .expect("get")
            .expect("key")
            .replaced_by,
        None
    );
    // ...but not towards the live keys limit of create_key.
    s.create_key(&key("app_4", KeyKind::App, "acc_1", "ap_1"), 2, 200, &ev())
        .await
        .expect("the replaced key does not count");
    // Once the grace period is over, it counts for nothing.
    s.rotate_key(&rotation("app_2", "app_3", 3), 600, &ev())
        .await
        .expect("rotate after the grace period");
    // An expired key cannot be rotated.
    let mut expired = key("app_5", KeyKind::App, "acc_1", "ap_1");
    expired.expires_at = Some(700);
    s.create_key(&expired, 10, 600, &ev())
        .await
        .expect("expiring key");
    let late = s
        .rotate_key(&rotation("app_5", "app_6", 10), 700, &ev())
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
}

async fn connect_url_opens_the_same_database(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    let other = SqlStore::connect_url(&db.url()).await.expect("connect_url");
    assert_eq!(other.backend(), db.backend());
    assert_eq!(other.backend_name(), db.backend().as_str());
    assert!(other.get_account("acc_1").await.expect("get").is_some());
    // PostgreSQL announces changes on a channel of the schema; SQLite has
    // no other readers to tell.
    assert_eq!(other.change_channel(), db.store.change_channel());
    assert_eq!(
        db.store.change_channel().is_some(),
        db.backend() == Backend::Postgres
    );
    for bad in ["mysql://localhost/db", "t.db", ""] {
        let r = SqlStore::connect_url(bad).await;
        assert!(matches!(r, Err(StoreError::Config(_))), "{bad:?}: {r:?}");
    }
}

async fn data_survives_closing_and_reopening_the_store(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    db.store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    db.store.close().await;
    assert!(
        db.store.get_app("ap_1").await.is_err(),
        "a closed store answers nothing"
    );
    // Migrations already applied are not applied again.
    let store = db.open_again().await;
    assert!(store.get_account("acc_1").await.expect("get").is_some());
    assert!(store.get_app("ap_1").await.expect("get").is_some());
    store
        .create_app(&app("ap_2", "acc_1"), None, &ev())
        .await
        .expect("write after reopening");
    let apps = store
        .list_apps("acc_1", None, &page(10, None))
        .await
        .expect("list");
    let ids: Vec<&str> = apps.items.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["ap_1", "ap_2"]);
}

async fn concurrent_key_creation_on_two_nodes_never_passes_the_limit(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    for id in ["ap_1", "ap_2"] {
        db.store
            .create_app(&app(id, "acc_1"), None, &ev())
            .await
            .expect("app");
    }
    let nodes = [db.store.clone(), Arc::new(db.open_again().await)];
    // 40 creations for ap_1 and 10 for ap_2 at once, spread over both
    // nodes; ap_1 may have 5 live keys, ap_2 ten.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = nodes[i % 2].clone();
        let (owner, limit) = if i < 40 { ("ap_1", 5) } else { ("ap_2", 10) };
        tasks.push(tokio::spawn(async move {
            let k = key(&format!("app_{i}"), KeyKind::App, "acc_1", owner);
            (owner, store.create_key(&k, limit, 200, &ev()).await)
        }));
    }
    let (mut ap_1, mut ap_2) = (0, 0);
    for t in tasks {
        match t.await.expect("join") {
            ("ap_1", Ok(())) => ap_1 += 1,
            ("ap_2", Ok(())) => ap_2 += 1,
            ("ap_1", Err(StoreError::LimitReached(5))) => {}
            (owner, other) => panic!("{owner}: unexpected {other:?}"),
        }
    }
    assert_eq!((ap_1, ap_2), (5, 10));
    for (owner, n) in [("ap_1", 5), ("ap_2", 10)] {
        let listed = db
            .store
            .list_keys(KeyOwnerRef::App(owner), &page(100, None))
            .await
            .expect("keys");
        assert_eq!(listed.items.len(), n, "{owner}");
    }
}

async fn last_used_from_two_nodes_keeps_the_latest(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    db.store
        .create_account(&new_account(2), &ev())
        .await
        .expect("account");
    let nodes = [db.store.clone(), Arc::new(db.open_again().await)];
    // Times 1..=101 in a scrambled order, each sent by one node or the
    // other, in batches that touch both keys.
    let mut tasks = Vec::new();
    for i in 0..101_i64 {
        let store = nodes[(i % 2) as usize].clone();
        let at = (i * 37) % 101 + 1;
        tasks.push(tokio::spawn(async move {
            let batch = [("act_1".to_string(), at), ("act_2".to_string(), 1000 - at)];
            store.record_last_used(&batch).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("record");
    }
    for (id, latest) in [("act_1", 101), ("act_2", 999)] {
        for node in &nodes {
            let k = node.get_key(id).await.expect("get").expect("key");
            assert_eq!(k.last_used_at, Some(latest), "{id}");
        }
    }
}

/// On SQLite, writes run on a connection of their own and reads on the
/// pool: every acknowledged write must be visible to the next read, to the
/// snapshot, to the audit log and after reopening, and a refused write must
/// leave nothing behind.
async fn concurrent_writes_are_all_read_back(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    db.store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    // The app was written by the writer; reading it right away goes through
    // the read pool.
    assert!(db.store.get_app("ap_1").await.expect("get").is_some());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("app_{i}");
            let mut audit = ev();
            audit.target_id = Some(id.clone());
            let created = store
                .create_key(&key(&id, KeyKind::App, "acc_1", "ap_1"), 30, 200, &audit)
                .await;
            // Read back at once, while other tasks are writing.
            let read = store.get_key(&id).await.expect("get");
            (id, created, read.is_some())
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        match t.await.expect("join") {
            (id, Ok(()), true) => created.push(id),
            (_, Err(StoreError::LimitReached(30)), false) => {}
            (id, result, read) => panic!("{id}: {result:?}, read back: {read}"),
        }
    }
    assert_eq!(created.len(), 30);
    created.sort();
    let listed = |keys: Vec<latchkey_store::ApiKey>| {
        let mut ids: Vec<String> = keys.into_iter().map(|k| k.id).collect();
        ids.sort();
        ids
    };
    let page_of_keys = db
        .store
        .list_keys(KeyOwnerRef::App("ap_1"), &page(100, None))
        .await
        .expect("list");
    assert_eq!(listed(page_of_keys.items), created);
    let snap = db.store.snapshot().await.expect("snapshot");
    let snap_keys = listed(
        snap.keys
            .into_iter()
            .filter(|k| k.kind == KeyKind::App)
            .collect(),
    );
    assert_eq!(snap_keys, created);
    let audited = db
        .store
        .list_audit(&Default::default(), &page(100, None))
        .await
        .expect("audit");
    let mut targets: Vec<String> = audited
        .items
        .into_iter()
        .filter_map(|e| e.target_id.filter(|t| t.starts_with("app_")))
        .collect();
    targets.sort();
    assert_eq!(targets, created, "one audit event per created key, no more");
    db.store.close().await;
    let store = db.open_again().await;
    let reopened = store
        .list_keys(KeyOwnerRef::App("ap_1"), &page(100, None))
        .await
        .expect("list after reopening");
    assert_eq!(listed(reopened.items), created);
}

/// An in-memory database exists once per connection, so the in-memory
/// store must write and read on the same one.
#[tokio::test]
async fn in_memory_store_reads_its_own_writes() {
    let store = SqlStore::in_memory().await.expect("in memory");
    store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    store
        .create_key(&key("app_1", KeyKind::App, "acc_1", "ap_1"), 10, 200, &ev())
        .await
        .expect("key");
    assert!(store.get_app("ap_1").await.expect("get").is_some());
    assert!(store.get_key("app_1").await.expect("get").is_some());
    let snap = store.snapshot().await.expect("snapshot");
    let mut ids: Vec<&str> = snap.keys.iter().map(|k| k.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["act_1", "app_1"]);
}
