//! JSON shapes of the API's responses (camelCase, RFC 3339 UTC times).

use latchkey_core::policy::{CreditState, RateLimit, Refill, Restrictions};
use latchkey_core::{KeyIndex, SecretString};
use latchkey_store::{
    Account, ApiKey, App, AppUser, Delivery, DeliveryStatus, PageOf, ServiceAccount, VerifierToken,
    Webhook,
};
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A response body of one member, `{"<name>": value}`, serialized straight
/// from `value`. `json!({"app": view})` first copies the view into a
/// `serde_json::Value` tree (every string and settings member once more)
/// only to serialize that tree.
#[derive(Debug)]
pub struct Named<T>(pub &'static str, pub T);

impl<T: Serialize> Serialize for Named<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

/// Unix seconds as an RFC 3339 UTC string.
pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: String,
    pub display_name: String,
    pub created_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id.clone(),
            display_name: a.display_name.clone(),
            created_at: rfc3339(a.created_at),
        }
    }
}

/// An app as the API shows it, borrowed from the stored app. The fields are
/// in the order they are written (alphabetical, as a `serde_json::Value`
/// would write them).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView<'a> {
    pub account_id: &'a str,
    pub created_at: String,
    pub display_name: &'a str,
    pub id: &'a str,
    pub settings: &'a Map<String, Value>,
}

impl<'a> From<&'a App> for AppView<'a> {
    fn from(a: &'a App) -> Self {
        Self {
            account_id: &a.account_id,
            created_at: rfc3339(a.created_at),
            display_name: &a.display_name,
            id: &a.id,
            settings: &a.settings,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: String,
    pub display_name: String,
    /// Present only in the response that creates the key (never for a
    /// public-key key, which has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretString>,
    /// The JWS algorithm of the JWTs the key signs: `HS256` for a key with
    /// a secret (which also authenticates with Basic), `Ed25519` or
    /// `ES256` for a public-key key.
    pub algorithm: &'static str,
    /// A public-key key's public key, as a JWK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<serde_json::Value>,
    /// Its RFC 7638 thumbprint (SHA-256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_thumbprint: Option<String>,
    /// `active`, `expiring` (it expires within [`EXPIRY_NOTICE_SECONDS`],
    /// or it was rotated and is in its grace period) or `expired`: see
    /// [`key_status`].
    pub status: &'static str,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<String>,
    /// The key is older than its app's `maxKeyAgeDays`: rotate it.
    pub rotation_due: bool,
    /// Absent: every permission of the key's scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Restrictions::is_empty")]
    pub restrictions: Restrictions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditsView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A key's credits: the balance as this node has it, and the refill.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditsView {
    pub remaining: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
}

/// How long before its `expiresAt` a key shows as `expiring`: 7 days, the
/// first of the `key:expiring` notices.
pub const EXPIRY_NOTICE_SECONDS: i64 = 7 * 86_400;

/// A key's status at `now`:
/// - `expired`: its `expiresAt` has passed (it no longer works);
/// - `expiring`: it works, but stops within [`EXPIRY_NOTICE_SECONDS`], or
///   it was rotated (`rotated` is true: it has a replacement) and works
///   until the end of its grace period;
/// - `active`: anything else (no `expiresAt`, or one further away).
pub fn key_status(expires_at: Option<i64>, rotated: bool, now: i64) -> &'static str {
    match expires_at {
        Some(t) if t <= now => "expired",
        Some(_) if rotated => "expiring",
        Some(t) if t - now <= EXPIRY_NOTICE_SECONDS => "expiring",
        _ => "active",
    }
}

