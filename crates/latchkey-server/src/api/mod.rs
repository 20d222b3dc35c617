//! The `/v1` API's handlers: each parses the request, calls an operation
//! in `crate::ops` (where access is checked, the change audited, stored and
//! applied to the key index) and renders the result. The router is
//! assembled in `crate::router`.

pub(crate) mod accounts;
pub(crate) mod apps;
pub(crate) mod audit_log;
pub(crate) mod introspect;
pub(crate) mod keys;
pub(crate) mod members;
pub(crate) mod replica;
pub(crate) mod service_accounts;
pub(crate) mod signing_keys;
pub(crate) mod usage;
pub(crate) mod users;
pub(crate) mod verifier_tokens;
pub(crate) mod verify;
pub(crate) mod webhooks;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use latchkey_core::Principal;

use crate::error::{ApiError, ApiResult};
use crate::extract::Caller;
use crate::state::AppState;

/// The OpenAPI document, kept in the repository and checked against the
/// router by the test suite.
pub const OPENAPI_JSON: &str = include_str!("../../../../docs/openapi.json");

pub(crate) async fn forward_auth(State(state): State<AppState>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|axum::extract::ConnectInfo(addr)| addr.ip());
    let started = std::time::Instant::now();
    crate::front::forward_auth::answer(&state, req.method().as_str(), req.headers(), peer, started)
        .await
}

pub(crate) async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Whether this node can verify credentials: 200 while its index is fresh
/// (`ready`) or the database is unreachable but the index is younger than
/// the staleness window (`degraded`); 503 once it is older (`stale`).
pub(crate) async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl IntoResponse {
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

pub(crate) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

pub(crate) async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /v1/openapi.json",
    )
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support this method; see /v1/openapi.json",
    )
}

/// The account an account-wide read (`GET /v1/audit`, `GET /v1/usage`) is
/// about, and the service account whose reach limits it: the operator
/// names the account (`?accountId=`), every other account-scope caller
/// reads its own. `what` names the read in errors ("audit log",
/// "usage"), `app_path` the app's own endpoint for the same read.
pub(crate) fn account_read(
    caller: &Caller,
    account_id: Option<String>,
    what: &str,
    app_path: &str,
) -> ApiResult<(String, Option<String>)> {
    if account_id.is_some() && !caller.principal.is_operator() {
        return Err(ApiError::bad_request(format!(
            "accountId is for the operator; other callers read their own account's {what}"
        )));
    }
    match &caller.principal {
        Principal::Operator { .. } => match account_id {
            Some(account) => Ok((account, None)),
            None => Err(ApiError::bad_request(
                "the operator names the account to read: ?accountId=acc_…",
            )),
        },
        Principal::UserAccount { account_id, .. } | Principal::Session { account_id, .. } => {
            Ok((account_id.to_string(), None))
        }
        Principal::ServiceAccount {
            account_id,
            service_account_id,
            ..
        } => Ok((account_id.to_string(), Some(service_account_id.to_string()))),
        _ => Err(ApiError::forbidden(format!(
            "the account's {what} needs account scope; use {app_path} for an app"
        ))),
    }
}
