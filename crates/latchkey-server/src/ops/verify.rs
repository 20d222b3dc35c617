//! The answer to a verification request, from the in-memory index only:
//! shared by `POST /v1/verify`'s handler and the connection's direct path
//! (`crate::lane`).

use std::borrow::Cow;
use std::time::Instant;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::Verified;
use latchkey_core::policy::LivePolicy;
use latchkey_core::policy::checks::{self, Demand, Outcome, Refusal};
use latchkey_core::verify_request::VerifyRequest;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::metrics::{NO_SCOPE, Way};
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
        #[serde(skip_serializing_if = "Option::is_none")]
        credits: Option<CreditsAnswer>,
        key_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        permissions: Option<&'a [Box<str>]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ratelimit: Option<RatelimitAnswer>,
        scope: &'static str,
        user_id: Option<&'a str>,
        valid: bool,
    },
    #[serde(rename_all = "camelCase")]
    Invalid {
        code: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<i64>,
        title: Cow<'a, str>,
        valid: bool,
    },
}

/// The balance left after this verification.
#[derive(Debug, Serialize)]
pub struct CreditsAnswer {
    pub remaining: i64,
}

/// Where the key's rate limit stands after this verification.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RatelimitAnswer {
    pub limit: u32,
    pub remaining: u32,
    /// RFC 3339: when the window ends.
    pub reset_at: String,
}

fn invalid<'a>(code: &'a str, title: impl Into<Cow<'a, str>>) -> Answer<'a> {
    Answer::Invalid {
        code,
        retry_after_seconds: None,
        title: title.into(),
        valid: false,
    }
}

/// The key's policy checks for a verification (see
/// `latchkey_core::policy::checks::verification` for their order).
async fn check_policy(
    state: &AppState,
    req: &VerifyRequest,
    verified: &Verified,
) -> Result<Outcome, Refusal> {
    let demand = Demand {
        permissions: &req.permissions,
        ip: req.ip,
        origin: req.origin.as_deref(),
        cost: i64::from(req.cost.unwrap_or(1)),
    };
    crate::limits::check_key(state, verified, |subject| {
        checks::verification(subject, &demand, &state.limiter, verified.ratelimit)
    })
    .await
}

/// The answer to `req` for the operator, given the outcome of verifying
/// its credential. Shared by the handler and the connection's direct path
/// (`crate::lane`). Counted in the metrics (and a refusal logged) as a
/// verification that began at `started`.
pub async fn answer<'a>(
    state: &AppState,
    req: &'a VerifyRequest,
    verified: Result<&'a Verified, &latchkey_core::AuthError>,
    started: Instant,
) -> Answer<'a> {
    let refused = |scope, code, key_id: Option<&str>| {
        crate::refusals::refused(state, Way::Verify, scope, code, key_id, started);
    };
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let claimed =
                crate::refusals::claimed_key_id(req.authorization.as_deref().map(str::as_bytes));
            refused(NO_SCOPE, e.code(), claimed.as_deref());
            return invalid(e.code(), e.to_string());
        }
    };
    let p = &verified.principal;
    let scope_label = crate::metrics::scope_label(p);
    let reached = crate::front::reach(
        state,
        p,
        req.app_id.as_deref(),
        req.user_id.as_deref(),
        req.origin.is_some(),
    );
    match (reached, p.scope()) {
        (Ok(reached), Some(scope)) => match check_policy(state, req, verified).await {
            Ok(outcome) => {
                state.metrics.valid(Way::Verify, p, started);
                crate::usage::valid(state, p);
                Answer::Valid {
                    account_id: p.account_id(),
                    app_id: reached.app_id,
                    credits: outcome
                        .credits
                        .map(|(remaining, _)| CreditsAnswer { remaining }),
                    key_id: p.key_id(),
                    meta: verified.policy.as_deref().and_then(LivePolicy::meta),
                    permissions: verified.policy.as_deref().and_then(LivePolicy::permissions),
                    ratelimit: outcome.ratelimit.map(|l| RatelimitAnswer {
                        limit: l.limit,
                        remaining: l.remaining,
                        reset_at: crate::views::rfc3339(l.reset_at),
                    }),
                    scope: scope.as_str(),
                    user_id: reached.user_id,
                    valid: true,
                }
            }
            Err(refusal) => {
                refused(scope_label, refusal.code(), p.key_id());
                let now = state.now();
                Answer::Invalid {
                    code: refusal.code(),
                    retry_after_seconds: match &refusal {
                        Refusal::RateLimited(l) => Some(l.retry_after(now)),
                        _ => None,
                    },
                    title: Cow::Owned(refusal.title(now)),
                    valid: false,
                }
            }
        },
        (Err((code, title)), _) => {
            refused(scope_label, code, p.key_id());
            invalid(code, title)
        }
        // `reach` refuses a principal without a scope.
        (Ok(_), None) => {
            refused(scope_label, "forbidden", p.key_id());
            invalid("forbidden", "the credential has no scope")
        }
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