impl KeyView {
    /// The key as stored, with `lastUsedAt` from the index when it is newer
    /// than what has been flushed to the store. `max_key_age_days` is the
    /// owning app's policy (None for other keys).
    pub fn new(k: &ApiKey, index: &KeyIndex, now: i64, max_key_age_days: Option<i64>) -> Self {
        let live = index.key_last_used(&k.id);
        let last_used = match (k.last_used_at, live) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let status = key_status(k.expires_at, k.replaced_by.is_some(), now);
        let rotation_due = k.replaced_by.is_none()
            && status != "expired"
            && max_key_age_days.is_some_and(|days| {
                k.created_at.saturating_add(days.saturating_mul(86_400)) <= now
            });
        Self {
            id: k.id.clone(),
            display_name: k.display_name.clone(),
            secret: None,
            algorithm: k
                .public_key
                .as_ref()
                .map_or(latchkey_core::jwt::Algorithm::Hs256, |p| p.algorithm())
                .name(),
            public_key: k.public_key.as_ref().map(|p| p.to_jwk()),
            public_key_thumbprint: k.public_key.as_ref().map(|p| p.thumbprint()),
            status,
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            last_used_at: last_used.map(rfc3339),
            rotated_from: k.rotated_from.clone(),
            replaced_by: k.replaced_by.clone(),
            rotation_due,
            permissions: k.policy.permissions.clone(),
            restrictions: k.policy.restrictions.clone(),
            ratelimit: k.policy.ratelimit,
            credits: k.policy.credits.as_ref().map(|c| {
                let stored = k.credits.map(|s| CreditState {
                    remaining: s.remaining,
                    period: s.period,
                });
                let cell = index.credit_cell(c.balance_of.as_deref().unwrap_or(&k.id));
                let stored = stored.unwrap_or(CreditState {
                    remaining: 0,
                    period: 0,
                });
                let state = match &cell {
                    // One node: the cell holds the balance. Nodes sharing
                    // a store: the store's, plus what this node leased.
                    Some(cell) if !cell.is_leased() => cell.state(),
                    Some(cell) => CreditState {
                        remaining: cell.shown(stored.remaining),
                        ..stored
                    },
                    None => stored,
                };
                CreditsView {
                    remaining: state.at(c.refill, now).remaining,
                    refill: c.refill,
                }
            }),
            meta: k.policy.meta.clone(),
        }
    }
}

/// A verifier token as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifierTokenView {
    pub id: String,
    pub display_name: String,
    /// Present only in the response that creates the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretString>,
    pub created_at: String,
}

