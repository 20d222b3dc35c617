//! Request extractors whose every rejection is an [`ApiError`] in the
//! documented format: the caller's credential, JSON bodies, path segments
//! and paging parameters.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AUTHORIZATION, ORIGIN};
use axum::http::request::Parts;
use latchkey_core::Principal;
use latchkey_core::secret::{OPERATOR_TOKEN_PREFIX, VERIFIER_TOKEN_PREFIX};
use latchkey_store::Page;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::error::ApiError;
pub use crate::ops::Caller;
use crate::state::AppState;

/// Why a verifier token gets 403 everywhere but where it belongs.
pub const VERIFIER_TOKEN_ELSEWHERE: &str =
    "a verifier token may call only /v1/verify and /v1/introspect";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// Every endpoint but verification's: a verifier token is refused (403).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        use crate::metrics::{NO_SCOPE, Way, scope_label};
        let started = std::time::Instant::now();
        let refused = |scope, code, claimed: Option<String>| {
            crate::refusals::refused(state, Way::Api, scope, code, claimed.as_deref(), started);
        };
        let caller = match authenticate(parts, state, false).await {
            Ok(caller) => caller,
            Err(e) => {
                let header = parts.headers.get(AUTHORIZATION).map(|h| h.as_bytes());
                refused(NO_SCOPE, e.code, crate::refusals::claimed_key_id(header));
                return Err(e);
            }
        };
        if caller.principal.is_verifier() {
            refused(scope_label(&caller.principal), "forbidden", None);
            return Err(ApiError::forbidden(VERIFIER_TOKEN_ELSEWHERE));
        }
        state.metrics.valid(Way::Api, &caller.principal, started);
        crate::usage::valid(state, &caller.principal);
        Ok(caller)
    }
}

/// The caller of `/v1/verify` and `/v1/introspect`: as [`Caller`], but a
/// verifier token is let through (the handler asks `may_verify`), and an
/// operator or verifier token is also accepted as the password of Basic
/// credentials with any user name, as OAuth introspection clients send it.
#[derive(Debug, Clone)]
pub struct VerifyCaller(pub Caller);

impl FromRequestParts<AppState> for VerifyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, true).await.map(VerifyCaller)
    }
}

/// `Bearer <token>` for `Basic base64(anyone ":" <token>)` when the token
/// is an operator or verifier token; `None` for anything else (a key's
/// Basic credentials among them), which is then verified as it is.
fn bearer_of_basic_token(header: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    use base64::Engine;
    // Read as the core reads every Authorization value: without the
    // optional whitespace around it, the scheme, then one or more spaces.
    let header = latchkey_core::verify::trim_ows(header);
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let rest = &rest[rest.iter().position(|&b| b != b' ')?..];
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?,
    );
    let colon = decoded.iter().position(|&b| b == b':')?;
    let password = &decoded[colon + 1..];
    let is_token = [OPERATOR_TOKEN_PREFIX, VERIFIER_TOKEN_PREFIX]
        .iter()
        .any(|prefix| password.starts_with(prefix.as_bytes()));
    if !is_token {
        return None;
    }
    let mut bearer = Zeroizing::new(Vec::with_capacity(7 + password.len()));
    bearer.extend_from_slice(b"Bearer ");
    bearer.extend_from_slice(password);
    Some(bearer)
}

