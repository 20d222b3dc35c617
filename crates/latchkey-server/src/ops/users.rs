//! App users: managed with app scope (or account scope on the app); an
//! appUser credential reads and updates only its own record, which its
//! first use creates. Also the appUser tokens Latchkey mints for a user.

use latchkey_core::Principal;
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::policy::Permission;
use latchkey_core::principal::UserAction;
use latchkey_store::{App, AppUser, Page, PageOf, StoreError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Caller, app_ref, check_object_size, load_app, merge_patch, policy};
use crate::audit::{self, EventExt};
use crate::error::{ApiError, ApiResult, require};
use crate::state::AppState;

const NEEDS_APP: &str = "this needs app scope (an app key) or account scope";
const MAX_PROFILE_FIELD: usize = 255;

/// Profile fields: absent leaves a field as it is, `null` clears it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    #[serde(default, deserialize_with = "present")]
    given_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    surname: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    email: Option<Option<String>>,
}

/// Tells a member given as `null` (Some(None)) from an absent one (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn check_external_id(id: &str) -> ApiResult<()> {
    latchkey_core::ids::check_external_id(id)
        .map_err(|e| ApiError::bad_request(format!("externalId is invalid: {e}")))
}

fn check_profile_field(value: &Option<Option<String>>, field: &str) -> ApiResult<()> {
    if let Some(Some(v)) = value
        && (v.chars().count() > MAX_PROFILE_FIELD || v.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(format!(
            "profile.{field} must be at most {MAX_PROFILE_FIELD} characters without control characters"
        )));
    }
    Ok(())
}

fn check_profile(p: &Profile) -> ApiResult<()> {
    check_profile_field(&p.given_name, "givenName")?;
    check_profile_field(&p.surname, "surname")?;
    check_profile_field(&p.email, "email")
}

/// Refuses an app outside the caller's reach with the very answer an app
/// that does not exist gets ("app not found"), before any user is looked
/// up: another tenant's app must be indistinguishable from no app.
fn refuse_unreachable(state: &AppState, caller: &Caller, app: &App) -> ApiResult<()> {
    let access = caller.principal.may_access_user(
        app_ref(state, &caller.principal, app),
        None,
        UserAction::Read,
    );
    if access == latchkey_core::Access::NotFound {
        return Err(ApiError::not_found("app"));
    }
    Ok(())
}

/// The app whose users the caller acts on, checked for `action`.
pub async fn app_for(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    user: Option<&str>,
    action: UserAction,
) -> ApiResult<App> {
    let app = load_app(state, app_id).await?;
    require(
        caller
            .principal
            .may_access_user(app_ref(state, &caller.principal, &app), user, action),
        if user.is_some() { "user" } else { "app" },
        NEEDS_APP,
    )?;
    Ok(app)
}

/// Creates a user of an app (app scope, or account scope on the app).
pub async fn create_user(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    external_id: String,
    profile: Option<Profile>,
    metadata: Option<Map<String, Value>>,
) -> ApiResult<AppUser> {
    caller.require(Permission::UsersWrite)?;
    let app = app_for(state, caller, app_id, None, UserAction::Manage).await?;
    check_external_id(&external_id)?;
    let profile = profile.unwrap_or_default();
    check_profile(&profile)?;
    let metadata = metadata.unwrap_or_default();
    check_object_size(&metadata, "metadata")?;
    let user = AppUser {
        id: new_id(&state.rng, IdKind::AppUser),
        app_id: app.id,
        external_id,
        given_name: profile.given_name.flatten(),
        surname: profile.surname.flatten(),
        email: profile.email.flatten(),
        metadata,
        created_at: state.now(),
    };
    let event = audit::event(state, caller, "user.created", "user", &user.id)
        .in_app(&user.app_id)
        .detail("externalId", json!(user.external_id));
    state.store.create_app_user(&user, &event).await?;
    Ok(user)
}

