//! Verifier tokens in the store, on both backends: created, read, listed
//! in pages and deleted with their audit events in the same transaction;
//! each create and delete recorded in the change feed (failed ones not);
//! unique ids and hashes; snapshots hold the live tokens; `Debug` shows
//! no hash.

mod common;

use common::{TestDb, change_seq, changes_after, conformance, ev, named, page};
use latchkey_store::{
    Actor, AuditFilter, ChangeEntity, Page, SqlStore, Store, StoreError, TokenKind, VerifierToken,
};

conformance!(
    create_get_list_and_delete,
    creates_and_deletes_are_audited_and_in_the_change_feed,
    ids_and_hashes_are_unique,
    snapshots_hold_the_live_tokens,
    replica_tokens_are_listed_apart_and_read_back_with_their_kind,
);

async fn replica_tokens_are_listed_apart_and_read_back_with_their_kind(db: TestDb) {
    let s = &*db.store;
    create(s, 1).await;
    let replica = VerifierToken {
        id: "rt_2".into(),
        kind: TokenKind::Replica,
        ..token(2)
    };
    s.create_verifier_token(&replica, &ev())
        .await
        .expect("create a replica token");
    let verifiers = s
        .list_verifier_tokens(TokenKind::Verifier, &page(10, None))
        .await
        .expect("list");
    assert_eq!(verifiers.items, vec![token(1)]);
    let replicas = s
        .list_verifier_tokens(TokenKind::Replica, &page(10, None))
        .await
        .expect("list");
    assert_eq!(replicas.items, vec![replica.clone()]);
    assert_eq!(
        s.get_verifier_token("rt_2").await.expect("get"),
        Some(replica.clone())
    );
    let snapshot = s.snapshot().await.expect("snapshot");
    assert!(snapshot.verifier_tokens.contains(&replica));
}

fn token(n: u8) -> VerifierToken {
    VerifierToken {
        id: format!("vt_{n}"),
        display_name: format!("api server {n}"),
        token_hash: vec![n; 32],
        created_at: 100 + i64::from(n),
        kind: TokenKind::Verifier,
    }
}

async fn create(store: &SqlStore, n: u8) -> VerifierToken {
    let t = token(n);
    store
        .create_verifier_token(&t, &ev())
        .await
        .expect("create a verifier token");
    t
}

