//! `/v1/apps/{appId}/webhooks`; the operations are in
//! `crate::ops::webhooks`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::policy::Permission;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::extract::{Caller, DeliveryQuery, JsonBody, Paging, PathParams};
use crate::ops::WriteGuard;
use crate::ops::webhooks::{self as ops, app_for_webhooks, load_webhook};
use crate::state::AppState;
use crate::views::{DeliveryView, PageMeta, WebhookView};

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

pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, webhook_id)): PathParams<(String, String)>,
    DeliveryQuery(limit): DeliveryQuery,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::WebhooksRead)?;
    let app = app_for_webhooks(&state, &caller, &app_id).await?;
    let found = ops::list_deliveries(&state, &caller, &app, &webhook_id, limit).await?;
    let deliveries: Vec<DeliveryView> = found.iter().map(DeliveryView::from).collect();
    Ok(Json(json!({"deliveries": deliveries})))
}

pub async fn get_delivery(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, webhook_id, delivery_id)): PathParams<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::WebhooksRead)?;
    let app = app_for_webhooks(&state, &caller, &app_id).await?;
    let delivery = ops::get_delivery(&state, &caller, &app, &webhook_id, &delivery_id).await?;
    Ok(Json(json!({"delivery": DeliveryView::from(&delivery)})))
}

pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((app_id, webhook_id, delivery_id)): PathParams<(String, String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let app = app_for_webhooks(&state, &caller, &app_id).await?;
    let delivery = ops::redeliver(&state, &write, &caller, &app, &webhook_id, &delivery_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"delivery": DeliveryView::from(&delivery)})),
    ))
}
