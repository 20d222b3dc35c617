//! The router: every route of the `/v1` API and the dashboard, and the
//! layers around them (body limits and timeouts, CORS, the access log, the
//! recording of refused writes). The connection's direct path
//! (`crate::lane`) answers the usual `POST /v1/verify` before it.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};

use crate::api::{
    accounts, apps, audit_log, introspect, keys, members, replica, service_accounts, signing_keys,
    usage, users, verifier_tokens, verify, webhooks,
};
use crate::api::{forward_auth, health, method_not_allowed, no_route, openapi, ready};
use crate::extract::AuditSlot;
use crate::routes;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route(routes::HEALTH, get(health))
        .route(routes::READY, get(ready))
        .route(routes::OPENAPI, get(openapi))
        .route(routes::VERIFY, post(verify::verify))
        // Answered by the connection's service (crate::lane) before the
        // router; routed here too so that every way in gives one answer.
        .route(
            routes::FORWARD_AUTH,
            get(forward_auth)
                .post(forward_auth)
                .put(forward_auth)
                .patch(forward_auth)
                .delete(forward_auth)
                .options(forward_auth)
                .head(forward_auth)
                .trace(forward_auth),
        )
        .route(routes::INTROSPECT, post(introspect::introspect))
        .route(
            "/v1/verifierTokens",
            post(verifier_tokens::create_verifier).get(verifier_tokens::list_verifier),
        )
        .route(
            "/v1/verifierTokens/{token_id}",
            get(verifier_tokens::get_verifier).delete(verifier_tokens::delete_verifier),
        )
        .route(
            "/v1/replicaTokens",
            post(verifier_tokens::create_replica).get(verifier_tokens::list_replica),
        )
        .route(
            "/v1/replicaTokens/{token_id}",
            get(verifier_tokens::get_replica).delete(verifier_tokens::delete_replica),
        )
        .route(routes::REPLICA_SNAPSHOT, get(replica::snapshot))
        .route(routes::REPLICA_CHANGES, get(replica::changes))
        .route(routes::ACCOUNT, get(accounts::whoami))
        .route("/v1/account/keys", get(accounts::list_own_keys))
        .route(
            "/v1/account/keys/{key_id}/rotate",
            post(accounts::rotate_own_key),
        )
        .route("/v1/account/members", get(members::list_members))
        .route(
            "/v1/account/members/{user_id}",
            patch(members::update_member).delete(members::delete_member),
        )
        .route(
            "/v1/account/invites",
            post(members::create_invite).get(members::list_invites),
        )
        .route(
            "/v1/account/invites/{invite_id}",
            delete(members::delete_invite),
        )
        .route("/v1/audit", get(audit_log::account_audit))
        .route("/v1/usage", get(usage::account_usage))
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
            get(keys::get_app_key)
                .patch(keys::update_app_key)
                .delete(keys::delete_app_key),
        )
        .route(
            "/v1/apps/{app_id}/keys/{key_id}/rotate",
            post(keys::rotate_app_key),
        )
        .route("/v1/apps/{app_id}/signingKeys", get(signing_keys::list))
        .route(
            "/v1/apps/{app_id}/signingKeys/rotate",
            post(signing_keys::rotate),
        )
        .route("/v1/apps/{app_id}/jwks.json", get(signing_keys::jwks))
        .route("/v1/apps/{app_id}/audit", get(audit_log::app_audit))
        .route("/v1/apps/{app_id}/usage", get(usage::app_usage))
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
            "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route(
            "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries/{delivery_id}",
            get(webhooks::get_delivery),
        )
        .route(
            "/v1/apps/{app_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            post(webhooks::redeliver),
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
            get(service_accounts::get_key)
                .patch(service_accounts::update_key)
                .delete(service_accounts::delete_key),
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
        .merge(crate::dashboard::router(state.clone()));
    // On a listener of its own when one is configured (404 here then).
    // Not part of the JSON API (not in docs/openapi.json), as the
    // dashboard's pages.
    let routes = if state.config.metrics_listen.is_none() {
        routes.merge(crate::metrics::routes())
    } else {
        routes
    };
    routes
        // The route template, for the metrics (crate::lane).
        .route_layer(axum::middleware::from_fn(tag_route))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        // A signed request's body must match the Content-Digest its
        // signature covers (crate::signed_requests).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::signed_requests::check_content_digest,
        ))
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

/// The route template a request matched, handed back with its response
/// to the connection's service, which counts requests by route
/// (`crate::lane`).
#[derive(Debug, Clone)]
pub struct MatchedRoute(pub MatchedPath);

async fn tag_route(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(MatchedRoute(matched));
    }
    response
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
    crate::audit::record_refusal(&state, &principal, address, &method, &route, &path, status).await;
    response
}
