//! The dashboard: server-rendered pages at `/dashboard` where a person signs
//! in with email and password and manages the account's apps, keys,
//! service accounts, webhooks and settings.
//!
//! Every action goes through the same functions as the `/v1` API (access
//! rules, audit events, index updates), with a [`Caller`] whose principal is
//! `Principal::Session`. Pages are askama templates (`templates/dashboard`),
//! HTML-escaped by default. Sessions live in `session.rs`, CSRF protection
//! and form parsing in `csrf.rs`; a key's page and its policy form in
//! `key_page.rs` and `key_form.rs`.
//!
//! [`Caller`]: crate::extract::Caller

/// The value of a `Result`, or (from the handler) its error as a page.
macro_rules! or_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                return axum::response::IntoResponse::into_response(
                    $crate::dashboard::view::PageError::from(e),
                );
            }
        }
    };
}

mod apps;
mod charts;
mod csrf;
mod key_form;
mod key_page;
mod keys;
mod members;
mod overview;
mod pages;
mod session;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};

use crate::state::AppState;

pub use session::{SESSION_COOKIE, SESSION_LIFETIME_SECONDS, SIGNIN_COOKIE};

/// The dashboard's routes, all under `/dashboard`, to be merged into the
/// server's router. Unknown paths under `/dashboard/` answer an HTML 404
/// page, and a method a page does not take an HTML 405 page.
pub fn router(_state: AppState) -> Router<AppState> {
    let throttle = Arc::new(session::Throttle::default());
    session::warm_up();
    let pages = Router::new()
        .route("/", get(pages::account))
        .route("/signin", get(session::signin_form).post(session::signin))
        .route("/signout", post(session::signout))
        .route("/audit", get(pages::audit))
        .route("/members", get(members::members))
        .route("/invites", post(members::create_invite))
        .route("/invites/{invite_id}/revoke", post(members::revoke_invite))
        .route("/members/{user_id}/role", post(members::change_role))
        .route(
            "/members/{user_id}/remove",
            get(members::confirm_remove).post(members::remove),
        )
        .route(
            "/password",
            get(members::password_form).post(members::change_password),
        )
        .route("/invite", get(members::accept_form).post(members::accept))
        .route("/apps", post(pages::create_app))
        .route("/account/keys", post(keys::create_own_key))
        .route("/account/keys/{key_id}/rotate", post(keys::rotate_own_key))
        .route(
            "/account/keys/{key_id}/delete",
            get(keys::confirm_delete_own_key).post(keys::delete_own_key),
        )
        .route("/apps/{app_id}", get(apps::keys_tab))
        .route("/apps/{app_id}/keys", post(keys::create_app_key))
        .route(
            "/apps/{app_id}/keys/{key_id}",
            get(key_page::app_key).post(key_page::save_app_key),
        )
        .route(
            "/apps/{app_id}/keys/{key_id}/rotate",
            post(keys::rotate_app_key),
        )
        .route(
            "/apps/{app_id}/keys/{key_id}/delete",
            get(keys::confirm_delete_app_key).post(keys::delete_app_key),
        )
        .route(
            "/apps/{app_id}/settings",
            get(apps::settings_tab).post(apps::save_settings),
        )
        .route(
            "/apps/{app_id}/webhooks",
            get(apps::webhooks_tab).post(apps::create_webhook),
        )
        .route(
            "/apps/{app_id}/webhooks/{webhook_id}/delete",
            get(apps::confirm_delete_webhook).post(apps::delete_webhook),
        )
        .route(
            "/apps/{app_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            post(apps::redeliver),
        )
        .route("/apps/{app_id}/users", get(apps::users_tab))
        .route("/service-accounts", post(pages::create_service_account))
        .route("/service-accounts/{sa_id}", get(pages::service_account))
        .route(
            "/service-accounts/{sa_id}/delete",
            get(pages::confirm_delete_service_account).post(pages::delete_service_account),
        )
        .route("/service-accounts/{sa_id}/grants", post(pages::grant))
        .route(
            "/service-accounts/{sa_id}/grants/{app_id}/revoke",
            post(pages::revoke),
        )
        .route("/service-accounts/{sa_id}/keys", post(keys::create_sa_key))
        .route(
            "/service-accounts/{sa_id}/keys/{key_id}",
            get(key_page::sa_key).post(key_page::save_sa_key),
        )
        .route(
            "/service-accounts/{sa_id}/keys/{key_id}/rotate",
            post(keys::rotate_sa_key),
        )
        .route(
            "/service-accounts/{sa_id}/keys/{key_id}/delete",
            get(keys::confirm_delete_sa_key).post(keys::delete_sa_key),
        )
        .route("/static/dashboard.css", get(stylesheet))
        .route("/static/dashboard.js", get(script))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .route("/dashboard/", any(|| async { Redirect::to("/dashboard") }))
        .nest("/dashboard", pages)
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::Extension(throttle))
}

const CSS: &str = include_str!("../../static/dashboard.css");
const JS: &str = include_str!("../../static/dashboard.js");

async fn stylesheet() -> Response {
    static_asset("text/css; charset=utf-8", CSS)
}

async fn script() -> Response {
    static_asset("text/javascript; charset=utf-8", JS)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    view::PageError::new(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no such page in the dashboard.",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    view::PageError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not available",
        "This page cannot be used that way. Go back to the dashboard and use its links and forms.",
    )
    .into_response()
}

/// No script but our own file, no inline code, no framing, no referrer
/// sent to other sites; pages are never cached (some show secrets).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: under it browsers send `Origin: null` with
        // the dashboard's own form posts, which the cross-site check
        // refuses.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
