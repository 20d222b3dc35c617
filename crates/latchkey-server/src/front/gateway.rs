//! The gateway: a second listener (`--gateway-listen`) that verifies every
//! request with the target routes and `/v1/verify`'s rules and forwards the
//! allowed ones to the operator's API (`--gateway-upstream`).
//!
//! - Forwarded requests carry the identity headers set by Latchkey (every
//!   `X-Latchkey-*` header the client sent is removed first, also spelled
//!   with `_`, which CGI-style servers read as `-`), lose their
//!   `Authorization` unless `keep_authorization`, lose the hop-by-hop
//!   headers (RFC 9110 §7.6.1: `Connection` and the headers it names,
//!   `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`,
//!   `Upgrade`, and `Proxy-Authorization`) and `Forwarded`, and get
//!   `X-Forwarded-For` (the client's address appended), `X-Forwarded-Proto`
//!   and `X-Forwarded-Host`. Bodies are streamed both ways, except a
//!   signed request's (RFC 9421), which is read whole (at most
//!   `max_signed_body_bytes`) and held to its `Content-Digest` before it is
//!   sent on; the upstream is reached over a keep-alive pool of HTTP/1.1
//!   connections.
//! - CORS is Latchkey's: preflights are answered here, and a response gets
//!   `Access-Control-Allow-Origin` only for an appUser credential from an
//!   origin its app allows (whatever CORS headers the upstream set are
//!   removed).
//! - Refusals are the documented JSON errors with their real status (401,
//!   403, 404, 503, and 400 for an ambiguous path); an upstream that cannot
//!   be reached is 502, one that does not answer in time 504. A signed
//!   body over the limit is 413, one cut short 400, one sent too slowly
//!   408, and one past the budget of signed bodies held at once
//!   ([`signed_body_budget`]) 503.
//! - The listener faces the internet: see [`crate::conns`] for its
//!   connection limit and timeouts.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    AUTHORIZATION, CONNECTION, FORWARDED, HOST, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING,
    UPGRADE, VARY,
};
use axum::http::uri::{PathAndQuery, Scheme};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::upstream::{Failure, Outgoing, Pool, Relay};
use super::{Asked, Decision, ERROR_HEADER, Refusal, set_identity_headers};
use crate::config::GatewayConfig;
use crate::conns::{Active, Admitted, Conns};
use crate::error::ApiError;
use crate::state::AppState;