impl From<&VerifierToken> for VerifierTokenView {
    fn from(t: &VerifierToken) -> Self {
        Self {
            id: t.id.clone(),
            display_name: t.display_name.clone(),
            token: None,
            created_at: rfc3339(t.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountView {
    pub id: String,
    pub display_name: String,
    pub account_id: String,
    pub created_at: String,
}

impl From<&ServiceAccount> for ServiceAccountView {
    fn from(s: &ServiceAccount) -> Self {
        Self {
            id: s.id.clone(),
            display_name: s.display_name.clone(),
            account_id: s.account_id.clone(),
            created_at: rfc3339(s.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppUserView {
    pub id: String,
    pub external_id: String,
    pub app_id: String,
    pub profile: ProfileView,
    pub metadata: Map<String, Value>,
    pub created_at: String,
}

impl From<&AppUser> for AppUserView {
    fn from(u: &AppUser) -> Self {
        Self {
            id: u.id.clone(),
            external_id: u.external_id.clone(),
            app_id: u.app_id.clone(),
            profile: ProfileView {
                given_name: u.given_name.clone(),
                surname: u.surname.clone(),
                email: u.email.clone(),
            },
            metadata: u.metadata.clone(),
            created_at: rfc3339(u.created_at),
        }
    }
}

/// Paging information of a list response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageMeta {
    pub has_more: bool,
    /// Pass as `after` to get the next page; null on the last page.
    pub after_cursor: Option<String>,
}

impl PageMeta {
    pub fn of<T>(page: &PageOf<T>, id: impl Fn(&T) -> &str) -> Self {
        Self {
            has_more: page.has_more,
            after_cursor: if page.has_more {
                page.items.last().map(|t| id(t).to_string())
            } else {
                None
            },
        }
    }
}

/// A webhook as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: String,
    pub app_id: String,
    pub target: String,
    pub triggers: Vec<String>,
    pub created_at: String,
    /// Present only in the response that creates the webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretString>,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        let mut triggers = w.triggers.clone();
        triggers.sort_by_key(|t| crate::ops::webhooks::TRIGGERS.iter().position(|k| k == t));
        Self {
            id: w.id.clone(),
            app_id: w.app_id.clone(),
            target: w.target.clone(),
            triggers,
            created_at: rfc3339(w.created_at),
            secret: None,
        }
    }
}

/// A delivery of a webhook as the API shows it: where it is in its life,
/// never its payload or the target it goes to.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView<'a> {
    /// Stable across attempts: the `Latchkey-Delivery` header the receiver
    /// sees.
    pub id: &'a str,
    /// The trigger it notifies of, e.g. `key:created`.
    pub event: &'a str,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    /// Attempts whose outcome was recorded (counted afresh by a
    /// redelivery).
    pub attempts: u32,
    /// Why the last attempt did not deliver.
    pub last_error: Option<&'a str>,
    /// The HTTP status of the last attempt, if the receiver answered.
    pub last_status: Option<u16>,
    /// When it is tried next: pending deliveries only.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    /// When the receiver accepted it: delivered ones only.
    pub delivered_at: Option<String>,
}

impl<'a> From<&'a Delivery> for DeliveryView<'a> {
    fn from(d: &'a Delivery) -> Self {
        Self {
            id: &d.id,
            event: &d.trigger,
            status: d.status.as_str(),
            attempts: d.attempts,
            last_error: d.last_error.as_deref(),
            last_status: d.last_status,
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| rfc3339(d.next_attempt_at)),
            created_at: rfc3339(d.created_at),
            delivered_at: (d.status == DeliveryStatus::Delivered).then(|| rfc3339(d.updated_at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiring_means_within_the_notice_window_or_rotated() {
        let now = 1_000_000_000;
        let day = 86_400;
        assert_eq!(key_status(None, false, now), "active");
        assert_eq!(key_status(Some(now + 30 * day), false, now), "active");
        assert_eq!(
            key_status(Some(now + EXPIRY_NOTICE_SECONDS + 1), false, now),
            "active"
        );
        assert_eq!(
            key_status(Some(now + EXPIRY_NOTICE_SECONDS), false, now),
            "expiring"
        );
        assert_eq!(key_status(Some(now + 3 * day), false, now), "expiring");
        assert_eq!(key_status(Some(now + 30 * day), true, now), "expiring");
        assert_eq!(key_status(Some(now), false, now), "expired");
        assert_eq!(key_status(Some(now - 1), true, now), "expired");
    }

    #[test]
    fn a_delivery_shows_its_next_attempt_when_pending_and_when_it_was_delivered() {
        let mut d = Delivery {
            id: "dlv_x".into(),
            webhook_id: "whk_x".into(),
            event_id: "evt_x".into(),
            trigger: "key:created".into(),
            payload: "{\"secret\":\"not shown\"}".into(),
            status: DeliveryStatus::Pending,
            attempts: 1,
            next_attempt_at: 1_700_000_030,
            last_status: Some(500),
            last_error: Some("the receiver answered 500".into()),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
        };
        let v = serde_json::to_value(DeliveryView::from(&d)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "id": "dlv_x",
                "event": "key:created",
                "status": "pending",
                "attempts": 1,
                "lastError": "the receiver answered 500",
                "lastStatus": 500,
                "nextAttemptAt": "2023-11-14T22:13:50Z",
                "createdAt": "2023-11-14T22:13:20Z",
                "deliveredAt": null,
            })
        );
        d.status = DeliveryStatus::Delivered;
        d.attempts = 2;
        d.last_status = Some(204);
        d.last_error = None;
        d.updated_at = 1_700_000_030;
        let v = serde_json::to_value(DeliveryView::from(&d)).expect("json");
        assert_eq!(v["nextAttemptAt"], serde_json::Value::Null);
        assert_eq!(v["deliveredAt"], "2023-11-14T22:13:50Z");
        d.status = DeliveryStatus::Failed;
        let v = serde_json::to_value(DeliveryView::from(&d)).expect("json");
        assert_eq!(v["nextAttemptAt"], serde_json::Value::Null);
        assert_eq!(v["deliveredAt"], serde_json::Value::Null);
        assert!(!v.to_string().contains("not shown"));
    }
}

/// A member of an account (a user account with its role).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    pub created_at: String,
}

impl From<&latchkey_store::UserAccount> for MemberView {
    fn from(u: &latchkey_store::UserAccount) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            role: u.role.as_str(),
            created_at: rfc3339(u.created_at),
        }
    }
}

/// An invite to join an account; never its token.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteView {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    /// `pending` or `expired` (accepted and revoked invites are not listed).
    pub status: &'static str,
    pub invited_by: Option<String>,
    pub created_at: String,
    pub expires_at: String,
}

impl InviteView {
    pub fn of(i: &latchkey_store::Invite, now: i64) -> Self {
        Self {
            id: i.id.clone(),
            email: i.email.clone(),
            role: i.role.as_str(),
            status: i.status(now),
            invited_by: i.invited_by.clone(),
            created_at: rfc3339(i.created_at),
            expires_at: rfc3339(i.expires_at),
        }
    }
}
