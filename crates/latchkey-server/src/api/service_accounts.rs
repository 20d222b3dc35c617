//! Service accounts, their keys and their app grants: user-account keys
//! only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_store::{KeyKind, KeyOwnerRef, ServiceAccount};
use serde::Deserialize;
use serde_json::{Value, json};

use super::display_name;
use super::keys::{self, CreateKey, KeyContext, RotateKey};
use crate::audit::{self, EventExt};
use crate::error::{ApiError, ApiResult, require};
use crate::extract::{Caller, JsonBody, JsonBodyOrEmpty, Paging, PathParams, WriteGuard};
use crate::state::AppState;
use crate::views::{KeyView, PageMeta, ServiceAccountView};

const NEEDS_USER_ACCOUNT: &str = "service accounts are managed with a user-account (act_) key";

fn caller_account(caller: &Caller) -> ApiResult<String> {
    require(
        caller.principal.may_manage_service_accounts(),
        "service account",
        NEEDS_USER_ACCOUNT,
    )?;
    caller
        .principal
        .account_id()
        .map(str::to_string)
        .ok_or_else(|| ApiError::forbidden(NEEDS_USER_ACCOUNT))
}

/// Loads a service account the caller may manage, or answers 403/404.
pub(crate) async fn load(
    state: &AppState,
    caller: &Caller,
    sa_id: &str,
) -> ApiResult<ServiceAccount> {
    require(
        caller.principal.may_manage_service_accounts(),
        "service account",
        NEEDS_USER_ACCOUNT,
    )?;
    let sa = state
        .store
        .get_service_account(sa_id)
        .await?
        .ok_or_else(|| ApiError::not_found("service account"))?;
    require(
        caller.principal.may_manage_service_account(&sa.account_id),
        "service account",
        NEEDS_USER_ACCOUNT,
    )?;
    Ok(sa)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateServiceAccount {
    display_name: String,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateServiceAccount>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let _write = WriteGuard::acquire(&state, &caller).await?;
    let sa = create_service_account(&state, &caller, &body.display_name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"serviceAccount": ServiceAccountView::from(&sa)})),
    ))
}

/// Creates a service account in the caller's account, audited and indexed.
/// The caller must hold the write guard.
pub(crate) async fn create_service_account(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> ApiResult<ServiceAccount> {
    let account_id = caller_account(caller)?;
    let sa = ServiceAccount {
        id: new_id(&state.rng, IdKind::ServiceAccount),
        account_id,
        display_name: display_name(name, "displayName")?,
        created_at: state.now(),
    };
    let event = audit::event(
        state,
        caller,
        "serviceAccount.created",
        "serviceAccount",
        &sa.id,
    );
    state.store.create_service_account(&sa, &event).await?;
    if !state.index.insert_service_account(&sa.id, &sa.account_id) {
        return Err(ApiError::not_found("account"));
    }
    Ok(sa)
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let account_id = caller_account(&caller)?;
    let found = state
        .store
        .list_service_accounts(&account_id, &page)
        .await?;
    let items: Vec<ServiceAccountView> = found.items.iter().map(ServiceAccountView::from).collect();
    Ok(Json(json!({
        "serviceAccounts": items,
        "meta": PageMeta::of(&found, |s| &s.id),
    })))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(sa_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    let sa = load(&state, &caller, &sa_id).await?;
    Ok(Json(
        json!({"serviceAccount": ServiceAccountView::from(&sa)}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(sa_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let _write = WriteGuard::acquire(&state, &caller).await?;
    let sa = load(&state, &caller, &sa_id).await?;
    delete_service_account(&state, &caller, &sa).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a service account loaded with [`load`]: its keys stop at once.
/// The caller must hold the write guard.
pub(crate) async fn delete_service_account(
    state: &AppState,
    caller: &Caller,
    sa: &ServiceAccount,
) -> ApiResult<()> {
    let event = audit::event(
        state,
        caller,
        "serviceAccount.deleted",
        "serviceAccount",
        &sa.id,
    );
    if !state.store.delete_service_account(&sa.id, &event).await? {
        return Err(ApiError::not_found("service account"));
    }
    state.index.remove_service_account(&sa.id);
    Ok(())
}

pub(crate) const NO_APP: KeyContext<'static> = KeyContext { app: None };

pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(sa_id): PathParams<String>,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let _write = WriteGuard::acquire(&state, &caller).await?;
    let sa = load(&state, &caller, &sa_id).await?;
    let view: KeyView = keys::create_key(
        &state,
        &caller,
        NO_APP,
        KeyKind::ServiceAccount,
        &sa.account_id,
        &sa.id,
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"key": view}))))
}

pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(sa_id): PathParams<String>,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let sa = load(&state, &caller, &sa_id).await?;
    keys::list_keys(&state, NO_APP, KeyOwnerRef::ServiceAccount(&sa.id), &page).await
}

pub async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, key_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let sa = load(&state, &caller, &sa_id).await?;
    keys::get_key(&state, NO_APP, KeyOwnerRef::ServiceAccount(&sa.id), &key_id).await
}

