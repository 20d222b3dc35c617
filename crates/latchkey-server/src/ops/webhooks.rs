//! Webhooks of an app: managed with app scope (or account scope on the
//! app). Each webhook has its own signing secret, shown once, in the
//! response that creates it. Delivery is in `crate::webhooks`.

use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::policy::Permission;
use latchkey_core::secret;
use latchkey_store::{App, Delivery, Page, Redelivery, Webhook};
use serde_json::json;

use super::{Caller, WriteGuard, app_ref, load_app};
use crate::audit::{self, EventExt};
use crate::error::{ApiError, ApiResult, require};
use crate::state::AppState;
use crate::views::WebhookView;

const NEEDS_APP: &str = "webhooks are managed with app scope (an app key) or account scope";

/// Prefix of webhook signing secrets.
pub use latchkey_core::secret::WEBHOOK_SECRET_PREFIX;

/// Every trigger a webhook may subscribe to, in the order responses list
/// them.
pub const TRIGGERS: [&str; 10] = [
    "key:created",
    "key:rotated",
    "key:updated",
    "key:deleted",
    "key:expiring",
    "key:expired",
    "key:rotation-due",
    "key:rate-limited",
    "key:credits-low",
    "credential:exposed",
];

/// Longest accepted target URL, in bytes.
pub const MAX_TARGET_LEN: usize = 2048;

/// An absolute http or https URL with a host, of at most
/// [`MAX_TARGET_LEN`] bytes. Kept as given.
fn check_target(target: &str, allow_private: bool) -> ApiResult<String> {
    const WHAT: &str = "target must be an absolute http or https URL";
    if target.len() > MAX_TARGET_LEN {
        return Err(ApiError::bad_request(format!(
            "target must be at most {MAX_TARGET_LEN} bytes"
        )));
    }
    let url =
        reqwest::Url::parse(target).map_err(|e| ApiError::bad_request(format!("{WHAT}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad_request(format!(
            "{WHAT}; the scheme {:?} is not supported",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!("{WHAT} with a host")));
    }
    // A user name or password in the URL would be stored and shown in
    // clear to everyone who may read the app's webhooks (and sent to the
    // receiver as Basic credentials). The signature authenticates Latchkey.
    if !url.username().is_empty() || url.password().is_some() || has_userinfo(target) {
        return Err(ApiError::bad_request(
            "target must not carry a user name or password (user:password@host): \
             it would be stored and shown in clear; check each delivery's \
             Latchkey-Signature instead, or put an unguessable path on the receiver",
        ));
    }
    let private = crate::webhooks::literal_ip(&url)
        .is_some_and(|ip| !crate::webhooks::is_public_ip(ip))
        || url.host_str().is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost") || h.to_ascii_lowercase().ends_with(".localhost")
        });
    if private && !allow_private {
        return Err(ApiError::bad_request(
            "target must be a public address; this server does not deliver to loopback, \
             private or link-local addresses",
        ));
    }
    Ok(target.to_string())
}

/// Whether the authority of an absolute URL holds an `@` (userinfo, even
/// an empty one, which the URL parser drops but the target keeps as given).
fn has_userinfo(target: &str) -> bool {
    target
        .split_once("//")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(rest))
        .is_some_and(|authority| authority.contains('@'))
}

