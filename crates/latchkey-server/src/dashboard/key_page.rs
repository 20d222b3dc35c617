//! A key's page, for app keys and service-account keys: what the key is,
//! the policy it carries, and the form that changes its name and policy
//! through `ops::keys::update_key` (the operation behind `PATCH
//! …/keys/{keyId}`: the same checks, audit event and index update).

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use latchkey_core::policy::RefillInterval;
use latchkey_store::{ApiKey, AuditFilter, DAY, HOUR, Page};

use super::charts::{Chart, Series};
use super::csrf::SignedForm;
use super::key_form::KeyForm;
use super::keys::{Owner, own_app, own_service_account};
use super::pages::{Choice, PageQuery};
use super::session::Session;
use super::view::{EventRow, Flash, KeyRow, Layout, PageError, render};
use crate::error::ApiError;
use crate::ops::keys as key_ops;
use crate::state::AppState;
use crate::views::KeyView;

/// The policy as the page states it; `None` where the key carries no
/// such member.
#[derive(Debug)]
struct PolicyFacts {
    /// Empty: the key has no permission at all.
    permissions: Option<String>,
    allowed_ips: Option<String>,
    allowed_origins: Option<String>,
    ratelimit: Option<String>,
    /// The balance as this node holds it.
    credits: Option<i64>,
    refill: Option<String>,
    /// Pretty JSON.
    meta: Option<String>,
}

