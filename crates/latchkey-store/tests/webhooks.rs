//! Webhooks and the delivery queue against a real database, on both
//! backends: the limit per app, triggers, paging, audit, enqueueing with the
//! audited event, leases, attempts, cascades, and claims from two stores
//! (two nodes) at once.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::{TestDb, app, conformance, ev, new_account, page};
use latchkey_store::{
    Attempt, AttemptOutcome, AuditEvent, AuditFilter, DeliveryStatus, MAX_WEBHOOKS_PER_APP,
    Notification, Redelivery, SqlStore, Store, StoreError, WEBHOOK_LIMIT_REACHED, Webhook,
    WebhookStore, delivery_id,
};

conformance!(
    webhooks_are_created_read_updated_and_deleted_with_audit,
    at_most_ten_webhooks_per_app_even_when_created_concurrently,
    at_most_ten_webhooks_per_app_when_two_nodes_create_them,
    webhooks_page_in_creation_order,
    events_enqueue_one_delivery_per_subscribed_webhook,
    claims_take_due_deliveries_once_and_leases_run_out,
    concurrent_claims_never_share_a_delivery,
    concurrent_claims_from_two_nodes_never_share_a_delivery,
    claims_are_fair_across_webhooks,
    concurrent_claims_keep_one_attempt_per_webhook_in_flight,
    claims_from_two_nodes_keep_one_attempt_per_webhook_in_flight,
    attempts_retry_deliver_or_fail_and_release_the_lease,
    deleting_a_webhook_or_its_app_removes_its_deliveries,
    deliveries_survive_closing_and_reopening_the_store,
    finished_deliveries_are_redelivered_and_pruned,
);

/// Seeds account `acc_1` and its apps `ap_1` and `ap_2`.
async fn seed(store: &SqlStore) {
    store
        .create_account(&new_account(1), &ev())
        .await
        .expect("account");
    for id in ["ap_1", "ap_2"] {
        store
            .create_app(&app(id, "acc_1"), None, &ev())
            .await
            .expect("app");
    }
}

