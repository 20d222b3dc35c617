//! `/v1/verifierTokens` and `/v1/replicaTokens`, the operator's; the
//! operations are in `crate::ops::verifier_tokens`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_store::TokenKind;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, Paging, PathParams};
use crate::ops::WriteGuard;
use crate::ops::verifier_tokens::{self as ops, require_operator};
use crate::state::AppState;
use crate::views::{PageMeta, VerifierTokenView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateToken {
    display_name: String,
}

/// The member that holds one token, and the list, in responses.
fn member(kind: TokenKind) -> (&'static str, &'static str) {
    match kind {
        TokenKind::Verifier => ("verifierToken", "verifierTokens"),
        TokenKind::Replica => ("replicaToken", "replicaTokens"),
    }
}

async fn create(
    state: AppState,
    caller: Caller,
    kind: TokenKind,
    body: CreateToken,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let (stored, token) =
        ops::create_token(&state, &write, &caller, kind, &body.display_name).await?;
    let mut view = VerifierTokenView::from(&stored);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(json!({member(kind).0: view}))))
}

async fn list(
    state: AppState,
    caller: Caller,
    kind: TokenKind,
    page: latchkey_store::Page,
) -> ApiResult<Json<Value>> {
    require_operator(&caller, kind)?;
    let found = state.store.list_verifier_tokens(kind, &page).await?;
    let tokens: Vec<VerifierTokenView> = found.items.iter().map(VerifierTokenView::from).collect();
    Ok(Json(json!({
        member(kind).1: tokens,
        "meta": PageMeta::of(&found, |t| &t.id),
    })))
}

async fn get(
    state: AppState,
    caller: Caller,
    kind: TokenKind,
    token_id: String,
) -> ApiResult<Json<Value>> {
    let token = ops::get_token(&state, &caller, kind, &token_id).await?;
    Ok(Json(
        json!({member(kind).0: VerifierTokenView::from(&token)}),
    ))
}

async fn delete(
    state: AppState,
    caller: Caller,
    kind: TokenKind,
    token_id: String,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    ops::delete_token(&state, &write, &caller, kind, &token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_verifier(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    create(state, caller, TokenKind::Verifier, body).await
}

pub async fn list_verifier(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    list(state, caller, TokenKind::Verifier, page).await
}

pub async fn get_verifier(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(token_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    get(state, caller, TokenKind::Verifier, token_id).await
}

pub async fn delete_verifier(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(token_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    delete(state, caller, TokenKind::Verifier, token_id).await
}

pub async fn create_replica(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    create(state, caller, TokenKind::Replica, body).await
}

pub async fn list_replica(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    list(state, caller, TokenKind::Replica, page).await
}

pub async fn get_replica(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(token_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    get(state, caller, TokenKind::Replica, token_id).await
}

pub async fn delete_replica(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(token_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    delete(state, caller, TokenKind::Replica, token_id).await
}
