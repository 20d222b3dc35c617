//! `/v1/verifierTokens`, the operator's; the operations are in
//! `crate::ops::verifier_tokens`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, Paging, PathParams};
use crate::ops::WriteGuard;
use crate::ops::verifier_tokens::{self as ops, require_operator};
use crate::state::AppState;
use crate::views::{PageMeta, VerifierTokenView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateVerifierToken {
    display_name: String,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateVerifierToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let (stored, token) =
        ops::create_verifier_token(&state, &write, &caller, &body.display_name).await?;
    let mut view = VerifierTokenView::from(&stored);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(json!({"verifierToken": view}))))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    require_operator(&caller)?;
    let found = state.store.list_verifier_tokens(&page).await?;
    let tokens: Vec<VerifierTokenView> = found.items.iter().map(VerifierTokenView::from).collect();
    Ok(Json(json!({
        "verifierTokens": tokens,
        "meta": PageMeta::of(&found, |t| &t.id),
    })))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(token_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    require_operator(&caller)?;
    let token = state
        .store
        .get_verifier_token(&token_id)
        .await?
        .ok_or_else(|| ApiError::not_found("verifier token"))?;
    Ok(Json(
        json!({"verifierToken": VerifierTokenView::from(&token)}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(token_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    ops::delete_verifier_token(&state, &write, &caller, &token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
