//! Scheduled work driven by the injected clock: notices about keys that
//! are about to expire, have expired, or are due for rotation. Each notice
//! is recorded once (audit event plus webhook notification, in one
//! transaction), and an expired key leaves the index. Delivered and
//! failed webhook deliveries are kept [`DELIVERY_RETENTION_SECONDS`].

use latchkey_store::{ApiKey, KeyKind, KeyNotice, StoreError};
use serde_json::json;

use crate::audit::{EventExt, system_event};
use crate::ops::policy;
use crate::state::AppState;
use crate::views::KeyView;

const BATCH: u32 = 200;

/// How long delivered and failed webhook deliveries are kept (from their
/// last change): 7 days.
pub const DELIVERY_RETENTION_SECONDS: i64 = 7 * 86_400;

/// Deletes delivered and failed webhook deliveries older than
/// [`DELIVERY_RETENTION_SECONDS`]. Returns how many.
pub async fn prune_deliveries(state: &AppState) -> Result<u64, StoreError> {
    state
        .store
        .prune_deliveries(state.now() - DELIVERY_RETENTION_SECONDS)
        .await
}

fn describe(notice: KeyNotice) -> (&'static str, &'static str) {
    match notice {
        KeyNotice::Expiring7d | KeyNotice::Expiring1d => ("key.expiring", "key:expiring"),
        KeyNotice::Expired => ("key.expired", "key:expired"),
        KeyNotice::RotationDue => ("key.rotationDue", "key:rotation-due"),
    }
}

async fn record(state: &AppState, notice: KeyNotice, key: &ApiKey) -> Result<bool, StoreError> {
    let (action, trigger) = describe(notice);
    let app = match key.kind {
        KeyKind::App => state.store.get_app(&key.owner_id).await?,
        _ => None,
    };
    let max_age = app
        .as_ref()
        .and_then(|a| policy::max_key_age_days(&a.settings));
    let view = KeyView::new(key, &state.index, state.now(), max_age);
    let within = match notice {
        KeyNotice::Expiring7d => Some("7d"),
        KeyNotice::Expiring1d => Some("1d"),
        _ => None,
    };
    let mut event = system_event(state, &key.account_id, action, "key", &key.id)
        .detail("owner", json!(key.owner_id))
        .detail(
            "expiresAt",
            json!(key.expires_at.map(crate::views::rfc3339)),
        );
    if let Some(w) = within {
        event = event.detail("within", json!(w));
    }
    if let Some(app) = &app {
        let mut data = json!({"key": view});
        if let Some(w) = within {
            data["within"] = json!(w);
        }
        event = event.in_app(&app.id).notify(trigger, data);
    }
    if notice == KeyNotice::Expired {
        // Keep the last uses before the key leaves the index.
        if let Some(used) = state.index.key_last_used(&key.id) {
            state
                .store
                .record_last_used(&[(key.id.clone(), used)])
                .await?;
        }
    }
    let marked = state.store.mark_key_notice(&key.id, notice, &event).await?;
    if marked && notice == KeyNotice::Expired {
        state.index.remove_key(&key.id);
    }
    Ok(marked)
}

/// Records every key notice due now. Returns how many were recorded.
pub async fn run_key_notices(state: &AppState) -> Result<usize, StoreError> {
    let mut recorded = 0;
    for notice in [
        KeyNotice::Expired,
        KeyNotice::Expiring7d,
        KeyNotice::Expiring1d,
        KeyNotice::RotationDue,
    ] {
        loop {
            let due = state
                .store
                .keys_due_notice(notice, state.now(), BATCH)
                .await?;
            let mut progressed = false;
            for key in &due {
                if record(state, notice, key).await? {
                    recorded += 1;
                    progressed = true;
                }
            }
            if due.len() < BATCH as usize || !progressed {
                break;
            }
        }
    }
    Ok(recorded)
}
