//! The key index as the store describes it: building the whole index from
//! a streamed snapshot at start (and when a node falls behind the change
//! feed), and turning one stored key or verifier token into its index
//! entry. Used by bootstrap, `sync.rs` and the operations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_core::{KeyIndex, KeyOwner, LiveKey, MasterKey};
use latchkey_store::{
    ApiKey, KeyKind, SnapshotHead, SnapshotKey, Store, StoreError, TokenKind, VerifierToken,
};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("a stored key could not be decrypted: {0}")]
    Crypto(#[from] latchkey_core::crypto::CryptoError),
    /// The runtime shut down while the index was being built.
    #[error("building the key index was interrupted")]
    Interrupted,
}

/// Keys per batch from the store to the threads that open them: large
/// enough that the per-batch costs (a query, a channel message, a lock of
/// the index) vanish, small enough that only a few batches are in flight.
const INDEX_BATCH: usize = 1024;

/// Builds the verification index from the store, decrypting every secret;
/// also returns the last change the snapshot includes.
///
/// The keys are opened and prepared (AES-GCM, the HMAC key schedule, the
/// Basic encoding) as the store hands them out, on as many threads as
/// there are cores, while the store reads the next batch: no copy of every
/// stored key exists at once, and with 10^6 keys start-up is bound by the
/// reading, not by the cryptography.
/// `leased`: nodes share the store, which holds credit balances (see
/// `latchkey_core::policy::CreditCell`).
pub async fn build_index(
    store: &dyn Store,
    master: &Arc<MasterKey>,
    leased: bool,
) -> Result<(KeyIndex, i64), IndexError> {
    build_index_in_batches(store, master, INDEX_BATCH, leased).await
}

async fn build_index_in_batches(
    store: &dyn Store,
    master: &Arc<MasterKey>,
    batch: usize,
    leased: bool,
) -> Result<(KeyIndex, i64), IndexError> {
    let index = Arc::new(KeyIndex::new());
    let failed = Arc::new(AtomicBool::new(false));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let (sender, receiver) = tokio::sync::mpsc::channel(2 * workers);
    let receiver = Arc::new(Mutex::new(receiver));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (receiver, index, master, failed) = (
                receiver.clone(),
                index.clone(),
                master.clone(),
                failed.clone(),
            );
            tokio::task::spawn_blocking(move || {
                open_keys(&receiver, &index, &master, &failed, leased)
            })
        })
        .collect();
    // Only the workers hold the receiver now: if they all stop, the store
    // stops sending.
    drop(receiver);
    let mut change_seq = 0;
    let read = {
        let mut head = |head: SnapshotHead| {
            change_seq = head.change_seq;
            index_head(&index, head);
        };
        store.snapshot_into(batch, &mut head, sender).await
    };
    let mut opened = Ok(());
    for handle in handles {
        match handle.await {
            Ok(result) => opened = opened.and(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => opened = opened.and(Err(IndexError::Interrupted)),
        }
    }
    read?;
    opened?;
    let index = Arc::try_unwrap(index).map_err(|_| IndexError::Interrupted)?;
    Ok((index, change_seq))
}

/// Apps' signing keys (each app's current one first) into the index; one
/// whose public key does not read is left out and logged (its tokens are
/// refused, as they would be without it).
pub fn index_signers(index: &KeyIndex, signers: &[latchkey_store::AppSigner]) {
    let mut by_app: std::collections::BTreeMap<&str, Vec<(&str, &str)>> =
        std::collections::BTreeMap::new();
    for s in signers {
        by_app
            .entry(&s.app_id)
            .or_default()
            .push((&s.id, &s.public_key));
    }
    for (app_id, keys) in by_app {
        set_app_signers(index, app_id, keys);
    }
}

/// Sets one app's signing keys, `(id, public key as base64url)` current
/// first, in the index (none: it has none); one that does not read is
/// left out and logged.
pub fn set_app_signers<'a>(
    index: &KeyIndex,
    app_id: &str,
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let signers = keys
        .into_iter()
        .filter_map(|(id, public_key)| {
            let key = latchkey_core::jwt::Ed25519PublicKey::from_base64url(public_key);
            if key.is_none() {
                tracing::error!(key = %id, "a stored signing key's public key is not readable");
            }
            Some((id.to_string(), key?))
        })
        .collect();
    index.set_app_signers(app_id, signers);
}