/// Verifies the request's credential (and refuses server credentials sent
/// from a browser). `basic_tokens`: see [`VerifyCaller`].
async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
    basic_tokens: bool,
) -> Result<Caller, ApiError> {
    state.freshness.check()?;
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err(ApiError::unauthorized(&latchkey_core::AuthError::Scheme)
            .with_title("send exactly one Authorization header"));
    }
    let translated = header
        .filter(|_| basic_tokens)
        .and_then(|h| bearer_of_basic_token(h.as_bytes()));
    let presented = match &translated {
        Some(bearer) => Some(bearer.as_slice()),
        None => header.map(|h| h.as_bytes()),
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let now = state.now();
    // Refused before the credential is checked: a 200 among the 429s
    // would tell a guesser which guess was right (see crate::throttle).
    if let Err(throttled) = state.throttle.admit(peer, presented, &state.index, now) {
        return Err(throttled_error(throttled));
    }
    let verified = if header.is_none() && crate::signed_requests::is_signed(&parts.headers) {
        // An RFC 9421 signed request: the key's secret never went on the
        // wire (crate::signed_requests).
        // Its body was held to Content-Digest by the router's layer
        // (`signed_requests::check_content_digest`).
        let request = crate::signed_requests::received_by_api(parts, state.config.tls.is_some());
        match crate::signed_requests::verify(state, &request, true, now) {
            Ok(verified) => verified,
            Err(e) => {
                state.throttle.failed(peer, None, &state.index, now);
                return Err(e);
            }
        }
    } else {
        match state
            .index
            .verify_authorization(presented, now, state.verify_options())
        {
            Ok(verified) => verified,
            Err(e) => {
                if crate::throttle::counts(&e) {
                    state.throttle.failed(peer, presented, &state.index, now);
                }
                return Err(ApiError::unauthorized(&e));
            }
        }
    };
    // Browsers send Origin on cross-origin requests (and on same-origin
    // writes). Only appUser credentials belong in a browser: any other
    // credential seen with an Origin has leaked. It is recorded, and
    // refused before it has any effect: always for account and operator
    // credentials, for app keys unless the app turned
    // blockBrowserSecrets off.
    if let Some(origin) = parts.headers.get(ORIGIN)
        && !matches!(verified.principal, Principal::AppUser { .. })
    {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let refuse = match &verified.principal {
            Principal::App { app_id, .. } => state
                .index
                .app_policy(app_id)
                .is_none_or(|p| p.block_browser_secrets),
            _ => true,
        };
        crate::cors::record_exposure(
            state,
            &verified.principal,
            &origin,
            peer.map(|ip| ip.to_string()).as_deref(),
            refuse,
        )
        .await;
        if refuse {
            return Err(ApiError::forbidden(
                "app and account credentials must never be used from a browser; \
                     give the browser an appUser JWT instead",
            ));
        }
    }
    // The key's own restrictions and rate limit (its permissions are
    // checked by each operation, `Caller::require`).
    if verified.policy.is_some() || verified.ratelimit.is_some() {
        admit_key(parts, state, &verified, peer, now).await?;
    }
    // A person's role (teams), from the index like the key itself: a
    // member removed since is refused even if a key of theirs were left.
    let role = match &verified.principal {
        Principal::UserAccount {
            user_account_id, ..
        } => Some(state.index.member_role(user_account_id).ok_or_else(|| {
            ApiError::unauthorized(&latchkey_core::AuthError::BadCredentials)
                .with_title("this user account is no longer a member of its account")
        })?),
        _ => None,
    };
    if let Some(slot) = parts.extensions.get::<AuditSlot>() {
        slot.fill(&verified.principal, peer);
    }
    Ok(Caller {
        principal: verified.principal,
        peer,
        policy: verified.policy,
        role,
    })
}

/// A key's address and origin restrictions and its rate limit, for a call
/// to Latchkey's own API: 403 `ip_not_allowed` / `origin_not_allowed`, 429
/// `rate_limited` (with `Retry-After` and the `RateLimit` headers).
/// Credits are spent by verifications only.
async fn admit_key(
    parts: &Parts,
    state: &AppState,
    verified: &latchkey_core::Verified,
    peer: Option<IpAddr>,
    now: i64,
) -> Result<(), ApiError> {
    use latchkey_core::policy::checks::{self, IpAllowed, Limited, OriginAllowed};
    let origin = parts.headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    crate::limits::check_key(state, verified, |subject| {
        checks::run(
            subject,
            &[
                &IpAllowed(peer),
                &OriginAllowed(origin),
                &Limited {
                    limiter: &state.limiter,
                    limit: verified.ratelimit,
                },
            ],
        )
    })
    .await
    .map(|_| ())
    .map_err(|refusal| ApiError::refused(&refusal, verified.ratelimit, now))
}

/// The 429 of a throttled credential.
fn throttled_error(throttled: crate::throttle::Throttled) -> ApiError {
    let seconds = throttled.retry_after_seconds;
    let title = if throttled.by_key {
        format!(
            "too many failed credentials for this key id, this address among their senders; \
             retry after {seconds} seconds"
        )
    } else {
        format!("too many failed credentials from this address; retry after {seconds} seconds")
    };
    ApiError::too_many_requests(seconds, title)
}

/// Where the `Caller` extractor leaves the verified principal, so that the
/// failure-auditing middleware can attribute a refused action.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<Attributed>>>);

/// A verified principal and the peer address it came from.
pub type Attributed = (Principal, Option<IpAddr>);

impl AuditSlot {
    fn fill(&self, principal: &Principal, peer: Option<IpAddr>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((principal.clone(), peer));
        }
    }

    /// The principal the `Caller` extractor verified, if it ran.
    pub fn get(&self) -> Option<Attributed> {
        self.0.lock().ok().and_then(|s| s.clone())
    }

    /// The slot of this request, inserting one if no layer did yet.
    pub fn of(req: &mut axum::extract::Request) -> AuditSlot {
        if let Some(slot) = req.extensions().get::<AuditSlot>() {
            return slot.clone();
        }
        let slot = AuditSlot::default();
        req.extensions_mut().insert(slot.clone());
        slot
    }
}

impl ApiError {
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }
}

