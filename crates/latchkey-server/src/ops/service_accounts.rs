//! Service accounts, their app grants, and the access check for their
//! keys: user-account keys only.

use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::policy::Permission;
use latchkey_store::{Page, PageOf, ServiceAccount};

use super::{Caller, WriteGuard, display_name};
use crate::audit;
use crate::audit::EventExt;
use crate::error::{ApiError, ApiResult, require};
use crate::state::AppState;

const NEEDS_USER_ACCOUNT: &str = "service accounts are managed with a user-account (act_) key";

fn caller_account(caller: &Caller) -> ApiResult<String> {
    require(
        caller.principal.may_manage_service_accounts(),
        "service account",
        NEEDS_USER_ACCOUNT,
    )?;
    caller
        .principal
        .account_id()
        .map(str::to_string)
        .ok_or_else(|| ApiError::forbidden(NEEDS_USER_ACCOUNT))
}

/// Loads a service account the caller may manage, or answers 403/404.
pub async fn load(state: &AppState, caller: &Caller, sa_id: &str) -> ApiResult<ServiceAccount> {
    require(
        caller.principal.may_manage_service_accounts(),
        "service account",
        NEEDS_USER_ACCOUNT,
    )?;
    let sa = state
        .store
        .get_service_account(sa_id)
        .await?
        .ok_or_else(|| ApiError::not_found("service account"))?;
    require(
        caller.principal.may_manage_service_account(&sa.account_id),
        "service account",
        NEEDS_USER_ACCOUNT,
    )?;
    Ok(sa)
}

/// Creates a service account in the caller's account, audited and indexed.
pub async fn create_service_account(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    name: &str,
) -> ApiResult<ServiceAccount> {
    caller.require(Permission::ServiceAccountsWrite)?;
    let account_id = caller_account(caller)?;
    let sa = ServiceAccount {
        id: new_id(&state.rng, IdKind::ServiceAccount),
        account_id,
        display_name: display_name(name, "displayName")?,
        created_at: state.now(),
    };
    let event = audit::event(
        state,
        caller,
        "serviceAccount.created",
        "serviceAccount",
        &sa.id,
    );
    state.store.create_service_account(&sa, &event).await?;
    if !state.index.insert_service_account(&sa.id, &sa.account_id) {
        return Err(ApiError::not_found("account"));
    }
    Ok(sa)
}

/// A page of the service accounts of the caller's account.
pub async fn list_service_accounts(
    state: &AppState,
    caller: &Caller,
    page: &Page,
) -> ApiResult<PageOf<ServiceAccount>> {
    caller.require(Permission::ServiceAccountsRead)?;
    let account_id = caller_account(caller)?;
    Ok(state.store.list_service_accounts(&account_id, page).await?)
}

/// Deletes a service account loaded with [`load`]: its keys stop at once.
pub async fn delete_service_account(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    sa: &ServiceAccount,
) -> ApiResult<()> {
    caller.require(Permission::ServiceAccountsWrite)?;
    let event = audit::event(
        state,
        caller,
        "serviceAccount.deleted",
        "serviceAccount",
        &sa.id,
    );
    if !state.store.delete_service_account(&sa.id, &event).await? {
        return Err(ApiError::not_found("service account"));
    }
    state.index.remove_service_account(&sa.id);
    Ok(())
}

/// The app must exist in the service account's own account.
async fn grantable_app(state: &AppState, sa: &ServiceAccount, app_id: &str) -> ApiResult<()> {
    match state.store.get_app(app_id).await? {
        Some(app) if app.account_id == sa.account_id => Ok(()),
        _ => Err(ApiError::not_found("app")),
    }
}

/// Lets a service account (loaded with [`load`]) reach an app of its own
/// account.
pub async fn grant_app(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    sa: &ServiceAccount,
    app_id: &str,
) -> ApiResult<()> {
    caller.require(Permission::ServiceAccountsWrite)?;
    grantable_app(state, sa, app_id).await?;
    let event =
        audit::event(state, caller, "grant.created", "serviceAccount", &sa.id).in_app(app_id);
    state
        .store
        .grant_app(&sa.id, app_id, state.now(), &event)
        .await?;
    if !state.index.grant(&sa.id, app_id) {
        return Err(ApiError::not_found("app"));
    }
    Ok(())
}

/// Ends a service account's grant on an app.
pub async fn revoke_app(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    sa: &ServiceAccount,
    app_id: &str,
) -> ApiResult<()> {
    caller.require(Permission::ServiceAccountsWrite)?;
    grantable_app(state, sa, app_id).await?;
    let event =
        audit::event(state, caller, "grant.deleted", "serviceAccount", &sa.id).in_app(app_id);
    if !state.store.revoke_app(&sa.id, app_id, &event).await? {
        return Err(ApiError::not_found("grant"));
    }
    state.index.revoke_grant(&sa.id, app_id);
    Ok(())
}
