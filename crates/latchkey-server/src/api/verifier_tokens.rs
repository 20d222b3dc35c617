//! Operator endpoints for verifier tokens: the credentials of the
//! operator's API servers, which may call only `/v1/verify` and
//! `/v1/introspect` (so those servers need not hold the operator token).
//! A token is shown once, when created; the store and the index keep only
//! its SHA-256. A deleted token is refused by the very next request on
//! this node, and on other nodes once they apply the change feed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::crypto::sha256;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::secret::{self, VERIFIER_TOKEN_PREFIX};
use latchkey_store::VerifierToken;
use serde::Deserialize;
use serde_json::{Value, json};

use super::display_name;
use crate::audit;
use crate::audit::EventExt;
use crate::error::{ApiError, ApiResult, require};
use crate::extract::{Caller, JsonBody, Paging, PathParams, WriteGuard};
use crate::state::AppState;
use crate::views::{PageMeta, VerifierTokenView};

const OPERATOR_ONLY: &str = "only the operator token may manage verifier tokens";

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
    let _write = WriteGuard::acquire(&state, &caller).await?;
    require(caller.principal.may_operate(), "endpoint", OPERATOR_ONLY)?;
    let name = display_name(&body.display_name, "displayName")?;
    let token = secret::generate(&state.rng, VERIFIER_TOKEN_PREFIX);
    let hash = sha256(token.expose().as_bytes());
    let stored = VerifierToken {
        id: new_id(&state.rng, IdKind::VerifierToken),
        display_name: name,
        token_hash: hash.to_vec(),
        created_at: state.now(),
    };
    let event = audit::event(
        &state,
        &caller,
        "verifierToken.created",
        "verifierToken",
        &stored.id,
    )
    .detail("displayName", json!(stored.display_name));
    state.store.create_verifier_token(&stored, &event).await?;
    state.index.insert_verifier_token(&stored.id, hash);
    let mut view = VerifierTokenView::from(&stored);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(json!({"verifierToken": view}))))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    require(caller.principal.may_operate(), "endpoint", OPERATOR_ONLY)?;
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
    require(caller.principal.may_operate(), "endpoint", OPERATOR_ONLY)?;
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
    let _write = WriteGuard::acquire(&state, &caller).await?;
    require(caller.principal.may_operate(), "endpoint", OPERATOR_ONLY)?;
    let event = audit::event(
        &state,
        &caller,
        "verifierToken.deleted",
        "verifierToken",
        &token_id,
    );
    if !state.store.delete_verifier_token(&token_id, &event).await? {
        return Err(ApiError::not_found("verifier token"));
    }
    state.index.remove_verifier_token(&token_id);
    Ok(StatusCode::NO_CONTENT)
}
