//! Keeping this node's index in step with a shared store, and knowing how
//! fresh it is.
//!
//! On PostgreSQL several nodes share one database. Every write that
//! affects verification records a change in its own transaction (see
//! `latchkey_store::Change`), and PostgreSQL announces it with NOTIFY at
//! commit. The listener task wakes the follower, which reads the changes
//! after the last one it applied and reloads what each names; the follower
//! also wakes every resync interval, so a lost notification costs at most
//! that long. A node that cannot reach the database keeps answering from
//! its index until the index is older than the staleness window, then
//! refuses every credential (503 `index_stale`) until it has caught up.
//!
//! On SQLite the node is alone and always fresh. Only `latchkey admin`,
//! run beside it, changes its store from another process (operator tokens
//! created or revoked for recovery): the node reads the change feed every
//! [`LOCAL_POLL`] for those, and leaves the rest of the feed, its own
//! writes, alone.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use latchkey_store::{ChangeEntity, ChangeRecord, Page, StoreError};
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::state::AppState;

/// How often a node alone with its SQLite store looks for changes that
/// `latchkey admin` made from another process.
pub const LOCAL_POLL: Duration = Duration::from_millis(250);

/// How many changes one read of the feed takes.
const BATCH: u32 = 500;
/// How long changes are kept; a node further behind reloads everything.
pub const CHANGE_RETENTION_SECONDS: i64 = 24 * 3600;

/// How fresh this node's index is.
#[derive(Debug)]
pub struct Freshness {
    /// Whether other nodes may change the store (PostgreSQL).
    shared: bool,
    window: Duration,
    base: Instant,
    /// When (ms after `base`) the index was last known to hold every
    /// change committed before that moment.
    confirmed_ms: AtomicU64,
    /// Whether the notification listener and the last read of the feed
    /// both worked.
    connected: AtomicBool,
    /// The last change applied.
    seq: AtomicI64,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Connected and caught up.
    Ready,
    /// The database is unreachable; answering from an index younger than
    /// the staleness window.
    Degraded,
    /// The index is older than the staleness window: credentials are
    /// refused until the node has caught up.
    Stale,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Ready => "ready",
            SyncState::Degraded => "degraded",
            SyncState::Stale => "stale",
        }
    }
}

impl Freshness {
    /// A node alone with its store (SQLite), whose index holds every
    /// change up to `seq`: always fresh.
    pub fn standalone(seq: i64) -> Self {
        Self::new(false, Duration::MAX, seq, Instant::now())
    }

    /// A node of a cluster whose index holds every change up to `seq`,
    /// and every change committed before `as_of`.
    pub fn shared(window: Duration, seq: i64, as_of: Instant) -> Self {
        Self::new(true, window, seq, as_of)
    }

    fn new(shared: bool, window: Duration, seq: i64, as_of: Instant) -> Self {
        Self {
            shared,
            window,
            base: as_of,
            confirmed_ms: AtomicU64::new(0),
            connected: AtomicBool::new(true),
            seq: AtomicI64::new(seq),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// How old the index is: the time since it was last confirmed fresh.
    pub fn age(&self) -> Duration {
        if !self.shared {
            return Duration::ZERO;
        }
        let confirmed = Duration::from_millis(self.confirmed_ms.load(Ordering::Acquire));
        self.base.elapsed().saturating_sub(confirmed)
    }

    pub fn state(&self) -> SyncState {
        if !self.shared {
            SyncState::Ready
        } else if self.age() > self.window {
            SyncState::Stale
        } else if self.connected.load(Ordering::Acquire) {
            SyncState::Ready
        } else {
            SyncState::Degraded
        }
    }

    /// The last change applied to the index.
    pub fn seq(&self) -> i64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Refuses to verify from an index older than the staleness window.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.shared && self.age() > self.window {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "index_stale",
                format!(
                    "this node has not reached the database for {} ms (more than its staleness \
                     window of {} ms), so it cannot tell whether credentials were revoked; \
                     retry, or send the request to another node",
                    self.age().as_millis(),
                    self.window.as_millis()
                ),
            ));
        }
        Ok(())
    }

    /// Records that every change committed before `started` is applied.
    fn confirm(&self, started: Instant) {
        let ms = u64::try_from(started.duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        self.confirmed_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }
}