pub async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, key_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let _write = WriteGuard::acquire(&state, &caller).await?;
    let sa = load(&state, &caller, &sa_id).await?;
    keys::delete_key(
        &state,
        &caller,
        NO_APP,
        KeyOwnerRef::ServiceAccount(&sa.id),
        &key_id,
    )
    .await
}

pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, key_id)): PathParams<(String, String)>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<RotateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let _write = WriteGuard::acquire(&state, &caller).await?;
    let sa = load(&state, &caller, &sa_id).await?;
    let out = keys::rotate_key(
        &state,
        &caller,
        NO_APP,
        KeyOwnerRef::ServiceAccount(&sa.id),
        &key_id,
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// The app must exist in the service account's own account.
async fn grantable_app(state: &AppState, sa: &ServiceAccount, app_id: &str) -> ApiResult<()> {
    match state.store.get_app(app_id).await? {
        Some(app) if app.account_id == sa.account_id => Ok(()),
        _ => Err(ApiError::not_found("app")),
    }
}

pub async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, app_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let _write = WriteGuard::acquire(&state, &caller).await?;
    let sa = load(&state, &caller, &sa_id).await?;
    grant_app(&state, &caller, &sa, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lets a service account (loaded with [`load`]) reach an app of its own
/// account. The caller must hold the write guard.
pub(crate) async fn grant_app(
    state: &AppState,
    caller: &Caller,
    sa: &ServiceAccount,
    app_id: &str,
) -> ApiResult<()> {
    grantable_app(state, sa, app_id).await?;
    let event =
        audit::event(state, caller, "grant.created", "serviceAccount", &sa.id).in_app(app_id);
    state
        .store
        .grant_app(&sa.id, app_id, state.now(), &event)
        .await?;
    if !state.index.grant(&sa.id, app_id) {
        return Err(ApiError::not_found("app"));
    }
    Ok(())
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, app_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let _write = WriteGuard::acquire(&state, &caller).await?;
    let sa = load(&state, &caller, &sa_id).await?;
    revoke_app(&state, &caller, &sa, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends a service account's grant on an app. The caller must hold the
/// write guard.
pub(crate) async fn revoke_app(
    state: &AppState,
    caller: &Caller,
    sa: &ServiceAccount,
    app_id: &str,
) -> ApiResult<()> {
    grantable_app(state, sa, app_id).await?;
    let event =
        audit::event(state, caller, "grant.deleted", "serviceAccount", &sa.id).in_app(app_id);
    if !state.store.revoke_app(&sa.id, app_id, &event).await? {
        return Err(ApiError::not_found("grant"));
    }
    state.index.revoke_grant(&sa.id, app_id);
    Ok(())
}
