//! The replication feed for in-process replicas (the `latchkey-replica`
//! crate): `GET /v1/replica/snapshot` streams the live keys, apps, service
//! accounts and members, and `GET /v1/replica/changes?after=SEQ` streams
//! what the change feed names after `SEQ`, each as its current state, with
//! a heartbeat at least every [`HEARTBEAT`]. Both take only a replica
//! token (`Authorization: Bearer lkrp_…`) and answer one JSON document per
//! line (`application/x-ndjson`, the types in `latchkey_core::replica`).
//!
//! Key secrets are sealed for each response under a key derived from the
//! replica token and a salt the response begins with; they never travel in
//! clear. A stream ends when its token is deleted (on this node at once,
//! on another once it applies the change), when the node shuts down, and
//! when the client goes away.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use hyper::body::{Bytes, Frame};
use latchkey_core::replica::{
    AccountRecord, AppRecord, Entity, FeedLine, Head, KeyRecord, MemberRecord, OwnerKind,
    ServiceAccountRecord, SignerRecord, SnapshotLine, TransportKey,
};
use latchkey_core::secret::REPLICA_TOKEN_PREFIX;
use latchkey_store::{
    ApiKey, ChangeEntity, ChangeRecord, KeyKind, Page, SnapshotHead, SnapshotKey, StoreError,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::state::AppState;

/// A changes stream sends a line at least this often; a replica that
/// hears nothing for its staleness window refuses every credential.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Keys per batch read from the store for a snapshot.
const SNAPSHOT_BATCH: usize = 1024;
/// Changes per read of the feed.
const CHANGES_BATCH: u32 = 500;
/// Lines buffered for a slow reader before the stream waits for it.
const LINES_IN_FLIGHT: usize = 64;
/// How long a stream waits for a reader that takes nothing before it ends
/// (a snapshot holds a read transaction open meanwhile).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A response body fed line by line from a channel: ends when the sender
/// is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

fn ndjson(rx: mpsc::Receiver<Bytes>) -> Response {
    let mut response = Response::new(Body::new(ChannelBody(rx)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn line<T: serde::Serialize>(value: &T) -> Option<Bytes> {
    let mut bytes = serde_json::to_vec(value).ok()?;
    bytes.push(b'\n');
    Some(Bytes::from(bytes))
}

/// The replica token of the request: its id and the token itself (the
/// transport key is derived from it).
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, Zeroizing<String>), ApiError> {
    let unauthorized =
        |title: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", title.to_string());
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unauthorized(
            "send one Authorization header: Bearer and a replica token (lkrp_…)",
        ));
    };
    let text = value.to_str().unwrap_or("").trim();
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(unauthorized(
                "use the Bearer scheme with a replica token (lkrp_…)",
            ));
        }
    };
    if !token.starts_with(REPLICA_TOKEN_PREFIX) {
        return Err(unauthorized(
            "only a replica token (lkrp_…) may read the replication feed",
        ));
    }
    match state.index.replica_token_id(token) {
        Some(id) => Ok((id, Zeroizing::new(token.to_string()))),
        None => Err(unauthorized("the replica token is not valid (deleted?)")),
    }
}

/// The salt and transport key of one response.
fn transport(state: &AppState, token: &str) -> Result<(String, TransportKey), ApiError> {
    let fail = |e: latchkey_core::crypto::CryptoError| {
        tracing::error!(error = %e, "could not derive a replica transport key");
        ApiError::internal()
    };
    let (salt, text) = TransportKey::new_salt(&state.rng).map_err(fail)?;
    let key = TransportKey::derive(token, &salt).map_err(fail)?;
    Ok((text, key))
}

fn owner_kind(kind: KeyKind) -> OwnerKind {
    match kind {
        KeyKind::App => OwnerKind::App,
        KeyKind::UserAccount => OwnerKind::UserAccount,
        KeyKind::ServiceAccount => OwnerKind::ServiceAccount,
    }
}

/// A stored key as the feed sends it: its secret opened with the master
/// key and sealed again under the response's transport key, or its public
/// key as a JWK (nothing to seal).
fn snapshot_key(
    state: &AppState,
    transport: &TransportKey,
    k: &SnapshotKey,
) -> Result<KeyRecord, latchkey_core::crypto::CryptoError> {
    let (secret, public_key) = match &k.public_key {
        Some(public_key) => (None, Some(Box::new(public_key.to_jwk()))),
        None => {
            let secret = state.master.open(&k.id, &k.secret_sealed)?;
            (Some(transport.seal(&state.rng, &k.id, &secret)?), None)
        }
    };
    Ok(KeyRecord {
        id: k.id.clone(),
        owner_kind: owner_kind(k.kind),
        account_id: k.account_id.clone(),
        owner_id: k.owner_id.clone(),
        secret,
        public_key,
        expires_at: k.expires_at,
        policy: k.policy.clone(),
    })
}

