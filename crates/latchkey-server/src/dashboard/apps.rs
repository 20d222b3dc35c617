//! An app's pages: keys, settings (allowed origins, browser-secret
//! blocking, key and token policy), webhooks and users.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use latchkey_store::{App, KeyOwnerRef, Page};
use serde_json::{Map, Value};

use super::csrf::{Fields, SignedForm};
use super::keys::{ConfirmPage, Previous, SecretPage, own_app};
use super::pages::{KeyFilter, KeysSection, PageQuery};
use super::session::Session;
use super::view::{Flash, Layout, PageError, render, when};
use crate::error::ApiError;
use crate::ops::policy::{
    self, ALLOWED_ORIGINS, BLOCK_BROWSER_SECRETS, MAX_KEY_AGE_DAYS, MAX_TOKEN_TTL_SECONDS,
};
use crate::ops::{apps as app_ops, webhooks as webhook_ops};
use crate::state::AppState;
use crate::views::WebhookView;

/// The app as its pages' header shows it.
#[derive(Debug)]
pub struct AppHead {
    pub id: String,
    pub name: String,
}

impl From<&App> for AppHead {
    fn from(a: &App) -> Self {
        AppHead {
            id: a.id.clone(),
            name: a.display_name.clone(),
        }
    }
}

// --- keys --------------------------------------------------------------

#[derive(Template)]
#[template(path = "dashboard/app_keys.html")]
struct KeysTab<'a> {
    l: &'a Layout,
    flash: &'a Flash,
    app: AppHead,
    tab: &'a str,
    keys: KeysSection,
}

pub async fn render_keys_tab(
    state: &AppState,
    session: &Session,
    app: &App,
    flash: Flash,
    filter: KeyFilter,
) -> Result<Response, PageError> {
    let l = Layout::of(state, session).await?;
    let keys = KeysSection::load(
        state,
        KeyOwnerRef::App(&app.id),
        format!("/dashboard/apps/{}/keys", app.id),
        policy::max_key_age_days(&app.settings),
        "No keys yet. Create one to call the API for this app: your servers send it as \
         Basic, and sign appUser JWTs for browsers with it.",
    )
    .await?
    .with_key_pages()
    .writable(l.can_develop)
    .filtered(filter);
    Ok(render(
        flash.status(),
        &KeysTab {
            l: &l,
            flash: &flash,
            app: AppHead::from(app),
            tab: "keys",
            keys,
        },
    ))
}

