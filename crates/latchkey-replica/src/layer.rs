//! A tower [`Layer`] that verifies every request with a [`Replica`].

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, CONTENT_TYPE, HeaderMap,
    HeaderValue, ORIGIN, RETRY_AFTER, VARY,
};
use http::{Method, Request, Response, StatusCode};
use latchkey_core::{Principal, RouteMatch, TargetRoutes};
use tower::{Layer, Service};

use crate::replica::{Refusal, Replica, Target, Verification};

/// The client's address, for keys restricted to some addresses: insert it
/// in a request's extensions before the layer (for example from axum's
/// `ConnectInfo`, or from a trusted proxy's header). Without it, a key with
/// `allowedIps` is refused, as the server refuses it when it does not know
/// the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Verifies each request with a [`Replica`]: the target (app and app
/// user) read from its path with [`TargetRoutes`], as the server's
/// forward-auth and gateway read it. An allowed request goes on with its
/// [`Verification`] (and the [`Principal`]) in its extensions; a refused
/// one is answered here with the documented JSON error
/// (`{"errors":[{"code","title"}]}`) and the status Latchkey's own API
/// would give. CORS as the server does it: preflights answered for the
/// origins of the app the path names, and `Access-Control-Allow-Origin`
/// only on responses to appUser credentials from those origins.
#[derive(Debug, Clone)]
pub struct ReplicaLayer {
    replica: Replica,
    routes: Arc<TargetRoutes>,
}

impl ReplicaLayer {
    /// A layer over `replica`, with no target routes (no path names an app
    /// or user; every credential that verifies is let through).
    pub fn new(replica: Replica) -> Self {
        Self {
            replica,
            routes: Arc::new(TargetRoutes::default()),
        }
    }

    /// The target routes, e.g. `/v2/apps/{appId}/users/{userId}` (the
    /// server's `--target-route` syntax; the first that matches wins).
    pub fn routes(mut self, routes: TargetRoutes) -> Self {
        self.routes = Arc::new(routes);
        self
    }
}

impl<S> Layer<S> for ReplicaLayer {
    type Service = ReplicaService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplicaService {
            inner,
            replica: self.replica.clone(),
            routes: self.routes.clone(),
        }
    }
}

/// The service [`ReplicaLayer`] makes.
#[derive(Debug, Clone)]
pub struct ReplicaService<S> {
    inner: S,
    replica: Replica,
    routes: Arc<TargetRoutes>,
}

/// The methods a preflight allows.
const PREFLIGHT_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";

fn respond<B: From<String>>(status: StatusCode, body: String) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    response
}

fn refusal_response<B: From<String>>(refusal: &Refusal, cors: Option<HeaderValue>) -> Response<B> {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = respond(status, refusal.body());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(after) = refusal.retry_after_seconds
        && let Ok(value) = HeaderValue::from_str(&after.max(1).to_string())
    {
        headers.insert(RETRY_AFTER, value);
    }
    allow_origin(headers, cors);
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    if let Some(origin) = origin {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

/// What the layer decided.
enum Decision {
    Allow(Box<Verification>, Option<HeaderValue>),
    Preflight(Option<HeaderValue>),
    Refuse(Refusal, Option<HeaderValue>),
}

impl<S> ReplicaService<S> {
    fn decide<B>(&self, req: &Request<B>) -> Decision {
        let headers = req.headers();
        let origin = headers.get(ORIGIN);
        let uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path(), |pq| pq.as_str());
        let (app, user) = match self.routes.match_uri(uri) {
            RouteMatch::Unmatched => (None, None),
            RouteMatch::Target { app_id, user_id } => (app_id, user_id),
            RouteMatch::Ambiguous(why) => {
                return Decision::Refuse(
                    Refusal {
                        status: 400,
                        code: "bad_request",
                        title: format!(
                            "{why}; the path is refused because servers read it differently"
                        ),
                        retry_after_seconds: None,
                    },
                    None,
                );
            }
        };
        let origin_text = origin.and_then(|o| o.to_str().ok());
        let cors_for = |app_id: Option<&str>| {
            let (origin, text, app_id) = (origin?, origin_text?, app_id?);
            self.replica
                .allows_origin(app_id, text)
                .then(|| origin.clone())
        };
        if req.method() == Method::OPTIONS
            && origin.is_some()
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Decision::Preflight(cors_for(app.as_deref()));
        }
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let authorization = values.next();
        if values.next().is_some() {
            return Decision::Refuse(
                Refusal {
                    status: 401,
                    code: "unauthorized",
                    title: "send exactly one Authorization header".into(),
                    retry_after_seconds: None,
                },
                None,
            );
        }
        let authorization = match authorization.map(|v| v.to_str()) {
            Some(Ok(text)) => Some(text),
            Some(Err(_)) => Some(""),
            None => None,
        };
        let target = Target {
            app_id: app.as_deref(),
            user_id: user.as_deref(),
            origin: origin_text,
            ip: req.extensions().get::<ClientIp>().map(|c| c.0),
            permissions: &[],
        };
        match self.replica.verify(authorization, &target) {
            Ok(verified) => {
                let cors = match &verified.principal {
                    Principal::AppUser { app_id, .. } => cors_for(Some(app_id)),
                    _ => None,
                };
                Decision::Allow(Box::new(verified), cors)
            }
            // A page can see that its token expired: a 401 on an app's path
            // from an origin the app allows carries CORS headers.
            Err(refusal) if refusal.status == 401 => {
                Decision::Refuse(refusal, cors_for(app.as_deref()))
            }
            Err(refusal) => Decision::Refuse(refusal, None),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ReplicaService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: From<String> + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.decide(&req) {
            Decision::Allow(verified, cors) => {
                req.extensions_mut().insert(verified.principal.clone());
                req.extensions_mut().insert(*verified);
                let future = self.inner.call(req);
                Box::pin(async move {
                    let mut response = future.await?;
                    allow_origin(response.headers_mut(), cors);
                    Ok(response)
                })
            }
            Decision::Preflight(allowed) => {
                let mut response = respond(StatusCode::NO_CONTENT, String::new());
                if let Some(origin) = allowed {
                    let headers = response.headers_mut();
                    allow_origin(headers, Some(origin));
                    headers.insert(
                        ACCESS_CONTROL_ALLOW_METHODS,
                        HeaderValue::from_static(PREFLIGHT_METHODS),
                    );
                    headers.insert(
                        ACCESS_CONTROL_ALLOW_HEADERS,
                        HeaderValue::from_static("Authorization, Content-Type"),
                    );
                    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                }
                Box::pin(std::future::ready(Ok(response)))
            }
            Decision::Refuse(refusal, cors) => {
                Box::pin(std::future::ready(Ok(refusal_response(&refusal, cors))))
            }
        }
    }
}