/// An event of `app` at `at` that notifies `trigger`.
fn notifying(app: &str, trigger: &'static str, at: i64) -> AuditEvent {
    AuditEvent {
        at,
        app_id: Some(app.into()),
        action: "key.created".into(),
        notify: Some(Notification {
            trigger,
            payload: format!(r#"{{"type":"{trigger}"}}"#),
        }),
        ..ev()
    }
}

fn hook(id: &str, app: &str, triggers: &[&str]) -> Webhook {
    Webhook {
        id: id.into(),
        app_id: app.into(),
        target: format!("https://example.com/hooks/{id}"),
        triggers: triggers.iter().map(|t| t.to_string()).collect(),
        secret_sealed: vec![9, 9, 9],
        created_at: 100,
    }
}

/// No limit on deliveries in flight per webhook: for tests of leases and
/// attempts rather than of fairness.
const ANY: u32 = u32::MAX;

fn attempt(outcome: AttemptOutcome, status: Option<u16>, at: i64) -> Attempt {
    Attempt {
        outcome,
        http_status: status,
        error: status.map(|s| format!("HTTP {s}")),
        at,
    }
}

async fn webhooks_are_created_read_updated_and_deleted_with_audit(db: TestDb) {
    seed(&db.store).await;
    let created = ev();
    let mut w = hook("whk_1", "ap_1", &["key:rotated", "key:created"]);
    db.store.create_webhook(&w, &created).await.expect("create");
    let got = db
        .store
        .get_webhook("ap_1", "whk_1")
        .await
        .expect("get")
        .expect("exists");
    w.triggers.sort();
    assert_eq!(got, w, "triggers come back sorted");
    // Another app does not see it.
    assert!(
        db.store
            .get_webhook("ap_2", "whk_1")
            .await
            .expect("get")
            .is_none()
    );

    let mut changed = w.clone();
    changed.target = "http://127.0.0.1:9/other".into();
    changed.triggers = vec!["key:deleted".into()];
    assert!(
        db.store
            .update_webhook(&changed, &ev())
            .await
            .expect("update")
    );
    let got = db
        .store
        .get_webhook("ap_1", "whk_1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got, changed);
    // Updating through the wrong app changes nothing.
    let mut foreign = changed.clone();
    foreign.app_id = "ap_2".into();
    foreign.target = "http://evil.example/".into();
    assert!(
        !db.store
            .update_webhook(&foreign, &ev())
            .await
            .expect("update")
    );
    assert_eq!(
        db.store
            .get_webhook("ap_1", "whk_1")
            .await
            .expect("get")
            .expect("exists")
            .target,
        changed.target
    );

    assert!(
        !db.store
            .delete_webhook("ap_2", "whk_1", &ev())
            .await
            .expect("delete")
    );
    let deleted = ev();
    assert!(
        db.store
            .delete_webhook("ap_1", "whk_1", &deleted)
            .await
            .expect("delete")
    );
    assert!(
        db.store
            .get_webhook("ap_1", "whk_1")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        !db.store
            .delete_webhook("ap_1", "whk_1", &ev())
            .await
            .expect("delete again")
    );

    // The successful changes were audited; the refused ones were not.
    let all = db
        .store
        .list_audit(&AuditFilter::default(), &page(100, None))
        .await
        .expect("audit");
    let ids: Vec<&str> = all.items.iter().map(|e| e.id.as_str()).collect();
    assert!(ids.contains(&created.id.as_str()));
    assert!(ids.contains(&deleted.id.as_str()));
    // account + 2 apps + create + update + delete
    assert_eq!(all.items.len(), 6, "{ids:?}");
}

/// Creates 25 webhooks of `ap_1` at once, spread over `nodes`; asserts
/// that exactly [`MAX_WEBHOOKS_PER_APP`] were created.
async fn create_25_webhooks_at_once(nodes: &[Arc<SqlStore>]) {
    let mut tasks = Vec::new();
    for i in 0..25 {
        let store = nodes[i % nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_webhook(&hook(&format!("whk_{i}"), "ap_1", &["key:created"]), &ev())
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(()) => created += 1,
            Err(StoreError::Conflict(msg)) => assert_eq!(msg, WEBHOOK_LIMIT_REACHED),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, MAX_WEBHOOKS_PER_APP);
}

async fn at_most_ten_webhooks_per_app_when_two_nodes_create_them(db: TestDb) {
    seed(&db.store).await;
    let nodes = [db.store.clone(), Arc::new(db.open_again().await)];
    create_25_webhooks_at_once(&nodes).await;
    for node in &nodes {
        let listed = node
            .list_webhooks("ap_1", &page(100, None))
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 10);
    }
}

async fn at_most_ten_webhooks_per_app_even_when_created_concurrently(db: TestDb) {
    seed(&db.store).await;
    create_25_webhooks_at_once(std::slice::from_ref(&db.store)).await;
    let listed = db
        .store
        .list_webhooks("ap_1", &page(100, None))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 10);
    // The refused ones left no triggers or audit events behind.
    let audit = db
        .store
        .list_audit(&AuditFilter::default(), &page(100, None))
        .await
        .expect("audit");
    assert_eq!(audit.items.len(), 3 + 10);
    // Another app still has room.
    db.store
        .create_webhook(&hook("whk_other", "ap_2", &["key:created"]), &ev())
        .await
        .expect("other app");
    // A webhook of a missing app is refused by the foreign key.
    let orphan = db
        .store
        .create_webhook(&hook("whk_orphan", "ap_missing", &["key:created"]), &ev())
        .await;
    assert!(
        matches!(orphan, Err(StoreError::MissingParent)),
        "{orphan:?}"
    );
    // Duplicate ids and duplicate triggers are conflicts, with nothing kept.
    let dup = db
        .store
        .create_webhook(&hook("whk_other", "ap_2", &["key:created"]), &ev())
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let twice = db
        .store
        .create_webhook(
            &hook("whk_twice", "ap_2", &["key:created", "key:created"]),
            &ev(),
        )
        .await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    assert!(
        db.store
            .get_webhook("ap_2", "whk_twice")
            .await
            .expect("get")
            .is_none()
    );
}

async fn webhooks_page_in_creation_order(db: TestDb) {
    seed(&db.store).await;
    for i in 0..5 {
        db.store
            .create_webhook(&hook(&format!("whk_{i}"), "ap_1", &["key:created"]), &ev())
            .await
            .expect("create");
    }
    db.store
        .create_webhook(&hook("whk_x", "ap_2", &["key:created"]), &ev())
        .await
        .expect("create");
    let first = db
        .store
        .list_webhooks("ap_1", &page(2, None))
        .await
        .expect("page 1");
    assert!(first.has_more);
    let ids: Vec<&str> = first.items.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["whk_0", "whk_1"]);
    let rest = db
        .store
        .list_webhooks("ap_1", &page(10, Some("whk_1")))
        .await
        .expect("page 2");
    assert!(!rest.has_more);
    let ids: Vec<&str> = rest.items.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["whk_2", "whk_3", "whk_4"]);
    // A cursor from another app's list is refused.
    assert!(matches!(
        db.store
            .list_webhooks("ap_1", &page(10, Some("whk_x")))
            .await,
        Err(StoreError::BadCursor)
    ));
}