/// A page of an app's users.
pub async fn list_users(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    page: &Page,
) -> ApiResult<PageOf<AppUser>> {
    caller.require(Permission::UsersRead)?;
    let app = app_for(state, caller, app_id, None, UserAction::Manage).await?;
    Ok(state.store.list_app_users(&app.id, page).await?)
}

/// Finds the user named by the path for this caller. For an appUser caller
/// the path must name its own user; that user is created on first use.
pub async fn resolve(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    user: &str,
    action: UserAction,
) -> ApiResult<AppUser> {
    caller.require(match action {
        UserAction::Read => Permission::UsersRead,
        UserAction::Update | UserAction::Manage => Permission::UsersWrite,
    })?;
    let app = load_app(state, app_id).await?;
    // Outside the caller's reach: answer before touching the users table,
    // so timing tells nothing about the app's users. (Whether an app id
    // exists can show in timing on SQLite, where known apps are answered
    // from memory; app ids are random.)
    refuse_unreachable(state, caller, &app)?;
    let found = state.store.find_app_user(&app.id, user).await?;
    // Access is decided on the record's external id when it exists (a path
    // may name the user by usr_ id), else on the path itself.
    let external = found.as_ref().map_or(user, |u| u.external_id.as_str());
    require(
        caller.principal.may_access_user(
            app_ref(state, &caller.principal, &app),
            Some(external),
            action,
        ),
        "user",
        NEEDS_APP,
    )?;
    if let Some(u) = found {
        return Ok(u);
    }
    match &caller.principal {
        Principal::AppUser { external_id, .. } if external_id == user => {
            let new = AppUser {
                id: new_id(&state.rng, IdKind::AppUser),
                app_id: app.id.clone(),
                external_id: external_id.clone(),
                given_name: None,
                surname: None,
                email: None,
                metadata: Map::new(),
                created_at: state.now(),
            };
            let event = audit::event(state, caller, "user.created", "user", &new.id)
                .in_app(&new.app_id)
                .detail("externalId", json!(new.external_id))
                .detail("firstUse", json!(true));
            match state.store.create_app_user(&new, &event).await {
                Ok(()) => Ok(new),
                // Created by a concurrent first request: read it back.
                Err(StoreError::Conflict(_)) => state
                    .store
                    .find_app_user(&app.id, external_id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("user")),
                Err(e) => Err(e.into()),
            }
        }
        _ => Err(ApiError::not_found("user")),
    }
}

/// Changes a user's profile and/or merges a metadata patch (RFC 7396).
pub async fn update_user(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    user: &str,
    profile: Option<Profile>,
    metadata: Option<&Map<String, Value>>,
) -> ApiResult<AppUser> {
    caller.require(Permission::UsersWrite)?;
    let mut user = resolve(state, caller, app_id, user, UserAction::Update).await?;
    if let Some(p) = profile {
        check_profile(&p)?;
        if let Some(v) = p.given_name {
            user.given_name = v;
        }
        if let Some(v) = p.surname {
            user.surname = v;
        }
        if let Some(v) = p.email {
            user.email = v;
        }
    }
    if let Some(patch) = metadata {
        merge_patch(&mut user.metadata, patch);
        check_object_size(&user.metadata, "metadata")?;
    }
    let event = audit::event(state, caller, "user.updated", "user", &user.id)
        .in_app(&user.app_id)
        .detail("externalId", json!(user.external_id));
    if !state.store.update_app_user(&user, &event).await? {
        return Err(ApiError::not_found("user"));
    }
    Ok(user)
}

/// Deletes a user of an app.
pub async fn delete_user(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    user: &str,
) -> ApiResult<()> {
    caller.require(Permission::UsersWrite)?;
    let app = load_app(state, app_id).await?;
    refuse_unreachable(state, caller, &app)?;
    let found = state.store.find_app_user(&app.id, user).await?;
    let external = found.as_ref().map_or(user, |u| u.external_id.as_str());
    require(
        caller.principal.may_access_user(
            app_ref(state, &caller.principal, &app),
            Some(external),
            UserAction::Manage,
        ),
        "user",
        NEEDS_APP,
    )?;
    let found = found.ok_or_else(|| ApiError::not_found("user"))?;
    let event = audit::event(state, caller, "user.deleted", "user", &found.id)
        .in_app(&app.id)
        .detail("externalId", json!(found.external_id));
    if !state
        .store
        .delete_app_user(&app.id, &found.id, &event)
        .await?
    {
        return Err(ApiError::not_found("user"));
    }
    Ok(())
}

