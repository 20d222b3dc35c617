//! Notices of how keys are used, raised on the verification path and
//! recorded off it: `key.rateLimited` (webhook `key:rate-limited`, at most
//! once per key, or per key and user, per window) and `key.creditsLow`
//! (webhook `key:credits-low`, when the balance falls to 10 % of its full
//! amount, and when it reaches zero).
//!
//! Verification never waits for the store: it hands the notice to a
//! bounded queue, and a task writes the audit events (which enqueue the
//! webhook deliveries). A full queue drops notices, counted in the log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use latchkey_core::policy::checks::{Outcome, Refusal};
use latchkey_core::policy::{LimitState, LivePolicy};
use latchkey_store::Actor;
use serde_json::json;
use tokio::sync::mpsc;

use crate::audit::EventExt;
use crate::state::AppState;

/// Notices waiting to be recorded, at most.
const QUEUE: usize = 4096;

#[derive(Debug, Clone)]
pub enum Notice {
    RateLimited {
        key_id: String,
        user: Option<String>,
        limit: LimitState,
        window_seconds: u32,
    },
    CreditsLow {
        key_id: String,
        remaining: i64,
        full: i64,
    },
}

/// The queue: the sending half for the verification path, the receiving
/// half taken once by the task that records them.
#[derive(Debug)]
pub struct Notices {
    sender: mpsc::Sender<Notice>,
    receiver: Mutex<Option<mpsc::Receiver<Notice>>>,
    dropped: AtomicU64,
}

impl Default for Notices {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Notices {
    fn send(&self, notice: Notice) {
        if self.sender.try_send(notice).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "key notices dropped: the queue is full");
            }
        }
    }

    /// The receiving half, once.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Notice>> {
        self.receiver.lock().ok().and_then(|mut r| r.take())
    }
}

/// Raises the notices that the outcome of a key's checks calls for.
pub fn after_checks(
    state: &AppState,
    key_id: &str,
    user: Option<&str>,
    policy: Option<&LivePolicy>,
    window_seconds: Option<u32>,
    result: &Result<Outcome, Refusal>,
) {
    match result {
        Err(Refusal::RateLimited(limit)) if limit.first_refusal => {
            state.notices.send(Notice::RateLimited {
                key_id: key_id.to_string(),
                user: user.map(str::to_string),
                limit: *limit,
                window_seconds: window_seconds.unwrap_or(0),
            });
        }
        Ok(Outcome {
            credits: Some((remaining, before)),
            ..
        }) => {
            let full = policy.map_or(0, LivePolicy::credits_full);
            let tenth = full / 10;
            let crossed_low = *before > tenth && *remaining <= tenth && *remaining > 0;
            let emptied = *before > 0 && *remaining == 0;
            if crossed_low || emptied {
                state.notices.send(Notice::CreditsLow {
                    key_id: key_id.to_string(),
                    remaining: *remaining,
                    full,
                });
            }
        }
        _ => {}
    }
}

/// Records one notice as an audit event (the flusher's task calls it for
/// each notice the queue brings).
pub async fn record(state: &AppState, notice: Notice) {
    let key_id = match &notice {
        Notice::RateLimited { key_id, .. } | Notice::CreditsLow { key_id, .. } => key_id.clone(),
    };
    // The key's owner, as the index has it (a key deleted meanwhile is
    // not reported).
    let Some(key) = state.index.key(&key_id) else {
        return;
    };
    let (action, trigger, data) = match &notice {
        Notice::RateLimited {
            user,
            limit,
            window_seconds,
            ..
        } => (
            "key.rateLimited",
            "key:rate-limited",
            json!({"keyId": key_id, "userId": user, "limit": limit.limit,
                   "windowSeconds": window_seconds,
                   "resetAt": crate::views::rfc3339(limit.reset_at)}),
        ),
        Notice::CreditsLow {
            remaining, full, ..
        } => (
            "key.creditsLow",
            "key:credits-low",
            json!({"keyId": key_id, "remaining": remaining, "full": full}),
        ),
    };
    let mut event = crate::audit::base_event(state, Actor::System, action, "key", Some(&key_id));
    event.account_id = Some(key.owner.account_id().to_string());
    for (name, value) in data.as_object().into_iter().flatten() {
        event = event.detail(name, value.clone());
    }
    if let latchkey_core::KeyOwner::App { app_id, .. } = &key.owner {
        event = event.in_app(app_id).notify(trigger, data);
    }
    if let Err(e) = state.store.record_audit(&event).await {
        tracing::warn!(error = %e, action, "could not record a key notice");
    }
}