async fn events_enqueue_one_delivery_per_subscribed_webhook(db: TestDb) {
    seed(&db.store).await;
    db.store
        .create_webhook(
            &hook("whk_a", "ap_1", &["key:created", "key:deleted"]),
            &ev(),
        )
        .await
        .expect("a");
    db.store
        .create_webhook(&hook("whk_b", "ap_1", &["key:deleted"]), &ev())
        .await
        .expect("b");
    db.store
        .create_webhook(&hook("whk_c", "ap_2", &["key:created"]), &ev())
        .await
        .expect("c");
    let event = notifying("ap_1", "key:created", 500);
    db.store.record_audit(&event).await.expect("event");
    let a = db
        .store
        .list_deliveries("whk_a", &page(10, None))
        .await
        .expect("a deliveries");
    assert_eq!(a.items.len(), 1);
    let d = &a.items[0];
    assert_eq!(d.id, delivery_id(&event.id, "whk_a"));
    assert_eq!(d.event_id, event.id);
    assert_eq!(d.trigger, "key:created");
    assert_eq!(d.payload, r#"{"type":"key:created"}"#);
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 0);
    assert_eq!(d.next_attempt_at, 500);
    assert_eq!((d.last_status, d.last_error.as_deref()), (None, None));
    // Not subscribed, or another app's webhook: nothing.
    for other in ["whk_b", "whk_c"] {
        assert!(
            db.store
                .list_deliveries(other, &page(10, None))
                .await
                .expect("deliveries")
                .items
                .is_empty(),
            "{other}"
        );
    }
    assert_eq!(
        db.store.get_delivery(&d.id).await.expect("get").as_ref(),
        Some(d)
    );
}

async fn claims_take_due_deliveries_once_and_leases_run_out(db: TestDb) {
    seed(&db.store).await;
    db.store
        .create_webhook(&hook("whk_a", "ap_1", &["key:created"]), &ev())
        .await
        .expect("a");
    let early = notifying("ap_1", "key:created", 500);
    let late = notifying("ap_1", "key:created", 900);
    db.store.record_audit(&early).await.expect("early");
    db.store.record_audit(&late).await.expect("late");

    // Only what is due.
    let claimed = db
        .store
        .claim_deliveries(600, 660, 10, 1)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.delivery.id, delivery_id(&early.id, "whk_a"));
    assert_eq!(c.target, "https://example.com/hooks/whk_a");
    assert_eq!(c.secret_sealed, vec![9, 9, 9]);
    assert!(!c.lease.is_empty());
    // Leased: not claimed again while the lease lives, even once due...
    assert!(
        db.store
            .claim_deliveries(650, 710, 10, 1)
            .await
            .expect("claim")
            .is_empty()
    );
    // ...but once it has run out (the dispatcher died), it is claimed again,
    // under a new lease; the old lease can no longer record an outcome.
    let again = db
        .store
        .claim_deliveries(660, 720, 10, 1)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, c.delivery.id);
    assert_ne!(again[0].lease, c.lease);
    let stale = attempt(AttemptOutcome::Delivered, Some(200), 661);
    assert!(
        !db.store
            .record_attempt(&c.delivery.id, &c.lease, &stale)
            .await
            .expect("stale")
    );
    let d = db
        .store
        .get_delivery(&c.delivery.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0));

    // A limit is respected, oldest due first.
    let both = db
        .store
        .claim_deliveries(2000, 2060, 1, 1)
        .await
        .expect("claim");
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].delivery.id, delivery_id(&early.id, "whk_a"));
}

