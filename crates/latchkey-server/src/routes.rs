//! The paths that more than one part of the server acts on, named once:
//! the router serves them, and the connection's direct path, the access
//! log, CORS and the recording of refused actions recognise them.

/// Verification of a credential by the operator's servers.
pub const VERIFY: &str = "/v1/verify";
/// RFC 7662 token introspection.
pub const INTROSPECT: &str = "/v1/introspect";
/// Forward-auth for nginx, Traefik and Caddy.
pub const FORWARD_AUTH: &str = "/v1/forward-auth";
/// Liveness.
pub const HEALTH: &str = "/healthz";
/// Readiness (the index's freshness).
pub const READY: &str = "/readyz";
/// The Prometheus metrics (on the main listener unless
/// `Config::metrics_listen` names another).
pub const METRICS: &str = "/metrics";
/// The OpenAPI document.
pub const OPENAPI: &str = "/v1/openapi.json";
/// The replication feed: the live keys, sealed for a replica.
pub const REPLICA_SNAPSHOT: &str = "/v1/replica/snapshot";
/// The replication feed: changes after a sequence number, streamed.
pub const REPLICA_CHANGES: &str = "/v1/replica/changes";
/// Who the caller is.
pub const ACCOUNT: &str = "/v1/account";
/// Everything under one app: `/v1/apps/{appId}…`.
pub const APP_PREFIX: &str = "/v1/apps/";
/// The matched-route form of [`APP_PREFIX`] (axum's `MatchedPath`).
pub const APP_ROUTE_PREFIX: &str = "/v1/apps/{app_id}";
/// The dashboard's pages.
pub const DASHBOARD: &str = "/dashboard";
