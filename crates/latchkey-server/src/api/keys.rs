//! App keys (account scope on the app), and the key creation shared with
//! service-account keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, KEY_SECRET_PREFIX};
use latchkey_store::{ApiKey, KeyKind, KeyOwnerRef, Page};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{app_ref, display_name, load_app};
use crate::bootstrap::live_key;
use crate::error::{ApiError, ApiResult, require};
use crate::extract::{Caller, JsonBody, Paging, PathParams, WriteGuard};
use crate::state::AppState;
use crate::views::{KeyView, PageMeta};

const NEEDS_ACCOUNT: &str =
    "app keys are managed with account scope (a user-account or service-account key)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateKey {
    display_name: String,
}

/// Creates a key for `owner`, seals its secret, indexes it and returns the
/// view that shows the secret once.
pub(crate) async fn create_key(
    state: &AppState,
    kind: KeyKind,
    account_id: &str,
    owner_id: &str,
    body: &CreateKey,
) -> ApiResult<KeyView> {
    let display_name = display_name(&body.display_name, "displayName")?;
    let id_kind = match kind {
        KeyKind::App => IdKind::AppKey,
        KeyKind::UserAccount => IdKind::UserAccountKey,
        KeyKind::ServiceAccount => IdKind::ServiceAccountKey,
    };
    let id = new_id(&state.rng, id_kind);
    let secret = secret::generate(&state.rng, KEY_SECRET_PREFIX);
    let now = state.now();
    let key = ApiKey {
        secret_sealed: state
            .master
            .seal(&state.rng, &id, secret.expose().as_bytes())
            .map_err(|e| {
                tracing::error!(error = %e, "sealing a key secret");
                ApiError::internal()
            })?,
        id,
        kind,
        account_id: account_id.to_string(),
        owner_id: owner_id.to_string(),
        display_name,
        created_at: now,
        expires_at: None,
        last_used_at: None,
    };
    state
        .store
        .create_key(&key, state.config.max_keys_per_owner, now)
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
    let mut view = KeyView::new(&key, &state.index);
    view.secret = Some(secret);
    Ok(view)
}

pub(crate) async fn list_keys(
    state: &AppState,
    owner: KeyOwnerRef<'_>,
    page: &Page,
) -> ApiResult<Json<Value>> {
    let found = state.store.list_keys(owner, page).await?;
    let keys: Vec<KeyView> = found
        .items
        .iter()
        .map(|k| KeyView::new(k, &state.index))
        .collect();
    Ok(Json(
        json!({"keys": keys, "meta": PageMeta::of(&found, |k| &k.id)}),
    ))
}

/// Loads a key of `owner`, or answers 404.
pub(crate) async fn load_key(
    state: &AppState,
    owner: KeyOwnerRef<'_>,
    key_id: &str,
) -> ApiResult<ApiKey> {
    match state.store.get_key(key_id).await? {
        Some(k) if k.owner() == owner => Ok(k),
        _ => Err(ApiError::not_found("key")),
    }
}

pub(crate) async fn delete_key(
    state: &AppState,
    owner: KeyOwnerRef<'_>,
    key_id: &str,
) -> ApiResult<StatusCode> {
    let key = load_key(state, owner, key_id).await?;
    if !state.store.delete_key(&key.id).await? {
        return Err(ApiError::not_found("key"));
    }
    state.index.remove_key(&key.id);
    Ok(StatusCode::NO_CONTENT)
}

async fn app_for_keys(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
) -> ApiResult<latchkey_store::App> {
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

pub async fn create_app_key(
    State(state): State<AppState>,
    _write: WriteGuard,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let view = create_key(&state, KeyKind::App, &app.account_id, &app.id, &body).await?;
    Ok((StatusCode::CREATED, Json(json!({"key": view}))))
}

pub async fn list_app_keys(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let app = app_for_keys(&state, &caller, &app_id).await?;
    list_keys(&state, KeyOwnerRef::App(&app.id), &page).await
}

pub async fn get_app_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, key_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let key = load_key(&state, KeyOwnerRef::App(&app.id), &key_id).await?;
    Ok(Json(json!({"key": KeyView::new(&key, &state.index)})))
}

pub async fn delete_app_key(
    State(state): State<AppState>,
    _write: WriteGuard,
    caller: Caller,
    PathParams((app_id, key_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let app = app_for_keys(&state, &caller, &app_id).await?;
    delete_key(&state, KeyOwnerRef::App(&app.id), &key_id).await
}