/// As [`snapshot_key`], for a key the change stream read whole.
fn stored_key(
    state: &AppState,
    transport: &TransportKey,
    k: &ApiKey,
) -> Result<KeyRecord, latchkey_core::crypto::CryptoError> {
    snapshot_key(state, transport, &SnapshotKey::from(k))
}

/// The snapshot's lines before its keys: the head, the accounts, their
/// members, the apps and the service accounts (with their apps).
fn owner_lines(head: SnapshotHead, salt: &str) -> Vec<SnapshotLine> {
    let mut lines = Vec::with_capacity(
        1 + head.accounts.len()
            + head.members.len()
            + head.apps.len()
            + head.service_accounts.len(),
    );
    lines.push(SnapshotLine::Head(Head {
        seq: head.change_seq,
        salt: salt.to_string(),
        key_count: head.key_count,
    }));
    lines.extend(head.accounts.into_iter().map(|id| {
        SnapshotLine::Account(AccountRecord {
            id,
            members: Vec::new(),
        })
    }));
    lines.extend(head.members.into_iter().map(|(id, account_id, role)| {
        SnapshotLine::Member(MemberRecord {
            id,
            account_id,
            role: role.as_str().to_string(),
        })
    }));
    let mut signers: BTreeMap<String, Vec<SignerRecord>> = BTreeMap::new();
    for s in head.signers {
        signers.entry(s.app_id).or_default().push(SignerRecord {
            id: s.id,
            public_key: s.public_key,
        });
    }
    lines.extend(head.apps.iter().map(|app| {
        SnapshotLine::App(AppRecord {
            id: app.id.clone(),
            account_id: app.account_id.clone(),
            policy: crate::ops::policy::app_policy(&app.settings),
            signers: signers.remove(&app.id).unwrap_or_default(),
        })
    }));
    let mut service_accounts: BTreeMap<String, ServiceAccountRecord> = head
        .service_accounts
        .into_iter()
        .map(|(id, account_id)| {
            (
                id.clone(),
                ServiceAccountRecord {
                    id,
                    account_id,
                    apps: Vec::new(),
                },
            )
        })
        .collect();
    for (sa_id, app_id) in head.grants {
        if let Some(sa) = service_accounts.get_mut(&sa_id) {
            sa.apps.push(app_id);
        }
    }
    lines.extend(
        service_accounts
            .into_values()
            .map(SnapshotLine::ServiceAccount),
    );
    lines
}

/// Sends one line, waiting at most [`SEND_TIMEOUT`] for a slow reader;
/// `None` when the reader is gone or stalled.
async fn send_bytes(tx: &mpsc::Sender<Bytes>, bytes: Bytes) -> Option<()> {
    tokio::time::timeout(SEND_TIMEOUT, tx.send(bytes))
        .await
        .ok()?
        .ok()
}

/// Whether a stream authorized by `token_id` must end now.
fn must_end(state: &AppState, token_id: &str) -> bool {
    state.is_closing() || !state.index.contains_replica_token(token_id)
}

/// `GET /v1/replica/snapshot`: see [`SnapshotLine`] for its lines. A
/// response without its end line was cut short.
pub async fn snapshot(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (token_id, token) = match authorize(&state, &headers) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state.freshness.check() {
        return e.into_response();
    }
    let (salt, transport) = match transport(&state, &token) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    drop(token);
    let (tx, rx) = mpsc::channel(LINES_IN_FLIGHT);
    tokio::spawn(async move {
        let head: Arc<Mutex<Option<SnapshotHead>>> = Arc::default();
        let (keys_tx, keys_rx) = mpsc::channel::<Vec<SnapshotKey>>(2);
        let read = {
            let head = head.clone();
            let store = state.store.clone();
            async move {
                let mut put = move |h: SnapshotHead| {
                    *head.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
                };
                store.snapshot_into(SNAPSHOT_BATCH, &mut put, keys_tx).await
            }
        };
        let send = send_snapshot(&state, &token_id, &head, &salt, &transport, &tx, keys_rx);
        let (read, sent) = tokio::join!(read, send);
        if let Err(e) = read {
            tracing::warn!(error = %e, "a replica snapshot could not be read; the response is cut short");
            return;
        }
        let Some(sent) = sent else {
            return;
        };
        let Some(end) = line(&SnapshotLine::End { keys: sent }) else {
            return;
        };
        if send_bytes(&tx, end).await.is_some() {
            tracing::debug!(replica_token = %token_id, keys = sent, "sent a replica snapshot");
        }
    });
    ndjson(rx)
}

