//! App keys: `/v1/apps/{appId}/keys`, account scope on the app. The
//! operations are in `crate::ops::keys`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_store::KeyOwnerRef;
use serde_json::{Map, Value, json};

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, JsonBodyOrEmpty, Paging, PathParams};
use crate::ops::WriteGuard;
use crate::ops::keys::{self, CreateKey, KeyContext, RotateKey, app_for_keys};
use crate::state::AppState;

pub async fn create_app_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let ctx = KeyContext { app: Some(&app) };
    let view = keys::create_key(
        &state,
        &write,
        &caller,
        ctx,
        &app.account_id,
        KeyOwnerRef::App(&app.id),
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"key": view}))))
}

pub async fn list_app_keys(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let ctx = KeyContext { app: Some(&app) };
    let found = keys::list_keys(&state, &caller, ctx, KeyOwnerRef::App(&app.id), &page).await?;
    Ok(Json(found))
}

pub async fn get_app_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, key_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let ctx = KeyContext { app: Some(&app) };
    let key = keys::get_key(&state, &caller, ctx, KeyOwnerRef::App(&app.id), &key_id).await?;
    Ok(Json(key))
}

/// `PATCH /v1/apps/{appId}/keys/{keyId}`: display name and policy.
pub async fn update_app_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, key_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let ctx = KeyContext { app: Some(&app) };
    let owner = KeyOwnerRef::App(&app.id);
    let view = keys::update_key(&state, &write, &caller, ctx, owner, &key_id, &body).await?;
    Ok(Json(json!({"key": view})))
}

pub async fn delete_app_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, key_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let ctx = KeyContext { app: Some(&app) };
    keys::delete_key(
        &state,
        &write,
        &caller,
        ctx,
        KeyOwnerRef::App(&app.id),
        &key_id,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rotate_app_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, key_id)): PathParams<(String, String)>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<RotateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_keys(&state, &caller, &app_id).await?;
    let ctx = KeyContext { app: Some(&app) };
    let owner = KeyOwnerRef::App(&app.id);
    let out = keys::rotate_key(&state, &write, &caller, ctx, owner, &key_id, &body).await?;
    Ok((StatusCode::CREATED, Json(out)))
}