/// Queues 40 deliveries to one webhook, then claims them in 8 claims at
/// once, spread over `nodes`: each is claimed by exactly one.
async fn claim_40_deliveries_at_once(nodes: &[Arc<SqlStore>]) {
    nodes[0]
        .create_webhook(&hook("whk_a", "ap_1", &["key:created"]), &ev())
        .await
        .expect("a");
    for i in 0..40 {
        nodes[0]
            .record_audit(&notifying("ap_1", "key:created", 100 + i))
            .await
            .expect("event");
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = nodes[i % nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            store.claim_deliveries(1000, 1060, 7, ANY).await
        }));
    }
    let mut seen = HashSet::new();
    let mut leases = HashSet::new();
    for t in tasks {
        for c in t.await.expect("join").expect("claim") {
            assert!(seen.insert(c.delivery.id.clone()), "claimed twice");
            assert!(leases.insert(c.lease.clone()), "a lease name twice");
        }
    }
    assert_eq!(seen.len(), 40);
}

async fn concurrent_claims_never_share_a_delivery(db: TestDb) {
    seed(&db.store).await;
    claim_40_deliveries_at_once(std::slice::from_ref(&db.store)).await;
}

async fn concurrent_claims_from_two_nodes_never_share_a_delivery(db: TestDb) {
    seed(&db.store).await;
    let nodes = [db.store.clone(), Arc::new(db.open_again().await)];
    claim_40_deliveries_at_once(&nodes).await;
}

/// The ids of claimed deliveries, sorted.
fn claimed_ids(claimed: &[latchkey_store::ClaimedDelivery]) -> Vec<String> {
    let mut ids: Vec<String> = claimed.iter().map(|c| c.delivery.id.clone()).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    ids.sort();
    ids
}

async fn claims_are_fair_across_webhooks(db: TestDb) {
    seed(&db.store).await;
    let webhooks = [
        ("whk_a", "ap_1", "key:created"),
        ("whk_b", "ap_1", "key:deleted"),
        ("whk_c", "ap_2", "key:created"),
    ];
    for (id, app, trigger) in webhooks {
        db.store
            .create_webhook(&hook(id, app, &[trigger]), &ev())
            .await
            .expect("webhook");
    }
    // whk_a has a backlog of the oldest deliveries; whk_b one, whk_c two.
    let mut events = Vec::new();
    let mut queue = |(webhook, app, trigger): (&str, &str, &'static str), at: i64| {
        let event = notifying(app, trigger, at);
        let id = delivery_id(&event.id, webhook);
        events.push(event);
        id
    };
    let a: Vec<String> = (0..6).map(|i| queue(webhooks[0], 100 + i)).collect();
    let b0 = queue(webhooks[1], 200);
    let c: Vec<String> = (0..2).map(|i| queue(webhooks[2], 300 + i)).collect();
    for e in &events {
        db.store.record_audit(e).await.expect("event");
    }

    // One per webhook per claim, oldest due first across webhooks: whk_a's
    // backlog does not push whk_b's delivery out of a small claim.
    let first = db
        .store
        .claim_deliveries(1000, 1060, 2, 1)
        .await
        .expect("claim");
    assert_eq!(claimed_ids(&first), sorted(&[&a[0], &b0]));
    // A webhook with an attempt in flight gets no other; the others do.
    let second = db
        .store
        .claim_deliveries(1000, 1060, 10, 1)
        .await
        .expect("claim");
    assert_eq!(claimed_ids(&second), sorted(&[&c[0]]));
    assert!(
        db.store
            .claim_deliveries(1000, 1060, 10, 1)
            .await
            .expect("claim")
            .is_empty(),
        "every webhook has its attempt in flight"
    );
    // An ended attempt frees the webhook's slot: its next delivery, in order.
    let a0 = first
        .iter()
        .find(|c| c.delivery.id == a[0])
        .expect("a0 claimed");
    let done = attempt(AttemptOutcome::Delivered, Some(200), 1001);
    assert!(
        db.store
            .record_attempt(&a0.delivery.id, &a0.lease, &done)
            .await
            .expect("record")
    );
    let third = db
        .store
        .claim_deliveries(1001, 1061, 10, 1)
        .await
        .expect("claim");
    assert_eq!(claimed_ids(&third), sorted(&[&a[1]]));

    // An expired lease holds no slot, and its delivery is retaken. At 1060
    // the leases of b0 and c0 have run out; a1's (until 1061) still holds.
    // With two per webhook: b0 and c0 first (their webhooks have nothing in
    // flight), then the second places, oldest first: a2 before c1.
    let fourth = db
        .store
        .claim_deliveries(1060, 1120, 3, 2)
        .await
        .expect("claim");
    assert_eq!(claimed_ids(&fourth), sorted(&[&b0, &c[0], &a[2]]));
    let fifth = db
        .store
        .claim_deliveries(1060, 1120, 10, 2)
        .await
        .expect("claim");
    assert_eq!(claimed_ids(&fifth), sorted(&[&c[1]]));
    assert!(
        db.store
            .claim_deliveries(1060, 1120, 10, 2)
            .await
            .expect("claim")
            .is_empty()
    );
}

