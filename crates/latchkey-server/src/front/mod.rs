//! The front door: Latchkey in front of the operator's own API.
//!
//! Two ways in, one decision. [`forward_auth`] answers a proxy (nginx
//! `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`) that asks
//! about each request it is about to forward; [`gateway`] is Latchkey's
//! own listener that verifies each request and forwards it itself. Both
//! read the request's target from its path with the configured target
//! routes ([`latchkey_core::TargetRoutes`]) and call [`decide`], which
//! applies `/v1/verify`'s rules ([`reach`]) to the credential, answers CORS
//! preflights as Latchkey's own API does, and records server credentials
//! seen from a browser.

pub mod forward_auth;
pub mod gateway;
mod upstream;

use std::borrow::Cow;
use std::net::IpAddr;

use axum::http::StatusCode;
use axum::http::header::{
    ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, ORIGIN,
};
use latchkey_core::{AuthError, Principal, RouteMatch};

use crate::state::AppState;

/// The identity headers, set on every allowed answer (empty when they do
/// not apply) so that whatever a client sent under these names is
/// overwritten.
pub const SCOPE_HEADER: HeaderName = HeaderName::from_static("x-latchkey-scope");
pub const ACCOUNT_HEADER: HeaderName = HeaderName::from_static("x-latchkey-account-id");
pub const APP_HEADER: HeaderName = HeaderName::from_static("x-latchkey-app-id");
pub const USER_HEADER: HeaderName = HeaderName::from_static("x-latchkey-user-id");
pub const KEY_HEADER: HeaderName = HeaderName::from_static("x-latchkey-key-id");
/// The refusal's code, on every refusal.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-latchkey-error");
/// Every header name that starts with this is Latchkey's to set.
pub const HEADER_PREFIX: &str = "x-latchkey-";

/// Whether a header name would read as one of Latchkey's identity headers
/// where `_` and `-` are the same (CGI-style servers: `X_Latchkey_App_Id`
/// becomes `HTTP_X_LATCHKEY_APP_ID`, merged with the real one).
pub fn is_latchkey_spelling(name: &str) -> bool {
    name.len() >= HEADER_PREFIX.len()
        && name.as_bytes()[..HEADER_PREFIX.len()]
            .iter()
            .zip(HEADER_PREFIX.as_bytes())
            .all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// The methods a front-door preflight allows.
const PREFLIGHT_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";

/// The request as the operator's API would receive it.
#[derive(Debug)]
pub struct Asked<'a> {
    pub method: &'a str,
    /// Path and query; `None` when the proxy did not say.
    pub uri: Option<&'a str>,
    /// The request's headers (`Authorization`, `Origin`, preflight headers).
    pub headers: &'a HeaderMap,
    pub peer: Option<IpAddr>,
    /// The address of the client that sent the request (for a key's
    /// `allowedIps`): the gateway's peer, or what the proxy in front of
    /// forward-auth says it saw.
    pub client_ip: Option<IpAddr>,
    /// A proxy in front describes the request (forward-auth): its
    /// `X-Forwarded-Host` and `X-Forwarded-Proto` are the client's host
    /// and scheme. False at the gateway, which clients reach directly.
    pub behind_proxy: bool,
    /// The caller reads a signed request's body and holds it to its
    /// `Content-Digest` before sending it on (the gateway, on
    /// [`Decision::Allow`] with `signed`). Where it does not (forward-auth),
    /// a signed request whose method may carry a body must carry a nonce.
    pub checks_signed_body: bool,
}

/// Who the request speaks for, when it is allowed.
#[derive(Debug)]
pub struct Identity {
    pub principal: Principal,
    /// The targeted app, or the credential's own.
    pub app_id: Option<String>,
    /// The targeted app user, or the appUser credential's own.
    pub user_id: Option<String>,
}

impl Identity {
    /// The identity headers' values, in the order of [`identity_headers`].
    pub fn header_values(&self) -> [&str; 5] {
        [
            self.principal.scope().map_or("", |s| s.as_str()),
            self.principal.account_id().unwrap_or(""),
            self.app_id.as_deref().unwrap_or(""),
            self.user_id.as_deref().unwrap_or(""),
            self.principal.key_id().unwrap_or(""),
        ]
    }
}

/// The identity header names, in the order of [`Identity::header_values`].
pub fn identity_headers() -> [HeaderName; 5] {
    [
        SCOPE_HEADER,
        ACCOUNT_HEADER,
        APP_HEADER,
        USER_HEADER,
        KEY_HEADER,
    ]
}

/// Sets the identity headers (all five, empty when `identity` is `None`).
pub fn set_identity_headers(headers: &mut HeaderMap, identity: Option<&Identity>) {
    let values = identity.map_or([""; 5], Identity::header_values);
    for (name, value) in identity_headers().into_iter().zip(values) {
        let value = HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static(""));
        headers.insert(name, value);
    }
}

