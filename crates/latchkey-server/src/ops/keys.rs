//! Keys of every owner (apps, service accounts, user accounts): creation
//! with the secret shown once, rotation with a grace period, deletion that
//! stops the key at once, and the access check for an app's keys (account
//! scope on the app).

use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, KEY_SECRET_PREFIX};
use latchkey_store::{ApiKey, App, AuditEvent, KeyKind, KeyOwnerRef, Page, Rotation};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Caller, WriteGuard, app_ref, display_name, load_app, policy};
use crate::audit::{self, EventExt};
use crate::error::{ApiError, ApiResult, require};
use crate::indexing::live_key;
use crate::state::AppState;
use crate::views::{KeyView, PageMeta, rfc3339};

const NEEDS_ACCOUNT: &str =
    "app keys are managed with account scope (a user-account or service-account key)";

/// The longest grace period of a rotation: 30 days.
pub const MAX_GRACE_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateKey {
    pub display_name: String,
    /// RFC 3339; the key stops working at this time.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RotateKey {
    /// How long the old key keeps working: 0 to 2592000 (30 days, the
    /// default).
    #[serde(default, deserialize_with = "crate::json_values::optional_integer")]
    pub grace_seconds: Option<i64>,
}

/// The app a key belongs to, for its webhooks and policy; None for
/// service-account and user-account keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    pub app: Option<&'a App>,
}

/// The context of a service-account or user-account key.
pub const NO_APP: KeyContext<'static> = KeyContext { app: None };

impl KeyContext<'_> {
    fn max_age(&self) -> Option<i64> {
        self.app.and_then(|a| policy::max_key_age_days(&a.settings))
    }

    fn view(&self, state: &AppState, key: &ApiKey) -> KeyView {
        KeyView::new(key, &state.index, state.now(), self.max_age())
    }

    /// The event for an action on a key: in the app's log and notifying its
    /// webhooks when the key is an app key.
    fn event(
        &self,
        state: &AppState,
        caller: &Caller,
        action: &str,
        trigger: &'static str,
        key: &ApiKey,
        data: Value,
    ) -> AuditEvent {
        let ev = audit::event(state, caller, action, "key", &key.id)
            .in_account(&key.account_id)
            .detail("owner", json!(key.owner_id));
        match self.app {
            Some(app) => ev.in_app(&app.id).notify(trigger, data),
            None => ev,
        }
    }
}

fn parse_expiry(state: &AppState, text: &str) -> ApiResult<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| ApiError::bad_request("expiresAt must be an RFC 3339 time"))?
        .unix_timestamp();
    if t <= state.now() {
        return Err(ApiError::bad_request("expiresAt must be in the future"));
    }
    Ok(t)
}

fn key_id_kind(kind: KeyKind) -> IdKind {
    match kind {
        KeyKind::App => IdKind::AppKey,
        KeyKind::UserAccount => IdKind::UserAccountKey,
        KeyKind::ServiceAccount => IdKind::ServiceAccountKey,
    }
}

fn internal(what: &'static str) -> impl FnOnce(latchkey_core::crypto::CryptoError) -> ApiError {
    move |e| {
        tracing::error!(error = %e, "{what}");
        ApiError::internal()
    }
}

/// A new key (secret sealed) for `owner_id`, and its plain secret.
fn new_key(
    state: &AppState,
    kind: KeyKind,
    account_id: &str,
    owner_id: &str,
    display_name: String,
    expires_at: Option<i64>,
    rotated_from: Option<String>,
) -> ApiResult<(ApiKey, latchkey_core::SecretString)> {
    let id = new_id(&state.rng, key_id_kind(kind));
    let secret = secret::generate(&state.rng, KEY_SECRET_PREFIX);
    let key = ApiKey {
        secret_sealed: state
            .master
            .seal(&state.rng, &id, secret.expose().as_bytes())
            .map_err(internal("sealing a key secret"))?,
        id,
        kind,
        account_id: account_id.to_string(),
        owner_id: owner_id.to_string(),
        display_name,
        created_at: state.now(),
        expires_at,
        last_used_at: None,
        rotated_from,
        replaced_by: None,
    };
    Ok((key, secret))
}

/// Creates a key for `owner` (of `account_id`), seals its secret, indexes
/// it and returns the view that shows the secret once.
pub async fn create_key(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    ctx: KeyContext<'_>,
    account_id: &str,
    owner: KeyOwnerRef<'_>,
    body: &CreateKey,
) -> ApiResult<KeyView> {
    let (kind, owner_id) = match owner {
        KeyOwnerRef::App(id) => (KeyKind::App, id),
        KeyOwnerRef::UserAccount(id) => (KeyKind::UserAccount, id),
        KeyOwnerRef::ServiceAccount(id) => (KeyKind::ServiceAccount, id),
    };
    let display_name = display_name(&body.display_name, "displayName")?;
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|t| parse_expiry(state, t))
        .transpose()?;
    let (key, secret) = new_key(
        state,
        kind,
        account_id,
        owner_id,
        display_name,
        expires_at,
        None,
    )?;
    let mut view = ctx.view(state, &key);
    let event = ctx.event(
        state,
        caller,
        "key.created",
        "key:created",
        &key,
        json!({"key": &view}),
    );
    state
        .store
        .create_key(&key, state.config.max_keys_per_owner, state.now(), &event)
        .await?;
    let live = live_key(&key, &state.master).map_err(|e| {
        tracing::error!(error = %e, "indexing a new key");
        ApiError::internal()
    })?;
    // The owner may have been deleted while this request ran; its cascade
    // then removed this key from the store as well.
    if !state.index.insert_key(live) {
        return Err(ApiError::not_found("key owner"));
    }
    view.secret = Some(secret);
    Ok(view)
}

