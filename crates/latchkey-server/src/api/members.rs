//! Teams (issue 20): `/v1/account/members` and `/v1/account/invites`.
//! Accepting an invite happens in the dashboard (`/dashboard/invite`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::extract::{Caller, JsonBody, Paging, PathParams};
use crate::ops::{WriteGuard, members};
use crate::state::AppState;
use crate::views::{InviteView, MemberView, PageMeta};

/// Where an invite is accepted, with its token.
pub fn accept_path(token: &str) -> String {
    format!("/dashboard/invite?token={token}")
}

pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let found = members::list_members(&state, &caller, &page).await?;
    let items: Vec<MemberView> = found.items.iter().map(MemberView::from).collect();
    Ok(Json(json!({
        "members": items,
        "meta": PageMeta::of(&found, |m| &m.id),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    role: String,
}

pub async fn update_member(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(user_id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateMember>,
) -> ApiResult<Json<Value>> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let role = members::parse_role(&body.role)?;
    let member = members::set_role(&state, &write, &caller, &user_id, role).await?;
    Ok(Json(json!({"member": MemberView::from(&member)})))
}

pub async fn delete_member(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(user_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    members::remove_member(&state, &write, &caller, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    email: String,
    role: String,
}

pub async fn create_invite(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateInvite>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let role = members::parse_role(&body.role)?;
    let (invite, token) =
        members::create_invite(&state, &write, &caller, &body.email, role).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "invite": InviteView::of(&invite, state.now()),
            "token": token.expose(),
            "acceptPath": accept_path(token.expose()),
        })),
    ))
}

pub async fn list_invites(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let found = members::list_invites(&state, &caller, &page).await?;
    let now = state.now();
    let items: Vec<InviteView> = found.items.iter().map(|i| InviteView::of(i, now)).collect();
    Ok(Json(json!({
        "invites": items,
        "meta": PageMeta::of(&found, |i| &i.id),
    })))
}

pub async fn delete_invite(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(invite_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    members::revoke_invite(&state, &write, &caller, &invite_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