/// How often idle connections are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("--gateway-upstream {0:?}: {1}")]
    Upstream(String, &'static str),
    #[error("cannot listen on {addr} (gateway): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Where requests go: the upstream's authority and path prefix.
#[derive(Debug, Clone)]
struct Upstream {
    /// `host:port` to connect to.
    address: String,
    /// Without a trailing slash; empty for none.
    prefix: String,
    host: HeaderValue,
}

impl Upstream {
    fn parse(text: &str) -> Result<Self, GatewayError> {
        let refuse = |why| GatewayError::Upstream(text.to_string(), why);
        let uri: Uri = text
            .parse()
            .map_err(|_| refuse("not a URL; give http://host:port"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(refuse(
                "only http:// upstreams are supported (put TLS in front of the gateway, not behind it)",
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| refuse("no host; give http://host:port"))?;
        if authority.as_str().contains('@') {
            return Err(refuse("must not carry a user name or password"));
        }
        if uri.query().is_some() {
            return Err(refuse("must not carry a query"));
        }
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| refuse("bad host"))?;
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        Ok(Self {
            prefix: uri.path().trim_end_matches('/').to_string(),
            address,
            host,
        })
    }

    /// The request target as the upstream gets it: origin-form, under the
    /// upstream's path prefix.
    fn uri_for(&self, uri: &Uri) -> Option<Uri> {
        let path_and_query = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        if self.prefix.is_empty() && uri.scheme().is_none() {
            // Already origin-form (hyper's server reads absolute-form too).
            return Some(uri.clone());
        }
        let joined = format!("{}{path_and_query}", self.prefix);
        PathAndQuery::try_from(joined).ok().map(Uri::from)
    }
}

/// A running gateway listener.
#[derive(Debug)]
pub struct Gateway {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    conns: Arc<Conns>,
}

impl Gateway {
    /// Stops accepting, lets requests in flight finish (up to `grace`),
    /// then closes what is left.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let deadline = tokio::time::Instant::now() + grace;
        while !self.conns.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Open client connections (for tests and metrics).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

/// What every connection's requests share.
#[derive(Debug)]
struct Shared {
    state: AppState,
    upstream: Upstream,
    pool: Arc<Pool>,
    keep_authorization: bool,
    upstream_timeout: Duration,
    max_signed_body_bytes: usize,
    /// Bytes of signed bodies the gateway may hold at once
    /// ([`signed_body_budget`]), one permit per byte.
    signed_bodies: Arc<Semaphore>,
}

/// How many bytes of signed bodies the gateway holds at once: 64 MiB, or
/// four bodies at the limit when that is more. Past it, a signed request
/// with a body is answered 503 (retry) instead of read.
pub fn signed_body_budget(max_signed_body_bytes: usize) -> usize {
    (64 * 1024 * 1024)
        .max(max_signed_body_bytes.saturating_mul(4))
        .min(Semaphore::MAX_PERMITS)
}

/// Binds the gateway's address and starts serving in the background.
pub async fn start(state: AppState, config: &GatewayConfig) -> Result<Gateway, GatewayError> {
    let upstream = Upstream::parse(&config.upstream)?;
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Listen { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen { addr, source })?;
    let pool = Pool::new(upstream.address.clone(), config.upstream_timeout);
    let shared = Arc::new(Shared {
        state,
        upstream,
        pool,
        keep_authorization: config.keep_authorization,
        upstream_timeout: config.upstream_timeout,
        max_signed_body_bytes: config.max_signed_body_bytes,
        signed_bodies: Arc::new(Semaphore::new(signed_body_budget(
            config.max_signed_body_bytes,
        ))),
    });
    let conns = Conns::new(
        config.max_connections,
        config.header_timeout,
        config.idle_timeout,
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        shared,
        Arc::clone(&conns),
        config.idle_timeout,
        stopped,
    ));
    Ok(Gateway {
        local_addr,
        stop,
        task,
        conns,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: Arc<Conns>,
    idle_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset
                        // before it was accepted: wait a moment, go on.
                        tracing::warn!(error = %e, "gateway: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(admitted) = conns.admit() else {
                    tracing::warn!("gateway: every connection is busy; refusing a new one");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    Arc::clone(&shared),
                    admitted,
                    idle_timeout,
                    stopped.clone(),
                ));
            }
            _ = sweep.tick() => conns.sweep(),
            _ = stopped.changed() => {
                conns.close_all();
                return;
            }
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    admitted: Admitted,
    idle_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let admitted = Arc::new(admitted);
    let slot = Arc::clone(&admitted.slot);
    let service = hyper::service::service_fn({
        let admitted = Arc::clone(&admitted);
        move |req: Request<Incoming>| {
            let active = admitted.begin();
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(handle(&shared, peer.ip(), req, active).await) }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Also bounds a request head trickled in slowly on a connection
        // that already served one (the sweeper sees only whole requests).
        .header_read_timeout(idle_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "gateway: connection ended with an error");
            }
            return;
        }
        () = slot.closed() => {}
        _ = stopped.changed() => {}
    }
    // Asked to close: finish the request in flight, if any, then close.
    if !slot.served() {
        return; // none began (hyper would wait for a whole first head)
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The `route` label of the gateway's requests in
/// `latchkey_http_requests_total` (whatever their path: the paths are the
/// operator's).
pub const GATEWAY_ROUTE: &str = "gateway";

/// One request: decide, then answer or forward.
async fn handle(
    shared: &Shared,
    peer: IpAddr,
    mut req: Request<Incoming>,
    active: Active,
) -> Response<Reply> {
    let started = std::time::Instant::now();
    let state = &shared.state;
    // The request's id, forwarded to the upstream and on the response.
    let id = crate::request_id::of_request(req.headers());
    req.headers_mut()
        .insert(crate::request_id::HEADER, id.clone());
    let line = crate::access_log::Line::begin_debug(req.method(), req.uri().path(), Some(&id));
    let uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), PathAndQuery::as_str);
    let asked = Asked {
        method: req.method().as_str(),
        uri: Some(uri),
        headers: req.headers(),
        peer: Some(peer),
        client_ip: Some(peer),
        behind_proxy: false,
        checks_signed_body: true,
    };
    let decision = crate::request_id::scope(
        id.clone(),
        super::decide_counted(state, &asked, crate::metrics::Way::Gateway, started),
    )
    .await;
    let response = match decision {
        Decision::Allow {
            identity,
            cors,
            signed,
        } => {
            let mut response = forward(shared, peer, req, &identity, signed).await;
            let headers = response.headers_mut();
            for name in [
                ACCESS_CONTROL_ALLOW_ORIGIN,
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                ACCESS_CONTROL_EXPOSE_HEADERS,
                ACCESS_CONTROL_ALLOW_METHODS,
                ACCESS_CONTROL_ALLOW_HEADERS,
                ACCESS_CONTROL_MAX_AGE,
            ] {
                headers.remove(name);
            }
            if let Some(origin) = cors {
                headers.append(VARY, HeaderValue::from_static("Origin"));
                crate::cors::allow_headers(headers, origin);
            }
            response
        }
        Decision::Preflight { allowed } => {
            let mut response = Response::new(Sent::Local(Body::empty()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            let headers = response.headers_mut();
            headers.insert(VARY, HeaderValue::from_static("Origin"));
            if let Some(origin) = allowed {
                super::allow_preflight(headers, origin);
            }
            response
        }
        Decision::Refuse { refusal, cors } => {
            let mut response = refused(&refusal).map(Sent::Local);
            if let Some(origin) = cors {
                crate::cors::allow_headers(response.headers_mut(), origin);
                response
                    .headers_mut()
                    .insert(VARY, HeaderValue::from_static("Origin"));
            }
            response
        }
    };
    let mut response = response;
    state.metrics.request(
        std::borrow::Cow::Borrowed(GATEWAY_ROUTE),
        response.status().as_u16(),
    );
    response.headers_mut().insert(crate::request_id::HEADER, id);
    if let Some(line) = line {
        line.write(response.status().as_u16());
    }
    // The request counts as in flight until its response body is sent.
    response.map(|sent| Reply {
        sent,
        _active: active,
    })
}

fn refused(refusal: &Refusal) -> Response<Body> {
    let mut response = refusal.error().into_response();
    if let Ok(code) = HeaderValue::from_str(refusal.code) {
        response.headers_mut().insert(ERROR_HEADER, code);
    }
    response
}

fn gateway_error(status: StatusCode, code: &'static str, title: &'static str) -> Response<Body> {
    let mut response = ApiError::new(status, code, title).into_response();
    response
        .headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(code));
    response
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), including those the
/// `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
}

/// The request as the upstream gets it.
fn upstream_request(
    shared: &Shared,
    peer: IpAddr,
    req: Request<Outgoing>,
    identity: &super::Identity,
) -> Option<Request<Outgoing>> {
    let (mut parts, body) = req.into_parts();
    let uri = shared.upstream.uri_for(&parts.uri)?;
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    let theirs: Vec<HeaderName> = headers
        .keys()
        .filter(|name| super::is_latchkey_spelling(name.as_str()))
        .cloned()
        .collect();
    for name in theirs {
        headers.remove(name);
    }
    set_identity_headers(headers, Some(identity));
    if !shared.keep_authorization {
        headers.remove(AUTHORIZATION);
        // A signed request's credential: the upstream or its logs could
        // otherwise replay it within its window.
        headers.remove("signature");
        headers.remove("signature-input");
    }
    headers.remove(FORWARDED);
    let client_host = headers.remove(HOST);
    let forwarded_for = match headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
    {
        earlier if earlier.is_empty() => peer.to_string(),
        earlier => format!("{}, {peer}", earlier.join(", ")),
    };
    headers.insert(X_FORWARDED_FOR, HeaderValue::from_str(&forwarded_for).ok()?);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    match client_host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
    headers.insert(HOST, shared.upstream.host.clone());
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    Some(Request::from_parts(parts, body))
}

/// Reads a signed request's body (it was allowed with `signed`) and holds
/// it to the `Content-Digest` its signature covers: a captured request
/// cannot carry another body here, on any node. Bounded by
/// `max_signed_body_bytes`, by the upstream timeout for a body sent
/// slowly, and by the bytes all signed bodies may hold at once (the
/// permit returned holds its share until the request is sent on).
async fn read_signed_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(Bytes, OwnedSemaphorePermit), Response<Body>> {
    let limit = shared.max_signed_body_bytes;
    let too_large = || {
        let mut response = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "a signed request's body is read by the gateway to check its Content-Digest; \
                 it may be at most {limit} bytes (--gateway-max-signed-body-bytes)"
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static("payload_too_large"));
        response
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // What this body may take: its declared length, else the limit.
    let share = declared.map_or(limit, |n| usize::try_from(n).unwrap_or(limit));
    let Ok(permit) = Arc::clone(&shared.signed_bodies)
        .try_acquire_many_owned(u32::try_from(share).unwrap_or(u32::MAX))
    else {
        let mut response = gateway_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the gateway holds as many signed bodies as it may at once; retry shortly",
        );
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        return Err(response);
    };
    let read = tokio::time::timeout(
        shared.upstream_timeout,
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)),
    )
    .await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(_)) => {
            return Err(gateway_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the signed request's body was cut short",
            ));
        }
        Err(_) => {
            return Err(gateway_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the signed request's body was not sent in time (--gateway-upstream-timeout-seconds)",
            ));
        }
    };
    crate::signed_requests::body_matches_digest(headers, &bytes).map_err(|e| {
        let mut response = e.into_response();
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static("unauthorized"));
        response
    })?;
    Ok((bytes, permit))
}

