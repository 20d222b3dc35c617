//! Signed requests (issue 22) at the server: the request's parts as
//! Latchkey received it (through its API, forward-auth, the gateway, or
//! described to `/v1/verify`), and the layer that holds a signed body to
//! its `Content-Digest`. Verifying, the nonces seen and the body's digest
//! are core's (`latchkey_core::http_sig::ReceivedRequest`), shared with the
//! in-process replica.
//!
//! A nonce is remembered per key for as long as a signature with it could
//! still be accepted, on this node: a request replayed to another node
//! within the window is refused there only by its `created` (documented).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use latchkey_core::AuthError;
use latchkey_core::http_sig::{self, ReceivedRequest, SignedRefusal, SignedRequestError};

use crate::error::ApiError;
use crate::state::AppState;

pub use latchkey_core::http_sig::NonceCache as Nonces;

/// Whether the request authenticates with a signature (it has
/// `Signature-Input`).
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers.contains_key("signature-input")
}

/// The request Latchkey's API received: its method and target, its `Host`
/// (or the URI's authority, HTTP/2), and its scheme: the listener's, unless
/// a proxy in front says otherwise in `X-Forwarded-Proto` (it only decides
/// which base is rebuilt; a signature still has to match it).
pub fn received_by_api(parts: &axum::http::request::Parts, tls: bool) -> ReceivedRequest {
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    let scheme = forwarded_proto(&parts.headers).unwrap_or(if tls { "https" } else { "http" });
    received(
        parts.method.as_str(),
        scheme,
        authority,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
    )
}

/// A request a proxy asks about (forward-auth) or the gateway received:
/// `uri` its path and query; the authority the proxy's `X-Forwarded-Host`,
/// else `Host`. `None` when the path is not known. `trust_forwarded`: a
/// proxy in front set `X-Forwarded-Host` and `X-Forwarded-Proto`
/// (forward-auth); the gateway, which clients reach directly, takes `Host`
/// and its own scheme instead.
pub fn received_in_front(
    method: &str,
    uri: Option<&str>,
    headers: &HeaderMap,
    tls: bool,
    trust_forwarded: bool,
) -> Option<ReceivedRequest> {
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
    let own = if tls { "https" } else { "http" };
    let scheme = if trust_forwarded {
        forwarded_proto(headers).unwrap_or(own)
    } else {
        own
    };
    Some(received(
        method,
        scheme,
        authority,
        uri.path(),
        uri.query(),
        headers,
    ))
}

/// `X-Forwarded-Proto`'s first value, when it is `http` or `https`.
fn forwarded_proto(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())?;
    match value.trim().to_ascii_lowercase().as_str() {
        "http" => Some("http"),
        "https" => Some("https"),
        _ => None,
    }
}

fn received(
    method: &str,
    scheme: &str,
    authority: String,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> ReceivedRequest {
    ReceivedRequest::new(
        method,
        scheme,
        authority,
        path,
        query,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    )
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
    for (name, value) in &pairs {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || axum::http::HeaderValue::from_str(value).is_err()
        {
            return Err(refused(format!(
                "signedRequest.headers: {name:?} is not a header field"
            )));
        }
    }
    let request = ReceivedRequest::new(
        &input.method,
        scheme,
        authority.as_str().to_string(),
        uri.path(),
        uri.query(),
        pairs.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    request
        .verify(&state.index, &state.nonces, false, now)
        .map_err(|e| refused(e.to_string()))
}

/// Why a signed request is refused, as the 401 says it.
pub fn refusal(e: &SignedRequestError) -> ApiError {
    ApiError::unauthorized(&AuthError::BadCredentials).with_title(format!("signed request: {e}"))
}

/// Verifies a signed request at `now` (see [`ReceivedRequest::verify`]);
/// `body_checked`: its body is held to `Content-Digest` (the API's layer,
/// the gateway after its decision; not forward-auth). A 401 that says why,
/// or a 503 when too many nonces are remembered.
pub fn verify(
    state: &AppState,
    request: &ReceivedRequest,
    body_checked: bool,
    now: i64,
) -> Result<latchkey_core::Verified, ApiError> {
    request
        .verify(&state.index, &state.nonces, body_checked, now)
        .map_err(|e| match e {
            SignedRefusal::NoncesFull => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            e => ApiError::unauthorized(&AuthError::BadCredentials)
                .with_title(format!("signed request: {e}")),
        })
}

/// Whether a signed request's `body` is the one its signature covers
/// (`http_sig::body_matches_digest` with its one `Content-Digest`): a 401
/// that says why when not.
pub fn body_matches_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let mut values = headers.get_all("content-digest").iter();
    let digest = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(value), None) => Some(
            value
                .to_str()
                .map_err(|_| refusal(&SignedRequestError::DigestSyntax))?,
        ),
        (Some(_), Some(_)) => return Err(refusal(&SignedRequestError::DigestSyntax)),
    };
    http_sig::body_matches_digest(digest, body).map_err(|e| refusal(&e))
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
