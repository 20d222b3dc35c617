//! The `/v1` API. Handlers check access through `latchkey_core::Principal`
//! and call the store; every change that affects verification is applied
//! to the key index before the response is sent.

mod accounts;
pub(crate) mod apps;
mod audit_log;
mod introspect;
pub(crate) mod keys;
pub mod policy;
pub(crate) mod service_accounts;
mod users;
pub(crate) mod verifier_tokens;
pub(crate) mod verify;
pub(crate) mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use latchkey_store::AuditEvent;

use crate::audit::EventExt;
use crate::extract::AuditSlot;
use axum::routing::{get, post, put};
use latchkey_core::Principal;
use latchkey_core::principal::AppRef;
use latchkey_store::App;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The OpenAPI document, kept in the repository and checked against the
/// router by the test suite.
pub const OPENAPI_JSON: &str = include_str!("../../../../docs/openapi.json");

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/verify", post(verify::verify))
        // Answered by the connection's service (crate::lane) before the
        // router; routed here too so that every way in gives one answer.
        .route(
            "/v1/forward-auth",
            get(forward_auth)
                .post(forward_auth)
                .put(forward_auth)
                .patch(forward_auth)
                .delete(forward_auth)
                .options(forward_auth)
                .head(forward_auth)
                .trace(forward_auth),
        )
        .route("/v1/introspect", post(introspect::introspect))
        .route(
            "/v1/verifierTokens",
            post(verifier_tokens::create).get(verifier_tokens::list),
        )
        .route(
            "/v1/verifierTokens/{token_id}",
            get(verifier_tokens::get).delete(verifier_tokens::delete),
        )
        .route("/v1/account", get(accounts::whoami))
        .route("/v1/account/keys", get(accounts::list_own_keys))
        .route(
            "/v1/account/keys/{key_id}/rotate",
            post(accounts::rotate_own_key),
        )
        .route("/v1/audit", get(audit_log::account_audit))
        .route("/v1/accounts", post(accounts::create).get(accounts::list))
        .route(
            "/v1/accounts/{account_id}",
            get(accounts::get).delete(accounts::delete),
        )
        .route("/v1/apps", post(apps::create).get(apps::list))
        .route(
            "/v1/apps/{app_id}",
            get(apps::get).patch(apps::update).delete(apps::delete),
        )
        .route(
            "/v1/apps/{app_id}/keys",
            post(keys::create_app_key).get(keys::list_app_keys),
        )
        .route(
            "/v1/apps/{app_id}/keys/{key_id}",
            get(keys::get_app_key).delete(keys::delete_app_key),
        )
        .route(
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            post(keys::rotate_app_key),
        )
        .route("/v1/apps/{app_id}/audit", get(audit_log::app_audit))
        .route(
            "/v1/apps/{app_id}/users",
            post(users::create).get(users::list),
        )
        .route(
            "/v1/apps/{app_id}/users/{user}/tokens",
            post(users::mint_token),
        )
        .route(
            "/v1/apps/{app_id}/users/{user}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route(
            "/v1/apps/{app_id}/webhooks",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/v1/apps/{app_id}/webhooks/{webhook_id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route(
            "/v1/serviceAccounts",
            post(service_accounts::create).get(service_accounts::list),
        )
        .route(
            "/v1/serviceAccounts/{sa_id}",
            get(service_accounts::get).delete(service_accounts::delete),
        )
        .route(
            "/v1/serviceAccounts/{sa_id}/keys",
            post(service_accounts::create_key).get(service_accounts::list_keys),
        )
        .route(
            "/v1/serviceAccounts/{sa_id}/keys/{key_id}",
            get(service_accounts::get_key).delete(service_accounts::delete_key),
        )
        .route(
            "/v1/serviceAccounts/{sa_id}/keys/{key_id}/rotate",
            post(service_accounts::rotate_key),
        )
        .route(
            "/v1/serviceAccounts/{sa_id}/apps/{app_id}",
            put(service_accounts::grant).delete(service_accounts::revoke),
        )
        // Refused writes are audited too (successful ones are recorded by
        // the store together with the change).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_failures,
        ))
        // The dashboard's HTML pages (not part of the JSON API).
        .merge(crate::dashboard::router(state.clone()))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        // A client that never finishes its body is cut off.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            crate::lane::BODY_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cors::layer,
        ))
        // One line per request: method, path, status, latency. Headers (and
        // so credentials) are never recorded.
        .layer(crate::access_log::AccessLogLayer)
        .with_state(state)
}

