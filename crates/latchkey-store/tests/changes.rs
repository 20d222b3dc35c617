//! The change feed, on both backends: every write that affects
//! verification records what it touched, in order and in its own
//! transaction; other writes and failed writes record nothing; snapshots
//! say where the feed stood; readers page through it; pruning keeps the
//! newest change and says up to where it pruned; and a reader following the
//! feed while two nodes write never misses a change.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    TestDb, app, change_seq, changes_after, conformance, ev, ev_at, key, named, new_account,
};
use latchkey_store::{
    AppUser, Attempt, AttemptOutcome, ChangeEntity, ChangeRecord, DashboardSession, DashboardStore,
    KeyKind, KeyNotice, Notification, Rotation, ServiceAccount, SqlStore, Store, StoreError,
    Webhook, WebhookStore,
};
use serde_json::Map;

use ChangeEntity::{Account, App, Key, ServiceAccount as Sa};

conformance!(
    every_write_that_affects_verification_records_its_changes_in_order,
    writes_that_do_not_affect_verification_record_nothing,
    failed_writes_record_nothing,
    changes_since_pages_oldest_first,
    pruning_keeps_the_newest_change_and_moves_the_watermark,
    the_feed_survives_reopening_and_never_reuses_a_number,
    a_follower_misses_no_change_while_two_nodes_write,
);

/// Follows the feed of one store, checking each write's changes.
struct Feed<'a> {
    store: &'a SqlStore,
    seq: i64,
}

