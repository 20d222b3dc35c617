//! `POST /v1/verify`: the operator's API servers ask whether a request's
//! credential is good and what it may reach. Answers from the in-memory
//! index only.

use axum::Json;
use axum::extract::State;
use latchkey_core::Principal;
use latchkey_core::principal::AppRef;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiResult, require};
use crate::extract::{Caller, JsonBody};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifyRequest {
    /// The request's `Authorization` header value.
    authorization: String,
    /// The app the request targets, if any.
    #[serde(default)]
    app_id: Option<String>,
    /// The app user (external id) the request targets, if any.
    #[serde(default)]
    user_id: Option<String>,
    /// The request's `Origin` header, if any (the request came from a
    /// browser).
    #[serde(default)]
    origin: Option<String>,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("authorization", &"<redacted>")
            .field("app_id", &self.app_id)
            .field("user_id", &self.user_id)
            .field("origin", &self.origin)
            .finish()
    }
}

fn invalid(code: &str, title: &str) -> Json<Value> {
    Json(json!({"valid": false, "code": code, "title": title}))
}

pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> ApiResult<Json<Value>> {
    require(
        caller.principal.may_operate(),
        "endpoint",
        "only the operator token may call /v1/verify",
    )?;
    let verified = match state.index.verify_authorization(
        Some(req.authorization.as_bytes()),
        state.now(),
        state.verify_options(),
    ) {
        Ok(v) => v,
        Err(e) => return Ok(invalid(e.code(), &e.to_string())),
    };
    let p = &verified.principal;
    let Some(scope) = p.scope() else {
        return Ok(invalid(
            "forbidden",
            "the operator token is not a credential for the operator's API",
        ));
    };
    if req.origin.is_some() && !matches!(p, Principal::AppUser { .. }) {
        return Ok(invalid(
            "forbidden",
            "app and account credentials must never be used from a browser; use an appUser JWT",
        ));
    }
    let mut app_id = match p {
        Principal::App { app_id, .. } | Principal::AppUser { app_id, .. } => {
            Some(app_id.to_string())
        }
        _ => None,
    };
    if let Some(target) = &req.app_id {
        let reached = state.index.app_account(target).is_some_and(|account_id| {
            let granted = match p {
                Principal::ServiceAccount {
                    service_account_id, ..
                } => state
                    .index
                    .service_account_reaches(service_account_id, target),
                _ => false,
            };
            p.reaches_app(AppRef {
                id: target,
                account_id: &account_id,
                granted_to_caller: granted,
            })
        });
        if !reached {
            return Ok(invalid(
                "not_found",
                "the credential does not reach this app",
            ));
        }
        app_id = Some(target.clone());
    }
    let mut user_id = match p {
        Principal::AppUser { external_id, .. } => Some(external_id.clone()),
        _ => None,
    };
    if let Some(target) = &req.user_id {
        if let Principal::AppUser { external_id, .. } = p
            && external_id != target
        {
            return Ok(invalid(
                "not_found",
                "the credential does not reach this user",
            ));
        }
        user_id = Some(target.clone());
    }
    Ok(Json(json!({
        "valid": true,
        "scope": scope.as_str(),
        "accountId": p.account_id(),
        "appId": app_id,
        "userId": user_id,
        "keyId": p.key_id(),
    })))
}