async fn forward(
    shared: &Shared,
    peer: IpAddr,
    req: Request<Incoming>,
    identity: &super::Identity,
    signed: bool,
) -> Response<Sent> {
    // The request's id (set by `handle`), for the lines this writes.
    let request_id = req
        .headers()
        .get(crate::request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let (parts, body) = req.into_parts();
    // A read body's share of the budget, held until the upstream answers.
    let mut _held = None;
    let body = if signed {
        match read_signed_body(shared, &parts.headers, body).await {
            Ok((bytes, permit)) => {
                _held = Some(permit);
                Outgoing::Read(Some(bytes))
            }
            Err(refused) => return refused.map(Sent::Local),
        }
    } else {
        Outgoing::Streamed(body)
    };
    let req = Request::from_parts(parts, body);
    let Some(outgoing) = upstream_request(shared, peer, req, identity) else {
        return gateway_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request's path or headers cannot be forwarded",
        )
        .map(Sent::Local);
    };
    let failed = match tokio::time::timeout(shared.upstream_timeout, shared.pool.send(outgoing))
        .await
    {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, Sent::Relayed(body));
        }
        Ok(Err(Failure::Unreachable(why))) => {
            tracing::warn!(error = %why, request_id, "gateway: the upstream could not be reached");
            gateway_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream could not be reached",
            )
        }
        Err(_) => {
            tracing::warn!(request_id, "gateway: the upstream did not answer in time");
            gateway_error(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the upstream did not answer in time",
            )
        }
    };
    failed.map(Sent::Local)
}

