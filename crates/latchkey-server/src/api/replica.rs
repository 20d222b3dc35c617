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

use std::collections::{BTreeMap, HashMap};
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
    ServiceAccountRecord, SnapshotLine, TransportKey,
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
/// key and sealed again under the response's transport key.
#[allow(clippy::too_many_arguments)]
fn key_record(
    state: &AppState,
    transport: &TransportKey,
    id: &str,
    kind: KeyKind,
    account_id: &str,
    owner_id: &str,
    sealed: &[u8],
    expires_at: Option<i64>,
    policy: &latchkey_core::policy::KeyPolicy,
) -> Result<KeyRecord, latchkey_core::crypto::CryptoError> {
    let secret = state.master.open(id, sealed)?;
    Ok(KeyRecord {
        id: id.to_string(),
        owner_kind: owner_kind(kind),
        account_id: account_id.to_string(),
        owner_id: owner_id.to_string(),
        secret: transport.seal(&state.rng, id, &secret)?,
        expires_at,
        policy: policy.clone(),
    })
}

fn snapshot_key(
    state: &AppState,
    transport: &TransportKey,
    k: &SnapshotKey,
) -> Result<KeyRecord, latchkey_core::crypto::CryptoError> {
    key_record(
        state,
        transport,
        &k.id,
        k.kind,
        &k.account_id,
        &k.owner_id,
        &k.secret_sealed,
        k.expires_at,
        &k.policy,
    )
}

fn stored_key(
    state: &AppState,
    transport: &TransportKey,
    k: &ApiKey,
) -> Result<KeyRecord, latchkey_core::crypto::CryptoError> {
    key_record(
        state,
        transport,
        &k.id,
        k.kind,
        &k.account_id,
        &k.owner_id,
        &k.secret_sealed,
        k.expires_at,
        &k.policy,
    )
}

fn head_record(head: SnapshotHead, salt: String) -> Head {
    let mut accounts: BTreeMap<String, AccountRecord> = head
        .accounts
        .into_iter()
        .map(|id| {
            (
                id.clone(),
                AccountRecord {
                    id,
                    members: Vec::new(),
                },
            )
        })
        .collect();
    for (user_id, account_id, role) in head.members {
        if let Some(account) = accounts.get_mut(&account_id) {
            account.members.push(MemberRecord {
                id: user_id,
                account_id,
                role: role.as_str().to_string(),
            });
        }
    }
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
    Head {
        seq: head.change_seq,
        salt,
        accounts: accounts.into_values().collect(),
        apps: head
            .apps
            .iter()
            .map(|app| AppRecord {
                id: app.id.clone(),
                account_id: app.account_id.clone(),
                policy: crate::ops::policy::app_policy(&app.settings),
            })
            .collect(),
        service_accounts: service_accounts.into_values().collect(),
        key_count: head.key_count,
    }
}

/// The head's line, once the store has handed the head out.
fn take_head(head: &Mutex<Option<SnapshotHead>>, salt: &str) -> Option<Bytes> {
    let h = head.lock().unwrap_or_else(|e| e.into_inner()).take()?;
    line(&SnapshotLine::Head(head_record(h, salt.to_string())))
}

/// `GET /v1/replica/snapshot`: the head, one line per live key, then
/// `{"end":{"keys":N}}`. A response without its end line was cut short.
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
        let (keys_tx, mut keys_rx) = mpsc::channel::<Vec<SnapshotKey>>(2);
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
        let send = async {
            let mut head_sent = false;
            let mut sent: u64 = 0;
            while let Some(batch) = keys_rx.recv().await {
                if !head_sent {
                    tx.send(take_head(&head, &salt)?).await.ok()?;
                    head_sent = true;
                }
                for k in &batch {
                    let record = match snapshot_key(&state, &transport, k) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(key_id = %k.id, error = %e, "a stored key could not be opened for a replica snapshot");
                            return None;
                        }
                    };
                    tx.send(line(&SnapshotLine::Key(record))?).await.ok()?;
                    sent += 1;
                }
            }
            Some((head_sent, sent))
        };
        let (read, sent) = tokio::join!(read, send);
        if let Err(e) = read {
            tracing::warn!(error = %e, "a replica snapshot could not be read; the response is cut short");
            return;
        }
        let Some((head_sent, sent)) = sent else {
            return;
        };
        if !head_sent {
            let Some(l) = take_head(&head, &salt) else {
                return;
            };
            if tx.send(l).await.is_err() {
                return;
            }
        }
        if let Some(l) = line(&SnapshotLine::End { keys: sent }) {
            let _ = tx.send(l).await;
        }
        tracing::debug!(replica_token = %token_id, keys = sent, "sent a replica snapshot");
    });
    ndjson(rx)
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
            let app = store.get_app(&id).await?.map(|app| AppRecord {
                id: app.id.clone(),
                account_id: app.account_id.clone(),
                policy: crate::ops::policy::app_policy(&app.settings),
            });
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
    tx.send(l).await.map_err(|_| Stop::Done)
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
    loop {
        feed.mark_unchanged();
        if state.is_closing() || !state.index.contains_replica_token(token_id) {
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
        // Each entity once per batch, at the place of its last change.
        let last_of: HashMap<(ChangeEntity, &str), i64> = batch
            .changes
            .iter()
            .map(|c| ((c.entity, c.id.as_str()), c.seq))
            .collect();
        for change in &batch.changes {
            if last_of.get(&(change.entity, change.id.as_str())) != Some(&change.seq) {
                continue;
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
