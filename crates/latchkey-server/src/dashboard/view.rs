//! What pages share: the layout, messages, error pages, rows of lists and
//! the few formatting helpers the templates use.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use latchkey_store::{ApiKey, AuditEvent};

use crate::error::ApiError;
use crate::state::AppState;
use crate::views::KeyView;

use super::session::Session;

/// Renders a template with a status, or a plain 500 page if rendering
/// fails (it cannot for these templates, but nothing panics).
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a dashboard page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>Internal error; the cause has been logged.</p>".to_string()),
            )
                .into_response()
        }
    }
}

/// The header every signed-in page shows, and the CSRF token its forms
/// carry.
#[derive(Debug)]
pub struct Layout {
    pub email: String,
    pub account_name: String,
    pub csrf: String,
    /// The person's role (teams), and what it lets the pages offer; the
    /// operations refuse the rest anyway.
    pub role: &'static str,
    /// Apps, their settings, keys and webhooks (developer and above).
    pub can_develop: bool,
    /// Service accounts (admin and above).
    pub can_admin: bool,
    /// Members and invites (owners).
    pub is_owner: bool,
}

impl Layout {
    pub async fn of(state: &AppState, session: &Session) -> Result<Self, PageError> {
        let account_name = state
            .store
            .get_account(&session.account_id)
            .await
            .map_err(ApiError::from)?
            .map(|a| a.display_name)
            .unwrap_or_default();
        use latchkey_core::policy::Role;
        Ok(Layout {
            email: session.email.clone(),
            account_name,
            csrf: session.csrf.clone(),
            role: session.role.as_str(),
            can_develop: session.role >= Role::Developer,
            can_admin: session.role >= Role::Admin,
            is_owner: session.role == Role::Owner,
        })
    }
}

/// A notice (after a successful action) or an error (a refused one) shown
/// at the top of a page.
#[derive(Debug, Default)]
pub struct Flash {
    pub notice: Option<String>,
    pub error: Option<String>,
    pub status: Option<StatusCode>,
}

impl Flash {
    /// The notice named by `?done=` after a redirect; unknown codes show
    /// nothing (the text never comes from the URL).
    pub fn done(code: Option<&str>) -> Self {
        let notice = code.and_then(|c| match c {
            "app-created" => Some("App created. Create a key below to call the API for it."),
            "key-deleted" => Some(
                "The key was deleted. Basic with it and every JWT it signed are refused from now on.",
            ),
            "settings-saved" => Some("Settings saved. They apply from the next request on."),
            "settings-unchanged" | "key-unchanged" => Some("Nothing changed."),
            "key-saved" => Some("Key saved. The change applies from the next request on."),
            "webhook-deleted" => Some("The webhook was deleted with its queued deliveries."),
            "redelivered" => Some("The delivery was queued again; it is sent within seconds."),
            "service-account-created" => {
                Some("Service account created. Create a key below for the machine that uses it.")
            }
            "service-account-deleted" => {
                Some("The service account was deleted; its keys are refused from now on.")
            }
            "granted" => Some("The service account now reaches that app."),
            "role-changed" => Some("Role changed. It applies from the next request on."),
            "member-removed" => Some(
                "The member was removed: their keys are refused and their sessions ended.",
            ),
            "invite-revoked" => Some("The invite was revoked; its link no longer works."),
            "password-changed" => {
                Some("Password changed. Your other sessions were signed out.")
            }
            "revoked" => Some("The service account no longer reaches that app."),
            _ => None,
        });
        Flash {
            notice: notice.map(str::to_string),
            ..Flash::default()
        }
    }

    /// A form the page could not read: its message, with 400.
    pub fn invalid(message: String) -> Self {
        Flash {
            notice: None,
            error: Some(message),
            status: Some(StatusCode::BAD_REQUEST),
        }
    }

    /// A refused action: its message, shown with the status it had in the
    /// API.
    pub fn error(e: &ApiError) -> Self {
        Flash {
            notice: None,
            error: Some(sentence(&e.title.replace("displayName", "the name"))),
            status: Some(e.status),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(StatusCode::OK)
    }
}

/// An API message as a sentence: capitalized, with a full stop.
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// An error shown as a whole page (not found, forbidden, internal).
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, title: &str, message: &str) -> Self {
        PageError {
            status,
            title: title.to_string(),
            message: message.to_string(),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let title = match e.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::INTERNAL_SERVER_ERROR => "Something went wrong",
            _ => "That did not work",
        };
        let message = if e.status == StatusCode::NOT_FOUND {
            // The same answer whether it does not exist or is another
            // account's.
            format!(
                "{} It may have been deleted, or it is not in your account.",
                sentence(&e.title)
            )
        } else {
            sentence(&e.title)
        };
        PageError {
            status: e.status,
            title: title.to_string(),
            message,
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        render(
            self.status,
            &MessagePage {
                title: &self.title,
                message: &self.message,
            },
        )
    }
}

/// Unix seconds as `2025-01-31 14:05 UTC`.
pub fn when(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// An RFC 3339 time from a view, shown like [`when`].
fn when_rfc3339(text: &str) -> String {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| when(t.unix_timestamp()))
        .unwrap_or_else(|_| text.to_string())
}

/// A time to come, roughly: `3 days`, `1 day`, `5 hours`, `12 minutes`.
pub fn span(seconds: i64) -> String {
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if seconds >= 86_400 {
        plural(seconds / 86_400, "day")
    } else if seconds >= 3_600 {
        plural(seconds / 3_600, "hour")
    } else {
        plural((seconds / 60).max(1), "minute")
    }
}

/// A time past, roughly: `just now`, `12 minutes ago`, `5 hours ago`,
/// `3 days ago`.
pub fn ago(seconds: i64) -> String {
    if seconds < 60 {
        "just now".to_string()
    } else {
        format!("{} ago", span(seconds))
    }
}

