//! Teams (issue 20): an account's members (its user accounts, each with a
//! role), invites to join it, and a member's own password.
//!
//! Only people manage members (user-account keys and dashboard sessions,
//! [`latchkey_core::Principal::may_manage_members`]); reading needs
//! `latchkey:members.read` (every role), changing needs
//! `latchkey:members.write` (owners only), both checked by
//! [`Caller::require`] like every other operation. A role change or a
//! removal reaches the index before the response, and other nodes through
//! the change feed (`userAccount`).

use latchkey_core::crypto::{digests_equal, sha256};
use latchkey_core::ids::{IdKind, new_id};
use latchkey_core::policy::{Permission, Role};
use latchkey_core::secret::{self, INVITE_TOKEN_PREFIX, SecretString};
use latchkey_core::{Principal, password};
use latchkey_store::{Actor, Invite, MemberChange, Page, PageOf, UserAccount};
use serde_json::json;

use super::{Caller, WriteGuard};
use crate::audit::{self, EventExt};
use crate::bootstrap::normalize_email;
use crate::error::{ApiError, ApiResult, require};
use crate::state::AppState;

/// An invite can be accepted for this long after it was made: 7 days.
pub const INVITE_LIFETIME_SECONDS: i64 = 7 * 24 * 3600;

const PEOPLE_ONLY: &str = "an account's members are managed by people: use a user-account \
     (act_) key or the dashboard";
const LAST_OWNER: &str = "an account keeps at least one owner: make another member an owner first";

/// The account whose members the caller may manage, or 403.
fn members_account(caller: &Caller) -> ApiResult<&str> {
    require(caller.principal.may_manage_members(), "member", PEOPLE_ONLY)?;
    caller
        .principal
        .account_id()
        .ok_or_else(|| ApiError::forbidden(PEOPLE_ONLY))
}

/// `role` as a request names it.
pub fn parse_role(text: &str) -> ApiResult<Role> {
    Role::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role must be one of owner, admin, developer, viewer (not {text:?})"
        ))
    })
}

pub async fn list_members(
    state: &AppState,
    caller: &Caller,
    page: &Page,
) -> ApiResult<PageOf<UserAccount>> {
    caller.require(Permission::MembersRead)?;
    let account_id = members_account(caller)?;
    Ok(state.store.list_members(account_id, page).await?)
}

/// A member of the caller's account, or 404 (another account's too).
pub async fn load_member(
    state: &AppState,
    caller: &Caller,
    user_id: &str,
) -> ApiResult<UserAccount> {
    let account_id = members_account(caller)?;
    match state.store.get_user_account(user_id).await? {
        Some(user) if user.account_id == account_id => Ok(user),
        _ => Err(ApiError::not_found("member")),
    }
}

/// Changes a member's role (owners only; the last owner stays one).
pub async fn set_role(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    user_id: &str,
    role: Role,
) -> ApiResult<UserAccount> {
    caller.require(Permission::MembersWrite)?;
    let member = load_member(state, caller, user_id).await?;
    let event = audit::event(state, caller, "member.roleChanged", "userAccount", user_id)
        .detail("email", json!(member.email))
        .detail("from", json!(member.role.as_str()))
        .detail("to", json!(role.as_str()));
    match state
        .store
        .set_member_role(&member.account_id, user_id, role, &event)
        .await?
    {
        MemberChange::Done => {}
        MemberChange::NotFound => return Err(ApiError::not_found("member")),
        MemberChange::LastOwner => return Err(ApiError::conflict(LAST_OWNER)),
    }
    state.index.set_member(user_id, &member.account_id, role);
    Ok(UserAccount { role, ..member })
}

