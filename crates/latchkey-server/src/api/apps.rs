//! `/v1/apps` and `/v1/apps/{appId}`; the operations are in
//! `crate::ops::apps`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey_core::policy::Permission;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, Paging, PathParams};
use crate::ops::{WriteGuard, apps};
use crate::state::AppState;
use crate::views::{AppView, Named, PageMeta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateApp {
    display_name: String,
    #[serde(default)]
    settings: Option<Map<String, Value>>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateApp>,
) -> ApiResult<Response> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = apps::create_app(
        &state,
        &write,
        &caller,
        &body.display_name,
        body.settings.as_ref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(Named("app", AppView::from(&app)))).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let found = apps::list_apps(&state, &caller, &page).await?;
    let list: Vec<AppView> = found.items.iter().map(AppView::from).collect();
    Ok(Json(
        json!({"apps": list, "meta": PageMeta::of(&found, |a| &a.id)}),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
) -> ApiResult<Response> {
    caller.require(Permission::AppsRead)?;
    let app = apps::configurable_app(&state, &caller, &app_id).await?;
    Ok(Json(Named("app", AppView::from(&app))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateApp {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    settings: Option<Map<String, Value>>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateApp>,
) -> ApiResult<Response> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = apps::configurable_app(&state, &caller, &app_id).await?;
    let app = apps::update_app(
        &state,
        &write,
        &caller,
        app,
        body.display_name.as_deref(),
        body.settings.as_ref(),
    )
    .await?;
    Ok(Json(Named("app", AppView::from(&app))).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    apps::delete_app(&state, &write, &caller, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
