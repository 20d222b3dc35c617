//! Apps: created and listed with account scope; read and configured with
//! app scope (or account scope on the app); deleted with account scope.

use latchkey_core::Principal;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::policy::Permission;
use latchkey_store::{App, Page, PageOf};
use serde_json::{Map, Value, json};

use super::{
    Caller, WriteGuard, app_ref, check_object_size, display_name, load_app, merge_patch, policy,
};
use crate::audit::{self, EventExt};
use crate::error::{ApiError, ApiResult, require};
use crate::state::AppState;

const NEEDS_ACCOUNT: &str = "this needs account scope (a user-account or service-account key)";
const NEEDS_APP: &str = "this needs app scope (an app key) or account scope";

/// The caller's account, and its service account id if it is one; 403 for
/// credentials without account scope.
pub fn account_caller(caller: &Caller) -> ApiResult<(&str, Option<&str>)> {
    require(
        caller.principal.may_use_account_scope(),
        "app",
        NEEDS_ACCOUNT,
    )?;
    let account_id = caller
        .principal
        .account_id()
        .ok_or_else(|| ApiError::forbidden(NEEDS_ACCOUNT))?;
    let service_account = match &caller.principal {
        Principal::ServiceAccount {
            service_account_id, ..
        } => Some(service_account_id.as_ref()),
        _ => None,
    };
    Ok((account_id, service_account))
}

/// Creates an app in the caller's account (account scope), audited and
/// indexed.
pub async fn create_app(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    name: &str,
    settings_patch: Option<&Map<String, Value>>,
) -> ApiResult<App> {
    caller.require(Permission::AppsWrite)?;
    let (account_id, creator) = account_caller(caller)?;
    let display_name = display_name(name, "displayName")?;
    // New apps refuse server credentials sent from a browser unless told
    // otherwise.
    let mut settings = Map::new();
    settings.insert(policy::BLOCK_BROWSER_SECRETS.into(), Value::Bool(true));
    if let Some(patch) = settings_patch {
        merge_patch(&mut settings, patch);
    }
    check_object_size(&settings, "settings")?;
    policy::validate(&mut settings)?;
    let app = App {
        id: new_id(&state.rng, IdKind::App),
        account_id: account_id.to_string(),
        display_name,
        settings,
        created_at: state.now(),
    };
    let event = audit::event(state, caller, "app.created", "app", &app.id)
        .in_app(&app.id)
        .detail("displayName", json!(app.display_name));
    state.store.create_app(&app, creator, &event).await?;
    // The account (or the creating service account) may have been deleted
    // while this request ran; then the store's cascade removed the app too.
    if !state.index.insert_app(&app.id, &app.account_id) {
        return Err(ApiError::not_found("account"));
    }
    if let Some(sa) = creator
        && !state.index.grant(sa, &app.id)
    {
        return Err(ApiError::not_found("service account"));
    }
    state
        .index
        .set_app_policy(&app.id, policy::app_policy(&app.settings));
    Ok(app)
}

/// A page of the apps the caller reaches: its account's, or for a service
/// account only the apps it created or was granted.
pub async fn list_apps(state: &AppState, caller: &Caller, page: &Page) -> ApiResult<PageOf<App>> {
    caller.require(Permission::AppsRead)?;
    let (account_id, only) = account_caller(caller)?;
    Ok(state.store.list_apps(account_id, only, page).await?)
}

/// Loads an app the caller may read and configure (app scope, or account
/// scope on the app).
pub async fn configurable_app(state: &AppState, caller: &Caller, app_id: &str) -> ApiResult<App> {
    let app = load_app(state, app_id).await?;
    require(
        caller
            .principal
            .may_configure_app(app_ref(state, &caller.principal, &app)),
        "app",
        NEEDS_APP,
    )?;
    Ok(app)
}

/// Renames an app and/or merges a settings patch (RFC 7396), validated,
/// audited, and applied to the index. The app was loaded with
/// [`configurable_app`] (or an equivalent check).
pub async fn update_app(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    mut app: App,
    new_name: Option<&str>,
    settings_patch: Option<&Map<String, Value>>,
) -> ApiResult<App> {
    caller.require(Permission::SettingsWrite)?;
    // The default limit is the limit of every key of the app that sets
    // none, perhaps the caller's own: a key with a policy may not change it.
    if caller.policy.is_some()
        && settings_patch.is_some_and(|p| p.contains_key(policy::DEFAULT_KEY_RATELIMIT))
    {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_permissions",
            "a key with a policy cannot change settings.defaultKeyRatelimit (it may be its own \
             limit); use a key without a policy or the dashboard",
        ));
    }
    if let Some(name) = new_name {
        app.display_name = display_name(name, "displayName")?;
    }
    if let Some(patch) = settings_patch {
        merge_patch(&mut app.settings, patch);
        check_object_size(&app.settings, "settings")?;
        policy::validate(&mut app.settings)?;
    }
    let mut changed = Vec::new();
    if new_name.is_some() {
        changed.push("displayName");
    }
    if let Some(patch) = settings_patch {
        changed.extend(patch.keys().map(String::as_str));
    }
    let event = audit::event(state, caller, "app.updated", "app", &app.id)
        .in_app(&app.id)
        .detail("changed", json!(changed));
    if !state.store.update_app(&app, &event).await? {
        return Err(ApiError::not_found("app"));
    }
    state
        .index
        .set_app_policy(&app.id, policy::app_policy(&app.settings));
    Ok(app)
}

/// Deletes an app (account scope on it): its keys stop at once.
pub async fn delete_app(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    app_id: &str,
) -> ApiResult<()> {
    caller.require(Permission::AppsWrite)?;
    let app = load_app(state, app_id).await?;
    require(
        caller
            .principal
            .may_manage_app(app_ref(state, &caller.principal, &app)),
        "app",
        NEEDS_ACCOUNT,
    )?;
    let event = audit::event(state, caller, "app.deleted", "app", &app.id).in_app(&app.id);
    if !state.store.delete_app(&app.id, &event).await? {
        return Err(ApiError::not_found("app"));
    }
    state.index.remove_app(&app.id);
    Ok(())
}