/// Removes a member (owners only; not the last owner): their keys leave
/// the index and their dashboard sessions end, before the response.
pub async fn remove_member(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    user_id: &str,
) -> ApiResult<()> {
    caller.require(Permission::MembersWrite)?;
    let member = load_member(state, caller, user_id).await?;
    let event = audit::event(state, caller, "member.removed", "userAccount", user_id)
        .detail("email", json!(member.email))
        .detail("role", json!(member.role.as_str()));
    match state
        .store
        .remove_member(&member.account_id, user_id, &event)
        .await?
    {
        MemberChange::Done => {}
        MemberChange::NotFound => return Err(ApiError::not_found("member")),
        MemberChange::LastOwner => return Err(ApiError::conflict(LAST_OWNER)),
    }
    state.index.remove_member(user_id);
    Ok(())
}

/// Invites `email` with `role` (owners only). Returns the invite and its
/// one-time token, which only this answer shows.
pub async fn create_invite(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    email: &str,
    role: Role,
) -> ApiResult<(Invite, SecretString)> {
    caller.require(Permission::MembersWrite)?;
    let account_id = members_account(caller)?.to_string();
    let email = normalize_email(email)
        .ok_or_else(|| ApiError::bad_request("email must be an email address"))?;
    // Only a member of this account is refused here: whether the email
    // belongs to someone in another account is not this account's to learn
    // (accepting such an invite fails, for the invitee only).
    if state
        .store
        .find_user_account_by_email(&email)
        .await?
        .is_some_and(|u| u.account_id == account_id)
    {
        return Err(ApiError::conflict(
            "a member of this account already has this email",
        ));
    }
    let token = secret::generate(&state.rng, INVITE_TOKEN_PREFIX);
    let now = state.now();
    let invite = Invite {
        id: new_id(&state.rng, IdKind::Invite),
        account_id,
        email,
        role,
        token_hash: sha256(token.expose().as_bytes()).to_vec(),
        invited_by: match &caller.principal {
            Principal::UserAccount {
                user_account_id, ..
            }
            | Principal::Session {
                user_account_id, ..
            } => Some(user_account_id.to_string()),
            _ => None,
        },
        created_at: now,
        expires_at: now.saturating_add(INVITE_LIFETIME_SECONDS),
        accepted_at: None,
        accepted_by: None,
        revoked_at: None,
    };
    let event = audit::event(state, caller, "invite.created", "invite", &invite.id)
        .detail("email", json!(invite.email))
        .detail("role", json!(invite.role.as_str()));
    state.store.create_invite(&invite, &event).await?;
    Ok((invite, token))
}

pub async fn list_invites(
    state: &AppState,
    caller: &Caller,
    page: &Page,
) -> ApiResult<PageOf<Invite>> {
    caller.require(Permission::MembersRead)?;
    let account_id = members_account(caller)?;
    Ok(state.store.list_invites(account_id, page).await?)
}

/// Revokes an invite that was not accepted yet (owners only).
pub async fn revoke_invite(
    state: &AppState,
    _write: &WriteGuard,
    caller: &Caller,
    invite_id: &str,
) -> ApiResult<()> {
    caller.require(Permission::MembersWrite)?;
    let account_id = members_account(caller)?;
    let invite = match state.store.get_invite(invite_id).await? {
        Some(i) if i.account_id == account_id => i,
        _ => return Err(ApiError::not_found("invite")),
    };
    if invite.accepted_at.is_some() || invite.revoked_at.is_some() {
        return Err(ApiError::not_found("invite"));
    }
    let event = audit::event(state, caller, "invite.revoked", "invite", &invite.id)
        .detail("email", json!(invite.email));
    if !state
        .store
        .revoke_invite(&invite.id, state.now(), &event)
        .await?
    {
        return Err(ApiError::not_found("invite"));
    }
    Ok(())
}

/// Why an invite link does not work.
const INVITE_INVALID: &str = "this invite link is not valid: ask the account's owner for a new one";