/// How a minted token is signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MintAlg {
    /// HS256 with an app key's secret (the default): the token carries
    /// that key's policy, and verifies only at Latchkey.
    #[default]
    Hs256,
    /// EdDSA with the app's signing key (`ops::signing_keys`): anyone
    /// with the app's JWKS verifies it.
    EdDsa,
}

impl MintAlg {
    /// The `alg` of a mint request (absent: HS256).
    pub fn parse(alg: Option<&str>) -> ApiResult<Self> {
        match alg {
            None | Some("HS256") => Ok(MintAlg::Hs256),
            Some("EdDSA") => Ok(MintAlg::EdDsa),
            Some(_) => Err(ApiError::bad_request(
                "alg must be HS256 (the default: signed with an app key's secret) or EdDSA \
                 (signed with the app's signing key, published at /v1/apps/{appId}/jwks.json)",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MintAlg::Hs256 => "HS256",
            MintAlg::EdDsa => super::signing_keys::MINTED_ALG,
        }
    }
}

/// The most audiences a minted token names, and the longest one.
const MAX_AUDIENCES: usize = 10;
const MAX_AUDIENCE_LEN: usize = 256;

/// The `aud` of a mint request (RFC 7519 §4.1.3): one audience or a list,
/// each a non-empty string of at most 256 bytes without control
/// characters (so that a token stays well under the 8 KiB Latchkey
/// reads); the value the token carries, as given.
pub fn parse_audience(aud: Option<&Value>) -> ApiResult<Option<Value>> {
    const WHAT: &str = "aud must be a string, or a list of 1 to 10 strings, each 1 to 256 \
                        bytes (UTF-8) without control characters (the services that will \
                        accept the token)";
    let one_ok = |v: &Value| {
        v.as_str().is_some_and(|s| {
            !s.is_empty() && s.len() <= MAX_AUDIENCE_LEN && !s.chars().any(char::is_control)
        })
    };
    match aud {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::String(_)) if one_ok(v) => Ok(Some(v.clone())),
        Some(Value::Array(list))
            if (1..=MAX_AUDIENCES).contains(&list.len()) && list.iter().all(one_ok) =>
        {
            Ok(Some(Value::Array(list.clone())))
        }
        Some(_) => Err(ApiError::bad_request(WHAT)),
    }
}

/// Default and bounds of a minted token's lifetime.
const DEFAULT_TOKEN_TTL: i64 = 3600;
const TOKEN_TTL_RANGE: (i64, i64) = (60, 86_400);

/// Mints an appUser JWT for one user, for platforms that would rather not
/// sign tokens themselves: HS256 with the app's newest live key with a
/// secret, or EdDSA with the app's signing key. The lifetime is capped by
/// the app's `maxTokenTtlSeconds`. An EdDSA token names the app's issuer
/// (`iss`, [`super::signing_keys::issuer`]); either names `audience` as
/// `aud` when given ([`parse_audience`]).
/// Returns the token and when it expires.
pub async fn mint_token(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    user: String,
    ttl_seconds: Option<i64>,
    alg: MintAlg,
    audience: Option<Value>,
) -> ApiResult<(String, i64)> {
    caller.require(Permission::TokensMint)?;
    let app = app_for(state, caller, app_id, None, UserAction::Manage).await?;
    let ttl = ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL);
    let (lo, hi) = TOKEN_TTL_RANGE;
    if !(lo..=hi).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttlSeconds must be from {lo} to {hi}"
        )));
    }
    let ttl = match policy::max_token_ttl(&app.settings) {
        Some(max) => ttl.min(max),
        None => ttl,
    };
    let external_id = match state.store.find_app_user(&app.id, &user).await? {
        Some(u) => u.external_id,
        None => {
            // Not created yet: the token's first use creates the user.
            latchkey_core::ids::check_external_id(&user)
                .map_err(|_| ApiError::not_found("user"))?;
            user
        }
    };
    let now = state.now();
    let mut expires_at = now.saturating_add(ttl);
    // An EdDSA token outlives nothing its minting key would not: the
    // signing key verifies it whatever happens to the key that asked.
    if alg == MintAlg::EdDsa
        && let Some(key_expiry) = caller
            .principal
            .key_id()
            .and_then(|id| state.index.key(id))
            .and_then(|k| k.expires_at())
    {
        expires_at = expires_at.min(key_expiry);
    }
    let mut claims = json!({
        "scope": "appUser",
        "userId": external_id,
        "iat": now,
        "exp": expires_at,
    });
    if let Some(members) = claims.as_object_mut() {
        if alg == MintAlg::EdDsa {
            members.insert(
                "iss".into(),
                json!(super::signing_keys::issuer(state, &app.id)),
            );
        }
        if let Some(aud) = &audience {
            members.insert("aud".into(), aud.clone());
        }
    }
    let (token, kid) = match alg {
        MintAlg::Hs256 => {
            let signing = signing_key(state, caller, &app.id, now).await?;
            let token = signing.sign_jwt(&claims).ok_or_else(|| {
                ApiError::conflict(
                    "this key is a public key and holds no secret to sign with: sign the \
                     appUser token with its private key, or mint with a key that has a secret",
                )
            })?;
            (token, signing.id.to_string())
        }
        MintAlg::EdDsa => {
            super::signing_keys::may_mint_eddsa(caller)?;
            super::signing_keys::sign_eddsa(state, caller, &app, &claims).await?
        }
    };
    let event = audit::event(state, caller, "token.minted", "user", &external_id)
        .in_app(&app.id)
        .detail("keyId", json!(kid))
        .detail("alg", json!(alg.name()))
        .detail("ttlSeconds", json!(ttl))
        .detail("aud", audience.unwrap_or(Value::Null));
    state.store.record_audit(&event).await?;
    Ok((token, expires_at))
}

