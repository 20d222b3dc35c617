//! `/v1/apps/{appId}/webhooks`; the operations are in
//! `crate::ops::webhooks`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::policy::Permission;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, Paging, PathParams};
use crate::ops::WriteGuard;
use crate::ops::webhooks::{self as ops, app_for_webhooks, load_webhook};
use crate::state::AppState;
use crate::views::{PageMeta, WebhookView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateWebhook {
    target: String,
    triggers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateWebhook {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    triggers: Option<Vec<String>>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_webhooks(&state, &caller, &app_id).await?;
    let view =
        ops::create_webhook(&state, &write, &caller, &app, &body.target, &body.triggers).await?;
    Ok((StatusCode::CREATED, Json(json!({"webhook": view}))))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(app_id): PathParams<String>,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::WebhooksRead)?;
    let app = app_for_webhooks(&state, &caller, &app_id).await?;
    let found = state.store.list_webhooks(&app.id, &page).await?;
    let webhooks: Vec<WebhookView> = found.items.iter().map(WebhookView::from).collect();
    Ok(Json(
        json!({"webhooks": webhooks, "meta": PageMeta::of(&found, |w| &w.id)}),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, webhook_id)): PathParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::WebhooksRead)?;
    let app = app_for_webhooks(&state, &caller, &app_id).await?;
    let webhook = load_webhook(&state, &app, &webhook_id).await?;
    Ok(Json(json!({"webhook": WebhookView::from(&webhook)})))
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, webhook_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<UpdateWebhook>,
) -> ApiResult<Json<Value>> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_webhooks(&state, &caller, &app_id).await?;
    let webhook = ops::update_webhook(
        &state,
        &write,
        &caller,
        &app,
        &webhook_id,
        body.target.as_deref(),
        body.triggers.as_deref(),
    )
    .await?;
    Ok(Json(json!({"webhook": WebhookView::from(&webhook)})))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, webhook_id)): PathParams<(String, String)>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_webhooks(&state, &caller, &app_id).await?;
    ops::delete_webhook(&state, &write, &caller, &app, &webhook_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
