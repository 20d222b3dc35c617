//! `/v1/apps/{appId}/users`; the operations are in `crate::ops::users`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::principal::UserAction;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, JsonBodyOrEmpty, Paging, PathParams};
use crate::ops::users::{self as ops, Profile};
use crate::state::AppState;
use crate::views::{AppUserView, PageMeta, rfc3339};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateUser {
    external_id: String,
    #[serde(default, deserialize_with = "crate::json_values::optional_object")]
    profile: Option<Profile>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    JsonBody(body): JsonBody<CreateUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = ops::create_user(
        &state,
        &caller,
        &app_id,
        body.external_id,
        body.profile,
        body.metadata,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": AppUserView::from(&user)})),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let found = ops::list_users(&state, &caller, &app_id, &page).await?;
    let users: Vec<AppUserView> = found.items.iter().map(AppUserView::from).collect();
    Ok(Json(
        json!({"users": users, "meta": PageMeta::of(&found, |u| &u.id)}),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, user)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user = ops::resolve(&state, &caller, &app_id, &user, UserAction::Read).await?;
    Ok(Json(json!({"user": AppUserView::from(&user)})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateUser {
    #[serde(default, deserialize_with = "crate::json_values::optional_object")]
    profile: Option<Profile>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, user)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<UpdateUser>,
) -> ApiResult<Json<Value>> {
    let user = ops::update_user(
        &state,
        &caller,
        &app_id,
        &user,
        body.profile,
        body.metadata.as_ref(),
    )
    .await?;
    Ok(Json(json!({"user": AppUserView::from(&user)})))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, user)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    ops::delete_user(&state, &caller, &app_id, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MintToken {
    #[serde(default, deserialize_with = "crate::json_values::optional_integer")]
    ttl_seconds: Option<i64>,
    /// `HS256` (the default) or `EdDSA`.
    #[serde(default)]
    alg: Option<String>,
    /// The token's `aud`: a string or a list of strings.
    #[serde(default)]
    aud: Option<Value>,
}

/// Mints an appUser JWT for one user (see [`ops::mint_token`]).
pub async fn mint_token(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, user)): PathParams<(String, String)>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<MintToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let alg = ops::MintAlg::parse(body.alg.as_deref())?;
    let audience = ops::parse_audience(body.aud.as_ref())?;
    let (token, expires_at) = ops::mint_token(
        &state,
        &caller,
        &app_id,
        user,
        body.ttl_seconds,
        alg,
        audience,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "expiresAt": rfc3339(expires_at)})),
    ))
}