/// Records a failed write (4xx other than 401) by an authenticated caller
/// as an audit event with outcome `failure`.
async fn audit_failures(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let slot = AuditSlot::of(&mut req);
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    if !status.is_client_error() || status == StatusCode::UNAUTHORIZED {
        return response;
    }
    let Some((principal, address)) = slot.get() else {
        return response;
    };
    // End users' refused calls are not a management action, and any browser
    // could fill the log with them.
    if matches!(principal, latchkey_core::Principal::AppUser { .. }) {
        return response;
    }
    let route = matched.map_or_else(|| path.clone(), |m| m.as_str().to_string());
    record_refusal(&state, &principal, address, &method, &route, &path, status).await;
    response
}

/// Records a refused action of an authenticated caller in the audit log
/// (see [`audit_failures`]).
pub(crate) async fn record_refusal(
    state: &AppState,
    principal: &Principal,
    address: Option<std::net::IpAddr>,
    method: &Method,
    route: &str,
    path: &str,
    status: StatusCode,
) {
    // The app named in the path, unless the caller could not see it (a 404
    // must not put another tenant's app id in anyone's log).
    let app_id = (route.starts_with("/v1/apps/{app_id}") && status != StatusCode::NOT_FOUND)
        .then(|| path.split('/').nth(3).map(str::to_string))
        .flatten();
    let event = AuditEvent {
        account_id: principal.account_id().map(str::to_string),
        app_id,
        address: address.map(|ip| ip.to_string()),
        outcome: "failure".into(),
        ..crate::audit::base_event(
            state,
            crate::audit::actor_of(principal),
            &format!("{method} {route}"),
            "request",
            None,
        )
    }
    .detail("status", serde_json::json!(status.as_u16()));
    if let Err(e) = state.store.record_audit(&event).await {
        tracing::warn!(error = %e, "could not record a failed action in the audit log");
    }
}

async fn forward_auth(State(state): State<AppState>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|axum::extract::ConnectInfo(addr)| addr.ip());
    crate::front::forward_auth::answer(&state, req.method().as_str(), req.headers(), peer).await
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Whether this node can verify credentials: 200 while its index is fresh
/// (`ready`) or the database is unreachable but the index is younger than
/// the staleness window (`degraded`); 503 once it is older (`stale`).
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let freshness = &state.freshness;
    let sync = freshness.state();
    let status = match sync {
        crate::sync::SyncState::Stale => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let age_ms = u64::try_from(freshness.age().as_millis()).unwrap_or(u64::MAX);
    (
        status,
        axum::Json(serde_json::json!({
            "status": sync.as_str(),
            "backend": state.store.backend_name(),
            "changeSeq": freshness.seq(),
            "syncAgeMs": age_ms,
        })),
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /v1/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support this method; see /v1/openapi.json",
    )
}

/// An app as the access rules see it, for this caller.
pub(crate) fn app_ref<'a>(state: &AppState, caller: &Principal, app: &'a App) -> AppRef<'a> {
    let granted_to_caller = match caller {
        Principal::ServiceAccount {
            service_account_id, ..
        } => state
            .index
            .service_account_reaches(service_account_id, &app.id),
        _ => false,
    };
    AppRef {
        id: &app.id,
        account_id: &app.account_id,
        granted_to_caller,
    }
}

/// Loads an app or answers 404.
pub(crate) async fn load_app(state: &AppState, app_id: &str) -> ApiResult<App> {
    state
        .store
        .get_app(app_id)
        .await?
        .ok_or_else(|| ApiError::not_found("app"))
}

pub const MAX_NAME_LEN: usize = 100;

/// A required display name: trimmed, 1 to 100 characters, no control
/// characters.
pub(crate) fn display_name(value: &str, field: &str) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v.to_string())
}

pub const MAX_JSON_OBJECT_BYTES: usize = 16 * 1024;

/// RFC 7396 merge patch of a JSON object: null removes a member, objects
/// merge recursively, anything else replaces.
pub(crate) fn merge_patch(
    target: &mut serde_json::Map<String, serde_json::Value>,
    patch: &serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::Value;
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(serde_json::Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Refuses JSON objects larger than [`MAX_JSON_OBJECT_BYTES`] when stored.
pub(crate) fn check_object_size(
    value: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> ApiResult<()> {
    let len = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if len > MAX_JSON_OBJECT_BYTES {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_JSON_OBJECT_BYTES} bytes of JSON"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": 4})
            .as_object()
            .cloned()
            .expect("object");
        let patch = json!({"a": null, "b": {"c": null, "x": 9}, "e": [1]});
        merge_patch(&mut target, patch.as_object().expect("object"));
        assert_eq!(
            serde_json::Value::Object(target),
            json!({"b": {"d": 3, "x": 9}, "e": [1]})
        );
    }

    #[test]
    fn display_names_are_checked() {
        assert_eq!(
            display_name("  My app ", "displayName").expect("ok"),
            "My app"
        );
        assert!(display_name("", "displayName").is_err());
        assert!(display_name("a\u{7}b", "displayName").is_err());
        assert!(display_name(&"x".repeat(101), "displayName").is_err());
    }
}