impl From<&KeyView> for PolicyFacts {
    fn from(v: &KeyView) -> Self {
        let list = |l: &Option<Vec<String>>| l.as_ref().map(|l| l.join(", "));
        let plural =
            |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        PolicyFacts {
            permissions: list(&v.permissions),
            allowed_ips: list(&v.restrictions.allowed_ips),
            allowed_origins: list(&v.restrictions.allowed_origins),
            ratelimit: v.ratelimit.map(|r| {
                format!(
                    "{} per {}",
                    plural(r.limit, "request", "requests"),
                    plural(r.window_seconds, "second", "seconds")
                )
            }),
            credits: v.credits.as_ref().map(|c| c.remaining),
            refill: v.credits.as_ref().and_then(|c| c.refill).map(|r| {
                let every = match r.interval {
                    RefillInterval::Day => "day",
                    RefillInterval::Month => "month",
                };
                format!("{} at the start of every UTC {every}", r.amount)
            }),
            meta: v
                .meta
                .as_ref()
                .and_then(|m| serde_json::to_string_pretty(m).ok()),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/key.html")]
struct KeyPage<'a> {
    l: &'a Layout,
    flash: &'a Flash,
    /// "App" or "Service account".
    owner_kind: &'a str,
    owner_name: &'a str,
    /// The page that lists the owner's keys.
    owner_url: String,
    key: KeyRow,
    policy: PolicyFacts,
    form: KeyForm,
    intervals: Vec<Choice>,
    /// This page, where its form is posted.
    action: String,
    /// Whether the person's role may change this key (teams).
    writable: bool,
    /// Checks per hour, the last 24 hours.
    hourly: Chart,
    /// Checks per day, the last 30 days.
    daily: Chart,
    /// The audit events about the key, newest first.
    events: Vec<EventRow>,
}

/// What the key's page shows of its use and history.
struct Activity {
    hourly: Chart,
    daily: Chart,
    events: Vec<EventRow>,
}

/// The key's checks (hours of the last day, days of the last 30) and the
/// last 20 audit events about it.
async fn activity(state: &AppState, key: &ApiKey) -> Result<Activity, ApiError> {
    let now = state.now();
    let ids = [key.id.clone()];
    let mut hours = Series::new(now, HOUR, 24);
    for r in state
        .store
        .keys_usage_since(&ids, HOUR, hours.since)
        .await?
    {
        hours.add(r.start, &r.outcome, r.count);
    }
    let mut days = Series::new(now, DAY, 30);
    for r in state.store.keys_usage_since(&ids, DAY, days.since).await? {
        days.add(r.start, &r.outcome, r.count);
    }
    let filter = AuditFilter {
        account_id: Some(key.account_id.clone()),
        target_id: Some(key.id.clone()),
        ..AuditFilter::default()
    };
    let events = state
        .store
        .list_audit(
            &filter,
            &Page {
                limit: 20,
                after: None,
            },
        )
        .await?;
    Ok(Activity {
        hourly: Chart::draw(
            "usage-hourly",
            "Checks of this key per hour, the last 24 hours",
            &hours,
            720,
            160,
            3,
        ),
        daily: Chart::draw(
            "usage-daily",
            "Checks of this key per day, the last 30 days",
            &days,
            720,
            160,
            5,
        ),
        events: events.items.iter().map(EventRow::from).collect(),
    })
}

async fn render_key_page(
    state: &AppState,
    session: &Session,
    owner: &Owner,
    key: &ApiKey,
    form: KeyForm,
    flash: Flash,
) -> Response {
    let l = or_page!(Layout::of(state, session).await);
    let activity = or_page!(activity(state, key).await.map_err(PageError::from));
    let view = owner.ctx().view(state, key);
    let policy = PolicyFacts::from(&view);
    let (owner_kind, owner_name) = match owner {
        Owner::App(a) => ("App", a.display_name.as_str()),
        Owner::ServiceAccount(s) => ("Service account", s.display_name.as_str()),
        Owner::Me => ("Account", session.email.as_str()),
    };
    let intervals = [("day", "UTC day"), ("month", "UTC month")]
        .iter()
        .map(|(value, label)| Choice {
            value: value.to_string(),
            label: label.to_string(),
            selected: form.refill_interval == *value,
        })
        .collect();
    render(
        flash.status(),
        &KeyPage {
            l: &l,
            flash: &flash,
            owner_kind,
            owner_name,
            owner_url: owner.url(),
            action: owner.key_url(&key.id),
            writable: match owner {
                Owner::App(_) => l.can_develop,
                Owner::ServiceAccount(_) => l.can_admin,
                Owner::Me => true,
            },
            key: KeyRow::from_view(view, state.now()),
            policy,
            form,
            intervals,
            hourly: activity.hourly,
            daily: activity.daily,
            events: activity.events,
        },
    )
}

async fn show(
    state: &AppState,
    session: &Session,
    owner: Owner,
    key_id: &str,
    done: Option<&str>,
) -> Response {
    let key = or_page!(key_ops::load_key(state, owner.key_owner(session), key_id).await);
    let form = KeyForm::of(&key.display_name, &key.policy);
    render_key_page(state, session, &owner, &key, form, Flash::done(done)).await
}

async fn save(state: &AppState, form: SignedForm, owner: Owner, key_id: &str) -> Response {
    let session = &form.session;
    let key = or_page!(key_ops::load_key(state, owner.key_owner(session), key_id).await);
    let entered = KeyForm::entered(&form.fields);
    let patch = match entered.patch(&key.display_name, &key.policy) {
        Ok(p) => p,
        Err(message) => {
            let flash = Flash::invalid(message);
            return render_key_page(state, session, &owner, &key, entered, flash).await;
        }
    };
    let url = owner.key_url(&key.id);
    if patch.is_empty() {
        return Redirect::to(&format!("{url}?done=key-unchanged")).into_response();
    }
    let updated = key_ops::update_key(
        state,
        &form.write,
        &session.caller(),
        owner.ctx(),
        owner.key_owner(session),
        &key.id,
        &patch,
    )
    .await;
    match updated {
        Ok(_) => Redirect::to(&format!("{url}?done=key-saved")).into_response(),
        // Deleted meanwhile: there is no page left to show the form on.
        Err(e) if e.status == StatusCode::NOT_FOUND => PageError::from(e).into_response(),
        Err(e) => render_key_page(state, session, &owner, &key, entered, Flash::error(&e)).await,
    }
}

/// `GET /dashboard/apps/{app_id}/keys/{key_id}`.
pub async fn app_key(
    State(state): State<AppState>,
    session: Session,
    Path((app_id, key_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    let app = or_page!(own_app(&state, &session, &app_id).await);
    show(
        &state,
        &session,
        Owner::App(app),
        &key_id,
        q.done.as_deref(),
    )
    .await
}

/// `POST /dashboard/apps/{app_id}/keys/{key_id}`.
pub async fn save_app_key(
    State(state): State<AppState>,
    Path((app_id, key_id)): Path<(String, String)>,
    form: SignedForm,
) -> Response {
    let app = or_page!(own_app(&state, &form.session, &app_id).await);
    save(&state, form, Owner::App(app), &key_id).await
}

/// `GET /dashboard/service-accounts/{sa_id}/keys/{key_id}`.
pub async fn sa_key(
    State(state): State<AppState>,
    session: Session,
    Path((sa_id, key_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    let sa = or_page!(own_service_account(&state, &session, &sa_id).await);
    let owner = Owner::ServiceAccount(sa);
    show(&state, &session, owner, &key_id, q.done.as_deref()).await
}

/// `POST /dashboard/service-accounts/{sa_id}/keys/{key_id}`.
pub async fn save_sa_key(
    State(state): State<AppState>,
    Path((sa_id, key_id)): Path<(String, String)>,
    form: SignedForm,
) -> Response {
    let sa = or_page!(own_service_account(&state, &form.session, &sa_id).await);
    save(&state, form, Owner::ServiceAccount(sa), &key_id).await
}
