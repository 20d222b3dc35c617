//! Operator endpoints for accounts, and `GET /v1/account`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::{Principal, Scope, password};
use serde::Deserialize;
use serde_json::{Value, json};

use super::display_name;
use super::keys::{self, KeyContext, RotateKey};
use crate::audit::{self, EventExt};
use crate::bootstrap::{new_account, normalize_email};
use crate::error::{ApiError, ApiResult, require};
use crate::extract::{Caller, JsonBody, JsonBodyOrEmpty, Paging, PathParams, WriteGuard};
use crate::state::AppState;
use crate::views::{AccountView, PageMeta};
use latchkey_store::KeyOwnerRef;

const OPERATOR_ONLY: &str = "only the operator token may manage accounts";

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
    let _write = WriteGuard::acquire(&state, &caller).await?;
    require(caller.principal.may_operate(), "account", OPERATOR_ONLY)?;
    let name = display_name(&body.display_name, "displayName")?;
    let email = normalize_email(&body.owner.email)
        .ok_or_else(|| ApiError::bad_request("owner.email must be an email address"))?;
    password::check_rules(&body.owner.password)
        .map_err(|e| ApiError::bad_request(format!("owner.password: {e}")))?;
    let pw = body.owner.password;
    // argon2id takes tens of milliseconds of CPU: keep it off the runtime.
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| ApiError::bad_request(format!("owner.password: {e}")))?;
    let (new, secret) = new_account(&state.rng, &state.master, state.now(), &name, &email, hash)
        .map_err(|e| {
            tracing::error!(error = %e, "creating an account");
            ApiError::internal()
        })?;
    let event = audit::event(
        &state,
        &caller,
        "account.created",
        "account",
        &new.account.id,
    )
    .in_account(&new.account.id)
    .detail(
        "owner",
        json!({"id": new.owner.id, "email": new.owner.email}),
    );
    state.store.create_account(&new, &event).await?;
    state.index.insert_account(&new.account.id);
    let live = crate::bootstrap::live_key(&new.key, &state.master).map_err(|e| {
        tracing::error!(error = %e, "indexing a new key");
        ApiError::internal()
    })?;
    if !state.index.insert_key(live) {
        // Deleted by the operator while this request ran.
        return Err(ApiError::not_found("account"));
    }
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
    require(caller.principal.may_operate(), "account", OPERATOR_ONLY)?;
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
    require(caller.principal.may_operate(), "account", OPERATOR_ONLY)?;
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
    let _write = WriteGuard::acquire(&state, &caller).await?;
    require(caller.principal.may_operate(), "account", OPERATOR_ONLY)?;
    let event = audit::event(&state, &caller, "account.deleted", "account", &account_id)
        .in_account(&account_id);
    if !state.store.delete_account(&account_id, &event).await? {
        return Err(ApiError::not_found("account"));
    }
    state.index.remove_account(&account_id);
    Ok(StatusCode::NO_CONTENT)
}

const NEEDS_USER_ACCOUNT_KEY: &str =
    "these are the keys of a user account: use a user-account (act_) key";

/// The user account behind an `act_` key, or 403.
fn user_account_of(caller: &Caller) -> ApiResult<&str> {
    match &caller.principal {
        Principal::UserAccount {
            user_account_id, ..
        } => Ok(user_account_id),
        _ => Err(ApiError::forbidden(NEEDS_USER_ACCOUNT_KEY)),
    }
}

/// The caller's own user-account keys.
pub async fn list_own_keys(
    State(state): State<AppState>,
    caller: Caller,
    Paging(page): Paging,
) -> ApiResult<Json<Value>> {
    let user = user_account_of(&caller)?;
    keys::list_keys(
        &state,
        KeyContext { app: None },
        KeyOwnerRef::UserAccount(user),
        &page,
    )
    .await
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
    let _write = WriteGuard::acquire(&state, &caller).await?;
    let user = user_account_of(&caller)?;
    let out = keys::rotate_key(
        &state,
        &caller,
        KeyContext { app: None },
        KeyOwnerRef::UserAccount(user),
        &key_id,
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Who the caller is.
pub async fn whoami(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
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
        body["user"] = json!({"id": user.id, "email": user.email});
    }
    Ok(Json(body))
}
