//! `/v1/serviceAccounts`: service accounts, their keys and their app
//! grants; the operations are in `crate::ops::service_accounts` and
//! `crate::ops::keys`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::policy::Permission;
use latchkey_store::KeyOwnerRef;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, JsonBodyOrEmpty, Paging, PathParams};
use crate::ops::keys::{self, CreateKey, NO_APP, RotateKey};
use crate::ops::{WriteGuard, service_accounts as ops};
use crate::state::AppState;
use crate::views::{PageMeta, ServiceAccountView};

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
    let write = WriteGuard::acquire(&state, &caller).await?;
    let sa = ops::create_service_account(&state, &write, &caller, &body.display_name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"serviceAccount": ServiceAccountView::from(&sa)})),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let found = ops::list_service_accounts(&state, &caller, &page).await?;
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
    caller.require(Permission::ServiceAccountsRead)?;
    let sa = ops::load(&state, &caller, &sa_id).await?;
    Ok(Json(
        json!({"serviceAccount": ServiceAccountView::from(&sa)}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(sa_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let sa = ops::load(&state, &caller, &sa_id).await?;
    ops::delete_service_account(&state, &write, &caller, &sa).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(sa_id): PathParams<String>,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let sa = ops::load(&state, &caller, &sa_id).await?;
    let view = keys::create_key(
        &state,
        &write,
        &caller,
        NO_APP,
        &sa.account_id,
        KeyOwnerRef::ServiceAccount(&sa.id),
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
    let sa = ops::load(&state, &caller, &sa_id).await?;
    let owner = KeyOwnerRef::ServiceAccount(&sa.id);
    Ok(Json(
        keys::list_keys(&state, &caller, NO_APP, owner, &page).await?,
    ))
}

pub async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, key_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let sa = ops::load(&state, &caller, &sa_id).await?;
    let owner = KeyOwnerRef::ServiceAccount(&sa.id);
    Ok(Json(
        keys::get_key(&state, &caller, NO_APP, owner, &key_id).await?,
    ))
}

pub async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, key_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let sa = ops::load(&state, &caller, &sa_id).await?;
    let owner = KeyOwnerRef::ServiceAccount(&sa.id);
    keys::delete_key(&state, &write, &caller, NO_APP, owner, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /v1/serviceAccounts/{saId}/keys/{keyId}`: display name and
/// policy.
pub async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, key_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let sa = ops::load(&state, &caller, &sa_id).await?;
    let owner = KeyOwnerRef::ServiceAccount(&sa.id);
    let view = keys::update_key(&state, &write, &caller, NO_APP, owner, &key_id, &body).await?;
    Ok(Json(serde_json::json!({"key": view})))
}

pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, key_id)): PathParams<(String, String)>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<RotateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let sa = ops::load(&state, &caller, &sa_id).await?;
    let owner = KeyOwnerRef::ServiceAccount(&sa.id);
    let out = keys::rotate_key(&state, &write, &caller, NO_APP, owner, &key_id, &body).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, app_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let sa = ops::load(&state, &caller, &sa_id).await?;
    ops::grant_app(&state, &write, &caller, &sa, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((sa_id, app_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let sa = ops::load(&state, &caller, &sa_id).await?;
    ops::revoke_app(&state, &write, &caller, &sa, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