/// One or more known triggers, each once; sorted as [`TRIGGERS`].
fn check_triggers(triggers: &[String]) -> ApiResult<Vec<String>> {
    if triggers.is_empty() {
        return Err(ApiError::bad_request(format!(
            "triggers must list at least one of {}",
            TRIGGERS.join(", ")
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(triggers.len());
    for t in triggers {
        if !TRIGGERS.contains(&t.as_str()) {
            let shown: String = t.chars().take(64).collect();
            return Err(ApiError::bad_request(format!(
                "unknown trigger {shown:?}; triggers are {}",
                TRIGGERS.join(", ")
            )));
        }
        if out.contains(t) {
            return Err(ApiError::bad_request(format!(
                "the trigger {t} is listed twice"
            )));
        }
        out.push(t.clone());
    }
    out.sort_by_key(|t| TRIGGERS.iter().position(|k| k == t));
    Ok(out)
}

/// The scheme, host and port of a target, for the audit log: a path or
/// query may carry a token of the receiver.
fn origin(target: &str) -> String {
    reqwest::Url::parse(target)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

/// Loads the app and checks that the caller may configure it.
pub async fn app_for_webhooks(state: &AppState, caller: &Caller, app_id: &str) -> ApiResult<App> {
    let app = load_app(state, app_id).await?;
    require(
        caller
            .principal
            .may_configure_app(app_ref(state, &caller.principal, &app)),
        "app",
        NEEDS_APP,
    )?;
    Ok(app)
}

/// A webhook of `app`, or 404.
pub async fn load_webhook(state: &AppState, app: &App, webhook_id: &str) -> ApiResult<Webhook> {
    state
        .store
        .get_webhook(&app.id, webhook_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}

/// Deliveries listed when the request names no `limit`.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 50;
/// Most deliveries one list returns.
pub const MAX_DELIVERY_LIMIT: u32 = 200;

/// The `limit` of a list of deliveries: [`DEFAULT_DELIVERY_LIMIT`] when
/// absent, else 1 to [`MAX_DELIVERY_LIMIT`].
pub fn delivery_limit(limit: Option<u32>) -> ApiResult<u32> {
    let limit = limit.unwrap_or(DEFAULT_DELIVERY_LIMIT);
    if !(1..=MAX_DELIVERY_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_DELIVERY_LIMIT}"
        )));
    }
    Ok(limit)
}

/// The `limit` most recent deliveries of a webhook of `app` (which the
/// caller may configure), newest first.
pub async fn list_deliveries(
    state: &AppState,
    caller: &Caller,
    app: &App,
    webhook_id: &str,
    limit: u32,
) -> ApiResult<Vec<Delivery>> {
    caller.require(Permission::WebhooksRead)?;
    let webhook = load_webhook(state, app, webhook_id).await?;
    let found = state
        .store
        .list_deliveries(&webhook.id, &Page { limit, after: None })
        .await?;
    Ok(found.items)
}

/// A delivery of a webhook of `app` (which the caller may configure), or
/// 404 (also for a delivery of another webhook).
pub async fn get_delivery(
    state: &AppState,
    caller: &Caller,
    app: &App,
    webhook_id: &str,
    delivery_id: &str,
) -> ApiResult<Delivery> {
    caller.require(Permission::WebhooksRead)?;
    let webhook = load_webhook(state, app, webhook_id).await?;
    state
        .store
        .get_delivery(delivery_id)
        .await?
        .filter(|d| d.webhook_id == webhook.id)
        .ok_or_else(|| ApiError::not_found("delivery"))
}

/// Creates a webhook of `app` (which the caller may configure) and returns
/// the view that shows its secret once.
pub async fn create_webhook(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    app: &App,
    target: &str,
    triggers: &[String],
) -> ApiResult<WebhookView> {
    caller.require(Permission::WebhooksWrite)?;
    let target = check_target(target, state.config.allow_private_webhook_targets)?;
    let triggers = check_triggers(triggers)?;
    let id = new_id(&state.rng, IdKind::Webhook);
    let secret = secret::generate(&state.rng, WEBHOOK_SECRET_PREFIX);
    let secret_sealed = state
        .master
        .seal(&state.rng, &id, secret.expose().as_bytes())
        .map_err(|e| {
            tracing::error!(error = %e, "sealing a webhook secret");
            ApiError::internal()
        })?;
    let webhook = Webhook {
        id,
        app_id: app.id.clone(),
        target,
        triggers,
        secret_sealed,
        created_at: state.now(),
    };
    let event = audit::event(state, caller, "webhook.created", "webhook", &webhook.id)
        .in_app(&app.id)
        .detail("target", json!(origin(&webhook.target)))
        .detail("triggers", json!(webhook.triggers));
    state.store.create_webhook(&webhook, &event).await?;
    let mut view = WebhookView::from(&webhook);
    view.secret = Some(secret);
    Ok(view)
}

/// Changes the target and/or the triggers of a webhook of `app` (which the
/// caller may configure).
pub async fn update_webhook(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    app: &App,
    webhook_id: &str,
    target: Option<&str>,
    triggers: Option<&[String]>,
) -> ApiResult<Webhook> {
    caller.require(Permission::WebhooksWrite)?;
    let mut webhook = load_webhook(state, app, webhook_id).await?;
    if target.is_none() && triggers.is_none() {
        return Err(ApiError::bad_request(
            "send target, triggers or both to change them",
        ));
    }
    let mut changed = Vec::new();
    if let Some(target) = target {
        webhook.target = check_target(target, state.config.allow_private_webhook_targets)?;
        changed.push("target");
    }
    if let Some(triggers) = triggers {
        webhook.triggers = check_triggers(triggers)?;
        changed.push("triggers");
    }
    let event = audit::event(state, caller, "webhook.updated", "webhook", &webhook.id)
        .in_app(&app.id)
        .detail("changed", json!(changed))
        .detail("target", json!(origin(&webhook.target)))
        .detail("triggers", json!(webhook.triggers));
    if !state.store.update_webhook(&webhook, &event).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(webhook)
}

/// Deletes a webhook of `app` (which the caller may configure) with its
/// queued deliveries.
pub async fn delete_webhook(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    app: &App,
    webhook_id: &str,
) -> ApiResult<()> {
    caller.require(Permission::WebhooksWrite)?;
    let event =
        audit::event(state, caller, "webhook.deleted", "webhook", webhook_id).in_app(&app.id);
    if !state
        .store
        .delete_webhook(&app.id, webhook_id, &event)
        .await?
    {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(())
}

/// Sends a delivered or failed delivery of a webhook of `app` (which the
/// caller may configure) again now: back in the queue, due at once, its
/// attempts counted afresh. 409 while it is still pending; 404 for a
/// delivery of another webhook, or none.
pub async fn redeliver(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    app: &App,
    webhook_id: &str,
    delivery_id: &str,
) -> ApiResult<latchkey_store::Delivery> {
    caller.require(Permission::WebhooksWrite)?;
    let webhook = load_webhook(state, app, webhook_id).await?;
    let before = state
        .store
        .get_delivery(delivery_id)
        .await?
        .filter(|d| d.webhook_id == webhook.id)
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let event = audit::event(state, caller, "webhook.redelivered", "webhook", &webhook.id)
        .in_app(&app.id)
        .detail("deliveryId", json!(before.id))
        .detail("previousStatus", json!(before.status.as_str()))
        .detail("previousAttempts", json!(before.attempts));
    match state
        .store
        .redeliver(&webhook.id, &before.id, state.now(), &event)
        .await?
    {
        Redelivery::Scheduled(d) => Ok(d),
        Redelivery::StillPending => Err(ApiError::conflict(
            "the delivery is still pending (waiting for its next attempt or being sent); \
             redeliver it once it has been delivered or has failed",
        )),
        Redelivery::NotFound => Err(ApiError::not_found("delivery")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_http_urls() {
        for ok in [
            "https://example.com/hooks",
            "http://127.0.0.1:8080/x?token=abc",
            "https://[::1]/",
        ] {
            assert_eq!(check_target(ok, true).expect(ok), ok);
        }
        for bad in [
            "",
            "example.com/hooks",
            "/relative",
            "ftp://example.com/",
            "mailto:someone@example.com",
            "https://",
            "javascript:alert(1)",
        ] {
            assert!(check_target(bad, true).is_err(), "{bad:?} was accepted");
        }
        for with_userinfo in [
            "https://user:secret@example.com/hooks",
            "https://user@example.com/hooks",
            "https://:secret@example.com/hooks",
            "https://@example.com/hooks",
            "http://a%40b:c@example.com/",
            "https://user:secret@127.0.0.1:8080/x",
        ] {
            let refused = check_target(with_userinfo, true).expect_err(with_userinfo);
            assert!(
                refused.title.contains("user name or password"),
                "{}",
                refused.title
            );
        }
        // An @ in the path or query is no userinfo.
        for ok in [
            "https://example.com/hooks/@team",
            "https://example.com/hooks?to=a@b.example",
            "https://example.com/#@x",
        ] {
            assert_eq!(check_target(ok, true).expect(ok), ok);
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_TARGET_LEN));
        for private in [
            "http://127.0.0.1:8080/x",
            "https://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/admin",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:3000/",
        ] {
            assert!(
                check_target(private, false).is_err(),
                "{private} was accepted"
            );
            assert!(check_target(private, true).is_ok(), "{private} was refused");
        }
        assert!(check_target("https://example.com/hooks", false).is_ok());
        assert!(check_target(&long, true).is_err());
        let longest = format!("https://example.com/{}", "a".repeat(MAX_TARGET_LEN - 20));
        assert_eq!(longest.len(), MAX_TARGET_LEN);
        assert!(check_target(&longest, true).is_ok());
    }

    #[test]
    fn triggers_are_known_unique_and_sorted() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_triggers(&t(&["key:expired", "key:created"])).expect("ok"),
            t(&["key:created", "key:expired"])
        );
        assert_eq!(check_triggers(&t(&TRIGGERS)).expect("all"), t(&TRIGGERS));
        assert!(check_triggers(&[]).is_err());
        assert!(check_triggers(&t(&["key:created", "key:created"])).is_err());
        assert!(check_triggers(&t(&["key:exploded"])).is_err());
        assert!(check_triggers(&t(&["KEY:CREATED"])).is_err());
    }

    #[test]
    fn the_audit_log_sees_only_the_origin_of_a_target() {
        assert_eq!(
            origin("https://hooks.example.com:8443/services/T0/B0/secret?token=x"),
            "https://hooks.example.com:8443"
        );
    }

    #[test]
    fn the_deliveries_limit_is_1_to_200_and_50_by_default() {
        assert_eq!(delivery_limit(None).expect("default"), 50);
        assert_eq!(delivery_limit(Some(1)).expect("1"), 1);
        assert_eq!(delivery_limit(Some(200)).expect("200"), 200);
        assert!(delivery_limit(Some(0)).is_err());
        assert!(delivery_limit(Some(201)).is_err());
    }
}
