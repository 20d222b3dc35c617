//! Building audit events (and the webhook notifications they carry).
//!
//! Successful management actions pass their event to the store, which
//! writes it in the same transaction as the change (and enqueues webhook
//! deliveries with it). Failed actions are recorded by the `audit_failures`
//! middleware in `api/mod.rs`.

use latchkey_core::Principal;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_store::{Actor, AuditEvent, Notification};
use serde_json::{Map, Value, json};

use crate::extract::Caller;
use crate::state::AppState;
use crate::views::rfc3339;

/// The actor recorded for a principal.
pub fn actor_of(principal: &Principal) -> Actor {
    match principal {
        Principal::Operator { token_id } => Actor::Operator {
            token_id: token_id.clone(),
        },
        Principal::Verifier { token_id } => Actor::VerifierToken {
            token_id: token_id.clone(),
        },
        Principal::Session {
            user_account_id, ..
        } => Actor::UserAccount {
            user_account_id: user_account_id.to_string(),
        },
        other => Actor::Key {
            key_id: other.key_id().unwrap_or_default().to_string(),
        },
    }
}

/// A successful event by `actor`, with a fresh id and the current time; no
/// account, app, address or details yet.
pub fn base_event(
    state: &AppState,
    actor: Actor,
    action: &str,
    target_type: &str,
    target_id: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        id: new_id(&state.rng, IdKind::Event),
        at: state.now(),
        account_id: None,
        app_id: None,
        action: action.to_string(),
        actor,
        address: None,
        target_type: target_type.to_string(),
        target_id: target_id.map(str::to_string),
        outcome: "success".into(),
        details: Map::new(),
        notify: None,
        request_id: crate::request_id::current(),
    }
}

/// A successful action by `caller` on `target_type` `target_id`, in the
/// caller's account.
pub fn event(
    state: &AppState,
    caller: &Caller,
    action: &str,
    target_type: &str,
    target_id: &str,
) -> AuditEvent {
    AuditEvent {
        account_id: caller.principal.account_id().map(str::to_string),
        address: caller.address(),
        ..base_event(
            state,
            actor_of(&caller.principal),
            action,
            target_type,
            Some(target_id),
        )
    }
}

/// An action Latchkey takes itself (key expiry and other notices).
pub fn system_event(
    state: &AppState,
    account_id: &str,
    action: &str,
    target_type: &str,
    target_id: &str,
) -> AuditEvent {
    AuditEvent {
        account_id: Some(account_id.to_string()),
        ..base_event(state, Actor::System, action, target_type, Some(target_id))
    }
}

/// Builder-style additions to an event.
pub trait EventExt: Sized {
    /// The app the event concerns (shown in that app's audit log, and the
    /// app whose webhooks it can notify).
    fn in_app(self, app_id: &str) -> Self;
    /// Overrides the account (operator actions on an account).
    fn in_account(self, account_id: &str) -> Self;
    fn detail(self, key: &str, value: Value) -> Self;
    /// Notifies the app's webhooks subscribed to `trigger` with `data`.
    fn notify(self, trigger: &'static str, data: Value) -> Self;
}

impl EventExt for AuditEvent {
    fn in_app(mut self, app_id: &str) -> Self {
        self.app_id = Some(app_id.to_string());
        self
    }

    fn in_account(mut self, account_id: &str) -> Self {
        self.account_id = Some(account_id.to_string());
        self
    }

    fn detail(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.to_string(), value);
        self
    }

    fn notify(mut self, trigger: &'static str, data: Value) -> Self {
        let payload = json!({
            "id": self.id,
            "type": trigger,
            "createdAt": rfc3339(self.at),
            "accountId": self.account_id,
            "appId": self.app_id,
            "data": data,
        });
        self.notify = Some(Notification {
            trigger,
            payload: payload.to_string(),
        });
        self
    }
}

/// The JSON shape of an event in `GET /v1/audit`. Customers see that the
/// operator acted, not the operator's token id or address.
pub fn event_json(e: &AuditEvent, for_operator: bool) -> Value {
    let hide = !for_operator && matches!(e.actor, latchkey_store::Actor::Operator { .. });
    json!({
        "id": e.id,
        "at": rfc3339(e.at),
        "action": e.action,
        "outcome": e.outcome,
        "accountId": e.account_id,
        "appId": e.app_id,
        "actor": {"type": e.actor.kind(), "id": if hide { None } else { e.actor.id() }},
        "address": if hide { None } else { e.address.as_deref() },
        "target": {"type": e.target_type, "id": e.target_id},
        "details": e.details,
        "requestId": e.request_id,
    })
}

/// Records a refused action of an authenticated caller in the audit log
/// (see `crate::router`).
pub(crate) async fn record_refusal(
    state: &AppState,
    principal: &latchkey_core::Principal,
    address: Option<std::net::IpAddr>,
    method: &axum::http::Method,
    route: &str,
    path: &str,
    status: axum::http::StatusCode,
) {
    // The app named in the path, unless the caller could not see it (a 404
    // must not put another tenant's app id in anyone's log).
    let app_id = (route.starts_with(crate::routes::APP_ROUTE_PREFIX)
        && status != axum::http::StatusCode::NOT_FOUND)
        .then(|| path.split('/').nth(3).map(str::to_string))
        .flatten();
    let event = AuditEvent {
        account_id: principal.account_id().map(str::to_string),
        app_id,
        address: address.map(|ip| ip.to_string()),
        outcome: "failure".into(),
        ..base_event(
            state,
            actor_of(principal),
            &format!("{method} {route}"),
            "request",
            None,
        )
    }
    .detail("status", serde_json::json!(status.as_u16()));
    if let Err(e) = state.store.record_audit(&event).await {
        tracing::warn!(error = %e, "could not record a failed action in the audit log");
    }
}