/// Everything but the keys, which need it in place: a key enters the
/// index only if its owner is there.
fn index_head(index: &KeyIndex, head: SnapshotHead) {
    for account_id in &head.accounts {
        index.insert_account(account_id);
    }
    for app in &head.apps {
        index.insert_app(&app.id, &app.account_id);
        index.set_app_policy(&app.id, crate::ops::policy::app_policy(&app.settings));
    }
    for (sa_id, account_id) in &head.service_accounts {
        index.insert_service_account(sa_id, account_id);
    }
    for (sa_id, app_id) in &head.grants {
        index.grant(sa_id, app_id);
    }
    for (user_account_id, account_id, role) in &head.members {
        index.set_member(user_account_id, account_id, *role);
    }
    index_signers(index, &head.signers);
    for token in &head.operator_tokens {
        index_operator_token(index, token);
    }
    for token in &head.verifier_tokens {
        index_verifier_token(index, token);
    }
    index.reserve_keys(usize::try_from(head.key_count).unwrap_or(0));
}

/// Puts an operator token in the index (a stored hash of another length
/// matches nothing and is left out).
pub fn index_operator_token(index: &KeyIndex, token: &latchkey_store::OperatorToken) {
    if let Ok(hash) = <[u8; 32]>::try_from(token.token_hash.as_slice()) {
        index.insert_operator_token(&token.id, hash);
    }
}

/// Adds a stored verifier or replica token to the index (a stored hash of
/// the wrong length matches nothing and is left out).
pub fn index_verifier_token(index: &KeyIndex, token: &VerifierToken) {
    if let Ok(hash) = <[u8; 32]>::try_from(token.token_hash.as_slice()) {
        match token.kind {
            TokenKind::Verifier => index.insert_verifier_token(&token.id, hash),
            TokenKind::Replica => index.insert_replica_token(&token.id, hash),
        }
    }
}

