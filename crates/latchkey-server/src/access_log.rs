//! One log line per request: method, path, status and latency (headers,
//! and so credentials, are never recorded; neither is the query string).
//! A credential a client put in the path is redacted
//! (`latchkey_core::secret::redact`): anything with a Latchkey secret's
//! shape keeps only its prefix (`lksk_[redacted]`), a JWT only `eyJ`.
//!
//! Lines go to the `latchkey::access` target. Management calls are logged
//! at INFO. `POST /v1/verify`, `/v1/forward-auth` and the health probes are
//! logged at DEBUG:
//! they are the high-volume paths (a verification service answers every
//! request of the operator's API), formatting and writing a line costs
//! about a fifth of such a request, and a verification's outcome is in its
//! answer, which the operator's own server acts on and logs. Turn them on
//! with `LATCHKEY_LOG=info,latchkey::access=debug`.
//!
//! Written as a plain tower layer rather than `tower_http`'s `TraceLayer`:
//! no span per request, and nothing is formatted unless the line is
//! enabled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use latchkey_core::secret::redact;

use crate::routes;
use tower::{Layer, Service};

/// The [`Layer`] that adds the access log to a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

/// Whether a request is on a high-volume path, logged at DEBUG.
fn is_high_volume(method: &Method, path: &str) -> bool {
    (method == Method::POST && path == routes::VERIFY)
        || path == crate::front::forward_auth::PATH
        || (method == Method::GET && (path == routes::HEALTH || path == routes::READY))
}

/// What is kept of a request until its response, when its line is enabled.
pub(crate) struct Line {
    method: Method,
    path: String,
    /// The request's id (see `crate::request_id`), as the connection's
    /// service set it in the request; written on DEBUG lines, whose
    /// requests have no span at INFO.
    request_id: Option<HeaderValue>,
    started: Instant,
    debug: bool,
}

impl Line {
    /// The line of a request to `method` `path`, if it is to be written.
    pub(crate) fn begin(
        method: &Method,
        path: &str,
        request_id: Option<&HeaderValue>,
    ) -> Option<Line> {
        let debug = is_high_volume(method, path);
        let enabled = if debug {
            tracing::enabled!(target: "latchkey::access", tracing::Level::DEBUG)
        } else {
            tracing::enabled!(target: "latchkey::access", tracing::Level::INFO)
        };
        enabled.then(|| Line {
            method: method.clone(),
            path: redact(path).into_owned(),
            request_id: request_id.cloned(),
            started: Instant::now(),
            debug,
        })
    }

    /// The line of a request on a high-volume path (the gateway's), if
    /// DEBUG is enabled.
    pub(crate) fn begin_debug(
        method: &Method,
        path: &str,
        request_id: Option<&HeaderValue>,
    ) -> Option<Line> {
        tracing::enabled!(target: "latchkey::access", tracing::Level::DEBUG).then(|| Line {
            method: method.clone(),
            path: redact(path).into_owned(),
            request_id: request_id.cloned(),
            started: Instant::now(),
            debug: true,
        })
    }

    pub(crate) fn write(self, status: u16) {
        let latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (method, path) = (self.method.as_str(), self.path.as_str());
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or("-");
        // Lines of the router's requests carry the id in their span.
        if self.debug {
            tracing::debug!(target: "latchkey::access", method, path, status, latency_us, request_id, "request");
        } else {
            tracing::info!(target: "latchkey::access", method, path, status, latency_us, "request");
        }
    }
}

impl<S> Service<Request> for AccessLog<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let line = Line::begin(
            req.method(),
            req.uri().path(),
            req.headers().get(crate::request_id::HEADER),
        );
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            if let Some(line) = line {
                line.write(response.status().as_u16());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verification_and_probes_are_high_volume() {
        assert!(is_high_volume(&Method::POST, "/v1/verify"));
        assert!(is_high_volume(&Method::GET, "/healthz"));
        assert!(is_high_volume(&Method::GET, "/readyz"));
        assert!(!is_high_volume(&Method::GET, "/v1/verify"));
        assert!(!is_high_volume(&Method::POST, "/v1/apps"));
        assert!(!is_high_volume(&Method::GET, "/v1/apps/ap_1"));
        assert!(!is_high_volume(&Method::POST, "/v1/verify/"));
        assert!(is_high_volume(&Method::GET, "/v1/forward-auth"));
        assert!(is_high_volume(&Method::POST, "/v1/forward-auth"));
    }
}
