//! Signed requests (issue 22) at the server: reading a request's RFC 9421
//! signature (`Signature-Input`, `Signature`) as Latchkey received it, the
//! nonces already seen, and the body's `Content-Digest`. The signature base
//! and the HMAC are core's (`latchkey_core::http_sig`).
//!
//! A nonce is remembered per key for as long as a signature with it could
//! still be accepted (its `created` plus the window and the leeway), on
//! this node: a request replayed to another node within the window is
//! refused there only by its `created` (documented). Only the nonces of
//! signatures that verified are kept, so nobody can fill the cache
//! without a key's secret; it holds at most [`MAX_NONCES`].

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use latchkey_core::AuthError;
use latchkey_core::http_sig::{
    self, PreparedSignature, RequestParts, SignedRequestError, SignedRequestPolicy,
};

use crate::error::ApiError;
use crate::state::AppState;

/// The most nonces kept; past it, a signature with a new nonce is refused
/// (503) until old ones expire. Each is a few dozen bytes.
pub const MAX_NONCES: usize = 1_000_000;

/// The nonces of verified signatures, per key, with when each may be
/// forgotten.
#[derive(Debug, Default)]
pub struct Nonces {
    seen: Mutex<HashMap<(String, String), i64>>,
}

impl Nonces {
    /// Records `nonce` of `key_id` until `until`; false if it was seen
    /// already (a replay) or the cache is full.
    fn first_use(&self, key_id: &str, nonce: &str, until: i64, now: i64) -> Result<bool, ()> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (key_id.to_string(), nonce.to_string());
        if seen.get(&entry).is_some_and(|&t| t >= now) {
            return Ok(false);
        }
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, &mut t| t >= now);
            if seen.len() >= MAX_NONCES {
                return Err(());
            }
        }
        seen.insert(entry, until);
        Ok(true)
    }
}

/// Whether the request authenticates with a signature (it has
/// `Signature-Input`).
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers.contains_key("signature-input")
}

/// The one value of a header, as text.
fn one_value<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, SignedRequestError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(SignedRequestError::NotOne);
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| SignedRequestError::Syntax("Signature-Input or Signature"))
}

/// A request's parts as a signature covers them. `Debug` leaves the
/// header values out (a cookie may be among them).
pub struct SignedRequest {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub has_body: bool,
    /// Latchkey does not see the body (forward-auth, the gateway,
    /// `/v1/verify`): see `verified_nonce_or_body`.
    pub body_unseen: bool,
}

impl std::fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("method", &self.method)
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SignedRequest {
    /// The request Latchkey received: its method and target, its `Host`
    /// (or the URI's authority, HTTP/2), and its scheme: the listener's,
    /// unless a proxy in front says otherwise in `X-Forwarded-Proto` (it
    /// only decides which base is rebuilt; a signature still has to match
    /// it).
    pub fn of(parts: &axum::http::request::Parts, tls: bool) -> Self {
        let authority = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
            .unwrap_or_default();
        Self::from_headers(
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query(),
            authority,
            &parts.headers,
            tls,
        )
    }

    /// A request a proxy asks about (forward-auth) or the gateway received:
    /// `uri` its path and query; the authority the proxy's
    /// `X-Forwarded-Host`, else `Host`. `None` when the path is not known.
    /// `trust_forwarded`: a proxy in front set `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` (forward-auth); the gateway, which clients reach
    /// directly, takes `Host` and its own scheme instead.
    pub fn forwarded(
        method: &str,
        uri: Option<&str>,
        headers: &HeaderMap,
        tls: bool,
        trust_forwarded: bool,
    ) -> Option<Self> {
        let uri: axum::http::Uri = uri?.parse().ok()?;
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_string())
        };
        let forwarded_host = if trust_forwarded {
            first("x-forwarded-host")
        } else {
            None
        };
        let authority = forwarded_host
            .or_else(|| first("host"))
            .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
            .unwrap_or_default();
        let mut request =
            Self::from_headers(method, uri.path(), uri.query(), authority, headers, tls);
        if !trust_forwarded {
            request.scheme = if tls { "https" } else { "http" }.to_string();
        }
        // Until the caller says it checks the body (the gateway does).
        request.body_unseen = true;
        Some(request)
    }

    pub(crate) fn from_headers(
        method: &str,
        path: &str,
        query: Option<&str>,
        authority: String,
        headers: &HeaderMap,
        tls: bool,
    ) -> Self {
        let forwarded = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| v == "http" || v == "https");
        let scheme = forwarded.unwrap_or_else(|| if tls { "https" } else { "http" }.to_string());
        let has_body = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
            || headers.contains_key(header::TRANSFER_ENCODING);
        Self {
            method: method.to_string(),
            scheme,
            authority,
            path: path.to_string(),
            query: query.map(str::to_string),
            // A value that is not text is kept as best it reads: the base
            // then differs from what was signed and the request is refused,
            // rather than a covered line silently left out.
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            has_body,
            body_unseen: false,
        }
    }

    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            scheme: &self.scheme,
            authority: &self.authority,
            path: if self.path.is_empty() {
                "/"
            } else {
                &self.path
            },
            query: self.query.as_deref(),
            headers: &self.headers,
            has_body: self.has_body,
        }
    }
}

