//! Reading apps by id, on both backends. On SQLite the store keeps apps it
//! read in memory (src/app_cache.rs); these tests hold every read to what
//! the last acknowledged write left, also while other reads race the
//! writes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{TestDb, app, conformance, ev, new_account};
use latchkey_store::Store;

conformance!(
    reads_of_an_app_follow_every_write,
    reads_racing_writes_never_keep_an_older_app,
);

async fn name_of(db: &TestDb, id: &str) -> Option<String> {
    db.store
        .get_app(id)
        .await
        .expect("get app")
        .map(|a| a.display_name)
}

async fn reads_of_an_app_follow_every_write(db: TestDb) {
    let store = &db.store;
    store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    assert_eq!(name_of(&db, "ap_1").await, None);
    store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    // Read twice: the second read may come from memory.
    assert_eq!(name_of(&db, "ap_1").await.as_deref(), Some("ap_1"));
    assert_eq!(name_of(&db, "ap_1").await.as_deref(), Some("ap_1"));

    let mut renamed = app("ap_1", "acc_1");
    renamed.display_name = "Renamed".into();
    renamed.settings.insert(
        "allowedOrigins".into(),
        serde_json::json!(["https://a.example"]),
    );
    assert!(store.update_app(&renamed, &ev()).await.expect("update"));
    let read = store.get_app("ap_1").await.expect("get").expect("present");
    assert_eq!(read.display_name, "Renamed");
    assert_eq!(read.settings, renamed.settings);

    assert!(store.delete_app("ap_1", &ev()).await.expect("delete"));
    assert_eq!(name_of(&db, "ap_1").await, None);

    // Deleting the account removes its apps (a cascade in the database).
    store
        .create_app(&app("ap_2", "acc_1"), None, &ev())
        .await
        .expect("app");
    assert_eq!(name_of(&db, "ap_2").await.as_deref(), Some("ap_2"));
    assert!(store.delete_account("acc_1", &ev()).await.expect("delete"));
    assert_eq!(name_of(&db, "ap_2").await, None);
}

async fn reads_racing_writes_never_keep_an_older_app(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    db.store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = db.store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    store.get_app("ap_1").await.expect("get app");
                    reads += 1;
                    // A read from memory does not yield by itself.
                    tokio::task::yield_now().await;
                }
                reads
            })
        })
        .collect();
    for i in 0..150 {
        let mut renamed = app("ap_1", "acc_1");
        renamed.display_name = format!("name {i}");
        assert!(db.store.update_app(&renamed, &ev()).await.expect("update"));
        // Once the write is acknowledged, no read may show an older name.
        for _ in 0..3 {
            assert_eq!(
                name_of(&db, "ap_1").await.as_deref(),
                Some(renamed.display_name.as_str()),
                "a read after update {i} saw an older app"
            );
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader");
    }
    assert!(reads > 150, "the readers hardly ran ({reads} reads)");
}