/// A JSON body; malformed JSON, a body that is not a JSON object (serde
/// would read a struct from an array too), wrong types, unknown fields and
/// oversized bodies are answered in the documented error format.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::bad_request(
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| body_read_error(e.status(), state))?;
        if let Some(error) = not_an_object(&bytes) {
            return Err(error);
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(format!(
                "the body is not valid JSON: {}",
                body_error_text(&e.body_text())
            ))),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::bad_request(format!(
                "the body does not have the expected shape: {}",
                body_error_text(&e.body_text())
            ))),
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// `application/json`, with parameters or not, or any `application/…+json`
/// type: what axum's `Json` accepts.
fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == "application"
                && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
        })
}

/// The answer to a body that could not be read, by the status axum gave.
fn body_read_error(status: axum::http::StatusCode, state: &AppState) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(state.config.max_body_bytes)
    } else {
        ApiError::bad_request("the request body could not be read completely")
    }
}

/// The first byte after JSON's whitespace.
fn first_json_byte(bytes: &[u8]) -> Option<u8> {
    bytes
        .iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// The 400 for a body that is another JSON value than an object, saying
/// what it is instead; `None` for an object (which may still be malformed)
/// and for text that is no JSON value at all: serde says what is wrong
/// with those.
fn not_an_object(bytes: &[u8]) -> Option<ApiError> {
    let found = match first_json_byte(bytes)? {
        b'[' => "an array",
        b'"' => "a string",
        b'-' | b'0'..=b'9' => "a number",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => return None,
    };
    Some(ApiError::bad_request(format!(
        "the body must be a JSON object, not {found}"
    )))
}

/// A JSON body that may also be absent (no body at all): then `T::default()`.
#[derive(Debug)]
pub struct JsonBodyOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for JsonBodyOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let headers = req.headers();
        let has_body = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || headers.contains_key(axum::http::header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(JsonBodyOrEmpty(T::default()));
        }
        JsonBody::<T>::from_request(req, state)
            .await
            .map(|JsonBody(v)| JsonBodyOrEmpty(v))
    }
}

/// An `application/x-www-form-urlencoded` body (OAuth's form, as in
/// RFC 7662 introspection). Another content type, a body that does not
/// parse and an oversized body are answered in the documented error
/// format (400, 400, 413). Members the type does not name are ignored, as
/// OAuth servers ignore parameters they do not know.
#[derive(Debug)]
pub struct FormBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for FormBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_form = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(ApiError::bad_request(
                "send the body as a form with Content-Type: application/x-www-form-urlencoded",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| body_read_error(e.status(), state))?;
        serde_urlencoded::from_bytes::<T>(&bytes)
            .map(FormBody)
            .map_err(|e| {
                let text: String = e.to_string().chars().take(300).collect();
                ApiError::bad_request(format!(
                    "the form does not have the expected fields: {text}"
                ))
            })
    }
}

/// serde's message without axum's generic prefix.
fn body_error_text(text: &str) -> String {
    let text = text
        .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        .trim_start_matches("Failed to parse the request body as JSON: ");
    text.chars().take(300).collect()
}

/// Path segments.
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| PathParams(v))
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))
    }
}

pub const DEFAULT_PAGE_LIMIT: u32 = 25;
pub const MAX_PAGE_LIMIT: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPage {
    limit: Option<u32>,
    after: Option<String>,
}

/// `?limit=&after=` cursor paging.
#[derive(Debug)]
pub struct Paging(pub Page);

impl FromRequestParts<AppState> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(raw) = Query::<RawPage>::from_request_parts(parts, state)
            .await
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!(
                    "bad paging parameters (limit: 1 to {MAX_PAGE_LIMIT}, after: an id): {}",
                    e.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                ))
            })?;
        Ok(Paging(page_of_query(raw.limit, raw.after)?))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeliveryQuery {
    limit: Option<u32>,
}

/// `?limit=` of a webhook's recent deliveries: 1 to
/// [`MAX_DELIVERY_LIMIT`](crate::ops::webhooks::MAX_DELIVERY_LIMIT), the
/// default when absent; any other parameter is a 400.
#[derive(Debug)]
pub struct DeliveryQuery(pub u32);

impl FromRequestParts<AppState> for DeliveryQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        use crate::ops::webhooks::{MAX_DELIVERY_LIMIT, delivery_limit};
        let Query(raw) = Query::<RawDeliveryQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!(
                    "bad query parameters (limit: 1 to {MAX_DELIVERY_LIMIT}): {}",
                    e.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                ))
            })?;
        Ok(DeliveryQuery(delivery_limit(raw.limit)?))
    }
}

/// A [`Page`] from `limit` (1 to 100, default 25) and `after` (an empty
/// cursor means none).
pub fn page_of_query(limit: Option<u32>, after: Option<String>) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    Ok(Page {
        limit,
        after: after.filter(|a| !a.is_empty()),
    })
}