/// The follower and listener tasks of a node on a shared store.
#[derive(Debug)]
pub struct Follower {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Follower {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts following the change feed (only on a shared store). Returns
/// once the node listens for changes and has applied those made since its
/// snapshot, so that it reports ready only when it is; if the database
/// cannot be reached meanwhile, the node starts degraded and keeps trying.
pub async fn spawn_follower(state: &AppState) -> Option<Follower> {
    if !state.freshness.is_shared() {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(follow_local(state.clone(), stopped));
        return Some(Follower {
            stop,
            tasks: vec![task],
        });
    }
    let (stop, stopped) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let listener_up = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    if let (Some(url), Some(channel)) = (
        state.config.database_url.as_ref(),
        state.store.change_channel(),
    ) {
        let url = url.expose().to_string();
        let first =
            tokio::time::timeout(Duration::from_secs(5), connect_listener(&url, channel)).await;
        let first = match first {
            Ok(Ok(listener)) => {
                listener_up.store(true, Ordering::Release);
                Some(listener)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for changes yet; retrying");
                None
            }
            Err(_) => {
                tracing::warn!("listening for changes timed out; retrying");
                None
            }
        };
        let started = Instant::now();
        let caught_up = {
            let _write = state.write_lock.lock().await;
            tokio::time::timeout(Duration::from_secs(5), catch_up(state)).await
        };
        match caught_up {
            Ok(Ok(())) => {
                state.freshness.confirm(started);
                state
                    .freshness
                    .set_connected(listener_up.load(Ordering::Acquire));
            }
            _ => state.freshness.set_connected(false),
        }
        tasks.push(tokio::spawn(listen(
            url,
            channel.to_string(),
            first,
            Arc::clone(&wake),
            Arc::clone(&listener_up),
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(follow(
        state.clone(),
        wake,
        listener_up,
        stopped,
    )));
    Some(Follower { stop, tasks })
}

/// Holds a LISTEN connection and wakes the follower on every notification
/// and whenever the connection is lost or re-established.
async fn listen(
    url: String,
    channel: String,
    mut first: Option<PgListener>,
    wake: Arc<Notify>,
    up: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = match first.take() {
            Some(listener) => Ok(listener),
            None => tokio::select! {
                c = connect_listener(&url, &channel) => c,
                _ = stop.changed() => return,
            },
        };
        let mut listener = match connected {
            Ok(l) => {
                backoff = Duration::from_millis(100);
                up.store(true, Ordering::Release);
                // Notifications sent while we were away are lost: catch up.
                wake.notify_one();
                l
            }
            Err(e) => {
                up.store(false, Ordering::Release);
                tracing::warn!(error = %e, "cannot listen for changes; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        loop {
            let received = tokio::select! {
                r = listener.try_recv() => r,
                _ = stop.changed() => return,
            };
            match received {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) | Err(_) => {
                    tracing::warn!("lost the change notification connection; reconnecting");
                    up.store(false, Ordering::Release);
                    wake.notify_one();
                    break;
                }
            }
        }
    }
}

async fn connect_listener(url: &str, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    // Reconnect ourselves, so that we know when notifications may have
    // been missed.
    listener.eager_reconnect(false);
    listener.listen(channel).await?;
    Ok(listener)
}

/// Applies the change feed on every wake-up and every resync interval.
async fn follow(
    state: AppState,
    wake: Arc<Notify>,
    listener_up: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = state.config.resync_interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let freshness = &state.freshness;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let started = Instant::now();
        let timeout = interval.max(Duration::from_secs(1));
        // Under the write lock: writes on this node apply the feed too, and
        // the index must see changes in feed order.
        let caught_up = {
            let _write = state.write_lock.lock().await;
            tokio::time::timeout(timeout, catch_up(&state)).await
        };
        match caught_up {
            Ok(Ok(())) => {
                freshness.confirm(started);
                freshness.set_connected(listener_up.load(Ordering::Acquire));
            }
            Ok(Err(e)) => {
                freshness.set_connected(false);
                tracing::warn!(error = %e, "cannot read the change feed; retrying");
            }
            Err(_) => {
                freshness.set_connected(false);
                tracing::warn!("reading the change feed timed out; retrying");
            }
        }
    }
}

/// A node alone with its SQLite store: applies the operator-token changes
/// that `latchkey admin` records from another process (this node's own
/// writes are in its index already).
async fn follow_local(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LOCAL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = catch_up_local(&state).await {
            tracing::warn!(error = %e, "cannot read the change feed for operator tokens; retrying");
        }
    }
}

async fn catch_up_local(state: &AppState) -> Result<(), SyncError> {
    loop {
        let from = state.freshness.seq();
        let batch = state.store.changes_since(from, BATCH).await?;
        let Some(last) = batch.changes.last().map(|c| c.seq) else {
            return Ok(());
        };
        for change in &batch.changes {
            if change.entity == ChangeEntity::OperatorToken {
                tracing::info!(token = %change.id, "an operator token was created or revoked by `latchkey admin`");
                apply(state, change).await?;
            }
        }
        state.freshness.seq.store(last, Ordering::Release);
        if batch.changes.len() < BATCH as usize {
            return Ok(());
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] crate::indexing::IndexError),
}

/// Applies every change recorded after the last one applied. The caller
/// holds `state.write_lock`, so that one catch-up runs at a time and none
/// runs between a write on this node and its own index update.
pub async fn catch_up(state: &AppState) -> Result<(), SyncError> {
    loop {
        let from = state.freshness.seq();
        let batch = state.store.changes_since(from, BATCH).await?;
        if from < batch.pruned_through {
            tracing::warn!(
                applied = from,
                pruned_through = batch.pruned_through,
                "this node fell behind the retained changes; reloading the index"
            );
            let snapshot_seq = reload(state).await?;
            state.freshness.seq.store(snapshot_seq, Ordering::Release);
            state.feed_moved();
            continue;
        }
        let Some(last) = batch.changes.last().map(|c| c.seq) else {
            return Ok(());
        };
        let mut seen = HashSet::new();
        for change in &batch.changes {
            if seen.insert((change.entity, change.id.as_str())) {
                apply(state, change).await?;
            }
        }
        state.freshness.seq.store(last, Ordering::Release);
        state.feed_moved();
        if batch.changes.len() < BATCH as usize {
            return Ok(());
        }
    }
}

/// Rebuilds the whole index from a snapshot; returns its change number.
async fn reload(state: &AppState) -> Result<i64, SyncError> {
    let (index, seq) = crate::indexing::build_index(
        state.store.as_ref(),
        &state.master,
        state.limiter.is_leased(),
    )
    .await?;
    state.index.replace_with(index);
    Ok(seq)
}

/// Makes the index agree with the store about what one change names.
async fn apply(state: &AppState, change: &ChangeRecord) -> Result<(), SyncError> {
    let index = &state.index;
    let id = change.id.as_str();
    match change.entity {
        ChangeEntity::Account => match state.store.get_account(id).await? {
            Some(_) => {
                index.insert_account(id);
                // A new account's first member (its owner) comes with it.
                let mut page = Page {
                    limit: 100,
                    after: None,
                };
                loop {
                    let found = state.store.list_members(id, &page).await?;
                    page.after = found.items.last().map(|u| u.id.clone());
                    for user in &found.items {
                        index.set_member(&user.id, id, user.role);
                    }
                    if !found.has_more {
                        break;
                    }
                }
            }
            None => index.remove_account(id),
        },
        ChangeEntity::App => match state.store.get_app(id).await? {
            Some(app) => {
                if index.app_account(id).is_none() {
                    index.insert_app(id, &app.account_id);
                }
                index.set_app_policy(id, crate::ops::policy::app_policy(&app.settings));
                // A change of the app may be one of its signing keys.
                let keys = state.store.signing_keys(id).await?;
                crate::ops::signing_keys::index_signers(state, id, &keys);
            }
            None => index.remove_app(id),
        },
        ChangeEntity::Key => match state.store.get_key(id).await? {
            // A key already in the index keeps its usage counters; its
            // expiry (rotation, early revocation) and its policy can change.
            Some(key) if index.contains_key(id) => {
                index.set_key_expiry(id, key.expires_at);
                index.set_key_policy(
                    id,
                    &key.policy,
                    crate::indexing::credit_seed(key.credits, state.limiter.is_leased()),
                );
            }
            Some(key) => {
                index.insert_key(crate::indexing::live_key(
                    &key,
                    &state.master,
                    state.limiter.is_leased(),
                )?);
            }
            None => {
                index.remove_key(id);
            }
        },
        ChangeEntity::ServiceAccount => match state.store.get_service_account(id).await? {
            Some(sa) => {
                index.insert_service_account(id, &sa.account_id);
                let mut apps = Vec::new();
                let mut page = Page {
                    limit: 100,
                    after: None,
                };
                loop {
                    let found = state
                        .store
                        .list_apps(&sa.account_id, Some(id), &page)
                        .await?;
                    page.after = found.items.last().map(|a| a.id.clone());
                    apps.extend(found.items.into_iter().map(|a| a.id));
                    if !found.has_more {
                        break;
                    }
                }
                index.set_grants(id, &apps);
            }
            None => index.remove_service_account(id),
        },
        ChangeEntity::OperatorToken => {
            let tokens = state.store.operator_tokens().await?;
            match tokens.iter().find(|t| t.id == id) {
                Some(token) => crate::indexing::index_operator_token(index, token),
                None => {
                    index.remove_operator_token(id);
                }
            }
        }
        ChangeEntity::UserAccount => match state.store.get_user_account(id).await? {
            Some(user) => {
                index.set_member(id, &user.account_id, user.role);
            }
            None => index.remove_member(id),
        },
        ChangeEntity::VerifierToken => match state.store.get_verifier_token(id).await? {
            Some(token) => crate::indexing::index_verifier_token(index, &token),
            None => {
                index.remove_verifier_token(id);
                index.remove_replica_token(id);
            }
        },
    }
    Ok(())
}