async fn concurrent_claims_keep_one_attempt_per_webhook_in_flight(db: TestDb) {
    seed(&db.store).await;
    claims_at_once_keep_one_attempt_per_webhook(std::slice::from_ref(&db.store)).await;
}

async fn claims_from_two_nodes_keep_one_attempt_per_webhook_in_flight(db: TestDb) {
    seed(&db.store).await;
    let nodes = [db.store.clone(), Arc::new(db.open_again().await)];
    claims_at_once_keep_one_attempt_per_webhook(&nodes).await;
}

/// Queues 10 deliveries to each of four webhooks, then makes 8 claims at
/// once, spread over `nodes`, of one attempt in flight per webhook.
async fn claims_at_once_keep_one_attempt_per_webhook(nodes: &[Arc<SqlStore>]) {
    let webhooks = ["whk_0", "whk_1", "whk_2", "whk_3"];
    for id in webhooks {
        nodes[0]
            .create_webhook(&hook(id, "ap_1", &["key:created"]), &ev())
            .await
            .expect("webhook");
    }
    // Each event notifies all four webhooks.
    for i in 0..10 {
        nodes[0]
            .record_audit(&notifying("ap_1", "key:created", 100 + i))
            .await
            .expect("event");
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = nodes[i % nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            store.claim_deliveries(1000, 1060, 7, 1).await
        }));
    }
    let mut per_webhook = HashMap::new();
    for t in tasks {
        for c in t.await.expect("join").expect("claim") {
            *per_webhook
                .entry(c.delivery.webhook_id.clone())
                .or_insert(0) += 1;
            // The oldest delivery of its webhook.
            assert_eq!(c.delivery.next_attempt_at, 100);
        }
    }
    let mut got: Vec<(&str, i32)> = per_webhook.iter().map(|(w, n)| (w.as_str(), *n)).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        webhooks.iter().map(|w| (*w, 1)).collect::<Vec<_>>(),
        "exactly one attempt in flight per webhook"
    );
}

