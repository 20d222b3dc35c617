//! The account page (apps, service accounts, the person's own keys, recent
//! activity), the audit log, and service-account pages.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use latchkey_store::{App, AuditFilter, KeyOwnerRef, Page, ServiceAccount};
use serde::Deserialize;

use super::csrf::SignedForm;
use super::keys::{ConfirmPage, Owner, own_service_account};
use super::session::Session;
use super::view::{
    DEFAULT_GRACE, EXPIRY_CHOICES, EventRow, Flash, GRACE_CHOICES, KeyRow, Layout, PageError,
    render, when,
};
use crate::error::ApiError;
use crate::ops::{apps as app_ops, service_accounts as sa_ops};
use crate::state::AppState;

/// `?done=` and `?after=` of a page; anything else is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub done: Option<String>,
    pub after: Option<String>,
}

impl PageQuery {
    pub fn parse(raw: Option<&str>) -> Self {
        raw.and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default()
    }

    pub fn after(&self) -> Option<String> {
        self.after.clone().filter(|a| !a.is_empty())
    }
}

/// One choice of a `<select>`.
#[derive(Debug)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub fn grace_choices() -> Vec<Choice> {
    GRACE_CHOICES
        .iter()
        .map(|(s, label)| Choice {
            value: s.to_string(),
            label: label.to_string(),
            selected: *s == DEFAULT_GRACE,
        })
        .collect()
}

pub fn expiry_choices() -> Vec<Choice> {
    EXPIRY_CHOICES
        .iter()
        .map(|(d, label)| Choice {
            value: d.to_string(),
            label: label.to_string(),
            selected: *d == 0,
        })
        .collect()
}

/// The keys section every key owner's page shows.
#[derive(Debug)]
pub struct KeysSection {
    pub keys: Vec<KeyRow>,
    pub keys_url: String,
    pub empty: String,
    pub grace_choices: Vec<Choice>,
    pub expiry_choices: Vec<Choice>,
    /// Each key has a page at `{keys_url}/{key_id}` (app and
    /// service-account keys).
    pub key_pages: bool,
    /// Whether the person's role may create, rotate and delete these keys
    /// (teams; their own keys always).
    pub writable: bool,
}

impl KeysSection {
    pub async fn load(
        state: &AppState,
        owner: KeyOwnerRef<'_>,
        keys_url: String,
        max_key_age_days: Option<i64>,
        empty: &str,
    ) -> Result<Self, PageError> {
        let found = state
            .store
            .list_keys(owner, &Page::first(100))
            .await
            .map_err(ApiError::from)?;
        Ok(KeysSection {
            keys: found
                .items
                .iter()
                .map(|k| KeyRow::new(state, k, max_key_age_days))
                .collect(),
            keys_url,
            empty: empty.to_string(),
            grace_choices: grace_choices(),
            expiry_choices: expiry_choices(),
            key_pages: false,
            writable: true,
        })
    }

    /// Whether the person may change these keys.
    pub fn writable(self, writable: bool) -> Self {
        KeysSection { writable, ..self }
    }

    /// Links each key to its page.
    pub fn with_key_pages(self) -> Self {
        KeysSection {
            key_pages: true,
            ..self
        }
    }
}

/// Page size helper.
trait First {
    fn first(limit: u32) -> Page;
}

impl First for Page {
    fn first(limit: u32) -> Page {
        Page { limit, after: None }
    }
}

#[derive(Debug)]
pub struct NamedRow {
    pub id: String,
    pub name: String,
    pub created: String,
}

impl From<&App> for NamedRow {
    fn from(a: &App) -> Self {
        NamedRow {
            id: a.id.clone(),
            name: a.display_name.clone(),
            created: when(a.created_at),
        }
    }
}