/// `GET /dashboard/apps/{id}`.
pub async fn keys_tab(
    State(state): State<AppState>,
    session: Session,
    Path(app_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    let app = or_page!(own_app(&state, &session, &app_id).await);
    let filter = KeyFilter::of(&q);
    render_keys_tab(
        &state,
        &session,
        &app,
        Flash::done(q.done.as_deref()),
        filter,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

// --- settings ----------------------------------------------------------

#[derive(Template)]
#[template(path = "dashboard/app_settings.html")]
struct SettingsTab<'a> {
    l: &'a Layout,
    flash: &'a Flash,
    app: AppHead,
    tab: &'a str,
    form: SettingsForm,
}

/// The settings form's fields, as stored or as entered.
#[derive(Debug)]
struct SettingsForm {
    origins: String,
    block: bool,
    max_key_age_days: String,
    max_token_ttl_seconds: String,
}

impl SettingsForm {
    fn of(settings: &Map<String, Value>) -> Self {
        let int = |name: &str| {
            settings
                .get(name)
                .and_then(Value::as_i64)
                .map(|n| n.to_string())
                .unwrap_or_default()
        };
        SettingsForm {
            origins: policy::app_policy(settings)
                .allowed_origins
                .unwrap_or_default()
                .join("\n"),
            block: policy::app_policy(settings).block_browser_secrets,
            max_key_age_days: int(MAX_KEY_AGE_DAYS),
            max_token_ttl_seconds: int(MAX_TOKEN_TTL_SECONDS),
        }
    }

    fn entered(fields: &Fields) -> Self {
        SettingsForm {
            origins: fields.get("allowed_origins").unwrap_or("").to_string(),
            block: fields.get("block_browser_secrets").is_some(),
            max_key_age_days: fields.get("max_key_age_days").unwrap_or("").to_string(),
            max_token_ttl_seconds: fields
                .get("max_token_ttl_seconds")
                .unwrap_or("")
                .to_string(),
        }
    }

    /// The settings patch that turns `current` into what was entered:
    /// only the members that change.
    fn patch(&self, current: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut patch = Map::new();
        let origins: Vec<&str> = self
            .origins
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|o| !o.is_empty())
            .collect();
        if let Some(bad) = origins.iter().find(|o| !policy::is_origin(o)) {
            let shown: String = bad.chars().take(100).collect();
            return Err(format!(
                "“{shown}” is not an exact origin. Write scheme://host[:port] in lower case, \
                 with no path and no trailing slash, e.g. https://app.example.com."
            ));
        }
        let origins = if origins.is_empty() {
            Value::Null
        } else {
            Value::Array(
                origins
                    .into_iter()
                    .map(|o| Value::String(o.into()))
                    .collect(),
            )
        };
        if current.get(ALLOWED_ORIGINS).unwrap_or(&Value::Null) != &origins {
            patch.insert(ALLOWED_ORIGINS.into(), origins);
        }
        if policy::app_policy(current).block_browser_secrets != self.block {
            patch.insert(BLOCK_BROWSER_SECRETS.into(), Value::Bool(self.block));
        }
        for (name, text, what) in [
            (
                MAX_KEY_AGE_DAYS,
                &self.max_key_age_days,
                "Maximum key age must be a whole number of days, or empty",
            ),
            (
                MAX_TOKEN_TTL_SECONDS,
                &self.max_token_ttl_seconds,
                "Maximum token lifetime must be a whole number of seconds, or empty",
            ),
        ] {
            let text = text.trim();
            let value = if text.is_empty() {
                Value::Null
            } else {
                Value::from(text.parse::<i64>().map_err(|_| format!("{what}."))?)
            };
            if current.get(name).unwrap_or(&Value::Null) != &value {
                patch.insert(name.into(), value);
            }
        }
        Ok(patch)
    }
}

async fn render_settings_tab(
    state: &AppState,
    session: &Session,
    app: &App,
    form: SettingsForm,
    flash: Flash,
) -> Result<Response, PageError> {
    let l = Layout::of(state, session).await?;
    Ok(render(
        flash.status(),
        &SettingsTab {
            l: &l,
            flash: &flash,
            app: AppHead::from(app),
            tab: "settings",
            form,
        },
    ))
}

/// `GET /dashboard/apps/{id}/settings`.
pub async fn settings_tab(
    State(state): State<AppState>,
    session: Session,
    Path(app_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    let app = or_page!(own_app(&state, &session, &app_id).await);
    let form = SettingsForm::of(&app.settings);
    render_settings_tab(&state, &session, &app, form, Flash::done(q.done.as_deref()))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /dashboard/apps/{id}/settings`: through `ops::apps::update_app`
/// (validation, audit, the index).
pub async fn save_settings(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let app = or_page!(own_app(&state, session, &app_id).await);
    let entered = SettingsForm::entered(&form.fields);
    let patch = match entered.patch(&app.settings) {
        Ok(p) => p,
        Err(message) => {
            let flash = Flash {
                error: Some(message),
                status: Some(StatusCode::BAD_REQUEST),
                notice: None,
            };
            return render_settings_tab(&state, session, &app, entered, flash)
                .await
                .unwrap_or_else(IntoResponse::into_response);
        }
    };
    let url = format!("/dashboard/apps/{}/settings", app.id);
    if patch.is_empty() {
        return Redirect::to(&format!("{url}?done=settings-unchanged")).into_response();
    }
    let caller = session.caller();
    let updated = app_ops::update_app(
        &state,
        &form.write,
        &caller,
        app.clone(),
        None,
        Some(&patch),
    )
    .await;
    match updated {
        Ok(_) => Redirect::to(&format!("{url}?done=settings-saved")).into_response(),
        Err(e) => render_settings_tab(&state, session, &app, entered, Flash::error(&e))
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

// --- webhooks ----------------------------------------------------------

#[derive(Debug)]
struct WebhookRow {
    id: String,
    target: String,
    triggers: String,
    created: String,
    /// Its most recent deliveries, newest first.
    deliveries: Vec<DeliveryRow>,
}

/// Deliveries shown per webhook.
const RECENT_DELIVERIES: u32 = 10;

/// A delivery of a webhook, as its table shows it.
#[derive(Debug)]
struct DeliveryRow {
    id: String,
    trigger: String,
    status: &'static str,
    attempts: u32,
    /// The last attempt's error, or its HTTP status; empty before any.
    last_error: String,
    /// When it is tried next (pending only).
    next_attempt: String,
    created: String,
    /// Delivered or failed: it may be sent again.
    can_redeliver: bool,
}

impl DeliveryRow {
    fn new(d: &latchkey_store::Delivery) -> Self {
        let last_error = match (&d.last_error, d.last_status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) => String::new(),
        };
        DeliveryRow {
            id: d.id.clone(),
            trigger: d.trigger.clone(),
            status: d.status.as_str(),
            attempts: d.attempts,
            last_error,
            next_attempt: if d.status == latchkey_store::DeliveryStatus::Pending {
                when(d.next_attempt_at)
            } else {
                String::new()
            },
            created: when(d.created_at),
            can_redeliver: d.status != latchkey_store::DeliveryStatus::Pending,
        }
    }
}

#[derive(Debug)]
struct TriggerChoice {
    name: &'static str,
    /// `key-created` for `key:created`, for element ids.
    slug: String,
    checked: bool,
}

#[derive(Template)]
#[template(path = "dashboard/app_webhooks.html")]
struct WebhooksTab<'a> {
    l: &'a Layout,
    flash: &'a Flash,
    app: AppHead,
    tab: &'a str,
    webhooks: Vec<WebhookRow>,
    target: String,
    triggers: Vec<TriggerChoice>,
}

async fn render_webhooks_tab(
    state: &AppState,
    session: &Session,
    app: &App,
    entered: Option<&Fields>,
    flash: Flash,
) -> Result<Response, PageError> {
    let l = Layout::of(state, session).await?;
    let found = state
        .store
        .list_webhooks(
            &app.id,
            &Page {
                limit: 100,
                after: None,
            },
        )
        .await
        .map_err(ApiError::from)?;
    let mut webhooks = Vec::with_capacity(found.items.len());
    for w in &found.items {
        let recent = state
            .store
            .list_deliveries(
                &w.id,
                &Page {
                    limit: RECENT_DELIVERIES,
                    after: None,
                },
            )
            .await
            .map_err(ApiError::from)?;
        let view = WebhookView::from(w);
        webhooks.push(WebhookRow {
            id: view.id,
            target: view.target,
            triggers: view.triggers.join(", "),
            created: when(w.created_at),
            deliveries: recent.items.iter().map(DeliveryRow::new).collect(),
        });
    }
    let chosen = entered.map(|f| f.all("triggers")).unwrap_or_default();
    let triggers = webhook_ops::TRIGGERS
        .iter()
        .map(|t| TriggerChoice {
            name: t,
            slug: t.replace(':', "-"),
            checked: chosen.iter().any(|c| c == t),
        })
        .collect();
    Ok(render(
        flash.status(),
        &WebhooksTab {
            l: &l,
            flash: &flash,
            app: AppHead::from(app),
            tab: "webhooks",
            webhooks,
            target: entered
                .and_then(|f| f.get("target"))
                .unwrap_or("")
                .to_string(),
            triggers,
        },
    ))
}

/// `GET /dashboard/apps/{id}/webhooks`.
pub async fn webhooks_tab(
    State(state): State<AppState>,
    session: Session,
    Path(app_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    let app = or_page!(own_app(&state, &session, &app_id).await);
    render_webhooks_tab(&state, &session, &app, None, Flash::done(q.done.as_deref()))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /dashboard/apps/{id}/webhooks`: the secret is shown once, on the
/// page this answers.
pub async fn create_webhook(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let app = or_page!(own_app(&state, session, &app_id).await);
    let target = form.fields.get("target").unwrap_or("").trim().to_string();
    let triggers = form.fields.all("triggers");
    let caller = session.caller();
    let created =
        webhook_ops::create_webhook(&state, &form.write, &caller, &app, &target, &triggers).await;
    let view = match created {
        Ok(v) => v,
        Err(e) => {
            return render_webhooks_tab(
                &state,
                session,
                &app,
                Some(&form.fields),
                Flash::error(&e),
            )
            .await
            .unwrap_or_else(IntoResponse::into_response);
        }
    };
    let l = or_page!(Layout::of(&state, session).await);
    let what = format!("a webhook of the app “{}”", app.display_name);
    let back = format!("/dashboard/apps/{}/webhooks", app.id);
    render(
        StatusCode::OK,
        &SecretPage {
            l: &l,
            title: "Webhook created",
            what: &what,
            id_element: "new-webhook-id",
            object_id: &view.id,
            secret_element: "new-webhook-secret",
            secret: view.secret.as_ref().map(|s| s.expose()).unwrap_or_default(),
            usage: "Check the Latchkey-Signature header of each delivery with it: \
                    HMAC-SHA256 of \"<t>.<raw body>\", keyed with this whole secret.",
            previous: None::<Previous>,
            back: &back,
        },
    )
}

pub async fn confirm_delete_webhook(
    State(state): State<AppState>,
    session: Session,
    Path((app_id, webhook_id)): Path<(String, String)>,
) -> Response {
    let app = or_page!(own_app(&state, &session, &app_id).await);
    let webhook = or_page!(
        state
            .store
            .get_webhook(&app.id, &webhook_id)
            .await
            .map_err(ApiError::from)
            .and_then(|w| w.ok_or_else(|| ApiError::not_found("webhook")))
    );
    let l = or_page!(Layout::of(&state, &session).await);
    let message = format!(
        "Delete the webhook {} that notifies {}? Its queued deliveries are dropped. \
         This cannot be undone.",
        webhook.id, webhook.target
    );
    let back = format!("/dashboard/apps/{}/webhooks", app.id);
    render(
        StatusCode::OK,
        &ConfirmPage {
            l: &l,
            title: "Delete webhook",
            message: &message,
            action: &format!("{back}/{}/delete", webhook.id),
            button: "Delete webhook",
            cancel: &back,
        },
    )
}

pub async fn delete_webhook(
    State(state): State<AppState>,
    Path((app_id, webhook_id)): Path<(String, String)>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let app = or_page!(own_app(&state, session, &app_id).await);
    let caller = session.caller();
    match webhook_ops::delete_webhook(&state, &form.write, &caller, &app, &webhook_id).await {
        Ok(()) => Redirect::to(&format!(
            "/dashboard/apps/{}/webhooks?done=webhook-deleted",
            app.id
        ))
        .into_response(),
        Err(e) => render_webhooks_tab(&state, session, &app, None, Flash::error(&e))
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// `POST …/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver`.
pub async fn redeliver(
    State(state): State<AppState>,
    Path((app_id, webhook_id, delivery_id)): Path<(String, String, String)>,
    form: SignedForm,
) -> Response {
    let session = &form.session;
    let app = or_page!(own_app(&state, session, &app_id).await);
    let caller = session.caller();
    match webhook_ops::redeliver(
        &state,
        &form.write,
        &caller,
        &app,
        &webhook_id,
        &delivery_id,
    )
    .await
    {
        Ok(_) => Redirect::to(&format!(
            "/dashboard/apps/{}/webhooks?done=redelivered",
            app.id
        ))
        .into_response(),
        Err(e) => render_webhooks_tab(&state, session, &app, None, Flash::error(&e))
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

// --- users -------------------------------------------------------------

#[derive(Debug)]
struct UserRow {
    id: String,
    external_id: String,
    name: String,
    email: String,
    created: String,
}

#[derive(Template)]
#[template(path = "dashboard/app_users.html")]
struct UsersTab<'a> {
    l: &'a Layout,
    flash: &'a Flash,
    app: AppHead,
    tab: &'a str,
    users: Vec<UserRow>,
    next: Option<String>,
    first_page: bool,
}

/// `GET /dashboard/apps/{id}/users`: 25 a page.
pub async fn users_tab(
    State(state): State<AppState>,
    session: Session,
    Path(app_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = PageQuery::parse(q.as_deref());
    let app = or_page!(own_app(&state, &session, &app_id).await);
    let l = or_page!(Layout::of(&state, &session).await);
    let page = Page {
        limit: 25,
        after: q.after(),
    };
    let found = or_page!(
        state
            .store
            .list_app_users(&app.id, &page)
            .await
            .map_err(ApiError::from)
    );
    let next = found
        .has_more
        .then(|| found.items.last().map(|u| u.id.clone()))
        .flatten();
    let users = found
        .items
        .iter()
        .map(|u| UserRow {
            id: u.id.clone(),
            external_id: u.external_id.clone(),
            name: [u.given_name.as_deref(), u.surname.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
            email: u.email.clone().unwrap_or_default(),
            created: when(u.created_at),
        })
        .collect();
    let flash = Flash::default();
    render(
        StatusCode::OK,
        &UsersTab {
            l: &l,
            flash: &flash,
            app: AppHead::from(&app),
            tab: "users",
            users,
            next,
            first_page: page.after.is_none(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(origins: &str, block: bool, age: &str, ttl: &str) -> SettingsForm {
        SettingsForm {
            origins: origins.into(),
            block,
            max_key_age_days: age.into(),
            max_token_ttl_seconds: ttl.into(),
        }
    }

    #[test]
    fn the_settings_patch_holds_only_what_changes() {
        let current = json!({"blockBrowserSecrets": true, "maxKeyAgeDays": 90, "own": 1});
        let current = current.as_object().expect("object");
        assert_eq!(
            form("", true, "90", "").patch(current).expect("ok"),
            Map::new()
        );
        let p = form(
            "https://a.example.com\r\nhttp://localhost:3000, ",
            false,
            "",
            " 600 ",
        )
        .patch(current)
        .expect("ok");
        assert_eq!(
            Value::Object(p),
            json!({
                "allowedOrigins": ["https://a.example.com", "http://localhost:3000"],
                "blockBrowserSecrets": false,
                "maxKeyAgeDays": null,
                "maxTokenTtlSeconds": 600,
            })
        );
        assert!(
            form("https://a.example.com/", true, "", "")
                .patch(current)
                .is_err()
        );
        assert!(form("", true, "ninety", "").patch(current).is_err());
    }
}
