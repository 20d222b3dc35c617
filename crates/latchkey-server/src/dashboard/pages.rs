//! The account page (apps, service accounts, the person's own keys, recent
//! activity), the audit log, and service-account pages.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;

use latchkey_store::{App, AuditFilter, HOUR, KeyOwnerRef, Page, ServiceAccount};
use serde::Deserialize;

use super::charts::{Chart, Series};
use super::csrf::SignedForm;
use super::keys::{ConfirmPage, Owner, own_service_account};
use super::overview::Overview;
use super::session::Session;
use super::view::{
    DEFAULT_GRACE, EXPIRY_CHOICES, EventRow, Flash, GRACE_CHOICES, KeyRow, KeyUsage, Layout,
    PageError, render, when,
};
use crate::error::ApiError;
use crate::ops::{apps as app_ops, service_accounts as sa_ops};
use crate::state::AppState;

/// `?done=`, `?after=` and a key list's `?q=` and `?status=`; anything
/// else is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub done: Option<String>,
    pub after: Option<String>,
    pub q: Option<String>,
    pub status: Option<String>,
    /// The audit log's filters: an action, and dates (`YYYY-MM-DD`, UTC).
    pub action: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
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

/// The statuses a key list can be filtered by: (value, label).
pub const STATUS_FILTERS: [(&str, &str); 5] = [
    ("", "any status"),
    ("active", "active"),
    ("expiring", "expiring"),
    ("retiring", "rotated, retiring"),
    ("expired", "expired"),
];

/// What a key list shows: keys whose name or id holds `q` (any case),
/// with `status`.
#[derive(Debug, Default)]
pub struct KeyFilter {
    pub q: String,
    pub status: String,
}

impl KeyFilter {
    pub fn of(query: &PageQuery) -> Self {
        let q = query.q.as_deref().unwrap_or("").trim();
        // A search longer than any name or id finds nothing anyway.
        let q: String = q.chars().take(100).collect();
        let status = query.status.as_deref().unwrap_or("");
        KeyFilter {
            q,
            status: STATUS_FILTERS
                .iter()
                .find(|(v, _)| *v == status)
                .map_or("", |(v, _)| *v)
                .to_string(),
        }
    }

    pub fn is_set(&self) -> bool {
        !self.q.is_empty() || !self.status.is_empty()
    }

    fn matches(&self, k: &KeyRow) -> bool {
        let status_ok = match self.status.as_str() {
            "" => true,
            "retiring" => k.badge_class == "retiring",
            s => k.status == s && k.badge_class != "retiring",
        };
        let q = self.q.to_lowercase();
        status_ok
            && (q.is_empty()
                || k.name.to_lowercase().contains(&q)
                || k.id.to_lowercase().contains(&q))
    }
}