async fn create_get_list_and_delete(db: TestDb) {
    let s = &*db.store;
    assert_eq!(s.get_verifier_token("vt_1").await.expect("get"), None);
    let all: Vec<VerifierToken> = [1, 2, 3].into_iter().map(token).collect();
    for t in &all {
        s.create_verifier_token(t, &ev()).await.expect("create");
    }
    assert_eq!(
        s.get_verifier_token("vt_2").await.expect("get"),
        Some(all[1].clone())
    );
    // Pages in creation order.
    let first = s
        .list_verifier_tokens(TokenKind::Verifier, &page(2, None))
        .await
        .expect("list");
    assert_eq!(first.items, all[..2]);
    assert!(first.has_more);
    let rest = s
        .list_verifier_tokens(TokenKind::Verifier, &page(2, Some("vt_2")))
        .await
        .expect("list");
    assert_eq!(rest.items, all[2..]);
    assert!(!rest.has_more);
    assert!(matches!(
        s.list_verifier_tokens(TokenKind::Verifier, &page(2, Some("vt_9")))
            .await,
        Err(StoreError::BadCursor)
    ));

    assert!(
        s.delete_verifier_token("vt_2", &ev())
            .await
            .expect("delete")
    );
    assert!(
        !s.delete_verifier_token("vt_2", &ev())
            .await
            .expect("delete"),
        "already gone"
    );
    assert_eq!(s.get_verifier_token("vt_2").await.expect("get"), None);
    let left = s
        .list_verifier_tokens(
            TokenKind::Verifier,
            &Page {
                limit: 10,
                after: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(left.items, vec![all[0].clone(), all[2].clone()]);
}

async fn creates_and_deletes_are_audited_and_in_the_change_feed(db: TestDb) {
    let s = &*db.store;
    let start = change_seq(s).await;
    let mut created = ev();
    created.action = "verifierToken.created".into();
    s.create_verifier_token(&token(1), &created)
        .await
        .expect("create");
    let mut deleted = ev();
    deleted.action = "verifierToken.deleted".into();
    assert!(
        s.delete_verifier_token("vt_1", &deleted)
            .await
            .expect("delete")
    );
    // A delete that finds nothing records neither an event nor a change.
    let mut missed = ev();
    missed.action = "verifierToken.missed".into();
    assert!(
        !s.delete_verifier_token("vt_1", &missed)
            .await
            .expect("delete")
    );

    let feed = changes_after(s, start).await;
    assert_eq!(
        named(&feed),
        vec![
            (ChangeEntity::VerifierToken, "vt_1".to_string()),
            (ChangeEntity::VerifierToken, "vt_1".to_string()),
        ]
    );
    assert_eq!(
        ChangeEntity::parse("verifierToken"),
        Some(ChangeEntity::VerifierToken)
    );
    let events = s
        .list_audit(&AuditFilter::default(), &page(10, None))
        .await
        .expect("audit");
    let actions: Vec<&str> = events.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["verifierToken.deleted", "verifierToken.created"]);
    assert_eq!(events.items[1], created);
    // A verifier token's refused call is recorded under its own actor.
    let mut refused = ev();
    refused.actor = Actor::VerifierToken {
        token_id: "vt_1".into(),
    };
    refused.outcome = "failure".into();
    s.record_audit(&refused).await.expect("record");
    let events = s
        .list_audit(&AuditFilter::default(), &page(1, None))
        .await
        .expect("audit");
    assert_eq!(events.items, vec![refused]);
    assert_eq!(events.items[0].actor.kind(), "verifierToken");
    assert_eq!(events.items[0].actor.id(), Some("vt_1"));
}

async fn ids_and_hashes_are_unique(db: TestDb) {
    let s = &*db.store;
    create(s, 1).await;
    let start = change_seq(s).await;
    let mut same_id = token(2);
    same_id.id = "vt_1".into();
    let mut same_hash = token(3);
    same_hash.token_hash = token(1).token_hash;
    for t in [same_id, same_hash] {
        assert!(matches!(
            s.create_verifier_token(&t, &ev()).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(changes_after(s, start).await.changes.is_empty());
    let listed = s
        .list_verifier_tokens(TokenKind::Verifier, &page(10, None))
        .await
        .expect("list");
    assert_eq!(listed.items, vec![token(1)]);
}

async fn snapshots_hold_the_live_tokens(db: TestDb) {
    let s = &*db.store;
    for n in 1..=3 {
        create(s, n).await;
    }
    assert!(
        s.delete_verifier_token("vt_2", &ev())
            .await
            .expect("delete")
    );
    let live = vec![token(1), token(3)];
    assert_eq!(s.snapshot().await.expect("snapshot").verifier_tokens, live);
    let (sender, _receiver) = tokio::sync::mpsc::channel(4);
    let mut head = None;
    s.snapshot_into(10, &mut |h| head = Some(h), sender)
        .await
        .expect("snapshot_into");
    assert_eq!(head.expect("head").verifier_tokens, live);
    // A second node (or a restart) reads the same.
    let other = db.open_again().await;
    assert_eq!(
        other.snapshot().await.expect("snapshot").verifier_tokens,
        live
    );
}

#[test]
fn debug_shows_no_hash() {
    let t = VerifierToken {
        token_hash: b"0123456789abcdef0123456789abcdef".to_vec(),
        ..token(1)
    };
    let printed = format!("{t:?}");
    assert!(printed.contains("vt_1"), "{printed}");
    assert!(!printed.contains("token_hash"), "{printed}");
    assert!(!printed.contains("48, 49, 50"), "{printed}");
}