async fn attempts_retry_deliver_or_fail_and_release_the_lease(db: TestDb) {
    seed(&db.store).await;
    db.store
        .create_webhook(&hook("whk_a", "ap_1", &["key:created"]), &ev())
        .await
        .expect("a");
    let one = notifying("ap_1", "key:created", 500);
    let two = notifying("ap_1", "key:created", 500);
    db.store.record_audit(&one).await.expect("one");
    db.store.record_audit(&two).await.expect("two");
    let id_one = delivery_id(&one.id, "whk_a");
    let id_two = delivery_id(&two.id, "whk_a");

    // Both fail with a retryable answer: back to pending, later, unleased.
    for c in db
        .store
        .claim_deliveries(500, 560, 10, ANY)
        .await
        .expect("claim")
    {
        let a = attempt(AttemptOutcome::Retry { at: 530 }, Some(503), 501);
        assert!(
            db.store
                .record_attempt(&c.delivery.id, &c.lease, &a)
                .await
                .expect("record")
        );
        // An outcome is recorded once per claim.
        assert!(
            !db.store
                .record_attempt(&c.delivery.id, &c.lease, &a)
                .await
                .expect("record twice")
        );
    }
    let d = db
        .store
        .get_delivery(&id_one)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.next_attempt_at, 530);
    assert_eq!(d.last_status, Some(503));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(d.updated_at, 501);
    // Not due before the retry time, even though the lease was released.
    assert!(
        db.store
            .claim_deliveries(529, 589, 10, ANY)
            .await
            .expect("claim")
            .is_empty()
    );
    let claimed = db
        .store
        .claim_deliveries(530, 590, 10, ANY)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    for c in claimed {
        let a = if c.delivery.id == id_one {
            Attempt {
                outcome: AttemptOutcome::Delivered,
                http_status: Some(204),
                error: None,
                at: 531,
            }
        } else {
            Attempt {
                outcome: AttemptOutcome::Failed,
                http_status: None,
                error: Some("connection refused".into()),
                at: 531,
            }
        };
        assert!(
            db.store
                .record_attempt(&c.delivery.id, &c.lease, &a)
                .await
                .expect("record")
        );
    }
    let one = db
        .store
        .get_delivery(&id_one)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(one.status, DeliveryStatus::Delivered);
    assert_eq!(one.attempts, 2);
    assert_eq!((one.last_status, one.last_error), (Some(204), None));
    let two = db
        .store
        .get_delivery(&id_two)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(two.status, DeliveryStatus::Failed);
    assert_eq!(two.attempts, 2);
    assert_eq!(two.last_status, None);
    assert_eq!(two.last_error.as_deref(), Some("connection refused"));
    // Neither is claimed again, ever.
    assert!(
        db.store
            .claim_deliveries(i64::MAX / 2, i64::MAX / 2, 10, ANY)
            .await
            .expect("claim")
            .is_empty()
    );
    // Newest first.
    let listed = db
        .store
        .list_deliveries("whk_a", &page(1, None))
        .await
        .expect("list");
    assert!(listed.has_more);
    assert_eq!(listed.items[0].id, id_two);
    let rest = db
        .store
        .list_deliveries("whk_a", &page(1, Some(&id_two)))
        .await
        .expect("list");
    assert!(!rest.has_more);
    assert_eq!(rest.items[0].id, id_one);
}

async fn deleting_a_webhook_or_its_app_removes_its_deliveries(db: TestDb) {
    seed(&db.store).await;
    db.store
        .create_webhook(&hook("whk_a", "ap_1", &["key:created"]), &ev())
        .await
        .expect("a");
    db.store
        .create_webhook(&hook("whk_b", "ap_2", &["key:created"]), &ev())
        .await
        .expect("b");
    let one = notifying("ap_1", "key:created", 500);
    db.store.record_audit(&one).await.expect("one");
    db.store
        .record_audit(&notifying("ap_2", "key:created", 500))
        .await
        .expect("two");
    let claimed = db
        .store
        .claim_deliveries(500, 560, 10, 1)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let in_flight = claimed
        .iter()
        .find(|c| c.delivery.webhook_id == "whk_a")
        .expect("whk_a claimed");

    assert!(
        db.store
            .delete_webhook("ap_1", "whk_a", &ev())
            .await
            .expect("delete")
    );
    let id_one = delivery_id(&one.id, "whk_a");
    assert!(db.store.get_delivery(&id_one).await.expect("get").is_none());
    // An attempt that was in flight when the webhook went records nothing.
    let a = attempt(AttemptOutcome::Retry { at: 600 }, Some(500), 501);
    assert!(
        !db.store
            .record_attempt(&in_flight.delivery.id, &in_flight.lease, &a)
            .await
            .expect("record")
    );
    // New events no longer reach it.
    db.store
        .record_audit(&notifying("ap_1", "key:created", 700))
        .await
        .expect("three");
    assert!(
        db.store
            .list_deliveries("whk_a", &page(10, None))
            .await
            .expect("list")
            .items
            .is_empty()
    );

    // Deleting the app takes its webhooks and their deliveries along.
    assert!(
        db.store
            .delete_app("ap_2", &ev())
            .await
            .expect("delete app")
    );
    assert!(
        db.store
            .get_webhook("ap_2", "whk_b")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        db.store
            .list_deliveries("whk_b", &page(10, None))
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        db.store
            .claim_deliveries(i64::MAX / 2, i64::MAX / 2, 10, ANY)
            .await
            .expect("claim")
            .is_empty()
    );
}