/// The open invite a token names, or 404 (a token of the wrong form, an
/// unknown, accepted, revoked or expired invite: all alike to the holder).
pub async fn open_invite(state: &AppState, token: &str) -> ApiResult<Invite> {
    if secret::check_format(INVITE_TOKEN_PREFIX, token).is_err() {
        return Err(ApiError::not_found("invite").with_title(INVITE_INVALID));
    }
    let presented = sha256(token.as_bytes());
    match state.store.find_invite_by_token_hash(&presented).await? {
        Some(invite)
            if digests_equal(&invite.token_hash, &presented) && invite.is_open(state.now()) =>
        {
            Ok(invite)
        }
        _ => Err(ApiError::not_found("invite").with_title(INVITE_INVALID)),
    }
}

/// Accepts an invite: a new user account of the invite's account, with
/// its email and role and the password chosen. The token works once (the
/// store marks it accepted only if it is still open, in the transaction
/// that adds the user). Takes the write lock itself, after hashing.
pub async fn accept_invite(
    state: &AppState,
    token: &str,
    new_password: String,
    peer: Option<std::net::IpAddr>,
) -> ApiResult<UserAccount> {
    let invite = open_invite(state, token).await?;
    password::check_rules(&new_password)
        .map_err(|e| ApiError::bad_request(format!("password: {e}")))?;
    let hash = tokio::task::spawn_blocking(move || password::hash(&new_password))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| ApiError::bad_request(format!("password: {e}")))?;
    let now = state.now();
    let user = UserAccount {
        id: new_id(&state.rng, IdKind::UserAccount),
        account_id: invite.account_id.clone(),
        email: invite.email.clone(),
        password_hash: hash,
        created_at: now,
        role: invite.role,
    };
    let mut event = audit::base_event(
        state,
        Actor::UserAccount {
            user_account_id: user.id.clone(),
        },
        "invite.accepted",
        "invite",
        Some(&invite.id),
    )
    .in_account(&invite.account_id)
    .detail("userAccountId", json!(user.id))
    .detail("email", json!(user.email))
    .detail("role", json!(user.role.as_str()));
    event.address = peer.map(|ip| ip.to_string());
    // The write lock only now, not across the password's hashing.
    let _write = WriteGuard::for_session(state).await?;
    if !state
        .store
        .accept_invite(&invite.id, &user, now, &event)
        .await?
    {
        return Err(ApiError::not_found("invite").with_title(INVITE_INVALID));
    }
    state
        .index
        .set_member(&user.id, &user.account_id, user.role);
    Ok(user)
}

/// A person changes their own password (the current one is required);
/// their other dashboard sessions end.
pub async fn change_own_password(
    state: &AppState,
    caller: &Caller,
    current: String,
    new_password: String,
    keep_session: Option<&[u8]>,
) -> ApiResult<()> {
    let user_id = match &caller.principal {
        Principal::Session {
            user_account_id, ..
        }
        | Principal::UserAccount {
            user_account_id, ..
        } => user_account_id.to_string(),
        _ => return Err(ApiError::forbidden(PEOPLE_ONLY)),
    };
    let user = state
        .store
        .get_user_account(&user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user account"))?;
    password::check_rules(&new_password)
        .map_err(|e| ApiError::bad_request(format!("new password: {e}")))?;
    let phc = user.password_hash.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        if !password::verify(&current, &phc) {
            return Ok(None);
        }
        password::hash(&new_password).map(Some)
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|e| ApiError::bad_request(format!("new password: {e}")))?;
    let Some(hash) = hashed else {
        return Err(ApiError::bad_request("the current password is not right"));
    };
    let event = audit::event(
        state,
        caller,
        "userAccount.passwordChanged",
        "userAccount",
        &user.id,
    );
    if !state
        .store
        .change_password(
            &user.id,
            &hash,
            Some(&user.password_hash),
            keep_session,
            &event,
        )
        .await?
    {
        return Err(ApiError::conflict(
            "the password was changed meanwhile (or the user account is gone); sign in again",
        ));
    }
    Ok(())
}