/// The relative form of an RFC 3339 time from a view, at `now`.
fn ago_rfc3339(text: &str, now: i64) -> String {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| ago(now - t.unix_timestamp()))
        .unwrap_or_default()
}

/// A key in a list.
#[derive(Debug)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    /// The view's status: `active`, `expiring` or `expired` (what the
    /// list's status filter matches, with `retiring` for rotated keys).
    pub status: &'static str,
    /// The status (`KeyView::status`) as the badge says it: `expires in 3 days`, `rotated,
    /// retiring in 29 days`.
    pub badge: String,
    /// The badge's style: the status, or `retiring` for a rotated key in
    /// its grace period.
    pub badge_class: &'static str,
    pub created: String,
    /// `3 days ago`.
    pub created_ago: String,
    pub expires: Option<String>,
    pub last_used: Option<String>,
    /// `5 minutes ago`.
    pub last_used_ago: Option<String>,
    /// Checks of the key in the last 24 hours (filled in by the list).
    pub usage: Option<KeyUsage>,
    pub replaced_by: Option<String>,
    pub rotated_from: Option<String>,
    pub rotation_due: bool,
    /// Not expired, not already rotated, and holding a secret (a
    /// public-key key rotates through the API, which takes the
    /// successor's public key).
    pub can_rotate: bool,
    /// A public-key key's algorithm and RFC 7638 thumbprint.
    pub public_key: Option<(&'static str, String)>,
}

impl KeyRow {
    pub fn new(state: &AppState, key: &ApiKey, max_key_age_days: Option<i64>) -> Self {
        let now = state.now();
        Self::from_view(KeyView::new(key, &state.index, now, max_key_age_days), now)
    }

    /// The row of a key's view at `now`.
    pub fn from_view(v: KeyView, now: i64) -> Self {
        let left = v
            .expires_at
            .as_deref()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| t.unix_timestamp() - now);
        let (badge, badge_class) = match (v.status, left) {
            ("expiring", Some(left)) if v.replaced_by.is_some() => {
                (format!("rotated, retiring in {}", span(left)), "retiring")
            }
            ("expiring", Some(left)) => (format!("expires in {}", span(left)), "expiring"),
            (status, _) => (status.to_string(), status),
        };
        KeyRow {
            badge,
            badge_class,
            status: v.status,
            can_rotate: v.replaced_by.is_none() && v.status != "expired" && v.public_key.is_none(),
            public_key: v.public_key_thumbprint.map(|t| (v.algorithm, t)),
            created_ago: ago_rfc3339(&v.created_at, now),
            last_used_ago: v.last_used_at.as_deref().map(|t| ago_rfc3339(t, now)),
            usage: None,
            id: v.id,
            name: v.display_name,
            created: when_rfc3339(&v.created_at),
            expires: v.expires_at.as_deref().map(when_rfc3339),
            last_used: v.last_used_at.as_deref().map(when_rfc3339),
            replaced_by: v.replaced_by,
            rotated_from: v.rotated_from,
            rotation_due: v.rotation_due,
        }
    }
}

/// A key's checks in the last 24 hours, for its row.
#[derive(Debug)]
pub struct KeyUsage {
    pub valid: i64,
    pub refused: i64,
    /// One bar per hour.
    pub spark: super::charts::Chart,
}

/// An audit event in a list.
#[derive(Debug)]
pub struct EventRow {
    pub id: String,
    pub at: String,
    pub action: String,
    pub outcome: String,
    pub actor: String,
    pub target: String,
    pub address: String,
    actor_id: Option<String>,
    target_id: Option<String>,
    /// The names of what the ids refer to, when the page knows them.
    pub actor_name: Option<String>,
    pub target_name: Option<String>,
}

impl EventRow {
    /// Names the actor and the target from `names` (id → name).
    pub fn named(mut self, names: &std::collections::HashMap<String, String>) -> Self {
        self.actor_name = self.actor_id.as_ref().and_then(|id| names.get(id)).cloned();
        self.target_name = self
            .target_id
            .as_ref()
            .and_then(|id| names.get(id))
            .cloned();
        self
    }
}

impl From<&AuditEvent> for EventRow {
    fn from(e: &AuditEvent) -> Self {
        let actor = match e.actor.id() {
            Some(id) => format!("{} {id}", e.actor.kind()),
            None => e.actor.kind().to_string(),
        };
        let target = match &e.target_id {
            Some(id) => format!("{} {id}", e.target_type),
            None => e.target_type.clone(),
        };
        EventRow {
            id: e.id.clone(),
            at: when(e.at),
            action: e.action.clone(),
            outcome: e.outcome.clone(),
            actor,
            target,
            address: e.address.clone().unwrap_or_default(),
            actor_id: e.actor.id().map(str::to_string),
            target_id: e.target_id.clone(),
            actor_name: None,
            target_name: None,
        }
    }
}

/// Grace periods offered when rotating a key: (seconds, label).
pub const GRACE_CHOICES: [(i64, &str); 5] = [
    (0, "none: the old key stops now"),
    (3_600, "1 hour"),
    (86_400, "1 day"),
    (7 * 86_400, "7 days"),
    (30 * 86_400, "30 days"),
];

/// The grace period selected by default: the API's default too.
pub const DEFAULT_GRACE: i64 = crate::ops::keys::DEFAULT_GRACE_SECONDS;

/// Lifetimes offered when creating a key: (days, label); 0 is none.
pub const EXPIRY_CHOICES: [(i64, &str); 4] = [
    (0, "never"),
    (30, "in 30 days"),
    (90, "in 90 days"),
    (365, "in 1 year"),
];