async fn deliveries_survive_closing_and_reopening_the_store(db: TestDb) {
    let store = &db.store;
    seed(store).await;
    store
        .create_webhook(&hook("whk_a", "ap_1", &["key:created"]), &ev())
        .await
        .expect("a");
    let event = notifying("ap_1", "key:created", 500);
    store.record_audit(&event).await.expect("event");
    // Claimed, then the process stops before recording an outcome.
    assert_eq!(
        store
            .claim_deliveries(500, 560, 10, 1)
            .await
            .expect("claim")
            .len(),
        1
    );
    store.close().await;

    let store = db.open_again().await;
    let d = store
        .get_delivery(&delivery_id(&event.id, "whk_a"))
        .await
        .expect("get")
        .expect("still queued");
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0));
    // The dead claim's lease runs out, then the delivery is sent again.
    assert!(
        store
            .claim_deliveries(559, 619, 10, 1)
            .await
            .expect("claim")
            .is_empty()
    );
    let again = store
        .claim_deliveries(560, 620, 10, 1)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.payload, r#"{"type":"key:created"}"#);
}

async fn finished_deliveries_are_redelivered_and_pruned(db: TestDb) {
    seed(&db.store).await;
    for id in ["whk_a", "whk_b"] {
        db.store
            .create_webhook(&hook(id, "ap_1", &["key:created"]), &ev())
            .await
            .expect("webhook");
    }
    let one = notifying("ap_1", "key:created", 500);
    let two = notifying("ap_1", "key:created", 500);
    db.store.record_audit(&one).await.expect("one");
    db.store.record_audit(&two).await.expect("two");
    let id_one = delivery_id(&one.id, "whk_a");
    let id_two = delivery_id(&two.id, "whk_a");

    // Pending: left alone, and not audited.
    let redelivered = AuditEvent {
        action: "webhook.redelivered".into(),
        ..ev()
    };
    assert_eq!(
        db.store
            .redeliver("whk_a", &id_one, 510, &redelivered)
            .await
            .expect("redeliver"),
        Redelivery::StillPending
    );
    // Another webhook's delivery, or none at all: not found.
    assert_eq!(
        db.store
            .redeliver("whk_b", &id_one, 510, &redelivered)
            .await
            .expect("redeliver"),
        Redelivery::NotFound
    );
    assert_eq!(
        db.store
            .redeliver("whk_a", "dlv_nothing", 510, &redelivered)
            .await
            .expect("redeliver"),
        Redelivery::NotFound
    );

    // One fails, one is delivered.
    for c in db
        .store
        .claim_deliveries(500, 560, 10, ANY)
        .await
        .expect("claim")
    {
        let a = if c.delivery.id == id_one {
            attempt(AttemptOutcome::Failed, Some(404), 501)
        } else {
            attempt(AttemptOutcome::Delivered, Some(200), 501)
        };
        assert!(
            db.store
                .record_attempt(&c.delivery.id, &c.lease, &a)
                .await
                .expect("record")
        );
    }
    let Redelivery::Scheduled(d) = db
        .store
        .redeliver("whk_a", &id_one, 600, &redelivered)
        .await
        .expect("redeliver")
    else {
        panic!("a failed delivery is scheduled again");
    };
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!((d.attempts, d.next_attempt_at, d.updated_at), (0, 600, 600));
    assert_eq!((d.last_status, d.last_error.as_deref()), (None, None));
    let claimed = db
        .store
        .claim_deliveries(600, 660, 10, ANY)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, id_one);
    let audited = db
        .store
        .list_audit(
            &AuditFilter {
                account_id: Some("acc_1".into()),
                action: Some("webhook.redelivered".into()),
                ..AuditFilter::default()
            },
            &page(10, None),
        )
        .await
        .expect("audit");
    assert_eq!(audited.items.len(), 1, "{audited:?}");

    // Pruning keeps pending deliveries and recent finished ones (whk_a's
    // second and both of whk_b's were delivered at 501).
    assert_eq!(db.store.prune_deliveries(501).await.expect("prune"), 0);
    assert_eq!(db.store.prune_deliveries(502).await.expect("prune"), 3);
    assert!(db.store.get_delivery(&id_two).await.expect("get").is_none());
    assert!(db.store.get_delivery(&id_one).await.expect("get").is_some());
    assert_eq!(db.store.prune_deliveries(10_000).await.expect("prune"), 0);
}
