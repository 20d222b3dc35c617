//! Keys of every owner (apps, service accounts, user accounts): creation
//! with the secret shown once, rotation with a grace period, deletion that
//! stops the key at once, and the access check for an app's keys (account
//! scope on the app).

use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::jwt::PublicKey;
use latchkey_core::policy::Permission;
use latchkey_core::secret::{self, KEY_SECRET_PREFIX};
use latchkey_store::{ApiKey, App, AuditEvent, KeyKind, KeyOwnerRef, Page, Rotation};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::key_policy::{self, Draft};
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
/// The grace period of a rotation that names none, in the API and as the
/// dashboard's preselected choice: the longest, 30 days, so that a rotation
/// never cuts off a deployment that has not picked up the new key yet.
pub const DEFAULT_GRACE_SECONDS: i64 = MAX_GRACE_SECONDS;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateKey {
    pub display_name: String,
    /// RFC 3339; the key stops working at this time.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The policy members (see `key_policy`); absent or null: none.
    #[serde(default)]
    pub permissions: Option<Value>,
    #[serde(default)]
    pub restrictions: Option<Value>,
    #[serde(default)]
    pub ratelimit: Option<Value>,
    #[serde(default)]
    pub credits: Option<Value>,
    #[serde(default)]
    pub meta: Option<Value>,
    /// A JWK (Ed25519 or P-256): the key is then a public-key key, whose
    /// private key the customer keeps; absent: Latchkey makes a secret.
    #[serde(default)]
    pub public_key: Option<Value>,
}

