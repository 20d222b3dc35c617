//! The answer to a verification request, from the in-memory index only:
//! shared by `POST /v1/verify`'s handler and the connection's direct path
//! (`crate::lane`).

use std::borrow::Cow;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::Verified;
use latchkey_core::verify_request::VerifyRequest;
use serde::Serialize;

use crate::state::AppState;

/// The answer to a verification request, serialized as the members of the
/// documented `VerifyResponse` (in alphabetical order, as before).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer<'a> {
    #[serde(rename_all = "camelCase")]
    Valid {
        account_id: Option<&'a str>,
        app_id: Option<&'a str>,
        key_id: Option<&'a str>,
        scope: &'static str,
        user_id: Option<&'a str>,
        valid: bool,
    },
    Invalid {
        code: &'a str,
        title: Cow<'a, str>,
        valid: bool,
    },
}

fn invalid<'a>(code: &'a str, title: impl Into<Cow<'a, str>>) -> Answer<'a> {
    Answer::Invalid {
        code,
        title: title.into(),
        valid: false,
    }
}

/// The answer to `req` for the operator, given the outcome of verifying
/// its credential. Shared by the handler and the connection's direct path
/// (`crate::lane`).
pub fn answer<'a>(
    state: &AppState,
    req: &'a VerifyRequest,
    verified: Result<&'a Verified, &latchkey_core::AuthError>,
) -> Answer<'a> {
    let verified = match verified {
        Ok(v) => v,
        Err(e) => return invalid(e.code(), e.to_string()),
    };
    let p = &verified.principal;
    let reached = crate::front::reach(
        state,
        p,
        req.app_id.as_deref(),
        req.user_id.as_deref(),
        req.origin.is_some(),
    );
    match (reached, p.scope()) {
        (Ok(reached), Some(scope)) => Answer::Valid {
            account_id: p.account_id(),
            app_id: reached.app_id,
            key_id: p.key_id(),
            scope: scope.as_str(),
            user_id: reached.user_id,
            valid: true,
        },
        (Err((code, title)), _) => invalid(code, title),
        // `reach` refuses a principal without a scope.
        (Ok(_), None) => invalid("forbidden", "the credential has no scope"),
    }
}

/// A 200 response with `answer` as its JSON body.
pub fn json_response(answer: &Answer<'_>) -> Response {
    // An answer takes 100 to 250 bytes: one allocation, no growth.
    let mut body = Vec::with_capacity(256);
    match serde_json::to_writer(&mut body, answer) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a verification answer");
            crate::error::ApiError::internal().into_response()
        }
    }
}
