//! `POST /v1/verify`: the operator's API servers ask whether a request's
//! credential is good and what it may reach. Answers from the in-memory
//! index only.

use axum::extract::State;
use axum::response::Response;

use crate::error::{ApiResult, require};
use crate::extract::{JsonBody, VerifyCaller};
use crate::ops::verify::{answer, json_response};
use crate::state::AppState;

/// The body, read by core (the fuzz target `verify_body` holds it to an
/// oracle there).
pub use latchkey_core::verify_request::VerifyRequest;

pub async fn verify(
    State(state): State<AppState>,
    VerifyCaller(caller): VerifyCaller,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> ApiResult<Response> {
    let started = std::time::Instant::now();
    require(
        caller.principal.may_verify(),
        "endpoint",
        "only the operator token or a verifier token may call /v1/verify",
    )?;
    let verified = match (&req.authorization, &req.signed_request) {
        (Some(authorization), None) => state.index.verify_authorization(
            Some(authorization.as_bytes()),
            state.now(),
            state.verify_options(),
        ),
        (None, Some(signed)) => {
            crate::signed_requests::verify_described(&state, signed, state.now())
        }
        _ => {
            return Err(crate::error::ApiError::bad_request(
                "send exactly one of authorization (the request's Authorization header) and \
                 signedRequest (a signed request's method, uri and headers)",
            ));
        }
    };
    Ok(json_response(
        &answer(&state, &req, verified.as_ref(), started).await,
    ))
}
