//! Teams (issue 20): the members page (members with their roles; for
//! owners, the invite form, role changes, removals and open invites), the
//! page where an invite is accepted, and the change of one's own password.
//! All through `ops::members`, so the API's rules and audit events apply.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{HOST, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use latchkey_core::policy::Role;
use latchkey_store::Page;

use super::csrf::{self, SignedForm};
use super::keys::ConfirmPage;
use super::pages::{Choice, PageQuery};
use super::session::{self, SIGNIN_COOKIE, Session, cookie, random_token, set_cookie};
use super::view::{Flash, Layout, PageError, render, when};
use crate::error::ApiError;
use crate::ops::members as member_ops;
use crate::state::AppState;

/// One member as the page lists it.
#[derive(Debug)]
pub struct MemberRow {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    pub joined: String,
    pub is_you: bool,
    pub role_choices: Vec<Choice>,
}

/// One open invite.
#[derive(Debug)]
pub struct InviteRow {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    pub status: &'static str,
    pub expires: String,
}

/// An invite just made: its link, shown this once.
#[derive(Debug)]
pub struct NewInvite {
    pub email: String,
    pub role: &'static str,
    pub link: String,
}

fn role_choices(selected: Role) -> Vec<Choice> {
    Role::ALL
        .iter()
        .rev()
        .map(|r| Choice {
            value: r.as_str().to_string(),
            label: r.as_str().to_string(),
            selected: *r == selected,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard/members.html")]
struct MembersPage<'a> {
    l: &'a Layout,
    flash: &'a Flash,
    members: Vec<MemberRow>,
    members_more: bool,
    invites: Vec<InviteRow>,
    new_invite: Option<NewInvite>,
    invite_roles: Vec<Choice>,
}

async fn render_members(
    state: &AppState,
    session: &Session,
    flash: Flash,
    new_invite: Option<NewInvite>,
) -> Result<Response, PageError> {
    let l = Layout::of(state, session).await?;
    let caller = session.caller();
    let page = Page {
        limit: 100,
        after: None,
    };
    let found = member_ops::list_members(state, &caller, &page).await?;
    let invites = if l.is_owner {
        member_ops::list_invites(state, &caller, &page).await?.items
    } else {
        Vec::new()
    };
    let now = state.now();
    Ok(render(
        flash.status(),
        &MembersPage {
            l: &l,
            flash: &flash,
            members: found
                .items
                .iter()
                .map(|u| MemberRow {
                    id: u.id.clone(),
                    email: u.email.clone(),
                    role: u.role.as_str(),
                    joined: when(u.created_at),
                    is_you: u.id == session.user_account_id,
                    role_choices: role_choices(u.role),
                })
                .collect(),
            members_more: found.has_more,
            invites: invites
                .iter()
                .map(|i| InviteRow {
                    id: i.id.clone(),
                    email: i.email.clone(),
                    role: i.role.as_str(),
                    status: i.status(now),
                    expires: when(i.expires_at),
                })
                .collect(),
            new_invite,
            invite_roles: role_choices(Role::Developer),
        },
    ))
}

fn or_members(r: Result<Response, PageError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /dashboard/members`.
pub async fn members(
    State(state): State<AppState>,
    session: Session,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    or_members(render_members(&state, &session, Flash::done(q.done.as_deref()), None).await)
}

/// The invite's full link, on the host the owner is using.
fn invite_link(state: &AppState, headers: &HeaderMap, token: &str) -> String {
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let path = crate::api::members::accept_path(token);
    match headers.get(HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("{scheme}://{host}{path}"),
        None => path,
    }
}

/// `POST /dashboard/invites` with `email` and `role`: the link is shown
/// once, in the answer.
pub async fn create_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let email = form.fields.get("email").unwrap_or("");
    let result = match member_ops::parse_role(form.fields.get("role").unwrap_or("")) {
        Ok(role) => {
            member_ops::create_invite(&state, &form.write, &session.caller(), email, role).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((invite, token)) => {
            let link = invite_link(&state, &headers, token.expose());
            let flash = Flash {
                notice: Some(format!(
                    "Invite created for {}. Pass the link below on: it is shown only now, works \
                     once and expires in 7 days.",
                    invite.email
                )),
                ..Flash::default()
            };
            or_members(
                render_members(
                    &state,
                    session,
                    flash,
                    Some(NewInvite {
                        email: invite.email,
                        role: invite.role.as_str(),
                        link,
                    }),
                )
                .await,
            )
        }
        Err(e) => or_members(render_members(&state, session, Flash::error(&e), None).await),
    }
}

/// `POST /dashboard/invites/{id}/revoke`.
pub async fn revoke_invite(
    State(state): State<AppState>,
    Path(invite_id): Path<String>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    match member_ops::revoke_invite(&state, &form.write, &session.caller(), &invite_id).await {
        Ok(()) => Redirect::to("/dashboard/members?done=invite-revoked").into_response(),
        Err(e) => or_members(render_members(&state, session, Flash::error(&e), None).await),
    }
}

/// `POST /dashboard/members/{user_id}/role` with `role`.
pub async fn change_role(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let result = match member_ops::parse_role(form.fields.get("role").unwrap_or("")) {
        Ok(role) => member_ops::set_role(&state, &form.write, &session.caller(), &user_id, role)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/dashboard/members?done=role-changed").into_response(),
        Err(e) => or_members(render_members(&state, session, Flash::error(&e), None).await),
    }
}

/// `GET /dashboard/members/{user_id}/remove`: the confirmation.
pub async fn confirm_remove(
    State(state): State<AppState>,
    session: Session,
    Path(user_id): Path<String>,
) -> Response {
    let member = or_page!(member_ops::load_member(&state, &session.caller(), &user_id).await);
    let l = or_page!(Layout::of(&state, &session).await);
    let message = format!(
        "Remove {} ({}) from this account? Their keys are refused from the very next request \
         and their dashboard sessions end. This cannot be undone; invite them again to add \
         them back.",
        member.email, member.role
    );
    render(
        StatusCode::OK,
        &ConfirmPage {
            l: &l,
            title: "Remove member",
            message: &message,
            action: &format!("/dashboard/members/{}/remove", member.id),
            button: "Remove member",
            cancel: "/dashboard/members",
        },
    )
}

/// `POST /dashboard/members/{user_id}/remove`.
pub async fn remove(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    match member_ops::remove_member(&state, &form.write, &session.caller(), &user_id).await {
        Ok(()) if user_id == session.user_account_id => {
            Redirect::to("/dashboard/signin").into_response()
        }
        Ok(()) => Redirect::to("/dashboard/members?done=member-removed").into_response(),
        Err(e) => or_members(render_members(&state, session, Flash::error(&e), None).await),
    }
}

#[derive(Template)]
#[template(path = "dashboard/password.html")]
struct PasswordPage<'a> {
    l: &'a Layout,
    flash: &'a Flash,
}

/// `GET /dashboard/password`.
pub async fn password_form(State(state): State<AppState>, session: Session) -> Response {
    let l = or_page!(Layout::of(&state, &session).await);
    render(
        StatusCode::OK,
        &PasswordPage {
            l: &l,
            flash: &Flash::default(),
        },
    )
}

/// `POST /dashboard/password` with `current`, `new` and `confirm`.
///
/// A wrong current password counts against the sign-in throttle of the
/// person's email (5 in 15 minutes), so a stolen session cannot guess it
/// at leisure.
pub async fn change_password(
    State(state): State<AppState>,
    axum::Extension(throttle): axum::Extension<std::sync::Arc<super::session::Throttle>>,
    form: SignedForm,
) -> Response {
    // Checked and signed in like every form; the write lock is not held
    // across the passwords' hashing (the store's transaction suffices).
    let SignedForm {
        session,
        fields,
        write,
    } = form;
    drop(write);
    let session = &session;
    let current = fields.get("current").unwrap_or("").to_string();
    let new = fields.get("new").unwrap_or("").to_string();
    let now = state.now();
    let peer = session.peer.map(|p| p.to_string());
    if let Err(wait) = throttle.begin(&session.email, peer.as_deref(), now) {
        let l = or_page!(Layout::of(&state, session).await);
        let flash = Flash::error(&ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many wrong passwords lately; try again in {} minutes",
                (wait + 59) / 60
            ),
        ));
        return render(
            flash.status(),
            &PasswordPage {
                l: &l,
                flash: &flash,
            },
        );
    }
    let result = if fields.get("confirm") != Some(new.as_str()) {
        Err(ApiError::bad_request(
            "the new password and its confirmation differ",
        ))
    } else {
        member_ops::change_own_password(
            &state,
            &session.caller(),
            current,
            new,
            Some(&session.id_hash),
        )
        .await
    };
    match result {
        Ok(()) => {
            throttle.succeeded(&session.email, peer.as_deref(), now);
            Redirect::to("/dashboard?done=password-changed").into_response()
        }
        Err(e) => {
            let l = or_page!(Layout::of(&state, session).await);
            let flash = Flash::error(&e);
            render(
                flash.status(),
                &PasswordPage {
                    l: &l,
                    flash: &flash,
                },
            )
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/invite.html")]
struct AcceptPage<'a> {
    csrf: &'a str,
    token: &'a str,
    email: &'a str,
    role: &'a str,
    account_name: &'a str,
    error: Option<&'a str>,
}

/// `?token=` of the accept page.
#[derive(Debug, Default, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The accept page for an open invite, with the sign-in cookie its form's
/// CSRF token is bound to (the person has no session yet).
async fn accept_page(
    state: &AppState,
    key: &str,
    token: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let invite = or_page!(member_ops::open_invite(state, token).await);
    let account_name = state
        .store
        .get_account(&invite.account_id)
        .await
        .ok()
        .flatten()
        .map(|a| a.display_name)
        .unwrap_or_default();
    let csrf = csrf::token(key, csrf::SIGNIN_PURPOSE);
    let mut response = render(
        status,
        &AcceptPage {
            csrf: &csrf,
            token,
            email: &invite.email,
            role: invite.role.as_str(),
            account_name: &account_name,
            error,
        },
    );
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(state, SIGNIN_COOKIE, key, 3600));
    response
}

/// `GET /dashboard/invite?token=…`.
pub async fn accept_form(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q: TokenQuery = q
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let key = match cookie(&headers, SIGNIN_COOKIE) {
        Some(k) => k.to_string(),
        None => or_page!(random_token(&state)),
    };
    accept_page(
        &state,
        &key,
        q.token.as_deref().unwrap_or(""),
        StatusCode::OK,
        None,
    )
    .await
}

/// `POST /dashboard/invite` with `token`, `password` and `confirm`: the
/// new member is signed in.
pub async fn accept(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = csrf::same_origin(&parts) {
        return e.into_response();
    }
    let fields = or_page!(csrf::read_form(&state, &parts.headers, body).await);
    let token = fields.get("token").unwrap_or("").to_string();
    let Some(key) = cookie(&parts.headers, SIGNIN_COOKIE)
        .filter(|k| csrf::verify(k, csrf::SIGNIN_PURPOSE, fields.get("csrf")))
        .map(str::to_string)
    else {
        let key = or_page!(random_token(&state));
        return accept_page(
            &state,
            &key,
            &token,
            StatusCode::FORBIDDEN,
            Some("This form has expired. Please try again."),
        )
        .await;
    };
    let password = fields.get("password").unwrap_or("").to_string();
    if fields.get("confirm") != Some(password.as_str()) {
        return accept_page(
            &state,
            &key,
            &token,
            StatusCode::BAD_REQUEST,
            Some("The password and its confirmation differ."),
        )
        .await;
    }
    let peer = session::peer(&parts);
    match member_ops::accept_invite(&state, &token, password, peer).await {
        Ok(user) => session::start_session(&state, &user, peer).await,
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            let message = super::view::sentence(&e.title);
            accept_page(
                &state,
                &key,
                &token,
                StatusCode::BAD_REQUEST,
                Some(&message),
            )
            .await
        }
        Err(e) => PageError::from(e).into_response(),
    }
}