impl<'a> Feed<'a> {
    async fn new(store: &'a SqlStore) -> Feed<'a> {
        let seq = change_seq(store).await;
        Feed { store, seq }
    }

    /// Asserts that exactly `expected` was recorded since the last check,
    /// in this order and with increasing numbers, and that a snapshot now
    /// reports the newest of them.
    async fn expect(&mut self, after: &str, expected: &[(ChangeEntity, &str)]) {
        let batch = changes_after(self.store, self.seq).await;
        let expected: Vec<(ChangeEntity, String)> = expected
            .iter()
            .map(|(entity, id)| (*entity, id.to_string()))
            .collect();
        assert_eq!(named(&batch), expected, "changes after {after}");
        let mut last = self.seq;
        for change in &batch.changes {
            assert!(change.seq > last, "after {after}: {batch:?}");
            last = change.seq;
        }
        self.seq = last;
        assert_eq!(
            change_seq(self.store).await,
            self.seq,
            "snapshot after {after}"
        );
    }
}

fn service_account(id: &str, account: &str) -> ServiceAccount {
    ServiceAccount {
        id: id.into(),
        account_id: account.into(),
        display_name: id.into(),
        created_at: 100,
    }
}

fn rotation(old: &str, new: &str, owner: &str) -> Rotation {
    let mut new_key = key(new, KeyKind::App, "acc_1", owner);
    new_key.rotated_from = Some(old.into());
    Rotation {
        old_id: old.into(),
        old_expires_at: 500,
        new_key,
        max_working: 10,
        old_policy: None,
    }
}

async fn every_write_that_affects_verification_records_its_changes_in_order(db: TestDb) {
    let s = &*db.store;
    let mut feed = Feed::new(s).await;
    assert_eq!(feed.seq, 0, "a new store has recorded no change");
    feed.expect("nothing", &[]).await;

    s.create_account(&new_account(1), &ev())
        .await
        .expect("account");
    feed.expect("create_account", &[(Account, "acc_1"), (Key, "act_1")])
        .await;
    s.create_service_account(&service_account("sa_1", "acc_1"), &ev())
        .await
        .expect("service account");
    feed.expect("create_service_account", &[(Sa, "sa_1")]).await;
    s.create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    feed.expect("create_app", &[(App, "ap_1")]).await;
    s.create_app(&app("ap_2", "acc_1"), Some("sa_1"), &ev())
        .await
        .expect("app by a service account");
    feed.expect("create_app by sa_1", &[(App, "ap_2"), (Sa, "sa_1")])
        .await;
    let mut renamed = app("ap_1", "acc_1");
    renamed.display_name = "Renamed".into();
    renamed
        .settings
        .insert("maxKeyAgeDays".into(), serde_json::json!(30));
    assert!(s.update_app(&renamed, &ev()).await.expect("update"));
    feed.expect("update_app", &[(App, "ap_1")]).await;
    s.create_key(&key("app_1", KeyKind::App, "acc_1", "ap_1"), 10, 100, &ev())
        .await
        .expect("app key");
    feed.expect("create_key", &[(Key, "app_1")]).await;
    s.create_key(
        &key("svc_1", KeyKind::ServiceAccount, "acc_1", "sa_1"),
        10,
        100,
        &ev(),
    )
    .await
    .expect("service account key");
    feed.expect("create_key for sa_1", &[(Key, "svc_1")]).await;
    s.rotate_key(&rotation("app_1", "app_2", "ap_1"), 100, &ev())
        .await
        .expect("rotate");
    feed.expect("rotate_key", &[(Key, "app_1"), (Key, "app_2")])
        .await;
    assert!(
        s.grant_app("sa_1", "ap_1", 100, &ev())
            .await
            .expect("grant")
    );
    feed.expect("grant_app", &[(Sa, "sa_1")]).await;
    assert!(s.revoke_app("sa_1", "ap_1", &ev()).await.expect("revoke"));
    feed.expect("revoke_app", &[(Sa, "sa_1")]).await;
    assert!(s.delete_key("app_2", &ev()).await.expect("delete key"));
    feed.expect("delete_key", &[(Key, "app_2")]).await;
    assert!(s.delete_app("ap_2", &ev()).await.expect("delete app"));
    feed.expect("delete_app", &[(App, "ap_2")]).await;
    assert!(
        s.delete_service_account("sa_1", &ev())
            .await
            .expect("delete service account")
    );
    feed.expect("delete_service_account", &[(Sa, "sa_1")]).await;
    assert!(
        s.delete_account("acc_1", &ev())
            .await
            .expect("delete account")
    );
    feed.expect("delete_account", &[(Account, "acc_1")]).await;

    // The whole feed, from the start, in the order of the writes.
    let all = changes_after(s, 0).await;
    assert_eq!(all.changes.len(), 17);
    assert_eq!(all.pruned_through, 0);
    assert_eq!(all.changes.last().map(|c| c.seq), Some(feed.seq));
}

async fn writes_that_do_not_affect_verification_record_nothing(db: TestDb) {
    let s = &*db.store;
    s.create_account(&new_account(1), &ev())
        .await
        .expect("account");
    s.create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    let mut expiring = key("app_1", KeyKind::App, "acc_1", "ap_1");
    expiring.expires_at = Some(1_000);
    s.create_key(&expiring, 10, 100, &ev()).await.expect("key");
    let mut feed = Feed::new(s).await;
    assert!(feed.seq > 0);

    // App users.
    let mut user = AppUser {
        id: "usr_1".into(),
        app_id: "ap_1".into(),
        external_id: "alice".into(),
        given_name: None,
        surname: None,
        email: None,
        metadata: Map::new(),
        created_at: 100,
    };
    s.create_app_user(&user, &ev()).await.expect("user");
    user.given_name = Some("Alice".into());
    assert!(s.update_app_user(&user, &ev()).await.expect("update user"));
    assert!(
        s.delete_app_user("ap_1", "usr_1", &ev())
            .await
            .expect("delete user")
    );
    // Webhooks and their deliveries.
    let mut webhook = Webhook {
        id: "whk_1".into(),
        app_id: "ap_1".into(),
        target: "https://example.com/hook".into(),
        triggers: vec!["key:created".into()],
        secret_sealed: vec![9],
        created_at: 100,
    };
    s.create_webhook(&webhook, &ev()).await.expect("webhook");
    webhook.target = "https://example.com/other".into();
    assert!(
        s.update_webhook(&webhook, &ev())
            .await
            .expect("update webhook")
    );
    let notifying = latchkey_store::AuditEvent {
        app_id: Some("ap_1".into()),
        notify: Some(Notification {
            trigger: "key:created",
            payload: "{}".into(),
        }),
        ..ev()
    };
    s.record_audit(&notifying).await.expect("audit");
    let claimed = s.claim_deliveries(100, 160, 10, 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let delivered = Attempt {
        outcome: AttemptOutcome::Delivered,
        http_status: Some(204),
        error: None,
        at: 101,
    };
    assert!(
        s.record_attempt(&claimed[0].delivery.id, &claimed[0].lease, &delivered)
            .await
            .expect("attempt")
    );
    assert!(
        s.delete_webhook("ap_1", "whk_1", &ev())
            .await
            .expect("delete webhook")
    );
    // Use of keys, and notices about them.
    s.record_last_used(&[("app_1".to_string(), 150)])
        .await
        .expect("last used");
    assert!(
        s.mark_key_notice("app_1", KeyNotice::Expired, &ev())
            .await
            .expect("notice")
    );
    // Dashboard sessions.
    let session = DashboardSession {
        id_hash: vec![1; 32],
        user_account_id: "ua_1".into(),
        account_id: "acc_1".into(),
        created_at: 100,
        expires_at: 200,
    };
    s.create_dashboard_session(&session, &ev())
        .await
        .expect("session");
    assert!(
        s.delete_dashboard_session(&session.id_hash, &ev())
            .await
            .expect("sign out")
    );
    s.delete_expired_dashboard_sessions(1_000)
        .await
        .expect("expire sessions");
    // Pruning records nothing either.
    assert_eq!(s.prune_changes(0).await.expect("prune"), 0);

    feed.expect("writes that verification does not read", &[])
        .await;
}

async fn failed_writes_record_nothing(db: TestDb) {
    let s = &*db.store;
    s.create_account(&new_account(1), &ev())
        .await
        .expect("account");
    s.create_service_account(&service_account("sa_1", "acc_1"), &ev())
        .await
        .expect("service account");
    s.create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    s.create_key(&key("app_1", KeyKind::App, "acc_1", "ap_1"), 2, 100, &ev())
        .await
        .expect("key");
    s.create_key(&key("app_2", KeyKind::App, "acc_1", "ap_1"), 2, 100, &ev())
        .await
        .expect("key");
    s.rotate_key(&rotation("app_2", "app_3", "ap_1"), 100, &ev())
        .await
        .expect("rotate");
    assert!(
        s.grant_app("sa_1", "ap_1", 100, &ev())
            .await
            .expect("grant")
    );
    let mut feed = Feed::new(s).await;

    // Limits.
    let r = s
        .create_key(&key("app_x", KeyKind::App, "acc_1", "ap_1"), 2, 100, &ev())
        .await;
    assert!(matches!(r, Err(StoreError::LimitReached(2))), "{r:?}");
    let mut crowded = rotation("app_3", "app_x", "ap_1");
    crowded.max_working = 3;
    let r = s.rotate_key(&crowded, 100, &ev()).await;
    assert!(matches!(r, Err(StoreError::LimitReached(3))), "{r:?}");
    // Conflicts.
    let r = s
        .create_key(&key("app_1", KeyKind::App, "acc_1", "ap_1"), 10, 100, &ev())
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let r = s
        .rotate_key(&rotation("app_2", "app_x", "ap_1"), 100, &ev())
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let mut same_email = new_account(2);
    same_email.owner.email = "owner1@example.com".into();
    let r = s.create_account(&same_email, &ev()).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let r = s.create_account(&new_account(1), &ev()).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let r = s.create_app(&app("ap_1", "acc_1"), None, &ev()).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    let r = s
        .create_service_account(&service_account("sa_1", "acc_1"), &ev())
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    // The same audit event twice: the write is rolled back with it.
    let used = ev();
    s.record_audit(&used).await.expect("audit");
    let r = s
        .create_key(&key("app_y", KeyKind::App, "acc_1", "ap_1"), 10, 100, &used)
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert!(s.get_key("app_y").await.expect("get").is_none());
    // Missing parents; the app made before the grant failed goes too.
    let r = s
        .create_key(
            &key("app_z", KeyKind::App, "acc_1", "ap_missing"),
            10,
            100,
            &ev(),
        )
        .await;
    assert!(matches!(r, Err(StoreError::MissingParent)), "{r:?}");
    let r = s
        .create_app(&app("ap_2", "acc_1"), Some("sa_missing"), &ev())
        .await;
    assert!(matches!(r, Err(StoreError::MissingParent)), "{r:?}");
    assert!(s.get_app("ap_2").await.expect("get").is_none());
    let r = s.create_app(&app("ap_3", "acc_missing"), None, &ev()).await;
    assert!(matches!(r, Err(StoreError::MissingParent)), "{r:?}");
    let r = s.grant_app("sa_1", "ap_missing", 100, &ev()).await;
    assert!(matches!(r, Err(StoreError::MissingParent)), "{r:?}");
    // Nothing to change.
    assert!(
        !s.grant_app("sa_1", "ap_1", 100, &ev())
            .await
            .expect("grant again")
    );
    assert!(
        !s.revoke_app("sa_1", "ap_missing", &ev())
            .await
            .expect("revoke")
    );
    assert!(
        !s.update_app(&app("ap_missing", "acc_1"), &ev())
            .await
            .expect("update")
    );
    assert!(!s.delete_app("ap_missing", &ev()).await.expect("delete"));
    assert!(!s.delete_key("app_missing", &ev()).await.expect("delete"));
    assert!(
        !s.delete_service_account("sa_missing", &ev())
            .await
            .expect("delete")
    );
    assert!(
        !s.delete_account("acc_missing", &ev())
            .await
            .expect("delete")
    );

    feed.expect("failed writes", &[]).await;
    // And the store still records the next one.
    assert!(s.delete_key("app_1", &ev()).await.expect("delete"));
    feed.expect("delete_key", &[(Key, "app_1")]).await;
}

async fn changes_since_pages_oldest_first(db: TestDb) {
    let s = &*db.store;
    s.create_account(&new_account(1), &ev())
        .await
        .expect("account");
    for i in 0..6 {
        s.create_app(&app(&format!("ap_{i}"), "acc_1"), None, &ev())
            .await
            .expect("app");
    }
    let all = changes_after(s, 0).await;
    assert_eq!(all.changes.len(), 8);
    assert_eq!(
        named(&all)[..3],
        [
            (Account, "acc_1".to_string()),
            (Key, "act_1".to_string()),
            (App, "ap_0".to_string())
        ]
    );

    let mut paged = Vec::new();
    let mut seq = 0;
    let mut sizes = Vec::new();
    loop {
        let batch = s.changes_since(seq, 3).await.expect("page");
        assert_eq!(batch.pruned_through, 0);
        sizes.push(batch.changes.len());
        let Some(last) = batch.changes.last() else {
            break;
        };
        seq = last.seq;
        paged.extend(batch.changes);
    }
    assert_eq!(sizes, [3, 3, 2, 0]);
    assert_eq!(paged, all.changes);

    // From the middle: only what comes after.
    let middle = all.changes[4].seq;
    let rest = s.changes_since(middle, 100).await.expect("rest");
    assert_eq!(rest.changes, all.changes[5..]);
    assert!(
        s.changes_since(0, 0)
            .await
            .expect("limit 0")
            .changes
            .is_empty()
    );
    let newest = all.changes[7].seq;
    assert!(
        s.changes_since(newest, 10)
            .await
            .expect("at the end")
            .changes
            .is_empty()
    );
    assert!(
        s.changes_since(i64::MAX, 10)
            .await
            .expect("beyond")
            .changes
            .is_empty()
    );
}

async fn pruning_keeps_the_newest_change_and_moves_the_watermark(db: TestDb) {
    let s = &*db.store;
    // An empty feed has nothing to prune.
    assert_eq!(s.prune_changes(i64::MAX).await.expect("prune"), 0);
    assert_eq!(changes_after(s, 0).await.pruned_through, 0);

    s.create_account(&new_account(1), &ev_at(100))
        .await
        .expect("account");
    s.create_app(&app("ap_1", "acc_1"), None, &ev_at(200))
        .await
        .expect("app");
    s.create_app(&app("ap_2", "acc_1"), None, &ev_at(300))
        .await
        .expect("app");
    let all = changes_after(s, 0).await;
    let seqs: Vec<i64> = all.changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs.len(), 4);

    // Only changes recorded before the given time.
    assert_eq!(s.prune_changes(100).await.expect("prune"), 0);
    assert_eq!(changes_after(s, 0).await, all);
    assert_eq!(s.prune_changes(101).await.expect("prune"), 2);
    let left = changes_after(s, 0).await;
    assert_eq!(left.changes, all.changes[2..]);
    assert_eq!(left.pruned_through, seqs[1]);
    // A reader that had seen less than the watermark can tell it missed
    // changes; one that had seen it cannot have.
    assert_eq!(
        s.changes_since(seqs[1], 10)
            .await
            .expect("changes")
            .pruned_through,
        seqs[1]
    );
    assert_eq!(s.prune_changes(101).await.expect("again"), 0);
    assert_eq!(changes_after(s, 0).await.pruned_through, seqs[1]);

    // However old, the newest change stays: it says where the feed stands.
    assert_eq!(s.prune_changes(i64::MAX).await.expect("prune"), 1);
    let left = changes_after(s, 0).await;
    assert_eq!(left.changes, all.changes[3..]);
    assert_eq!(left.pruned_through, seqs[2]);
    assert_eq!(change_seq(s).await, seqs[3]);
    assert_eq!(s.prune_changes(i64::MAX).await.expect("prune"), 0);
    assert_eq!(changes_after(s, 0).await.changes, all.changes[3..]);

    // Numbering goes on after the pruned ones.
    assert!(s.delete_app("ap_1", &ev_at(400)).await.expect("delete"));
    let after = changes_after(s, seqs[3]).await;
    assert_eq!(named(&after), [(App, "ap_1".to_string())]);
    assert!(after.changes[0].seq > seqs[3]);
    assert_eq!(s.prune_changes(i64::MAX).await.expect("prune"), 1);
    let left = changes_after(s, 0).await;
    assert_eq!(left.changes, after.changes);
    assert_eq!(left.pruned_through, seqs[3]);
}

async fn the_feed_survives_reopening_and_never_reuses_a_number(db: TestDb) {
    db.store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    db.store
        .create_app(&app("ap_1", "acc_1"), None, &ev())
        .await
        .expect("app");
    assert_eq!(db.store.prune_changes(i64::MAX).await.expect("prune"), 2);
    let before = changes_after(&db.store, 0).await;
    db.store.close().await;

    let store = db.open_again().await;
    assert_eq!(changes_after(&store, 0).await, before);
    let newest = before.changes.last().expect("the newest is kept").seq;
    assert_eq!(change_seq(&store).await, newest);
    assert!(store.delete_app("ap_1", &ev()).await.expect("delete"));
    let next = changes_after(&store, newest).await;
    assert_eq!(named(&next), [(App, "ap_1".to_string())]);
    assert!(next.changes[0].seq > newest);
}

async fn a_follower_misses_no_change_while_two_nodes_write(db: TestDb) {
    let writers = [db.store.clone(), Arc::new(db.open_again().await)];
    let follower = db.open_again().await;
    let done = Arc::new(AtomicBool::new(false));

    // The follower reads small pages as fast as it can while the two nodes
    // write; a change that committed after a later-numbered one was read
    // would be skipped.
    let writing = done.clone();
    let follow = tokio::spawn(async move {
        let mut seen: Vec<ChangeRecord> = Vec::new();
        loop {
            // Whether the writes were over before this read.
            let last_read = writing.load(Ordering::SeqCst);
            let seq = seen.last().map_or(0, |c| c.seq);
            let batch = follower.changes_since(seq, 3).await.expect("follow");
            if batch.changes.is_empty() {
                if last_read {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
            seen.extend(batch.changes);
        }
    });
    // 60 accounts, two changes each, written at once by the two nodes.
    const ACCOUNTS: u32 = 60;
    let mut tasks = Vec::new();
    for n in 0..ACCOUNTS {
        let store = writers[n as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            store.create_account(&new_account(n), &ev()).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("account");
    }
    done.store(true, Ordering::SeqCst);
    let seen = follow.await.expect("join");
    let all = changes_after(&writers[0], 0).await;
    assert_eq!(all.changes.len(), 2 * ACCOUNTS as usize);
    assert_eq!(seen, all.changes, "the follower saw every change once");
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    // Each write's changes in its order: the account before its key.
    for n in 0..ACCOUNTS {
        let at = |entity, id: String| {
            seen.iter()
                .position(|c| c.entity == entity && c.id == id)
                .expect("recorded")
        };
        assert!(at(Account, format!("acc_{n}")) < at(Key, format!("act_{n}")));
    }
    // A page read through one node shows the same feed as through the other.
    assert_eq!(changes_after(&writers[1], 0).await, all);
}
