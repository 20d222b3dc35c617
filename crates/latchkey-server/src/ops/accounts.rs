//! Accounts (the operator creates and deletes them) and the keys of the
//! caller's own user account.

use latchkey_core::{Principal, SecretString, password};
use latchkey_store::NewAccount;
use serde_json::json;

use super::{Caller, WriteGuard, display_name};
use crate::audit::{self, EventExt};
use crate::bootstrap::{new_account, normalize_email};
use crate::error::{ApiError, ApiResult, require};
use crate::state::AppState;

const OPERATOR_ONLY: &str = "only the operator token may manage accounts";

/// The operator's check on every account endpoint.
pub fn require_operator(caller: &Caller) -> ApiResult<()> {
    require(caller.principal.may_operate(), "account", OPERATOR_ONLY)
}

/// Creates an account with its owner (who signs in to the dashboard with
/// `email` and `password`) and the owner's first key, whose secret is
/// returned once.
pub async fn create_account(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    name: &str,
    email: &str,
    owner_password: String,
) -> ApiResult<(NewAccount, SecretString)> {
    require_operator(caller)?;
    let name = display_name(name, "displayName")?;
    let email = normalize_email(email)
        .ok_or_else(|| ApiError::bad_request("owner.email must be an email address"))?;
    password::check_rules(&owner_password)
        .map_err(|e| ApiError::bad_request(format!("owner.password: {e}")))?;
    // argon2id takes tens of milliseconds of CPU: keep it off the runtime.
    let hash = tokio::task::spawn_blocking(move || password::hash(&owner_password))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| ApiError::bad_request(format!("owner.password: {e}")))?;
    let (new, secret) = new_account(&state.rng, &state.master, state.now(), &name, &email, hash)
        .map_err(|e| {
            tracing::error!(error = %e, "creating an account");
            ApiError::internal()
        })?;
    let event = audit::event(state, caller, "account.created", "account", &new.account.id)
        .in_account(&new.account.id)
        .detail(
            "owner",
            json!({"id": new.owner.id, "email": new.owner.email}),
        );
    state.store.create_account(&new, &event).await?;
    state.index.insert_account(&new.account.id);
    state
        .index
        .set_member(&new.owner.id, &new.account.id, new.owner.role);
    let live = crate::indexing::live_key(&new.key, &state.master, state.limiter.is_leased())
        .map_err(|e| {
            tracing::error!(error = %e, "indexing a new key");
            ApiError::internal()
        })?;
    if !state.index.insert_key(live) {
        // Deleted by the operator while this request ran.
        return Err(ApiError::not_found("account"));
    }
    Ok((new, secret))
}

/// Deletes an account with everything in it: its keys stop at once.
pub async fn delete_account(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    account_id: &str,
) -> ApiResult<()> {
    require_operator(caller)?;
    let event = audit::event(state, caller, "account.deleted", "account", account_id)
        .in_account(account_id);
    if !state.store.delete_account(account_id, &event).await? {
        return Err(ApiError::not_found("account"));
    }
    state.index.remove_account(account_id);
    Ok(())
}

const NEEDS_USER_ACCOUNT_KEY: &str =
    "these are the keys of a user account: use a user-account (act_) key";

/// The user account behind an `act_` key, or 403.
pub fn user_account_of(caller: &Caller) -> ApiResult<&str> {
    match &caller.principal {
        Principal::UserAccount {
            user_account_id, ..
        } => Ok(user_account_id),
        _ => Err(ApiError::forbidden(NEEDS_USER_ACCOUNT_KEY)),
    }
}