impl CreateKey {
    /// The key's policy as given.
    fn draft(&self, now: i64) -> ApiResult<Draft> {
        let mut members = serde_json::Map::new();
        for (name, v) in [
            ("permissions", &self.permissions),
            ("restrictions", &self.restrictions),
            ("ratelimit", &self.ratelimit),
            ("credits", &self.credits),
            ("meta", &self.meta),
        ] {
            if let Some(v) = v {
                members.insert(name.to_string(), v.clone());
            }
        }
        key_policy::of_create(&members, now)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RotateKey {
    /// How long the old key keeps working: 0 to 2592000 (30 days, the
    /// default).
    #[serde(default, deserialize_with = "crate::json_values::optional_integer")]
    pub grace_seconds: Option<i64>,
    /// The successor's public key (a JWK); required to rotate a
    /// public-key key, and turns a key with a secret into one.
    #[serde(default)]
    pub public_key: Option<Value>,
}

/// A customer's JWK as a public key, or a 400 that says what to fix.
fn public_key(jwk: Option<&Value>) -> ApiResult<Option<PublicKey>> {
    jwk.map(|jwk| PublicKey::from_jwk(jwk).map_err(|e| ApiError::bad_request(e.to_string())))
        .transpose()
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

    pub fn view(&self, state: &AppState, key: &ApiKey) -> KeyView {
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

/// The permissions an operation on `owner`'s keys takes: keys' own, and
/// for a service account's keys also the service accounts' (so that a
/// developer, whose role does not manage service accounts, cannot mint
/// their keys either).
///
/// A person's own keys are theirs whatever their role (a viewer too may
/// make, rotate and delete keys for their own use): such a key can never
/// do more than the role allows, so only a key's permission list is
/// checked there.
fn require_keys(caller: &Caller, owner: KeyOwnerRef<'_>, write: bool) -> ApiResult<()> {
    let permission = if write {
        Permission::KeysWrite
    } else {
        Permission::KeysRead
    };
    if let KeyOwnerRef::UserAccount(_) = owner {
        return caller.require_listed(permission);
    }
    caller.require(permission)?;
    if let KeyOwnerRef::ServiceAccount(_) = owner {
        caller.require(if write {
            Permission::ServiceAccountsWrite
        } else {
            Permission::ServiceAccountsRead
        })?;
    }
    Ok(())
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

/// A new key for `owner_id`: with `public_key`, a public-key key (no
/// secret); without, a secret made here and sealed, returned once.
#[allow(clippy::too_many_arguments)]
fn new_key(
    state: &AppState,
    kind: KeyKind,
    account_id: &str,
    owner_id: &str,
    display_name: String,
    expires_at: Option<i64>,
    rotated_from: Option<String>,
    draft: Draft,
    public_key: Option<PublicKey>,
) -> ApiResult<(ApiKey, Option<latchkey_core::SecretString>)> {
    let id = new_id(&state.rng, key_id_kind(kind));
    let (secret, secret_sealed) = match &public_key {
        Some(_) => (None, Vec::new()),
        None => {
            let secret = secret::generate(&state.rng, KEY_SECRET_PREFIX);
            let sealed = state
                .master
                .seal(&state.rng, &id, secret.expose().as_bytes())
                .map_err(internal("sealing a key secret"))?;
            (Some(secret), sealed)
        }
    };
    let key = ApiKey {
        secret_sealed,
        public_key,
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
        policy: draft.policy,
        credits: draft.credits,
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
    require_keys(caller, owner, true)?;
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
    let draft = body.draft(state.now())?;
    let public_key = public_key(body.public_key.as_ref())?;
    caller.may_grant(&draft.policy)?;
    let (key, secret) = new_key(
        state,
        kind,
        account_id,
        owner_id,
        display_name,
        expires_at,
        None,
        draft,
        public_key,
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
    let live = live_key(&key, &state.master, state.limiter.is_leased()).map_err(|e| {
        tracing::error!(error = %e, "indexing a new key");
        ApiError::internal()
    })?;
    // The owner may have been deleted while this request ran; its cascade
    // then removed this key from the store as well.
    if !state.index.insert_key(live) {
        return Err(ApiError::not_found("key owner"));
    }
    view.secret = secret;
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
    require_keys(caller, owner, true)?;
    let grace = body.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::bad_request(format!(
            "graceSeconds must be from 0 to {MAX_GRACE_SECONDS} (30 days)"
        )));
    }
    let successor_key = public_key(body.public_key.as_ref())?;
    let old = load_key(state, owner, key_id).await?;
    // The caller receives the successor's secret: it may rotate only keys
    // it could have made.
    caller.may_grant(&old.policy)?;
    if old.public_key.is_some() && successor_key.is_none() {
        return Err(ApiError::bad_request(
            "this key is a public key: give its successor's public key (a JWK) in publicKey",
        ));
    }
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
    // The successor carries everything the old key could do, and starts
    // with the balance the old key has now.
    let credits = old.credits.map(|stored| {
        let state = live_credits(state, &old.id, stored);
        latchkey_store::StoredCredits {
            remaining: state.remaining,
            period: state.period,
            version: 0,
        }
    });
    let (new, secret) = new_key(
        state,
        old.kind,
        &old.account_id,
        &old.owner_id,
        old.display_name.clone(),
        new_expires_at,
        Some(old.id.clone()),
        Draft {
            policy: successor_policy(&old.policy),
            credits,
            credits_set: false,
        },
        successor_key,
    )?;
    // The old key spends the successor's balance from now on.
    let old_policy = old.credits.map(|_| {
        let mut p = old.policy.clone();
        if let Some(c) = p.credits.as_mut() {
            c.balance_of = Some(new.id.clone());
        }
        p
    });
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
                old_policy: old_policy.clone(),
            },
            now,
            &event,
        )
        .await?;
    let live = live_key(&new, &state.master, state.limiter.is_leased()).map_err(|e| {
        tracing::error!(error = %e, "indexing a new key");
        ApiError::internal()
    })?;
    if !state.index.insert_key(live) {
        return Err(ApiError::not_found("key owner"));
    }
    state.index.set_key_expiry(&old.id, Some(old_expires_at));
    if let Some(policy) = &old_policy {
        state.index.set_key_policy(&old.id, policy, None);
    }
    view.secret = secret;
    Ok(json!({"key": view, "previousKey": previous}))
}

/// What a rotation's successor carries: the old key's policy, owning its
/// balance itself.
fn successor_policy(old: &latchkey_core::policy::KeyPolicy) -> latchkey_core::policy::KeyPolicy {
    let mut p = old.clone();
    if let Some(c) = p.credits.as_mut() {
        c.balance_of = None;
    }
    p
}

/// A key's credit balance as this node has it: the index's cell (which
/// holds spending not yet written), else the store's.
pub fn live_credits(
    state: &AppState,
    key_id: &str,
    stored: latchkey_store::StoredCredits,
) -> latchkey_core::policy::CreditState {
    match state.index.credit_cell(key_id) {
        // Nodes that share a store keep the balance there (a node's cell
        // holds only its lease).
        Some(cell) if !cell.is_leased() => cell.state(),
        _ => latchkey_core::policy::CreditState {
            remaining: stored.remaining,
            period: stored.period,
        },
    }
}

/// Changes a key: its display name and any member of its policy
/// (`PATCH …/keys/{keyId}`, JSON merge patch: absent members are kept,
/// null removes one). A balance set here is audited and replaces what
/// every node holds.
#[allow(clippy::too_many_arguments)]
pub async fn update_key(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    ctx: KeyContext<'_>,
    owner: KeyOwnerRef<'_>,
    key_id: &str,
    body: &serde_json::Map<String, Value>,
) -> ApiResult<KeyView> {
    require_keys(caller, owner, true)?;
    let mut key = load_key(state, owner, key_id).await?;
    // A key may change only keys it could have made: it cannot weaken or
    // lock out a key stronger than itself.
    caller.may_grant(&key.policy)?;
    let now = state.now();
    let mut draft = Draft {
        policy: key.policy.clone(),
        credits: key.credits.map(|stored| {
            let live = live_credits(state, &key.id, stored);
            latchkey_store::StoredCredits {
                remaining: live.remaining,
                period: live.period,
                ..stored
            }
        }),
        credits_set: false,
    };
    let mut changed = Vec::new();
    for (name, value) in body {
        if name == "displayName" {
            let text = value
                .as_str()
                .ok_or_else(|| ApiError::bad_request("displayName must be a string"))?;
            key.display_name = display_name(text, "displayName")?;
        } else {
            draft.apply(name, value, now)?;
        }
        changed.push(name.clone());
    }
    if changed.is_empty() {
        return Err(ApiError::bad_request(format!(
            "send at least one of displayName, {}",
            key_policy::MEMBERS.join(", ")
        )));
    }
    caller.may_grant(&draft.policy)?;
    // A key with a policy may not change itself (it could lift its own
    // limits or refill its own credits).
    if caller.policy.is_some() && caller.principal.key_id() == Some(key.id.as_str()) {
        return Err(ApiError::forbidden(
            "a key with a policy cannot change itself; use another key or the dashboard",
        ));
    }
    key.policy = draft.policy;
    // The balance is written only when this request set it; otherwise the
    // store keeps its own (the flusher writes what was spent).
    key.credits = draft.credits.map(|c| latchkey_store::StoredCredits {
        version: c.version + i64::from(draft.credits_set),
        ..c
    });
    let view = ctx.view(state, &key);
    let mut event = ctx
        .event(
            state,
            caller,
            "key.updated",
            "key:updated",
            &key,
            json!({"key": &view, "changed": &changed}),
        )
        .detail("changed", json!(changed));
    if draft.credits_set {
        event = event.detail("creditsRemaining", json!(key.credits.map(|c| c.remaining)));
    }
    if !state
        .store
        .update_key(&key, draft.credits_set, &event)
        .await?
    {
        return Err(ApiError::not_found("key"));
    }
    // The store's balance version moved with this write (see
    // `Store::update_key`): the index takes the new balance over what it
    // held only when this request set it.
    let stored = state.store.get_key(&key.id).await?;
    if let Some(stored) = stored {
        state.index.set_key_policy(
            &stored.id,
            &stored.policy,
            crate::indexing::credit_seed(stored.credits, state.limiter.is_leased()),
        );
        return Ok(ctx.view(state, &stored));
    }
    Err(ApiError::not_found("key"))
}

/// A page of `owner`'s keys, as the API shows them.
pub async fn list_keys(
    state: &AppState,
    caller: &Caller,
    ctx: KeyContext<'_>,
    owner: KeyOwnerRef<'_>,
    page: &Page,
) -> ApiResult<Value> {
    require_keys(caller, owner, false)?;
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
    caller: &Caller,
    ctx: KeyContext<'_>,
    owner: KeyOwnerRef<'_>,
    key_id: &str,
) -> ApiResult<Value> {
    require_keys(caller, owner, false)?;
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
    require_keys(caller, owner, true)?;
    let key = load_key(state, owner, key_id).await?;
    caller.may_grant(&key.policy)?;
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