/// A response body: the upstream's, or the gateway's own.
enum Sent {
    Relayed(Relay),
    Local(Body),
}

/// The body the client gets; it keeps its request counted as in flight
/// until it ends (or is dropped with the connection).
struct Reply {
    sent: Sent,
    _active: Active,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl HttpBody for Reply {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().sent {
            Sent::Relayed(relay) => Pin::new(relay).poll_frame(cx).map_err(Into::into),
            Sent::Local(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.sent {
            Sent::Relayed(relay) => relay.is_end_stream(),
            Sent::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.sent {
            Sent::Relayed(relay) => relay.size_hint(),
            Sent::Local(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_checked_at_start() {
        let ok = Upstream::parse("http://127.0.0.1:8080").expect("plain");
        assert_eq!(ok.prefix, "");
        assert_eq!(ok.address, "127.0.0.1:8080");
        let origin_form: Uri = "/v2/apps?x=1".parse().expect("uri");
        assert_eq!(
            ok.uri_for(&origin_form).expect("uri").to_string(),
            "/v2/apps?x=1"
        );
        let absolute: Uri = "http://elsewhere:1/v2/apps?x=1".parse().expect("uri");
        assert_eq!(
            ok.uri_for(&absolute).expect("uri").to_string(),
            "/v2/apps?x=1"
        );
        let prefixed = Upstream::parse("http://api.internal/base/").expect("prefix");
        assert_eq!(prefixed.address, "api.internal:80");
        assert_eq!(
            prefixed
                .uri_for(&"/v2".parse().expect("uri"))
                .expect("uri")
                .to_string(),
            "/base/v2"
        );
        for bad in [
            "https://x",
            "127.0.0.1:8080",
            "http://u:p@x:1",
            "http://x/?q=1",
            "x",
        ] {
            let err = Upstream::parse(bad).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }
}