/// The key a minted token is signed with, and so whose policy the token
/// carries (a JWT can do at most what its key can): an app key signs with
/// itself; an account-scope caller gets the app's newest live key that it
/// could have made itself (`Caller::may_grant`; for a caller without a
/// permission list, the newest live key).
async fn signing_key(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    now: i64,
) -> ApiResult<latchkey_core::LiveKey> {
    if let latchkey_core::Principal::App { key_id, .. } = &caller.principal {
        return state
            .index
            .key(key_id.as_str())
            .filter(|k| !k.is_expired(now))
            .ok_or_else(|| ApiError::not_found("key"));
    }
    newest_live_key(state, caller, app_id, now)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "the app has no live key with a secret to sign with that this caller could have \
                 made; create an app key first",
            )
        })
}

/// The app's newest key that is live in the index, not replaced, and that
/// `caller` could have made.
async fn newest_live_key(
    state: &AppState,
    caller: &Caller,
    app_id: &str,
    now: i64,
) -> ApiResult<Option<latchkey_core::LiveKey>> {
    let mut page = latchkey_store::Page {
        limit: 100,
        after: None,
    };
    let mut best = None;
    loop {
        let found = state
            .store
            .list_keys(latchkey_store::KeyOwnerRef::App(app_id), &page)
            .await?;
        for k in &found.items {
            // A public-key key has no secret to sign with.
            if k.replaced_by.is_none()
                && k.public_key.is_none()
                && state.index.key_is_live(&k.id, now)
                && caller.may_grant(&k.policy).is_ok()
            {
                best = Some(k.id.clone());
            }
        }
        if !found.has_more {
            // Copied (secret included) once, for the one key chosen.
            return Ok(best.and_then(|id| state.index.key(&id)));
        }
        page.after = found.items.last().map(|k| k.id.clone());
    }
}
