//! Dashboard sessions against a real database, on both backends: created
//! with their audit event, found only by their hash and only until they
//! expire, ended by sign-out, by expiry cleanup and by deleting the account.

mod common;

use common::{TestDb, conformance, new_account};
use latchkey_store::{
    Actor, AuditEvent, AuditFilter, DashboardSession, DashboardStore, NewAccount, Page, SqlStore,
    Store, StoreError, UserAccount,
};

conformance!(
    user_accounts_are_found_by_their_normalized_email,
    sessions_live_until_they_expire_or_are_deleted,
    expired_sessions_are_removed_and_live_ones_kept,
    sessions_need_a_user_account_and_end_with_its_account,
    sessions_survive_closing_and_reopening_the_store,
);

/// Seeds the test's database with account `acc_1` whose owner is `ua_1`
/// (owner@example.com), and returns its store.
async fn seeded(db: &TestDb) -> &SqlStore {
    let store = &db.store;
    let base = new_account(1);
    let new = NewAccount {
        owner: UserAccount {
            email: "owner@example.com".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            ..base.owner
        },
        ..base
    };
    store
        .create_account(&new, &ev("account.created"))
        .await
        .expect("account");
    store
}

/// A distinct audit event for each call: `action` by the owner `ua_1`
/// from 127.0.0.1.
fn ev(action: &str) -> AuditEvent {
    AuditEvent {
        action: action.into(),
        actor: Actor::UserAccount {
            user_account_id: "ua_1".into(),
        },
        address: Some("127.0.0.1".into()),
        target_type: "userAccount".into(),
        target_id: Some("ua_1".into()),
        ..common::ev()
    }
}

fn session(hash: u8, expires_at: i64) -> DashboardSession {
    DashboardSession {
        id_hash: vec![hash; 32],
        user_account_id: "ua_1".into(),
        account_id: "acc_1".into(),
        created_at: 100,
        expires_at,
    }
}

async fn actions(store: &SqlStore) -> Vec<String> {
    let filter = AuditFilter {
        account_id: Some("acc_1".into()),
        ..AuditFilter::default()
    };
    let page = Page {
        limit: 100,
        after: None,
    };
    store
        .list_audit(&filter, &page)
        .await
        .expect("audit")
        .items
        .into_iter()
        .map(|e| e.action)
        .collect()
}

async fn user_accounts_are_found_by_their_normalized_email(db: TestDb) {
    let store = seeded(&db).await;
    let found = store
        .find_user_account_by_email("owner@example.com")
        .await
        .expect("find")
        .expect("owner");
    assert_eq!(found.id, "ua_1");
    assert_eq!(found.account_id, "acc_1");
    assert!(found.password_hash.starts_with("$argon2id$"));
    for other in ["nobody@example.com", "OWNER@example.com", ""] {
        assert!(
            store
                .find_user_account_by_email(other)
                .await
                .expect("find")
                .is_none(),
            "{other:?}"
        );
    }
}

async fn sessions_live_until_they_expire_or_are_deleted(db: TestDb) {
    let store = seeded(&db).await;
    let s = session(7, 1_000);
    store
        .create_dashboard_session(&s, &ev("dashboard.signedIn"))
        .await
        .expect("create");
    assert_eq!(actions(store).await[0], "dashboard.signedIn");

    let got = store
        .get_dashboard_session(&s.id_hash, 999)
        .await
        .expect("get");
    assert_eq!(got.as_ref(), Some(&s));
    // Only by its exact hash.
    assert!(
        store
            .get_dashboard_session(&[8; 32], 999)
            .await
            .expect("get")
            .is_none()
    );
    // Not at or after its expiry.
    assert!(
        store
            .get_dashboard_session(&s.id_hash, 1_000)
            .await
            .expect("get")
            .is_none()
    );

    // The same hash twice is a conflict, and records nothing.
    let again = store
        .create_dashboard_session(&s, &ev("dashboard.signedIn"))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(actions(store).await.len(), 2);

    assert!(
        store
            .delete_dashboard_session(&s.id_hash, &ev("dashboard.signedOut"))
            .await
            .expect("delete")
    );
    assert_eq!(actions(store).await[0], "dashboard.signedOut");
    assert!(
        store
            .get_dashboard_session(&s.id_hash, 500)
            .await
            .expect("get")
            .is_none()
    );
    // A second sign-out finds nothing and records nothing.
    assert!(
        !store
            .delete_dashboard_session(&s.id_hash, &ev("dashboard.signedOut"))
            .await
            .expect("delete")
    );
    assert_eq!(actions(store).await.len(), 3);
}

async fn expired_sessions_are_removed_and_live_ones_kept(db: TestDb) {
    let store = seeded(&db).await;
    for (hash, expires_at) in [(1, 500), (2, 600), (3, 2_000)] {
        store
            .create_dashboard_session(&session(hash, expires_at), &ev("dashboard.signedIn"))
            .await
            .expect("create");
    }
    assert_eq!(
        store
            .delete_expired_dashboard_sessions(600)
            .await
            .expect("expire"),
        2
    );
    assert!(
        store
            .get_dashboard_session(&[3; 32], 600)
            .await
            .expect("get")
            .is_some()
    );
    assert_eq!(
        store
            .delete_expired_dashboard_sessions(600)
            .await
            .expect("expire"),
        0
    );
}

async fn sessions_need_a_user_account_and_end_with_its_account(db: TestDb) {
    let store = seeded(&db).await;
    let mut orphan = session(4, 2_000);
    orphan.user_account_id = "ua_gone".into();
    let r = store
        .create_dashboard_session(&orphan, &ev("dashboard.signedIn"))
        .await;
    assert!(matches!(r, Err(StoreError::MissingParent)), "{r:?}");

    store
        .create_dashboard_session(&session(5, 2_000), &ev("dashboard.signedIn"))
        .await
        .expect("create");
    assert!(
        store
            .delete_account("acc_1", &ev("account.deleted"))
            .await
            .expect("delete account")
    );
    assert!(
        store
            .get_dashboard_session(&[5; 32], 100)
            .await
            .expect("get")
            .is_none()
    );
}

async fn sessions_survive_closing_and_reopening_the_store(db: TestDb) {
    let store = seeded(&db).await;
    store
        .create_dashboard_session(&session(6, 2_000), &ev("dashboard.signedIn"))
        .await
        .expect("create");
    store.close().await;
    let store = db.open_again().await;
    assert!(
        store
            .get_dashboard_session(&[6; 32], 100)
            .await
            .expect("get")
            .is_some()
    );
}