/// One worker of [`build_index`]: opens batches of keys and adds them to
/// the index until the store has sent every key or a worker failed.
fn open_keys(
    receiver: &Mutex<tokio::sync::mpsc::Receiver<Vec<SnapshotKey>>>,
    index: &KeyIndex,
    master: &MasterKey,
    failed: &AtomicBool,
    leased: bool,
) -> Result<(), IndexError> {
    while !failed.load(Ordering::Relaxed) {
        // The lock only orders the workers' turns at the queue; a worker
        // that panicked left nothing half-done in it.
        let batch = receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blocking_recv();
        let Some(batch) = batch else {
            return Ok(());
        };
        let opened = batch
            .iter()
            .map(|key| {
                prepare_key(
                    key.id.clone(),
                    key.kind,
                    &key.account_id,
                    &key.owner_id,
                    &key.secret_sealed,
                    key.public_key.as_ref(),
                    key.expires_at,
                    key.last_used_at,
                    master,
                )
                .map(|live| live.with_policy(&key.policy, credit_seed(key.credits, leased)))
            })
            .collect::<Result<Vec<_>, _>>();
        drop(batch);
        match opened {
            // Foreign keys guarantee every owner is in the snapshot.
            Ok(keys) => {
                index.insert_keys(keys);
            }
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The index entry of a stored key.
pub fn live_key(key: &ApiKey, master: &MasterKey, leased: bool) -> Result<LiveKey, IndexError> {
    prepare_key(
        key.id.clone(),
        key.kind,
        &key.account_id,
        &key.owner_id,
        &key.secret_sealed,
        key.public_key.as_ref(),
        key.expires_at,
        key.last_used_at,
        master,
    )
    .map(|live| live.with_policy(&key.policy, credit_seed(key.credits, leased)))
}

/// A stored credit balance as the index's cell takes it. `leased`: nodes
/// share the store, which then holds the balance (a node holds only what
/// it leases).
pub fn credit_seed(
    credits: Option<latchkey_store::StoredCredits>,
    leased: bool,
) -> Option<latchkey_core::policy::CreditSeed> {
    credits.map(|c| latchkey_core::policy::CreditSeed {
        state: latchkey_core::policy::CreditState {
            remaining: c.remaining,
            period: c.period,
        },
        version: c.version,
        leased,
    })
}

#[allow(clippy::too_many_arguments)]
fn prepare_key(
    id: String,
    kind: KeyKind,
    account_id: &str,
    owner_id: &str,
    secret_sealed: &[u8],
    public_key: Option<&latchkey_core::jwt::PublicKey>,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    master: &MasterKey,
) -> Result<LiveKey, IndexError> {
    // A public-key key has no secret to open (its sealed secret is empty).
    if let Some(public_key) = public_key {
        return Ok(LiveKey::with_public_key(
            id,
            owner(kind, account_id, owner_id),
            public_key.clone(),
            expires_at,
            last_used_at,
        ));
    }
    let secret = master.open(&id, secret_sealed)?;
    Ok(LiveKey::new(
        id,
        owner(kind, account_id, owner_id),
        &secret,
        expires_at,
        last_used_at,
    ))
}

pub fn key_owner(key: &ApiKey) -> KeyOwner {
    owner(key.kind, &key.account_id, &key.owner_id)
}

fn owner(kind: KeyKind, account_id: &str, owner_id: &str) -> KeyOwner {
    let account_id = account_id.into();
    match kind {
        KeyKind::App => KeyOwner::App {
            account_id,
            app_id: owner_id.into(),
        },
        KeyKind::UserAccount => KeyOwner::UserAccount {
            account_id,
            user_account_id: owner_id.into(),
        },
        KeyKind::ServiceAccount => KeyOwner::ServiceAccount {
            account_id,
            service_account_id: owner_id.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::SecretString;
    use latchkey_store::{Actor, App, AuditEvent, ServiceAccount};
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::bootstrap::initialize;
    use latchkey_core::crypto::sha256;
    use latchkey_core::ids::{IdKind, new_id};
    use latchkey_core::secret::{self, KEY_SECRET_PREFIX};
    use latchkey_store::SqlStore;
    use ring::rand::SystemRandom;

    fn ev(n: &mut u32) -> AuditEvent {
        *n += 1;
        AuditEvent {
            id: format!("evt_{n}"),
            at: 100,
            account_id: None,
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

    async fn test_store() -> (SqlStore, Option<tempfile::TempDir>) {
        if std::env::var("LATCHKEY_TEST_BACKEND").as_deref() == Ok("postgres") {
            let schema = latchkey_testdb::fresh_schema().await;
            let store = SqlStore::connect_postgres(&schema.url)
                .await
                .expect("connect to PostgreSQL");
            (store, None)
        } else {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqlStore::open(&dir.path().join("t.db"))
                .await
                .expect("open");
            (store, Some(dir))
        }
    }

    /// The index as it was built before keys were streamed: every row of
    /// `Store::snapshot` first, then one key after the other.
    fn reference_index(snapshot: &latchkey_store::Snapshot, master: &MasterKey) -> KeyIndex {
        let index = KeyIndex::new();
        for account_id in &snapshot.accounts {
            index.insert_account(account_id);
        }
        for app in &snapshot.apps {
            index.insert_app(&app.id, &app.account_id);
            index.set_app_policy(&app.id, crate::ops::policy::app_policy(&app.settings));
        }
        for (sa_id, account_id) in &snapshot.service_accounts {
            index.insert_service_account(sa_id, account_id);
        }
        for (sa_id, app_id) in &snapshot.grants {
            index.grant(sa_id, app_id);
        }
        for token in &snapshot.operator_tokens {
            let hash: [u8; 32] = token.token_hash.as_slice().try_into().expect("32 bytes");
            index.insert_operator_token(&token.id, hash);
        }
        for token in &snapshot.verifier_tokens {
            index_verifier_token(&index, token);
        }
        for key in &snapshot.keys {
            assert!(index.insert_key(live_key(key, master, false).expect("opens")));
        }
        index
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_streamed_index_equals_the_one_built_from_the_whole_snapshot() {
        let (store, _dir) = test_store().await;
        let rng = SystemRandom::new();
        let master = Arc::new(MasterKey::generate(&rng).expect("master key"));
        let clock = latchkey_core::ManualClock::fixed();
        let report = initialize(&store, &master, &rng, &clock, "owner@example.com")
            .await
            .expect("initialize");
        let account = report.account.id.clone();
        let mut n = 0;
        let mut secrets: Vec<(String, SecretString)> = Vec::new();
        secrets.push((report.key.id.clone(), report.key.secret));
        let mut apps = Vec::new();
        for (i, settings) in [json!({}), json!({"maxTokenTtlSeconds": 300})]
            .into_iter()
            .enumerate()
        {
            let Value::Object(settings) = settings else {
                unreachable!()
            };
            let app = App {
                id: new_id(&rng, IdKind::App),
                account_id: account.clone(),
                display_name: format!("app {i}"),
                settings,
                created_at: 100,
            };
            store
                .create_app(&app, None, &ev(&mut n))
                .await
                .expect("app");
            apps.push(app.id);
        }
        let sa = ServiceAccount {
            id: new_id(&rng, IdKind::ServiceAccount),
            account_id: account.clone(),
            display_name: "robot".into(),
            created_at: 100,
        };
        store
            .create_service_account(&sa, &ev(&mut n))
            .await
            .expect("sa");
        assert!(
            store
                .grant_app(&sa.id, &apps[1], 100, &ev(&mut n))
                .await
                .expect("grant")
        );
        for i in 0..40i64 {
            let (kind, id_kind, owner) = match i % 4 {
                3 => (KeyKind::ServiceAccount, IdKind::ServiceAccountKey, &sa.id),
                k => (KeyKind::App, IdKind::AppKey, &apps[usize::from(k == 1)]),
            };
            let id = new_id(&rng, id_kind);
            let secret = secret::generate(&rng, KEY_SECRET_PREFIX);
            let key = ApiKey {
                secret_sealed: master
                    .seal(&rng, &id, secret.expose().as_bytes())
                    .expect("seal"),
                public_key: None,
                id: id.clone(),
                kind,
                account_id: account.clone(),
                owner_id: owner.clone(),
                display_name: "k".into(),
                created_at: 100,
                expires_at: (i % 3 == 0).then_some(10_000 + i),
                last_used_at: None,
                rotated_from: None,
                replaced_by: None,
                policy: Default::default(),
                credits: None,
            };
            store
                .create_key(&key, 1000, 100, &ev(&mut n))
                .await
                .expect("key");
            secrets.push((id, secret));
        }
        store
            .record_last_used(&[(secrets[5].0.clone(), 777)])
            .await
            .expect("last used");
        // A gap in the keys' sequence numbers.
        let (gone, _) = secrets.remove(7);
        assert!(store.delete_key(&gone, &ev(&mut n)).await.expect("delete"));
        // Verifier tokens: one live, one deleted.
        let mut verifier_tokens = Vec::new();
        for name in ["live", "deleted"] {
            let token = secret::generate(&rng, latchkey_core::secret::VERIFIER_TOKEN_PREFIX);
            let stored = VerifierToken {
                id: new_id(&rng, IdKind::VerifierToken),
                display_name: name.into(),
                token_hash: sha256(token.expose().as_bytes()).to_vec(),
                created_at: 100,
                kind: TokenKind::Verifier,
            };
            store
                .create_verifier_token(&stored, &ev(&mut n))
                .await
                .expect("verifier token");
            verifier_tokens.push((stored.id, token));
        }
        assert!(
            store
                .delete_verifier_token(&verifier_tokens[1].0, &ev(&mut n))
                .await
                .expect("delete")
        );

        let snapshot = store.snapshot().await.expect("snapshot");
        let reference = reference_index(&snapshot, &master);
        assert_eq!(reference.key_count(), secrets.len());
        for batch in [1, 3, 8, secrets.len() - 1, secrets.len(), secrets.len() + 1] {
            let (index, seq) = build_index_in_batches(&store, &master, batch, false)
                .await
                .expect("build");
            assert_eq!(seq, snapshot.change_seq, "batch {batch}");
            assert_eq!(index.key_count(), reference.key_count(), "batch {batch}");
            assert!(index.key(&gone).is_none());
            for (id, secret) in &secrets {
                let (got, want) = (
                    index.key(id).expect("streamed"),
                    reference.key(id).expect("reference"),
                );
                assert_eq!(got.owner, want.owner, "{id}");
                assert_eq!(got.expires_at(), want.expires_at(), "{id}");
                assert_eq!(got.last_used_at(), want.last_used_at(), "{id}");
                assert_eq!(got.app_token_ttl(), want.app_token_ttl(), "{id}");
                assert!(got.secret_matches(secret.expose().as_bytes()), "{id}");
            }
            for app in &apps {
                assert_eq!(index.app_policy(app), reference.app_policy(app));
                assert_eq!(index.app_account(app), reference.app_account(app));
                assert_eq!(
                    index.service_account_reaches(&sa.id, app),
                    reference.service_account_reaches(&sa.id, app)
                );
            }
            let (live, deleted) = (&verifier_tokens[0], &verifier_tokens[1]);
            assert_eq!(
                index.verifier_token_id(live.1.expose()).as_deref(),
                Some(live.0.as_str())
            );
            assert_eq!(
                reference.verifier_token_id(live.1.expose()).as_deref(),
                Some(live.0.as_str())
            );
            assert_eq!(index.verifier_token_id(deleted.1.expose()), None);
            assert_eq!(reference.verifier_token_id(deleted.1.expose()), None);
            let token = report.operator_token.expose();
            assert!(index.operator_token_id(token).is_some());
            assert_eq!(
                index.operator_token_id(token),
                reference.operator_token_id(token)
            );
        }
        assert_eq!(
            reference.key(&secrets[5].0).and_then(|k| k.last_used_at()),
            Some(777)
        );
        assert_eq!(
            reference.key(&secrets[2].0).and_then(|k| k.app_token_ttl()),
            Some(300)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_that_does_not_open_fails_the_build() {
        let (store, _dir) = test_store().await;
        let rng = SystemRandom::new();
        let master = Arc::new(MasterKey::generate(&rng).expect("master key"));
        let clock = latchkey_core::ManualClock::fixed();
        initialize(&store, &master, &rng, &clock, "owner@example.com")
            .await
            .expect("initialize");
        let other = Arc::new(MasterKey::generate(&rng).expect("master key"));
        for batch in [1, 1024] {
            assert!(matches!(
                build_index_in_batches(&store, &other, batch, false).await,
                Err(IndexError::Crypto(_))
            ));
        }
        // The store is still usable afterwards.
        assert!(
            build_index_in_batches(&store, &master, 1, false)
                .await
                .is_ok()
        );
    }
}