/// A signed request that `/v1/verify` is asked about: the operator's
/// server gives its method, absolute URI and headers. Verified as the API
/// verifies its own (the body is not seen: a covered `Content-Digest` is
/// the caller's to check); refusals are `AuthError`s for the answer.
pub fn verify_described(
    state: &AppState,
    input: &latchkey_core::verify_request::SignedRequestInput,
    now: i64,
) -> Result<latchkey_core::Verified, AuthError> {
    let refused = |why: String| AuthError::SignedRequest(why);
    let uri: axum::http::Uri = input
        .uri
        .parse()
        .map_err(|_| refused("signedRequest.uri must be an absolute URI".into()))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(refused(
            "signedRequest.uri must be absolute: scheme, host, path and query".into(),
        ));
    };
    let pairs = input.header_pairs();
    let mut headers = HeaderMap::new();
    for (name, value) in &pairs {
        let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(value),
        ) else {
            return Err(refused(format!(
                "signedRequest.headers: {name:?} is not a header field"
            )));
        };
        headers.append(name, value);
    }
    let mut request = SignedRequest::from_headers(
        &input.method,
        uri.path(),
        uri.query(),
        authority.as_str().to_string(),
        &headers,
        scheme == "https",
    );
    request.scheme = scheme.to_ascii_lowercase();
    request.body_unseen = true;
    let prepared = prepare(&headers, &request, now).map_err(|e| refused(e.to_string()))?;
    verified_nonce_or_body(&request, &prepared).map_err(|e| refused(e.title))?;
    let verified = state
        .index
        .verify_signed_request(&prepared, now)
        .map_err(|_| {
            refused(
                "the keyid does not name a live key with a secret, or the signature does not \
                 match the request"
                    .into(),
            )
        })?;
    remember_nonce(state, &prepared, now).map_err(|e| refused(e.title))?;
    Ok(verified)
}

/// Why a signed request is refused, as the 401 says it.
pub fn refusal(e: &SignedRequestError) -> ApiError {
    ApiError::unauthorized(&AuthError::BadCredentials).with_title(format!("signed request: {e}"))
}

/// Verifies a signed request at `now`: the signature read and its base
/// rebuilt, the key's HMAC compared, then its nonce (if any) recorded.
pub fn verify(
    state: &AppState,
    headers: &HeaderMap,
    request: &SignedRequest,
    now: i64,
) -> Result<latchkey_core::Verified, ApiError> {
    let prepared = prepare(headers, request, now).map_err(|e| refusal(&e))?;
    verified_nonce_or_body(request, &prepared)?;
    let verified = state
        .index
        .verify_signed_request(&prepared, now)
        .map_err(|_| {
            ApiError::unauthorized(&AuthError::BadCredentials).with_title(
                "signed request: the keyid does not name a live key with a secret, or the \
                 signature does not match the request",
            )
        })?;
    remember_nonce(state, &prepared, now)?;
    Ok(verified)
}

/// Where Latchkey does not see the body (forward-auth, the gateway: see
/// [`SignedRequest::body_unseen`]), a request whose method may carry one
/// must carry a nonce: its body is bound only by `Content-Digest`, which
/// the upstream checks, so a second use of the same signature is refused
/// here instead.
fn verified_nonce_or_body(
    request: &SignedRequest,
    prepared: &PreparedSignature,
) -> Result<(), ApiError> {
    let may_have_body = !matches!(request.method.as_str(), "GET" | "HEAD" | "OPTIONS");
    if request.body_unseen && may_have_body && prepared.nonce.is_none() {
        return Err(
            ApiError::unauthorized(&AuthError::BadCredentials).with_title(
                "signed request: through forward-auth or the gateway, a request whose method may \
             carry a body must carry a nonce (Latchkey does not see the body there)",
            ),
        );
    }
    Ok(())
}

fn prepare(
    headers: &HeaderMap,
    request: &SignedRequest,
    now: i64,
) -> Result<PreparedSignature, SignedRequestError> {
    let (Some(input), Some(signature)) = (
        one_value(headers, "signature-input")?,
        one_value(headers, "signature")?,
    ) else {
        return Err(SignedRequestError::Half);
    };
    http_sig::prepare(
        input,
        signature,
        &request.parts(),
        now,
        SignedRequestPolicy::default(),
    )
}

fn remember_nonce(
    state: &AppState,
    prepared: &PreparedSignature,
    now: i64,
) -> Result<(), ApiError> {
    let Some(nonce) = &prepared.nonce else {
        return Ok(());
    };
    let policy = SignedRequestPolicy::default();
    let until = prepared
        .created
        .saturating_add(policy.window_seconds)
        .saturating_add(policy.leeway_seconds);
    match state.nonces.first_use(&prepared.key_id, nonce, until, now) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::unauthorized(&AuthError::BadCredentials)
            .with_title("signed request: this nonce was already used; sign each request afresh")),
        Err(()) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many signed-request nonces are remembered; retry shortly",
        )),
    }
}

/// Whether a signed request's `body` is the one its signature covers: it
/// matches the request's `Content-Digest` (RFC 9530), or it is empty and
/// there is none (a body without a digest is refused: HTTP/2 needs no
/// Content-Length, so the signature's rules could not ask for one, and
/// nothing would bind it).
pub fn body_matches_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let digest = one_value(headers, "content-digest")
        .map_err(|_| refusal(&SignedRequestError::DigestSyntax))?;
    match digest {
        Some(digest) => http_sig::content_digest_matches(digest, body).map_err(|e| refusal(&e)),
        None if !body.is_empty() => Err(refusal(&SignedRequestError::NotCovered(
            "content-digest (the request has a body): send Content-Digest and sign it",
        ))),
        None => Ok(()),
    }
}

/// A layer: the body of a signed request must match its `Content-Digest`
/// ([`body_matches_digest`]), so that the signature, which covers the
/// digest, covers the body. Other requests pass untouched.
pub async fn check_content_digest(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if !is_signed(req.headers()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large, or was cut short",
            )
            .into_response();
        }
    };
    if let Err(e) = body_matches_digest(&parts.headers, &bytes) {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