/// Sends the snapshot's lines as the store hands the keys out; returns how
/// many keys went, or `None` if the stream stopped. It owns `keys`: when
/// it stops early, the store's reader finds no one to hand keys to and
/// ends its transaction.
async fn send_snapshot(
    state: &AppState,
    token_id: &str,
    head: &Mutex<Option<SnapshotHead>>,
    salt: &str,
    transport: &TransportKey,
    tx: &mpsc::Sender<Bytes>,
    mut keys: mpsc::Receiver<Vec<SnapshotKey>>,
) -> Option<u64> {
    let mut owners_sent = false;
    let mut sent: u64 = 0;
    loop {
        let batch = keys.recv().await;
        if !owners_sent {
            // The store hands the head out before any key, and before it
            // drops the sender when there are none. Without a head, the
            // read failed: its error is logged by the caller.
            let h = head.lock().unwrap_or_else(|e| e.into_inner()).take()?;
            for l in owner_lines(h, salt) {
                send_bytes(tx, line(&l)?).await?;
            }
            owners_sent = true;
        }
        let Some(batch) = batch else {
            return Some(sent);
        };
        if must_end(state, token_id) {
            return None;
        }
        for k in &batch {
            let record = match snapshot_key(state, transport, k) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(key_id = %k.id, error = %e, "a stored key could not be opened for a replica snapshot");
                    return None;
                }
            };
            send_bytes(tx, line(&SnapshotLine::Key(record))?).await?;
            sent += 1;
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    after: Option<String>,
}

