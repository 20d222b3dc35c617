//! The service each connection gets: `POST /v1/verify` in its usual form
//! and `/v1/forward-auth` are answered directly, everything else goes
//! through the router.
//!
//! Verification is the request an operator's API makes for every request
//! it serves. Through the router it paid for routing, the CORS and
//! failure-audit middlewares, the body-timeout and body-limit wrappers and
//! axum's extractors: about half of its CPU, against ~1% for checking the
//! credential (docs/BENCHMARKS.md). The direct path does only what such a
//! request needs and gives the same answer.
//!
//! It takes a request only when the router would answer it with a 200 and
//! no side effect besides the access log: the operator token verifies (and
//! the index is fresh, and the client's address is not throttled: see
//! `throttle.rs`), there is no `Origin` header, the body is declared
//! as `application/json` with a `Content-Length` within the body limit,
//! and it is a JSON object that parses as a `VerifyRequest`. Anything
//! else, including a body that does not parse or is not an object, goes
//! to the router, which answers and audits it as it always did (the body
//! already read is handed on).
//!
//! One difference is deliberate: the direct path gives a client 30 s for
//! the whole body, where the router allows 30 s between its frames.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::Service;

use crate::access_log::Line;
use crate::error::ApiError;
use crate::metrics::HotRoute;
use crate::ops::verify::{answer, json_response};
use crate::request_id;
use crate::state::AppState;
use latchkey_core::verify_request::VerifyRequest;
use tracing::Instrument;

/// How long a client may take to send its body: on the direct path the
/// whole body (a verification body is a few hundred bytes), in the router
/// each frame (`RequestBodyTimeoutLayer`).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The service of one connection.
#[derive(Debug, Clone)]
pub struct Lane {
    state: AppState,
    router: Router,
    peer: SocketAddr,
}

pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Lane {
    /// The service of the connection from `peer`.
    pub fn new(state: AppState, router: Router, peer: SocketAddr) -> Self {
        Self {
            state,
            router,
            peer,
        }
    }

    /// Answers one request of the connection, with its request id (see
    /// [`crate::request_id`]) on the response, and counts it in the
    /// metrics by route and status.
    pub fn respond<B>(&self, req: Request<B>) -> BoxFuture
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let started = Instant::now();
        let mut req = req.map(Body::new);
        let id = request_id::of_request(req.headers());
        let state = self.state.clone();
        if req.uri().path() == crate::front::forward_auth::PATH {
            return Box::pin(forward_auth(state, self.peer, req, started, id));
        }
        let mut router = self.router.clone();
        let Some(taken) = takes(
            &self.state,
            self.peer,
            req.method(),
            req.uri().path(),
            req.headers(),
        ) else {
            req.extensions_mut().insert(ConnectInfo(self.peer));
            // What the handlers (and the access log) see is the id
            // answered with.
            req.headers_mut().insert(request_id::HEADER, id.clone());
            let span = tracing::info_span!(
                target: "latchkey::request",
                "request",
                request_id = id.to_str().unwrap_or("-")
            );
            let answer = router.call(req);
            return Box::pin(
                async move {
                    let Ok(mut response) = request_id::scope(id.clone(), answer).await;
                    let status = response.status().as_u16();
                    let route = response
                        .extensions_mut()
                        .remove::<crate::router::MatchedRoute>()
                        .map_or(Cow::Borrowed(UNMATCHED), |r| {
                            Cow::Owned(r.0.as_str().to_string())
                        });
                    state.metrics.request(route, status);
                    response.headers_mut().insert(request_id::HEADER, id);
                    Ok(response)
                }
                .instrument(span),
            );
        };
        Box::pin(verify_directly(
            state, router, self.peer, taken, req, started, id,
        ))
    }
}

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// A response on a high-volume route answered before the router: its
/// request id set and counted. (No span: the access and refusal lines of
/// these requests carry the id themselves; a span per request, and
/// wrapping their futures in another, cost more than the rest of the
/// metrics, by docs/BENCHMARKS.md.)
fn finish(state: &AppState, route: HotRoute, id: HeaderValue, mut response: Response) -> Response {
    state.metrics.hot_request(route, response.status().as_u16());
    response.headers_mut().insert(request_id::HEADER, id);
    response
}

/// `/v1/forward-auth`, any method, its body ignored (a proxy sends none).
async fn forward_auth(
    state: AppState,
    peer: SocketAddr,
    req: Request<Body>,
    started: Instant,
    id: HeaderValue,
) -> Result<Response, Infallible> {
    let line = Line::begin(req.method(), req.uri().path(), Some(&id));
    let response = request_id::scope(
        id.clone(),
        crate::front::forward_auth::answer(
            &state,
            req.method().as_str(),
            req.headers(),
            Some(peer.ip()),
            started,
        ),
    )
    .await;
    if let Some(line) = line {
        line.write(response.status().as_u16());
    }
    Ok(finish(&state, HotRoute::ForwardAuth, id, response))
}