/// Replaces a key with a new one; the old one keeps working for the grace
/// period (never longer than it already would have).
pub async fn rotate_key(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    ctx: KeyContext<'_>,
    owner: KeyOwnerRef<'_>,
    key_id: &str,
    body: &RotateKey,
) -> ApiResult<Value> {
    let grace = body.grace_seconds.unwrap_or(MAX_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::bad_request(format!(
            "graceSeconds must be from 0 to {MAX_GRACE_SECONDS} (30 days)"
        )));
    }
    let old = load_key(state, owner, key_id).await?;
    let now = state.now();
    if old.replaced_by.is_some() {
        return Err(ApiError::conflict("this key has already been rotated"));
    }
    if old.expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::conflict("this key has expired; create a new one"));
    }
    let old_expires_at = match old.expires_at {
        Some(t) => t.min(now.saturating_add(grace)),
        None => now.saturating_add(grace),
    };
    // A key that was made to expire hands the same lifetime to its
    // successor.
    let new_expires_at = old
        .expires_at
        .map(|t| now.saturating_add(t.saturating_sub(old.created_at).max(1)));
    let (new, secret) = new_key(
        state,
        old.kind,
        &old.account_id,
        &old.owner_id,
        old.display_name.clone(),
        new_expires_at,
        Some(old.id.clone()),
    )?;
    let mut view = ctx.view(state, &new);
    let previous = json!({"id": old.id, "expiresAt": rfc3339(old_expires_at)});
    let event = ctx
        .event(
            state,
            caller,
            "key.rotated",
            "key:rotated",
            &old,
            json!({"key": &view, "previousKey": previous}),
        )
        .detail("newKey", json!(new.id))
        .detail("graceSeconds", json!(grace));
    state
        .store
        .rotate_key(
            &Rotation {
                old_id: old.id.clone(),
                old_expires_at,
                new_key: new.clone(),
                max_working: state.config.max_keys_per_owner.saturating_mul(2),
            },
            now,
            &event,
        )
        .await?;
    let live = live_key(&new, &state.master).map_err(|e| {
        tracing::error!(error = %e, "indexing a new key");
        ApiError::internal()
    })?;
    if !state.index.insert_key(live) {
        return Err(ApiError::not_found("key owner"));
    }
    state.index.set_key_expiry(&old.id, Some(old_expires_at));
    view.secret = Some(secret);
    Ok(json!({"key": view, "previousKey": previous}))
}

/// A page of `owner`'s keys, as the API shows them.
pub async fn list_keys(
    state: &AppState,
    ctx: KeyContext<'_>,
    owner: KeyOwnerRef<'_>,
    page: &Page,
) -> ApiResult<Value> {
    let found = state.store.list_keys(owner, page).await?;
    let keys: Vec<KeyView> = found.items.iter().map(|k| ctx.view(state, k)).collect();
    Ok(json!({"keys": keys, "meta": PageMeta::of(&found, |k| &k.id)}))
}

/// Loads a key of `owner`, or answers 404.
pub async fn load_key(state: &AppState, owner: KeyOwnerRef<'_>, key_id: &str) -> ApiResult<ApiKey> {
    match state.store.get_key(key_id).await? {
        Some(k) if k.owner() == owner => Ok(k),
        _ => Err(ApiError::not_found("key")),
    }
}

/// One key of `owner`, as the API shows it.
pub async fn get_key(
    state: &AppState,
    ctx: KeyContext<'_>,
    owner: KeyOwnerRef<'_>,
    key_id: &str,
) -> ApiResult<Value> {
    let key = load_key(state, owner, key_id).await?;
    Ok(json!({"key": ctx.view(state, &key)}))
}

/// Deletes a key: Basic with it and every JWT it signed stop at once.
pub async fn delete_key(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    ctx: KeyContext<'_>,
    owner: KeyOwnerRef<'_>,
    key_id: &str,
) -> ApiResult<()> {
    let key = load_key(state, owner, key_id).await?;
    let view = ctx.view(state, &key);
    let event = ctx.event(
        state,
        caller,
        "key.deleted",
        "key:deleted",
        &key,
        json!({"key": view}),
    );
    if !state.store.delete_key(&key.id, &event).await? {
        return Err(ApiError::not_found("key"));
    }
    state.index.remove_key(&key.id);
    Ok(())
}

/// The app whose keys the caller wants to manage: account scope on it.
pub async fn app_for_keys(state: &AppState, caller: &Caller, app_id: &str) -> ApiResult<App> {
    let app = load_app(state, app_id).await?;
    require(
        caller
            .principal
            .may_manage_app(app_ref(state, &caller.principal, &app)),
        "app",
        NEEDS_ACCOUNT,
    )?;
    Ok(app)
}