/// Why a request is refused.
#[derive(Debug)]
pub struct Refusal {
    /// The status Latchkey's own API would answer with.
    pub status: StatusCode,
    pub code: &'static str,
    pub title: Cow<'static, str>,
    /// The scope label of the credential when it verified (for the
    /// metrics), else [`crate::metrics::NO_SCOPE`].
    pub scope: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, title: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            title: title.into(),
            scope: crate::metrics::NO_SCOPE,
        }
    }

    fn scoped(mut self, p: &Principal) -> Self {
        self.scope = crate::metrics::scope_label(p);
        self
    }

    fn unauthorized(e: &AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }

    fn with_title(mut self, title: &'static str) -> Self {
        self.title = Cow::Borrowed(title);
        self
    }

    fn forbidden(title: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", title)
    }

    /// The error body in the documented format.
    pub fn error(&self) -> crate::error::ApiError {
        crate::error::ApiError::new(self.status, self.code, self.title.clone())
    }
}

/// What the front door does with a request.
#[derive(Debug)]
pub enum Decision {
    /// Forward it, with these identity headers, and CORS headers for
    /// `cors` (an appUser credential from an origin its app allows).
    Allow {
        identity: Identity,
        cors: Option<HeaderValue>,
        /// The credential was an RFC 9421 signature: a caller that
        /// `checks_signed_body` must now hold the body to its
        /// `Content-Digest`.
        signed: bool,
    },
    /// A CORS preflight: answered with CORS headers for `allowed`, when
    /// the path names an app that allows that origin.
    Preflight { allowed: Option<HeaderValue> },
    /// Refuse it; `cors` as for [`Decision::Allow`] (a 401 on an app's path
    /// from an allowed origin, so that a page can see its token expired).
    Refuse {
        refusal: Refusal,
        cors: Option<HeaderValue>,
    },
}

pub use latchkey_core::index::Reached;

/// `/v1/verify`'s rules: whether a verified principal may act on the app
/// and app user a request targets, coming from a browser (`Origin` sent)
/// or not (core's [`latchkey_core::KeyIndex::reach`], which the in-process
/// replica runs too). The refusal is a code and title.
pub fn reach<'a>(
    state: &AppState,
    p: &'a Principal,
    target_app: Option<&'a str>,
    target_user: Option<&'a str>,
    from_browser: bool,
) -> Result<Reached<'a>, (&'static str, &'static str)> {
    state.index.reach(p, target_app, target_user, from_browser)
}

fn origin_allowed(state: &AppState, app_id: &str, origin: &str) -> bool {
    state
        .index
        .app_policy(app_id)
        .is_some_and(|p| p.allows_origin(origin))
}

/// Decides about one request. Answered from the index; the only write is
/// the audit event of a server credential seen from a browser.
pub async fn decide(state: &AppState, asked: &Asked<'_>) -> Decision {
    let refuse = |refusal| Decision::Refuse {
        refusal,
        cors: None,
    };
    if let Err(e) = state.freshness.check() {
        return refuse(Refusal::new(e.status, e.code, e.title));
    }
    let origin = asked.headers.get(ORIGIN);
    let target = match (asked.uri, state.config.target_routes.is_empty()) {
        // Without routes a path names no target, but one that servers read
        // differently is still refused (the upstream, or a prefix it sits
        // under, could be escaped with `..`).
        (Some(uri), _) => state.config.target_routes.match_uri(uri),
        (None, true) => RouteMatch::Unmatched,
        (None, false) => {
            return refuse(Refusal::forbidden(
                "the proxy did not say which path was requested: \
                 send X-Forwarded-Uri or X-Original-URI",
            ));
        }
    };
    let (target_app, target_user) = match &target {
        RouteMatch::Unmatched => (None, None),
        RouteMatch::Target { app_id, user_id } => (app_id.as_deref(), user_id.as_deref()),
        RouteMatch::Ambiguous(why) => {
            return refuse(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{why}; the path is refused because servers read it differently"),
            ));
        }
    };
    // The CORS answer for this origin on the targeted app's path.
    let app_cors = |app: Option<&str>| {
        let origin = origin?;
        let text = origin.to_str().ok()?;
        origin_allowed(state, app?, text).then(|| origin.clone())
    };
    // Methods are case-sensitive (RFC 9110 §9.1): `options` is not a
    // preflight, and is checked like any other request.
    if asked.method == "OPTIONS"
        && origin.is_some()
        && asked.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        // Allowed only for the origins of the app the path names.
        return Decision::Preflight {
            allowed: app_cors(target_app),
        };
    }
    let mut values = asked.headers.get_all(AUTHORIZATION).iter();
    let header = values.next();
    if values.next().is_some() {
        return refuse(
            Refusal::unauthorized(&AuthError::Scheme)
                .with_title("send exactly one Authorization header"),
        );
    }
    let signed = header.is_none() && crate::signed_requests::is_signed(asked.headers);
    let verified = if signed {
        // An RFC 9421 signed request (crate::signed_requests). Its body is
        // not seen here: the gateway checks it against Content-Digest
        // after this decision; behind forward-auth, the upstream must.
        let Some(request) = crate::signed_requests::received_in_front(
            asked.method,
            asked.uri,
            asked.headers,
            state.config.tls.is_some(),
            asked.behind_proxy,
        ) else {
            return refuse(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a signed request needs its path: the proxy must send X-Forwarded-Uri or \
                 X-Original-URI",
            ));
        };
        match crate::signed_requests::verify(state, &request, asked.checks_signed_body, state.now())
        {
            Ok(verified) => verified,
            Err(e) => {
                return Decision::Refuse {
                    refusal: Refusal::new(e.status, e.code, e.title),
                    cors: app_cors(target_app),
                };
            }
        }
    } else {
        match state.index.verify_authorization(
            header.map(HeaderValue::as_bytes),
            state.now(),
            state.verify_options(),
        ) {
            Ok(verified) => verified,
            Err(e) => {
                return Decision::Refuse {
                    refusal: Refusal::unauthorized(&e),
                    cors: app_cors(target_app),
                };
            }
        }
    };
    let p = &verified.principal;
    let reached = match reach(state, p, target_app, target_user, origin.is_some()) {
        Ok(reached) => reached,
        Err((code, title)) => {
            let status = if code == "not_found" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            };
            if let Some(origin) = origin
                && p.scope().is_some()
                && !matches!(p, Principal::AppUser { .. })
            {
                let origin = String::from_utf8_lossy(origin.as_bytes());
                let peer = asked.peer.map(|ip| ip.to_string());
                crate::cors::record_exposure(state, p, &origin, peer.as_deref(), true).await;
            }
            return refuse(Refusal::new(status, code, title).scoped(p));
        }
    };
    if verified.policy.is_some() || verified.ratelimit.is_some() {
        let now = state.now();
        if let Err(refusal) = admit_key(state, &verified, asked).await {
            let status = match refusal {
                latchkey_core::policy::Refusal::RateLimited(_)
                | latchkey_core::policy::Refusal::UsageExceeded { .. } => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                _ => StatusCode::FORBIDDEN,
            };
            let cors = match p {
                Principal::AppUser { app_id, .. } => app_cors(Some(app_id)),
                _ => None,
            };
            return Decision::Refuse {
                refusal: Refusal::new(status, refusal.code(), refusal.title(now)).scoped(p),
                cors,
            };
        }
    }
    let identity = Identity {
        app_id: reached.app_id.map(str::to_string),
        user_id: reached.user_id.map(str::to_string),
        principal: verified.principal.clone(),
    };
    let cors = match &identity.principal {
        Principal::AppUser { app_id, .. } => app_cors(Some(app_id)),
        _ => None,
    };
    Decision::Allow {
        identity,
        cors,
        signed,
    }
}

