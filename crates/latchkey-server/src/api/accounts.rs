//! Operator endpoints for accounts, and `GET /v1/account`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::policy::Permission;
use latchkey_core::{Principal, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, JsonBodyOrEmpty, Paging, PathParams};
use crate::ops::keys::{self, NO_APP, RotateKey};
use crate::ops::{WriteGuard, accounts};
use crate::state::AppState;
use crate::views::{AccountView, PageMeta};
use latchkey_store::KeyOwnerRef;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateAccount {
    display_name: String,
    #[serde(deserialize_with = "crate::json_values::object")]
    owner: Owner,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    email: String,
    password: String,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateAccount>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let (new, secret) = accounts::create_account(
        &state,
        &write,
        &caller,
        &body.display_name,
        &body.owner.email,
        body.owner.password,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "account": AccountView::from(&new.account),
            "user": {"id": new.owner.id, "email": new.owner.email},
            "key": {"id": new.key.id, "secret": secret},
        })),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    accounts::require_operator(&caller)?;
    let found = state.store.list_accounts(&page).await?;
    let accounts: Vec<AccountView> = found.items.iter().map(AccountView::from).collect();
    Ok(Json(json!({
        "accounts": accounts,
        "meta": PageMeta::of(&found, |a| &a.id),
    })))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(account_id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    accounts::require_operator(&caller)?;
    let account = state
        .store
        .get_account(&account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(json!({"account": AccountView::from(&account)})))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(account_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    accounts::delete_account(&state, &write, &caller, &account_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own user-account keys.
pub async fn list_own_keys(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let user = accounts::user_account_of(&caller)?;
    let owner = KeyOwnerRef::UserAccount(user);
    Ok(Json(
        keys::list_keys(&state, &caller, NO_APP, owner, &page).await?,
    ))
}

/// A user-account key rotates itself (or another key of the same user
/// account). User-account keys cannot be deleted through the API; rotating
/// with `graceSeconds: 0` ends the old key at once.
pub async fn rotate_own_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(key_id): PathParams<String>,
    JsonBodyOrEmpty(body): JsonBodyOrEmpty<RotateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let write = WriteGuard::acquire(&state, &caller).await?;
    let user = accounts::user_account_of(&caller)?;
    let owner = KeyOwnerRef::UserAccount(user);
    let out = keys::rotate_key(&state, &write, &caller, NO_APP, owner, &key_id, &body).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Who the caller is.
pub async fn whoami(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Permission::AccountRead)?;
    let p = &caller.principal;
    let mut body = match p {
        Principal::Operator { .. } => json!({"scope": "operator"}),
        // Refused before any handler but verification's (`extract.rs`).
        Principal::Verifier { .. } => json!({"scope": "verifier"}),
        Principal::AppUser {
            key_id,
            account_id,
            app_id,
            external_id,
        } => json!({"scope": "appUser", "keyId": key_id, "accountId": account_id,
                    "appId": app_id, "userId": external_id}),
        Principal::App {
            key_id,
            account_id,
            app_id,
        } => json!({"scope": "app", "keyId": key_id, "accountId": account_id, "appId": app_id}),
        Principal::UserAccount {
            key_id,
            account_id,
            user_account_id,
        } => json!({"scope": "account", "keyId": key_id, "accountId": account_id,
                    "userAccountId": user_account_id}),
        Principal::ServiceAccount {
            key_id,
            account_id,
            service_account_id,
        } => json!({"scope": "account", "keyId": key_id, "accountId": account_id,
                    "serviceAccountId": service_account_id}),
        Principal::Session {
            account_id,
            user_account_id,
        } => json!({"scope": "account", "accountId": account_id,
                    "userAccountId": user_account_id}),
    };
    // An appUser credential lives in a browser: it learns nothing about the
    // account beyond the ids it already carries.
    if let Some(account_id) = p.account_id()
        && p.scope() != Some(Scope::AppUser)
        && let Some(account) = state.store.get_account(account_id).await?
    {
        body["account"] = json!(AccountView::from(&account));
    }
    if let Principal::UserAccount {
        user_account_id, ..
    }
    | Principal::Session {
        user_account_id, ..
    } = p
        && let Some(user) = state.store.get_user_account(user_account_id).await?
    {
        body["user"] = json!({"id": user.id, "email": user.email, "role": user.role.as_str()});
    }
    Ok(Json(body))
}
