//! `Store::snapshot_into`, on both backends: the head and the keys it hands
//! out in batches are exactly what `Store::snapshot` reads, each key once,
//! whatever the batch size (one key, sizes that divide the key count,
//! sizes just below and above it), and it stops when the receiver goes.

mod common;

use common::{TestDb, app, conformance, ev, key, new_account};
use latchkey_store::{
    KeyKind, ServiceAccount, Snapshot, SnapshotHead, SnapshotKey, SqlStore, Store,
};

conformance!(batches_hold_every_key_once, stops_when_the_receiver_is_gone,);

/// Keys in the store after `fill`: 2 owner keys + 2 service account keys
/// + 24 app keys, one of them deleted again.
const KEYS: usize = 27;

/// Two accounts, an app with a policy-free settings object, a service
/// account with a grant, and keys of every kind; one key is deleted so
/// that the `seq` values have a gap.
async fn fill(store: &SqlStore) {
    store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    store
        .create_account(&new_account(2), &ev())
        .await
        .expect("account");
    store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    store
        .create_app(&app("ap_2", "acc_2"), None, &ev())
        .await
        .expect("app");
    let sa = ServiceAccount {
        id: "sa_1".into(),
        account_id: "acc_1".into(),
        display_name: "robot".into(),
        created_at: 100,
    };
    store.create_service_account(&sa, &ev()).await.expect("sa");
    assert!(
        store
            .grant_app("sa_1", "ap_1", 100, &ev())
            .await
            .expect("grant")
    );
    for i in 0..2u8 {
        let mut k = key(
            &format!("svc_{i}"),
            KeyKind::ServiceAccount,
            "acc_1",
            "sa_1",
        );
        k.secret_sealed = vec![0xa0, i];
        store.create_key(&k, 100, 100, &ev()).await.expect("key");
    }
    for i in 0..24u8 {
        let (account, app_id) = if i % 3 == 0 {
            ("acc_2", "ap_2")
        } else {
            ("acc_1", "ap_1")
        };
        let mut k = key(&format!("app_{i:02}"), KeyKind::App, account, app_id);
        k.secret_sealed = vec![i, 1, 2, 3];
        k.expires_at = (i % 2 == 0).then_some(1_000 + i64::from(i));
        store.create_key(&k, 100, 100, &ev()).await.expect("key");
    }
    store
        .record_last_used(&[("app_05".into(), 500), ("act_1".into(), 700)])
        .await
        .expect("last used");
    assert!(store.delete_key("app_10", &ev()).await.expect("delete"));
}

/// Reads the whole snapshot through `snapshot_into` with batches of
/// `batch` keys: its head and every batch, in order.
async fn read(store: &SqlStore, batch: usize) -> (SnapshotHead, Vec<Vec<SnapshotKey>>) {
    // Room for every batch, so that the store never waits for this reader.
    let (sender, mut receiver) = tokio::sync::mpsc::channel(KEYS + 1);
    let mut head = None;
    store
        .snapshot_into(batch, &mut |h| head = Some(h), sender)
        .await
        .expect("snapshot_into");
    let mut batches = Vec::new();
    while let Some(b) = receiver.recv().await {
        batches.push(b);
    }
    (head.expect("the head comes first"), batches)
}

fn sorted_keys(snapshot: &Snapshot) -> Vec<SnapshotKey> {
    let mut keys: Vec<SnapshotKey> = snapshot.keys.iter().map(SnapshotKey::from).collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys
}

async fn batches_hold_every_key_once(db: TestDb) {
    fill(&db.store).await;
    let snapshot = db.store.snapshot().await.expect("snapshot");
    let expected = sorted_keys(&snapshot);
    assert_eq!(expected.len(), KEYS);
    for batch in [1, 2, 5, 13, KEYS - 1, KEYS, KEYS + 1, 1000] {
        let (head, batches) = read(&db.store, batch).await;
        assert_eq!(head.key_count, KEYS as u64, "batch {batch}");
        assert_eq!(head.change_seq, snapshot.change_seq, "batch {batch}");
        assert_eq!(head.accounts, snapshot.accounts, "batch {batch}");
        assert_eq!(head.apps, snapshot.apps, "batch {batch}");
        assert_eq!(head.service_accounts, snapshot.service_accounts);
        assert_eq!(head.grants, snapshot.grants, "batch {batch}");
        assert_eq!(head.operator_tokens.len(), snapshot.operator_tokens.len());
        assert_eq!(batches.len(), KEYS.div_ceil(batch), "batch {batch}");
        assert!(
            batches.iter().all(|b| !b.is_empty() && b.len() <= batch),
            "batch {batch}: sizes {:?}",
            batches.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let mut got: Vec<SnapshotKey> = batches.into_iter().flatten().collect();
        got.sort_by(|a, b| a.id.cmp(&b.id));
        // Equal sorted lists of unique ids: none lost, none twice.
        assert_eq!(got, expected, "batch {batch}");
    }
    let app_05 = expected.iter().find(|k| k.id == "app_05").expect("app_05");
    assert_eq!(app_05.last_used_at, Some(500));
    assert_eq!(app_05.secret_sealed, vec![5, 1, 2, 3]);
    assert!(!expected.iter().any(|k| k.id == "app_10"), "deleted");
}

async fn stops_when_the_receiver_is_gone(db: TestDb) {
    fill(&db.store).await;
    // One batch of room: the store waits on the second until the receiver
    // is dropped, then gives up without an error.
    let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn({
        let store = db.store.clone();
        async move {
            store
                .snapshot_into(1, &mut |_| {}, sender)
                .await
                .expect("snapshot_into")
        }
    });
    let first = receiver.recv().await.expect("a first batch");
    assert_eq!(first.len(), 1);
    drop(receiver);
    tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("the store stops")
        .expect("no panic");
    // The store is still usable: the read transaction ended.
    assert_eq!(
        db.store.snapshot().await.expect("snapshot").keys.len(),
        KEYS
    );
}
