//! `/v1/forward-auth`: a proxy (nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`) asks about a request it is about
//! to forward.
//!
//! The proxy sends the original request's headers, and its path and
//! method as `X-Forwarded-Uri`/`X-Forwarded-Method` (Traefik, Caddy) or
//! `X-Original-URI`/`X-Original-Method` (nginx, as configured in
//! docs/INTEGRATIONS.md). A proxy sets one pair and passes the client's
//! headers on, so a client could send the other pair itself: when both
//! are present and disagree, the request is refused.
//!
//! Allowed: 200 with every identity header (empty when it does not apply)
//! for the proxy to copy onto the forwarded request. Refused: only 401 or
//! 403 (nginx turns any other status into a 500), with the precise code in
//! the JSON body and in `X-Latchkey-Error`. Answered by the connection's
//! service ([`crate::lane`]) before the router, from the index alone.

use std::net::IpAddr;

use axum::body::Body;
use axum::http::header::VARY;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Asked, Decision, ERROR_HEADER, Refusal, decide_counted, set_identity_headers};
use crate::state::AppState;

/// The endpoint's path.
pub const PATH: &str = crate::routes::FORWARD_AUTH;

/// The single value of whichever of `names` the request carries; a refusal
/// when a name is repeated or two names disagree.
fn one_of<'a>(headers: &'a HeaderMap, names: [&str; 2]) -> Result<Option<&'a str>, Refusal> {
    let mut found: Option<&str> = None;
    for name in names {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(Refusal::forbidden(format!(
                "the request carries {name} more than once"
            )));
        }
        let value = value
            .to_str()
            .map_err(|_| Refusal::forbidden(format!("{name} is not visible ASCII")))?;
        match found {
            Some(other) if other != value => {
                return Err(Refusal::forbidden(
                    "X-Forwarded-Uri and X-Original-URI (or X-Forwarded-Method and \
                     X-Original-Method) disagree; the proxy sets one, so the client sent the other",
                ));
            }
            _ => found = Some(value),
        }
    }
    Ok(found)
}

/// Answers a forward-auth request with these headers. `own_method` is the
/// method of the request to this endpoint, used when the proxy names none.
pub async fn answer(
    state: &AppState,
    own_method: &str,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    started: std::time::Instant,
) -> Response {
    // A proxy copies the five hyphenated names over whatever the client
    // sent, but passes other spellings on; some servers merge those with
    // the real ones.
    if headers
        .keys()
        .any(|name| name.as_str().contains('_') && super::is_latchkey_spelling(name.as_str()))
    {
        return refused(
            Refusal::forbidden(
                "the request carries a header spelled like one of Latchkey's X-Latchkey-* headers \
                 with _ for -; only Latchkey sets those",
            ),
            None,
        );
    }
    let uri = one_of(headers, ["x-forwarded-uri", "x-original-uri"]);
    let method = one_of(headers, ["x-forwarded-method", "x-original-method"]);
    let (uri, method) = match (uri, method) {
        (Ok(uri), Ok(method)) => (uri, method.unwrap_or(own_method)),
        (Err(refusal), _) | (_, Err(refusal)) => return refused(refusal, None),
    };
    let asked = Asked {
        method,
        uri,
        headers,
        peer,
        client_ip: forwarded_client(headers),
        behind_proxy: true,
        checks_signed_body: false,
    };
    match decide_counted(state, &asked, crate::metrics::Way::ForwardAuth, started).await {
        Decision::Allow { identity, cors, .. } => {
            let mut response = Response::new(Body::empty());
            let headers = response.headers_mut();
            set_identity_headers(headers, Some(&identity));
            if let Some(origin) = cors {
                crate::cors::allow_headers(headers, origin);
                headers.insert(VARY, HeaderValue::from_static("Origin"));
            }
            response
        }
        Decision::Preflight {
            allowed: Some(origin),
        } => {
            let mut response = Response::new(Body::empty());
            let headers = response.headers_mut();
            set_identity_headers(headers, None);
            super::allow_preflight(headers, origin);
            headers.insert(VARY, HeaderValue::from_static("Origin"));
            response
        }
        Decision::Preflight { allowed: None } => refused(
            Refusal::forbidden(
                "a CORS preflight is allowed only on a path that names an app, \
                 from an origin that app allows",
            ),
            None,
        ),
        Decision::Refuse { refusal, cors } => refused(refusal, cors),
    }
}

/// The client's address as the proxy that asks saw it: the last entry of
/// the last `X-Forwarded-For` (a proxy appends the address it received
/// the request from; entries before it are the client's own claims), or,
/// only when there is no `X-Forwarded-For` at all, `X-Real-IP`. `None` when neither is there or it does not parse, which
/// a key restricted to certain addresses is refused for.
fn forwarded_client(headers: &HeaderMap) -> Option<IpAddr> {
    fn parse(bytes: &[u8]) -> Option<IpAddr> {
        std::str::from_utf8(bytes).ok()?.trim().parse().ok()
    }
    // Read as bytes: a client's own entries before the proxy's may hold
    // anything, and must not make the whole header unreadable (and so
    // let `X-Real-IP`, which the client may also send, decide).
    match headers.get_all("x-forwarded-for").iter().next_back() {
        Some(value) => value
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .and_then(parse),
        None => headers.get("x-real-ip").and_then(|v| parse(v.as_bytes())),
    }
}

/// A refusal as a proxy can pass it on: 401 stays 401, every other status
/// becomes 403.
fn refused(refusal: Refusal, cors: Option<HeaderValue>) -> Response {
    let code = refusal.code;
    let mut error = refusal.error();
    if error.status != StatusCode::UNAUTHORIZED {
        error.status = StatusCode::FORBIDDEN;
    }
    let mut response = error.into_response();
    let headers = response.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
    if let Some(origin) = cors {
        crate::cors::allow_headers(headers, origin);
        headers.insert(VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).expect("header value"));
        }
        h
    }

    #[test]
    fn the_client_address_is_the_proxys_last_entry() {
        let ip = |s: &str| Some(s.parse().expect("ip"));
        assert_eq!(
            forwarded_client(&headers(&[("x-forwarded-for", b"10.0.0.1, 203.0.113.9")])),
            ip("203.0.113.9")
        );
        assert_eq!(
            forwarded_client(&headers(&[("x-real-ip", b" 2001:db8::1 ")])),
            ip("2001:db8::1")
        );
        // A client's own unreadable entry before the proxy's does not hide
        // the proxy's, and never hands the decision to X-Real-IP.
        assert_eq!(
            forwarded_client(&headers(&[
                ("x-forwarded-for", b"\xff\xfe, 198.51.100.4"),
                ("x-real-ip", b"10.0.0.1"),
            ])),
            ip("198.51.100.4")
        );
        assert_eq!(
            forwarded_client(&headers(&[
                ("x-forwarded-for", b"198.51.100.4, \xff"),
                ("x-real-ip", b"10.0.0.1"),
            ])),
            None
        );
        assert_eq!(
            forwarded_client(&headers(&[("x-forwarded-for", b"junk")])),
            None
        );
        assert_eq!(forwarded_client(&HeaderMap::new()), None);
    }
}