/// The keys section every key owner's page shows.
#[derive(Debug)]
pub struct KeysSection {
    pub keys: Vec<KeyRow>,
    /// Keys before the filter.
    pub total: usize,
    pub filter: KeyFilter,
    pub status_filters: Vec<Choice>,
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
        let mut keys: Vec<KeyRow> = found
            .items
            .iter()
            .map(|k| KeyRow::new(state, k, max_key_age_days))
            .collect();
        with_usage(state, &mut keys).await?;
        Ok(KeysSection {
            total: keys.len(),
            keys,
            filter: KeyFilter::default(),
            status_filters: status_choices(""),
            keys_url,
            empty: empty.to_string(),
            grace_choices: grace_choices(),
            expiry_choices: expiry_choices(),
            key_pages: false,
            writable: true,
        })
    }

    /// Keeps the keys `filter` matches.
    pub fn filtered(mut self, filter: KeyFilter) -> Self {
        self.keys.retain(|k| filter.matches(k));
        self.status_filters = status_choices(&filter.status);
        self.filter = filter;
        self
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

fn status_choices(selected: &str) -> Vec<Choice> {
    STATUS_FILTERS
        .iter()
        .map(|(v, label)| Choice {
            value: v.to_string(),
            label: label.to_string(),
            selected: *v == selected,
        })
        .collect()
}

/// Fills in each key's checks of the last 24 hours (hour buckets).
async fn with_usage(state: &AppState, keys: &mut [KeyRow]) -> Result<(), PageError> {
    if keys.is_empty() {
        return Ok(());
    }
    let now = state.now();
    let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let template = Series::new(now, HOUR, 24);
    let rows = state
        .store
        .keys_usage_since(&ids, HOUR, template.since)
        .await
        .map_err(ApiError::from)?;
    let mut per_key: HashMap<&str, Series> = HashMap::new();
    for r in &rows {
        per_key
            .entry(r.key_id.as_str())
            .or_insert_with(|| template.clone())
            .add(r.start, &r.outcome, r.count);
    }
    for k in keys.iter_mut() {
        let series = per_key.get(k.id.as_str()).unwrap_or(&template);
        let totals = series.totals();
        k.usage = Some(KeyUsage {
            valid: totals.valid,
            refused: totals.refused_total(),
            spark: Chart::spark(
                &format!("spark-{}", k.id),
                &format!("Checks of {} per hour, last 24 hours", k.name),
                series,
            ),
        });
    }
    Ok(())
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
    overview: Overview,
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
    let overview = Overview::load(state, &session.account_id, &apps.items).await?;
    Ok(render(
        flash.status(),
        &AccountPage {
            overview,
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
    filter: AuditForm,
    /// The filters as a query string, for the pager's links.
    filter_query: String,
    /// What was wrong with the filters, if anything.
    problem: Option<String>,
}

/// The audit page's filter form, as entered.
#[derive(Debug, Default)]
struct AuditForm {
    action: String,
    since: String,
    until: String,
}

impl AuditForm {
    fn is_set(&self) -> bool {
        !(self.action.is_empty() && self.since.is_empty() && self.until.is_empty())
    }
}

/// A `YYYY-MM-DD` date's first second (UTC).
fn day_start(text: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

/// Names of what an account's events refer to: its apps, service
/// accounts, and their keys (up to 100 of each).
async fn names_of(state: &AppState, account_id: &str) -> Result<HashMap<String, String>, ApiError> {
    let mut names = HashMap::new();
    let apps = state
        .store
        .list_apps(account_id, None, &Page::first(100))
        .await?;
    for app in &apps.items {
        names.insert(app.id.clone(), app.display_name.clone());
        let keys = state
            .store
            .list_keys(KeyOwnerRef::App(&app.id), &Page::first(100))
            .await?;
        for k in keys.items {
            names.insert(k.id, k.display_name);
        }
    }
    let sas = state
        .store
        .list_service_accounts(account_id, &Page::first(100))
        .await?;
    for sa in &sas.items {
        names.insert(sa.id.clone(), sa.display_name.clone());
        let keys = state
            .store
            .list_keys(KeyOwnerRef::ServiceAccount(&sa.id), &Page::first(100))
            .await?;
        for k in keys.items {
            names.insert(k.id, k.display_name);
        }
    }
    Ok(names)
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
    let form = AuditForm {
        action: q
            .action
            .clone()
            .unwrap_or_default()
            .trim()
            .chars()
            .take(100)
            .collect(),
        since: q
            .since
            .clone()
            .unwrap_or_default()
            .trim()
            .chars()
            .take(10)
            .collect(),
        until: q
            .until
            .clone()
            .unwrap_or_default()
            .trim()
            .chars()
            .take(10)
            .collect(),
    };
    let mut filter = account_filter(&session);
    let mut problem = None;
    if !form.action.is_empty() {
        filter.action = Some(form.action.clone());
    }
    if !form.since.is_empty() {
        match day_start(&form.since) {
            Some(t) => filter.since = Some(t),
            None => {
                problem = Some("From must be a date (YYYY-MM-DD); it was left out.".to_string())
            }
        }
    }
    if !form.until.is_empty() {
        match day_start(&form.until) {
            // Through the whole of that day.
            Some(t) => filter.until = Some(t + 86_399),
            None => problem = Some("To must be a date (YYYY-MM-DD); it was left out.".to_string()),
        }
    }
    let found = match state.store.list_audit(&filter, &page).await {
        Ok(found) => found,
        // A cursor from another filter: start again from the newest.
        Err(latchkey_store::StoreError::BadCursor) => or_page!(
            state
                .store
                .list_audit(
                    &filter,
                    &Page {
                        limit: 50,
                        after: None
                    }
                )
                .await
                .map_err(ApiError::from)
        ),
        Err(e) => return PageError::from(ApiError::from(e)).into_response(),
    };
    let names = or_page!(names_of(&state, &session.account_id).await);
    let filter_query = serde_urlencoded::to_string([
        ("action", form.action.as_str()),
        ("since", form.since.as_str()),
        ("until", form.until.as_str()),
    ])
    .unwrap_or_default();
    let next = found
        .has_more
        .then(|| found.items.last().map(|e| e.id.clone()))
        .flatten();
    render(
        StatusCode::OK,
        &AuditPage {
            l: &l,
            events: found
                .items
                .iter()
                .map(|e| EventRow::from(e).named(&names))
                .collect(),
            next,
            first_page: page.after.is_none(),
            filter: form,
            filter_query,
            problem,
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
