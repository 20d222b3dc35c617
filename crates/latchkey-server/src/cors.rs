//! CORS by scope, and server credentials seen in a browser.
//!
//! Only appUser credentials belong in a browser. A response to a request
//! authenticated with one gets `Access-Control-Allow-Origin: <origin>` (when
//! the app's `allowedOrigins` allows that origin); a response to any other
//! credential gets no CORS headers, so a browser refuses to hand it to the
//! page. Preflights are answered for the origins the app allows. A 401 on an
//! app's path carries CORS headers for an allowed origin too, so that a page
//! can see that its token expired and fetch a new one.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use latchkey_core::Principal;
use serde_json::json;

use crate::audit::{EventExt, actor_of, base_event};
use crate::extract::AuditSlot;
use crate::state::AppState;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";
/// A key seen in a browser is recorded at most once per this many seconds.
const EXPOSURE_WINDOW: i64 = 600;

/// The app named by a `/v1/apps/{appId}/…` path.
fn app_in_path(path: &str) -> Option<&str> {
    path.strip_prefix(crate::routes::APP_PREFIX)
        .and_then(|rest| rest.split('/').next())
        .filter(|id| !id.is_empty())
}

fn origin_allowed(state: &AppState, app_id: &str, origin: &str) -> bool {
    state
        .index
        .app_policy(app_id)
        .is_some_and(|p| p.allows_origin(origin))
}

fn allow(response: &mut Response, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        allow_headers(response.headers_mut(), value);
    }
}

/// The headers of a response that a page from `origin` may read.
pub fn allow_headers(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate"),
    );
}

/// The CORS middleware (outermost layer of the API router).
pub async fn layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(origin) = req
        .headers()
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string)
    else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_string();
    if req.method() == Method::OPTIONS && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(&state, &path, &origin);
    }
    let slot = AuditSlot::of(&mut req);
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .append(VARY, HeaderValue::from_static("Origin"));
    let allowed = match slot.get() {
        Some((Principal::AppUser { app_id, .. }, _)) => origin_allowed(&state, &app_id, &origin),
        Some(_) => false,
        None => {
            response.status() == StatusCode::UNAUTHORIZED
                && app_in_path(&path).is_some_and(|app| origin_allowed(&state, app, &origin))
        }
    };
    if allowed {
        allow(&mut response, &origin);
    }
    response
}

/// Answers a preflight: allowed for an app's paths from the origins the app
/// allows, and for `/v1/account` (an appUser may ask who it is).
fn preflight(state: &AppState, path: &str, origin: &str) -> Response {
    let allowed = match app_in_path(path) {
        Some(app) => origin_allowed(state, app, origin),
        None => path == crate::routes::ACCOUNT,
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    if allowed && let Ok(value) = HeaderValue::from_str(origin) {
        preflight_headers(headers, value, "GET, PATCH, POST");
    }
    response
}

/// The headers of a preflight answer that allows `origin` to send
/// `methods` with `Authorization` and `Content-Type`.
pub fn preflight_headers(headers: &mut HeaderMap, origin: HeaderValue, methods: &'static str) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    headers.insert(
        ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
}

/// Records that a server credential was used from a browser: an audit event
/// `credential.exposed` and, for an app key, a `credential:exposed` webhook
/// notification. At most once per key per ten minutes.
pub async fn record_exposure(
    state: &AppState,
    principal: &Principal,
    origin: &str,
    address: Option<&str>,
    refused: bool,
) {
    let Some(key_id) = principal.key_id().map(str::to_string) else {
        return;
    };
    let now = state.now();
    if let Ok(mut seen) = state.exposures.lock() {
        if seen
            .get(&key_id)
            .is_some_and(|&t| now.saturating_sub(t) < EXPOSURE_WINDOW)
        {
            return;
        }
        seen.insert(key_id.clone(), now);
    }
    tracing::warn!(%key_id, refused, "a server credential was sent from a browser");
    let origin: String = origin.chars().take(200).collect();
    let mut event = latchkey_store::AuditEvent {
        account_id: principal.account_id().map(str::to_string),
        address: address.map(str::to_string),
        outcome: if refused { "failure" } else { "success" }.into(),
        ..base_event(
            state,
            actor_of(principal),
            "credential.exposed",
            "key",
            Some(&key_id),
        )
    }
    .detail("origin", json!(origin))
    .detail("refused", json!(refused));
    if let Principal::App { app_id, .. } = principal {
        event = event.in_app(app_id).notify(
            "credential:exposed",
            json!({"keyId": key_id, "origin": origin, "refused": refused}),
        );
    }
    if let Err(e) = state.store.record_audit(&event).await {
        tracing::warn!(error = %e, "could not record an exposed credential");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_come_from_app_paths_only() {
        assert_eq!(app_in_path("/v1/apps/ap_1/users/u"), Some("ap_1"));
        assert_eq!(app_in_path("/v1/apps/ap_1"), Some("ap_1"));
        assert_eq!(app_in_path("/v1/apps"), None);
        assert_eq!(app_in_path("/v1/apps/"), None);
        assert_eq!(app_in_path("/v1/account"), None);
    }
}