/// Why a stream stopped sending.
enum Stop {
    /// The client went away, or the token was deleted, or the node stops.
    Done,
    Store(StoreError),
    Crypto(latchkey_core::crypto::CryptoError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

/// The current state of what one change names.
async fn entity(
    state: &AppState,
    transport: &TransportKey,
    change: &ChangeRecord,
) -> Result<Option<Entity>, Stop> {
    let id = change.id.clone();
    let store = &state.store;
    Ok(Some(match change.entity {
        ChangeEntity::Account => {
            let account = match store.get_account(&id).await? {
                Some(_) => {
                    let mut members = Vec::new();
                    let mut page = Page {
                        limit: 100,
                        after: None,
                    };
                    loop {
                        let found = store.list_members(&id, &page).await?;
                        page.after = found.items.last().map(|u| u.id.clone());
                        members.extend(found.items.into_iter().map(|u| MemberRecord {
                            id: u.id,
                            account_id: u.account_id,
                            role: u.role.as_str().to_string(),
                        }));
                        if !found.has_more {
                            break;
                        }
                    }
                    Some(AccountRecord {
                        id: id.clone(),
                        members,
                    })
                }
                None => None,
            };
            Entity::Account { id, account }
        }
        ChangeEntity::App => {
            let app = match store.get_app(&id).await? {
                Some(app) => Some(AppRecord {
                    id: app.id.clone(),
                    account_id: app.account_id.clone(),
                    policy: crate::ops::policy::app_policy(&app.settings),
                    signers: store
                        .signing_keys(&app.id)
                        .await?
                        .into_iter()
                        .map(|k| SignerRecord {
                            id: k.id,
                            public_key: k.public_key,
                        })
                        .collect(),
                }),
                None => None,
            };
            Entity::App { id, app }
        }
        ChangeEntity::Key => {
            let key = match store.get_key(&id).await? {
                Some(k) => Some(stored_key(state, transport, &k).map_err(Stop::Crypto)?),
                None => None,
            };
            Entity::Key { id, key }
        }
        ChangeEntity::ServiceAccount => {
            let service_account = match store.get_service_account(&id).await? {
                Some(sa) => {
                    let mut apps = Vec::new();
                    let mut page = Page {
                        limit: 100,
                        after: None,
                    };
                    loop {
                        let found = store.list_apps(&sa.account_id, Some(&id), &page).await?;
                        page.after = found.items.last().map(|a| a.id.clone());
                        apps.extend(found.items.into_iter().map(|a| a.id));
                        if !found.has_more {
                            break;
                        }
                    }
                    Some(ServiceAccountRecord {
                        id: id.clone(),
                        account_id: sa.account_id,
                        apps,
                    })
                }
                None => None,
            };
            Entity::ServiceAccount {
                id,
                service_account,
            }
        }
        ChangeEntity::UserAccount => {
            let member = store.get_user_account(&id).await?.map(|u| MemberRecord {
                id: u.id,
                account_id: u.account_id,
                role: u.role.as_str().to_string(),
            });
            Entity::Member { id, member }
        }
        // Operator and verifier tokens are none of a replica's business.
        ChangeEntity::OperatorToken | ChangeEntity::VerifierToken => return Ok(None),
    }))
}

async fn send(tx: &mpsc::Sender<Bytes>, value: &FeedLine) -> Result<(), Stop> {
    let l = line(value).ok_or(Stop::Done)?;
    send_bytes(tx, l).await.ok_or(Stop::Done)
}

/// Sends the changes after `after`, then waits for more, until the stream
/// must stop.
async fn follow(
    state: &AppState,
    token_id: &str,
    transport: &TransportKey,
    mut after: i64,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), Stop> {
    let mut feed = state.feed.subscribe();
    // A replica ahead of the store (a database restored from a backup, a
    // standby that lost commits) would skip the changes that reuse its
    // numbers: it loads the snapshot again.
    let latest = state.store.latest_change_seq().await?;
    if after > latest {
        send(
            tx,
            &FeedLine::Reset {
                reason: format!(
                    "the store's last change is {latest}, before {after}; load the snapshot again"
                ),
            },
        )
        .await?;
        return Err(Stop::Done);
    }
    loop {
        feed.mark_unchanged();
        if must_end(state, token_id) {
            return Err(Stop::Done);
        }
        let batch = state.store.changes_since(after, CHANGES_BATCH).await?;
        if after < batch.pruned_through {
            send(
                tx,
                &FeedLine::Reset {
                    reason: format!(
                        "changes up to {} are no longer kept; load the snapshot again",
                        batch.pruned_through
                    ),
                },
            )
            .await?;
            return Err(Stop::Done);
        }
        let full = batch.changes.len() >= CHANGES_BATCH as usize;
        // Each entity once per batch, as it is now, at the place of its
        // first change (as a node's follower applies them): an app created
        // and then changed in one batch comes before the keys made in
        // between, which need it.
        let mut seen = HashSet::new();
        for change in &batch.changes {
            if !seen.insert((change.entity, change.id.as_str())) {
                continue;
            }
            if must_end(state, token_id) {
                return Err(Stop::Done);
            }
            if let Some(entity) = entity(state, transport, change).await? {
                send(
                    tx,
                    &FeedLine::Change {
                        seq: change.seq,
                        entity: Box::new(entity),
                    },
                )
                .await?;
            }
        }
        if let Some(last) = batch.changes.last() {
            after = last.seq;
        }
        if full {
            continue;
        }
        send(tx, &FeedLine::Heartbeat { seq: after }).await?;
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    return Err(Stop::Done);
                }
            }
            () = tokio::time::sleep(HEARTBEAT) => {}
            () = tx.closed() => return Err(Stop::Done),
        }
    }
}

/// `GET /v1/replica/changes?after=SEQ`: `{"hello":…}`, then each change
/// after `SEQ` as the current state of what it names, and heartbeats.
pub async fn changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (token_id, token) = match authorize(&state, &headers) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let after = match query {
        Ok(Query(ChangesQuery { after: Some(text) })) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return ApiError::bad_request(
                    "after must be a change number (an integer from 0), as the snapshot's head.seq or a change's seq",
                )
                .into_response();
            }
        },
        Ok(Query(ChangesQuery { after: None })) => {
            return ApiError::bad_request(
                "give after=SEQ: the snapshot's head.seq, or the last change's seq you applied",
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::bad_request("the only query parameter is after=SEQ").into_response();
        }
    };
    if let Err(e) = state.freshness.check() {
        return e.into_response();
    }
    let (salt, transport) = match transport(&state, &token) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    drop(token);
    let (tx, rx) = mpsc::channel(LINES_IN_FLIGHT);
    tokio::spawn(async move {
        if send(&tx, &FeedLine::Hello { salt, after }).await.is_err() {
            return;
        }
        match follow(&state, &token_id, &transport, after, &tx).await {
            Ok(()) | Err(Stop::Done) => {}
            Err(Stop::Store(e)) => {
                tracing::warn!(error = %e, "a replica's change stream ends: the store failed");
            }
            Err(Stop::Crypto(e)) => {
                tracing::error!(error = %e, "a replica's change stream ends: a stored key could not be opened");
            }
        }
    });
    ndjson(rx)
}