/// [`decide`], counted in the metrics as a verification on `way` that
/// began at `started` (a refusal also logged, see [`crate::refusals`]).
pub async fn decide_counted(
    state: &AppState,
    asked: &Asked<'_>,
    way: crate::metrics::Way,
    started: std::time::Instant,
) -> Decision {
    let decision = decide(state, asked).await;
    match &decision {
        Decision::Allow { identity, .. } => {
            state.metrics.valid(way, &identity.principal, started);
            crate::usage::valid(state, &identity.principal);
        }
        Decision::Refuse { refusal, .. } => {
            let claimed = crate::refusals::claimed_key_id(
                asked.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes),
            );
            crate::refusals::refused(
                state,
                way,
                refusal.scope,
                refusal.code,
                claimed.as_deref(),
                started,
            );
        }
        Decision::Preflight { .. } => {}
    }
    decision
}

/// The key's policy for a request through the front door: its address
/// and origin restrictions, its rate limit, and one credit (no
/// permissions are asked for: the front door knows no operation names).
async fn admit_key(
    state: &AppState,
    verified: &latchkey_core::Verified,
    asked: &Asked<'_>,
) -> Result<(), latchkey_core::policy::Refusal> {
    use latchkey_core::policy::checks::{self, Demand};
    let demand = Demand {
        permissions: &[],
        ip: asked.client_ip,
        origin: asked.headers.get(ORIGIN).and_then(|v| v.to_str().ok()),
        cost: 1,
    };
    crate::limits::check_key(state, verified, |subject| {
        checks::verification(subject, &demand, &state.limiter, verified.ratelimit)
    })
    .await
    .map(|_| ())
}

/// Adds the CORS headers of an allowed preflight for `origin`.
pub fn allow_preflight(headers: &mut HeaderMap, origin: HeaderValue) {
    crate::cors::preflight_headers(headers, origin, PREFLIGHT_METHODS);
}

#[cfg(test)]
mod tests {
    use super::is_latchkey_spelling;

    #[test]
    fn underscore_spellings_of_identity_headers_are_recognised() {
        for name in [
            "x-latchkey-app-id",
            "x_latchkey_app_id",
            "x-latchkey_user_id",
            "X_Latchkey-Scope",
            "x-latchkey-",
        ] {
            assert!(is_latchkey_spelling(name), "{name}");
        }
        for name in [
            "x-latchkey",
            "x-latchkeyapp",
            "y_latchkey_app_id",
            "x-other",
            "",
        ] {
            assert!(!is_latchkey_spelling(name), "{name}");
        }
    }
}