/// What the direct path learnt from a request's head.
#[derive(Debug, Clone, Copy)]
struct Taken {
    /// The body's declared length, within the body limit.
    length: usize,
    /// The time the operator token was verified at, and the credential too
    /// when the body came with the head (one clock read for both).
    now: i64,
}

/// Whether the direct path takes a request, judged by its head.
fn takes(
    state: &AppState,
    peer: SocketAddr,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<Taken> {
    if method != Method::POST || path != crate::routes::VERIFY || headers.contains_key(ORIGIN) {
        return None;
    }
    let declared_json = headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/json"));
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n <= state.config.max_body_bytes)?;
    if !declared_json || state.freshness.check().is_err() {
        return None;
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(header), None) = (values.next(), values.next()) else {
        return None;
    };
    let now = state.now();
    // A throttled address goes to the router, which answers 429 (one
    // atomic load when no failure is in an open window).
    if state.throttle.is_throttled(peer.ip(), now) {
        return None;
    }
    state
        .index
        .verify_authorization(Some(header.as_bytes()), now, state.verify_options())
        .is_ok_and(|caller| caller.principal.may_verify() == latchkey_core::Access::Allow)
        .then_some(Taken { length, now })
}

/// The body of a request that declared `length` bytes, or `None` if the
/// client sent something else or the connection failed. The body usually
/// arrives with the head as one frame, which is taken as it is; hyper never
/// hands on more than the declared length.
async fn read_body(mut body: Body, length: usize) -> Option<Bytes> {
    let mut pieces: Vec<u8> = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue; // trailers
        };
        if pieces.is_empty() && data.len() == length {
            return Some(data);
        }
        pieces.extend_from_slice(&data);
        if pieces.len() > length {
            return None;
        }
    }
    (pieces.len() == length).then(|| Bytes::from(pieces))
}

async fn verify_directly(
    state: AppState,
    mut router: Router,
    peer: SocketAddr,
    taken: Taken,
    req: Request<Body>,
    started: Instant,
    id: HeaderValue,
) -> Result<Response, Infallible> {
    let line = Line::begin(req.method(), req.uri().path(), Some(&id));
    let (mut parts, body) = req.into_parts();
    let mut read = std::pin::pin!(read_body(body, taken.length));
    // Polled once before a timer is set: the body is usually there already.
    // A body that comes later is verified at the time it came.
    let (read, now) = match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        Poll::Ready(read) => (read, taken.now),
        Poll::Pending => {
            let read = tokio::time::timeout(BODY_TIMEOUT, read)
                .await
                .ok()
                .flatten();
            (read, state.now())
        }
    };
    let bytes = match read {
        Some(bytes) => bytes,
        // The client stopped sending, or sent something else than it declared.
        None => {
            let peer = peer.ip();
            let status = StatusCode::BAD_REQUEST;
            let operator = state
                .index
                .verify_authorization(
                    parts.headers.get(AUTHORIZATION).map(|h| h.as_bytes()),
                    now,
                    state.verify_options(),
                )
                .ok();
            if let Some(operator) = operator {
                request_id::scope(
                    id.clone(),
                    crate::audit::record_refusal(
                        &state,
                        &operator.principal,
                        Some(peer),
                        &parts.method,
                        parts.uri.path(),
                        parts.uri.path(),
                        status,
                    ),
                )
                .await;
            }
            if let Some(line) = line {
                line.write(status.as_u16());
            }
            let response = ApiError::bad_request("the request body could not be read completely")
                .into_response();
            return Ok(finish(&state, HotRoute::Verify, id, response));
        }
    };
    // An array would parse too (serde reads a struct from one); the
    // router refuses it, as every body that is not a JSON object.
    // A signed request, or a body with neither or both credentials, takes
    // the router's path too.
    let parsed = VerifyRequest::from_json(&bytes)
        .filter(|r| r.authorization.is_some() && r.signed_request.is_none());
    let Some(request) = parsed else {
        // The router answers (and audits) what does not parse.
        parts.extensions.insert(ConnectInfo(peer));
        parts.headers.insert(request_id::HEADER, id.clone());
        let Ok(response) = request_id::scope(
            id.clone(),
            router.call(Request::from_parts(parts, Body::from(bytes))),
        )
        .await;
        return Ok(finish(&state, HotRoute::Verify, id, response));
    };
    let verified = state.index.verify_authorization(
        request.authorization.as_deref().map(str::as_bytes),
        now,
        state.verify_options(),
    );
    let answered = match &verified {
        Ok(v) if v.policy.is_none() && v.ratelimit.is_none() => {
            answer(&state, &request, verified.as_ref(), started).await
        }
        // A refusal is logged with the request id, and so are the lines
        // a key's policy may write (a lease that failed).
        _ => {
            request_id::scope(
                id.clone(),
                answer(&state, &request, verified.as_ref(), started),
            )
            .await
        }
    };
    let response = json_response(&answered);
    if let Some(line) = line {
        line.write(response.status().as_u16());
    }
    Ok(finish(&state, HotRoute::Verify, id, response))
}
