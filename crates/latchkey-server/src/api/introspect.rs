//! `POST /v1/introspect`: OAuth 2.0 token introspection (RFC 7662), so
//! that gateways which speak it (Kong, APISIX, Envoy filters) verify
//! Latchkey credentials with no custom code.
//!
//! The caller is the operator or a verifier token (Bearer, or Basic with
//! any user name and the token as password). The form's `token` is one of:
//!
//! - a JWT signed by a key (`eyJ…`),
//! - a key's `keyId:secret` pair as it is,
//! - the same pair base64-encoded, as in a Basic `Authorization` header.
//!
//! It is verified as `/v1/verify` verifies a credential, from the index
//! alone. Anything that does not verify (malformed, unknown, wrong secret,
//! expired, deleted, rotated out, or an operator or verifier token) is
//! `{"active":false}` and nothing more (RFC 7662 §2.2).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latchkey_core::verify::MAX_HEADER_LEN;
use latchkey_core::{Principal, Verified};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{ApiResult, require};
use crate::extract::{FormBody, VerifyCaller};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct IntrospectRequest {
    token: String,
    /// Accepted and ignored: the token's form says what it is.
    #[serde(default)]
    token_type_hint: Option<String>,
}

impl std::fmt::Debug for IntrospectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectRequest")
            .field("token", &"<redacted>")
            .field("token_type_hint", &self.token_type_hint)
            .finish()
    }
}

/// The answer for an active token: RFC 7662's members, then Latchkey's.
#[derive(Debug, Serialize)]
struct Active<'a> {
    active: bool,
    scope: &'static str,
    /// The key that signed the JWT or whose pair was presented.
    client_id: &'a str,
    /// The app user (external id) of an appUser JWT.
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    token_type: &'static str,
    #[serde(rename = "accountId")]
    account_id: &'a str,
    #[serde(rename = "appId", skip_serializing_if = "Option::is_none")]
    app_id: Option<&'a str>,
}

pub async fn introspect(
    State(state): State<AppState>,
    VerifyCaller(caller): VerifyCaller,
    FormBody(req): FormBody<IntrospectRequest>,
) -> ApiResult<Response> {
    require(
        caller.principal.may_verify(),
        "endpoint",
        "only the operator token or a verifier token may call /v1/introspect",
    )?;
    use crate::metrics::{NO_SCOPE, Way, scope_label};
    let started = std::time::Instant::now();
    let Some((header, token_type)) = credential_of(&req.token) else {
        crate::refusals::refused(
            &state,
            Way::Introspect,
            NO_SCOPE,
            "unauthorized",
            None,
            started,
        );
        return Ok(inactive());
    };
    let verified = state.index.verify_authorization(
        Some(header.as_bytes()),
        state.now(),
        state.verify_options(),
    );
    let claimed = || crate::refusals::claimed_key_id(Some(header.as_bytes()));
    Ok(match verified {
        Ok(verified) => match admitted(&state, &verified).await {
            Ok(()) => match active(&verified, token_type) {
                Some(response) => {
                    state
                        .metrics
                        .valid(Way::Introspect, &verified.principal, started);
                    crate::usage::valid(&state, &verified.principal);
                    response
                }
                None => {
                    let scope = scope_label(&verified.principal);
                    crate::refusals::refused(
                        &state,
                        Way::Introspect,
                        scope,
                        "forbidden",
                        None,
                        started,
                    );
                    inactive()
                }
            },
            Err(refusal) => {
                let scope = scope_label(&verified.principal);
                let key = verified.principal.key_id();
                crate::refusals::refused(
                    &state,
                    Way::Introspect,
                    scope,
                    refusal.code(),
                    key,
                    started,
                );
                inactive()
            }
        },
        Err(e) => {
            crate::refusals::refused(
                &state,
                Way::Introspect,
                NO_SCOPE,
                e.code(),
                claimed().as_deref(),
                started,
            );
            inactive()
        }
    })
}

/// The key's policy, as for a request through the front door (a gateway
/// asks about each request it is about to let through): its rate limit
/// and one credit. Introspection carries no client address, so a key
/// restricted to certain addresses is never active here, and no origin.
async fn admitted(
    state: &AppState,
    verified: &Verified,
) -> Result<(), latchkey_core::policy::Refusal> {
    use latchkey_core::policy::checks::{self, Demand};
    let demand = Demand {
        permissions: &[],
        ip: None,
        origin: None,
        cost: 1,
    };
    crate::limits::check_key(state, verified, |subject| {
        checks::verification(subject, &demand, &state.limiter, verified.ratelimit)
    })
    .await
    .map(|_| ())
}

/// The `Authorization` header value that presents `token`, and the
/// token's type as introspection reports it.
fn credential_of(token: &str) -> Option<(Zeroizing<String>, &'static str)> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_HEADER_LEN {
        return None;
    }
    Some(if token.contains(':') {
        (
            Zeroizing::new(format!("Basic {}", STANDARD.encode(token))),
            "Basic",
        )
    } else if token.contains('.') {
        (Zeroizing::new(format!("Bearer {token}")), "Bearer")
    } else {
        // Base64 has neither ':' nor '.': an encoded pair.
        (Zeroizing::new(format!("Basic {token}")), "Basic")
    })
}

/// The answer for a verified key credential; `None` for the operator and
/// verifier tokens, which are not credentials of the operator's API.
fn active(verified: &Verified, token_type: &'static str) -> Option<Response> {
    let p = &verified.principal;
    let scope = p.scope()?;
    let (app_id, sub) = match p {
        Principal::AppUser {
            app_id,
            external_id,
            ..
        } => (Some(&**app_id), Some(external_id.as_str())),
        Principal::App { app_id, .. } => (Some(&**app_id), None),
        _ => (None, None),
    };
    let answer = Active {
        active: true,
        scope: scope.as_str(),
        client_id: p.key_id()?,
        sub,
        exp: verified.expires_at,
        iat: verified.issued_at,
        token_type,
        account_id: p.account_id()?,
        app_id,
    };
    Some(json(&serde_json::to_vec(&answer).ok()?))
}

/// `{"active":false}`: nothing else is said about a token that is not
/// active.
fn inactive() -> Response {
    json(br#"{"active":false}"#)
}

fn json(body: &[u8]) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            // The answer speaks for a credential at this moment only.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body.to_vec(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_presented_in_the_form_they_have() {
        let (header, kind) = credential_of(" app_x:lksk_y ").expect("pair");
        assert_eq!(
            (header.as_str(), kind),
            (
                format!("Basic {}", STANDARD.encode("app_x:lksk_y")).as_str(),
                "Basic"
            )
        );
        let (header, kind) = credential_of("eyJ.a.b").expect("jwt");
        assert_eq!((header.as_str(), kind), ("Bearer eyJ.a.b", "Bearer"));
        let (header, kind) = credential_of("YXBwX3g6bGtza195").expect("encoded pair");
        assert_eq!((header.as_str(), kind), ("Basic YXBwX3g6bGtza195", "Basic"));
        assert!(credential_of("  ").is_none());
        assert!(credential_of(&"a".repeat(MAX_HEADER_LEN + 1)).is_none());
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let req = IntrospectRequest {
            token: "app_x:lksk_secretsecret".into(),
            token_type_hint: None,
        };
        assert!(!format!("{req:?}").contains("secretsecret"));
    }
}