impl From<&ServiceAccount> for NamedRow {
    fn from(s: &ServiceAccount) -> Self {
        NamedRow {
            id: s.id.clone(),
            name: s.display_name.clone(),
            created: when(s.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/account.html")]
struct AccountPage<'a> {
    l: &'a Layout,
    flash: &'a Flash,
    apps: Vec<NamedRow>,
    apps_more: bool,
    service_accounts: Vec<NamedRow>,
    service_accounts_more: bool,
    keys: KeysSection,
    events: Vec<EventRow>,
}

pub async fn render_account(
    state: &AppState,
    session: &Session,
    flash: Flash,
) -> Result<Response, PageError> {
    let l = Layout::of(state, session).await?;
    let apps = state
        .store
        .list_apps(&session.account_id, None, &Page::first(100))
        .await
        .map_err(ApiError::from)?;
    let sas = state
        .store
        .list_service_accounts(&session.account_id, &Page::first(100))
        .await
        .map_err(ApiError::from)?;
    let keys = KeysSection::load(
        state,
        KeyOwnerRef::UserAccount(&session.user_account_id),
        "/dashboard/account/keys".into(),
        None,
        "You have no user-account keys. Create one to call the API with account scope \
         (for scripts and your own tools).",
    )
    .await?;
    let events = state
        .store
        .list_audit(&account_filter(session), &Page::first(10))
        .await
        .map_err(ApiError::from)?;
    Ok(render(
        flash.status(),
        &AccountPage {
            l: &l,
            flash: &flash,
            apps: apps.items.iter().map(NamedRow::from).collect(),
            apps_more: apps.has_more,
            service_accounts: sas.items.iter().map(NamedRow::from).collect(),
            service_accounts_more: sas.has_more,
            keys,
            events: events.items.iter().map(EventRow::from).collect(),
        },
    ))
}

fn account_filter(session: &Session) -> AuditFilter {
    AuditFilter {
        account_id: Some(session.account_id.clone()),
        ..AuditFilter::default()
    }
}

/// `GET /dashboard`.
pub async fn account(
    State(state): State<AppState>,
    session: Session,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    render_account(&state, &session, Flash::done(q.done.as_deref()))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "dashboard/audit.html")]
struct AuditPage<'a> {
    l: &'a Layout,
    events: Vec<EventRow>,
    /// The `after` cursor of the next (older) page.
    next: Option<String>,
    first_page: bool,
}

/// `GET /dashboard/audit`: the account's audit log, newest first, 50 a page.
pub async fn audit(
    State(state): State<AppState>,
    session: Session,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    let l = or_page!(Layout::of(&state, &session).await);
    let page = Page {
        limit: 50,
        after: q.after(),
    };
    let found = or_page!(
        state
            .store
            .list_audit(&account_filter(&session), &page)
            .await
            .map_err(ApiError::from)
    );
    let next = found
        .has_more
        .then(|| found.items.last().map(|e| e.id.clone()))
        .flatten();
    render(
        StatusCode::OK,
        &AuditPage {
            l: &l,
            events: found.items.iter().map(EventRow::from).collect(),
            next,
            first_page: page.after.is_none(),
        },
    )
}

/// `POST /dashboard/apps`.
pub async fn create_app(State(state): State<AppState>, form: SignedForm) -> Response {
    let session = &form.session;
    let name = form.fields.get("display_name").unwrap_or("");
    match app_ops::create_app(&state, &form.write, &session.caller(), name, None).await {
        Ok(app) => {
            Redirect::to(&format!("/dashboard/apps/{}?done=app-created", app.id)).into_response()
        }
        Err(e) => render_account(&state, session, Flash::error(&e))
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// `POST /dashboard/service-accounts`.
pub async fn create_service_account(State(state): State<AppState>, form: SignedForm) -> Response {
    let session = &form.session;
    let name = form.fields.get("display_name").unwrap_or("");
    match sa_ops::create_service_account(&state, &form.write, &session.caller(), name).await {
        Ok(sa) => Redirect::to(&format!(
            "/dashboard/service-accounts/{}?done=service-account-created",
            sa.id
        ))
        .into_response(),
        Err(e) => render_account(&state, session, Flash::error(&e))
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

#[derive(Template)]
#[template(path = "dashboard/service_account.html")]
struct ServiceAccountPage<'a> {
    l: &'a Layout,
    flash: &'a Flash,
    sa: NamedRow,
    keys: KeysSection,
    reached: Vec<NamedRow>,
    grantable: Vec<NamedRow>,
}

pub async fn render_service_account(
    state: &AppState,
    session: &Session,
    sa: &ServiceAccount,
    flash: Flash,
) -> Result<Response, PageError> {
    let l = Layout::of(state, session).await?;
    let owner = Owner::ServiceAccount(sa.clone());
    let keys = KeysSection::load(
        state,
        KeyOwnerRef::ServiceAccount(&sa.id),
        owner.keys_url(),
        None,
        "This service account has no keys yet. Create one for the machine that uses it.",
    )
    .await?
    .with_key_pages()
    .writable(l.can_admin);
    let reached = state
        .store
        .list_apps(&sa.account_id, Some(&sa.id), &Page::first(100))
        .await
        .map_err(ApiError::from)?;
    let all = state
        .store
        .list_apps(&sa.account_id, None, &Page::first(100))
        .await
        .map_err(ApiError::from)?;
    let grantable = all
        .items
        .iter()
        .filter(|a| !reached.items.iter().any(|r| r.id == a.id))
        .map(NamedRow::from)
        .collect();
    Ok(render(
        flash.status(),
        &ServiceAccountPage {
            l: &l,
            flash: &flash,
            sa: NamedRow::from(sa),
            keys,
            reached: reached.items.iter().map(NamedRow::from).collect(),
            grantable,
        },
    ))
}

/// `GET /dashboard/service-accounts/{id}`.
pub async fn service_account(
    State(state): State<AppState>,
    session: Session,
    Path(sa_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    let sa = or_page!(own_service_account(&state, &session, &sa_id).await);
    render_service_account(&state, &session, &sa, Flash::done(q.done.as_deref()))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn confirm_delete_service_account(
    State(state): State<AppState>,
    session: Session,
    Path(sa_id): Path<String>,
) -> Response {
    let sa = or_page!(own_service_account(&state, &session, &sa_id).await);
    let l = or_page!(Layout::of(&state, &session).await);
    let message = format!(
        "Delete the service account “{}” ({})? Its keys are refused from the very next request, \
         and its grants end. Apps it created stay. This cannot be undone.",
        sa.display_name, sa.id
    );
    let url = format!("/dashboard/service-accounts/{}", sa.id);
    render(
        StatusCode::OK,
        &ConfirmPage {
            l: &l,
            title: "Delete service account",
            message: &message,
            action: &format!("{url}/delete"),
            button: "Delete service account",
            cancel: &url,
        },
    )
}

pub async fn delete_service_account(
    State(state): State<AppState>,
    Path(sa_id): Path<String>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let sa = or_page!(own_service_account(&state, session, &sa_id).await);
    match sa_ops::delete_service_account(&state, &form.write, &session.caller(), &sa).await {
        Ok(()) => Redirect::to("/dashboard?done=service-account-deleted").into_response(),
        Err(e) => render_service_account(&state, session, &sa, Flash::error(&e))
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// `POST /dashboard/service-accounts/{id}/grants` with `app_id`.
pub async fn grant(
    State(state): State<AppState>,
    Path(sa_id): Path<String>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let sa = or_page!(own_service_account(&state, session, &sa_id).await);
    let app_id = form.fields.get("app_id").unwrap_or("");
    match sa_ops::grant_app(&state, &form.write, &session.caller(), &sa, app_id).await {
        Ok(()) => Redirect::to(&format!(
            "/dashboard/service-accounts/{}?done=granted",
            sa.id
        ))
        .into_response(),
        Err(e) => render_service_account(&state, session, &sa, Flash::error(&e))
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// `POST /dashboard/service-accounts/{id}/grants/{app_id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Path((sa_id, app_id)): Path<(String, String)>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let sa = or_page!(own_service_account(&state, session, &sa_id).await);
    match sa_ops::revoke_app(&state, &form.write, &session.caller(), &sa, &app_id).await {
        Ok(()) => Redirect::to(&format!(
            "/dashboard/service-accounts/{}?done=revoked",
            sa.id
        ))
        .into_response(),
        Err(e) => render_service_account(&state, session, &sa, Flash::error(&e))
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}
